"""Train step on a data mesh: 1 vs 8 devices, accumulation, schedule, bad batch sizes."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sentjax.train import step as step_lib
from sentjax.train.config_cli import ConfigError
from sentjax.train.optim import linear_warmup_decay
from sentjax.train.tiny import tiny_config
from sentjax.train.train import train


def _params(summary):
    return jax.tree.map(np.asarray, step_lib.to_host(summary["state"]))


def test_one_and_eight_devices_agree(tmp_path):
    out = {}
    for n in (1, 8):
        c = tiny_config(str(tmp_path / f"d{n}"), **{"mesh.data": n, "total_steps": 3})
        out[n] = _params(train(c, progress=False))
    flat1, flat8 = jax.tree.leaves(out[1]["params"]), jax.tree.leaves(out[8]["params"])
    moved = max(float(np.max(np.abs(a - b))) for a, b in
                zip(flat1, jax.tree.leaves(_params_init(tmp_path))))
    assert moved > 1e-4  # training changed the parameters
    for a, b in zip(flat1, flat8):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def _params_init(tmp_path):
    from sentjax.train.train import build_model
    m = build_model(tiny_config(str(tmp_path / "init")))
    return {"model": m.params}


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
