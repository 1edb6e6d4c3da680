"""Train step on a data mesh: accumulation, schedule, bad batch sizes (1 vs 8 devices:
tests/test_train_integration.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sentjax.train import step as step_lib
from sentjax.train.config_cli import ConfigError
from sentjax.train.optim import linear_warmup_decay
from sentjax.train.train import train
from tiny import tiny_config


def _params(summary):
    return jax.tree.map(np.asarray, step_lib.to_host(summary["state"]))


def test_global_batch_smaller_than_devices(tmp_path):
    c = tiny_config(str(tmp_path), batch_size=4)
    with pytest.raises(ValueError, match="multiple of the 8 devices"):
        train(c, progress=False)


def test_accumulation_refused_for_in_batch_negatives(tmp_path):
    c = tiny_config(str(tmp_path), accum_steps=2)
    with pytest.raises(ConfigError, match="does NOT add negatives"):
        train(c, progress=False)


def test_accumulation_equals_full_batch_for_per_example_loss():
    """Mean of per-example losses: 4 micro-batches give the full-batch gradient."""
    mesh = step_lib.make_data_mesh(8)
    w = jnp.arange(6.0).reshape(3, 2) / 10

    def grad_fn(params, batch, rng):
        def loss(p):
            pred = batch["x"] @ p
            return jnp.mean(jnp.sum((pred - batch["y"]) ** 2, -1)), {}
        return jax.value_and_grad(loss, has_aux=True)(params)

    x = np.asarray(jax.random.normal(jax.random.key(1), (32, 3)), np.float32)
    y = np.asarray(jax.random.normal(jax.random.key(2), (32, 2)), np.float32)
    batch = jax.device_put({"x": x, "y": y}, step_lib.batch_sharded(mesh))
    (l1, _), g1 = jax.jit(grad_fn)(w, batch, None)
    (l4, _), g4 = jax.jit(step_lib.accumulate(grad_fn, 4, 32))(w, batch, jax.random.key(0))
    ref = 2 * x.astype(np.float64).T @ (x.astype(np.float64) @ np.asarray(w, np.float64) - y) / 32
    np.testing.assert_allclose(g1, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g4, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(l4, l1, rtol=1e-6)


def test_schedule_matches_formula():
    sched = linear_warmup_decay(1.0, 10, 110)
    for t in (0, 5, 10, 60, 110):
        want = t / 10 if t < 10 else max(0.0, (110 - t) / 100)
        assert float(sched(t)) == pytest.approx(want, abs=1e-6)


def test_decay_mask_skips_bias_and_layernorm():
    from sentjax.train.optim import decay_mask
    mask = decay_mask({"dense": {"kernel": 1, "bias": 2}, "LayerNorm": {"scale": 3, "bias": 4}})
    assert mask == {"dense": {"kernel": True, "bias": False}, "LayerNorm": {"scale": False, "bias": False}}


def test_pair_objective_compiles_once_per_length_bucket(tmp_path, monkeypatch):
    """A pair batch pads both fields to one bucketed length, so with max_length 16 (buckets 8 and
    16) the step traces at most twice however the two fields' lengths combine."""
    import chex

    from sentjax.data.pipeline import Pipeline, load_source
    from sentjax.tokenization import Tokenizer
    from tiny import make_tiny_workspace
    ws = make_tiny_workspace(str(tmp_path / "ws"))
    sents = open(ws.sentences).read().split("\n")[:96]
    rng = np.random.default_rng(0)
    rows = ["sentence1\tsentence2\tscore"]
    for i in range(48):  # each side short (one sentence) or, rarely, long (two), independently
        a = sents[2 * i] + (" " + sents[2 * i + 1] if rng.random() < 0.1 else "")
        b = sents[95 - i] + (" " + sents[94 - i] if rng.random() < 0.1 else "")
        rows.append(f"{a}\t{b}\t{rng.integers(0, 6)}.0")
    sts = tmp_path / "mixed.tsv"
    sts.write_text("\n".join(rows) + "\n")
    made = step_lib.make_train_step
    monkeypatch.setattr(step_lib, "make_train_step", lambda *a, **k: chex.assert_max_traces(made(*a, **k), n=2))
    c = tiny_config(str(tmp_path), **{"objective.name": "cosine", "data.datasets": (f"sts:{sts}",),
                                      "total_steps": 12, "batch_size": 8, "checkpoint.every_steps": 12,
                                      "mesh.data": 2})
    # the data really mixes lengths across fields (otherwise this test would prove nothing)
    p = Pipeline([load_source(f"sts:{sts}")], Tokenizer.from_dir(ws.tokenizer, max_length=16), 8, 0,
                 dedup=False, process_index=0, process_count=1)
    combos = set()
    for step in range(12):
        idx = p.global_indices(step)[2]
        combos.add(tuple(max(len(x) for x in p.tokenizer.encode_ids([p.sources[0].columns[f][i] for i in idx])) > 8
                         for f in ("anchor", "positive")))
    assert len(combos) > 2, combos
    chex.clear_trace_counter()
    train(c, progress=False)
