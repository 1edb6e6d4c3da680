"""Matryoshka (sentjax/losses/matryoshka.py): float64 NumPy reference, refused configurations, one
forward under GradCache, and the 1-vs-8-device gradient (shard_map, pmap; GradCache; tiled inner)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sentjax.errors import ConfigError
from sentjax.losses import cosent_loss, infonce_loss, make_column_loss
from sentjax.parallel import make_grad_fn, make_mesh
from sentjax.train import config_cli
from sentjax.train.objectives import make_objective
from test_losses import ref_infonce
from test_parallel_grads import B, K, N_DEV, TOL, rel_err, setup

DIMS, WEIGHTS = (32, 16, 8), (1.0, 0.5, 2.0)
INNER = {"name": "infonce", "temperature": 0.05, "hard_negative_weight": 1.0}


def rand(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def test_vs_numpy_infonce_at_each_dimension():
    a, p, n = rand(0, 6, 12), rand(1, 6, 12), rand(2, 6, 2, 12)
    obj = make_objective({"name": "matryoshka", "dims": (12, 6, 3), "weights": (1.0, 0.3, 2.0),
                          "inner": dict(INNER, temperature=0.1)})
    cols = {"anchor": jnp.asarray(a, jnp.float32), "positive": jnp.asarray(p, jnp.float32),
            "negative": jnp.asarray(n.reshape(12, 12), jnp.float32)}
    loss, met = obj.loss_fn({}, cols)
    # truncate, then the reference normalises (sentence-transformers' order)
    parts = {m: ref_infonce(a[:, :m], p[:, :m], n[..., :m], 0.1, False, 1.0) for m in (12, 6, 3)}
    want = 1.0 * parts[12][0] + 0.3 * parts[6][0] + 2.0 * parts[3][0]
    assert float(loss) == pytest.approx(want, rel=1e-5)
    for m in (12, 6, 3):
        assert float(met[f"loss_dim{m}"]) == pytest.approx(parts[m][0], rel=1e-5)
        assert float(met[f"accuracy_dim{m}"]) == pytest.approx(parts[m][1])
    assert float(met["accuracy"]) == float(met["accuracy_dim12"])


def test_pass_through_columns_are_not_truncated():
    u, v = jnp.asarray(rand(3, 5, 8), jnp.float32), jnp.asarray(rand(4, 5, 8), jnp.float32)
    s = jnp.asarray([0.1, 0.9, 0.4, 0.4, 0.7], jnp.float32)
    loss_fn = make_column_loss("matryoshka", dims=(8, 2), inner={"name": "cosent", "scale": 20.0})
    loss, _ = loss_fn({}, {"anchor": u, "positive": v, "score": s})
    want = cosent_loss(u, v, s)[0] + cosent_loss(u[:, :2], v[:, :2], s)[0]
    assert float(loss) == pytest.approx(float(want), rel=1e-6)


def test_refused_configurations_say_why():
    def build(**kw):
        return make_objective({"name": "matryoshka", **kw})
    with pytest.raises(ConfigError, match="'softmax' has a trainable head"):
        build(inner={"name": "softmax"})
    with pytest.raises(ConfigError, match="'distill' needs a teacher"):
        build(inner={"name": "distill"})
    with pytest.raises(ConfigError, match="cannot itself be 'matryoshka'"):
        build(inner={"name": "matryoshka"})
    with pytest.raises(ConfigError, match="objective 'infonce' has no field 'scale'"):
        build(inner={"name": "infonce", "scale": 2.0})
    with pytest.raises(ConfigError, match="repeated dimension"):
        build(dims=(8, 8))
    with pytest.raises(ConfigError, match="2 entries for 3 dims"):
        build(dims=(8, 4, 2), weights=(1.0, 1.0))
    with pytest.raises(ConfigError, match="finite and >= 0"):
        build(dims=(8,), weights=(-1.0,))
    obj = build(dims=(64, 8))
    x = jnp.ones((2, 32))
    with pytest.raises(ValueError, match=r"\[64\] > the model's embedding size 32"):
        obj.loss_fn({}, {"anchor": x, "positive": x})


def test_command_line_reaches_the_inner_block(tmp_path):
    cfg_file = tmp_path / "cfg.py"
    cfg_file.write_text("from sentjax.configs.default import get_config\n")
    cfg, _ = config_cli.parse_config_args(["--config", str(cfg_file), "--config.objective.name=matryoshka",
                                           "--config.objective.dims=64,32", "--config.objective.inner.temperature=0.1"])
    obj = make_objective(cfg.objective)
    assert obj.hparams.dims == (64, 32) and obj.hparams.inner["temperature"] == 0.1
    assert obj.fields == ("anchor", "positive", "negative")
    with pytest.raises(config_cli.ConfigError, match="objective.inner.scale"):
        config_cli.parse_config_args(["--config", str(cfg_file), "--config.objective.name=matryoshka",
                                      "--config.objective.inner.scale=3"])


# ------------------------------------------------------------------- 1 vs 8 devices, GradCache


@functools.lru_cache(maxsize=None)
def reference():
    """Single device, written directly: sum_r w_r infonce(truncated embeddings) on the whole batch."""
    embed, params, cols = setup()

    def loss(p):
        a, pos, neg = (embed(p, cols[c]) for c in ("anchor", "positive", "negative"))
        neg = neg.reshape(B, K, -1)
        return sum(w * infonce_loss(a[:, :m], pos[:, :m], neg[..., :m], temperature=0.05,
                                    hard_negative_weight=1.0)[0] for m, w in zip(DIMS, WEIGHTS))
    return jax.jit(jax.value_and_grad(loss))(params)


def grads_on(backend, chunk, impl="dense"):
    embed, params, cols = setup()
    inner = dict(INNER, impl=impl, tile_size=1)
    f = make_grad_fn(embed, make_column_loss("matryoshka", dims=DIMS, weights=WEIGHTS, inner=inner),
                     mesh=make_mesh(N_DEV) if backend == "shard_map" else None, backend=backend,
                     gradcache_chunk=chunk)
    return (f if backend == "pmap" else jax.jit(f))(params, cols, None)


@pytest.mark.parametrize("backend,chunk,impl", [("shard_map", None, "dense"), ("shard_map", 1, "dense"),
                                                ("pmap", None, "dense"), ("pmap", 1, "dense"),
                                                ("shard_map", 1, "tiled")])
def test_8_devices_equal_single_device(backend, chunk, impl):
    if jax.device_count() < N_DEV:
        pytest.skip("needs 8 (fake) devices; see tests/conftest.py")
    want_loss, want = reference()
    (loss, metrics), grads = grads_on(backend, chunk, impl)
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-6)
    assert float(metrics["nonfinite"]) == 0.0
    assert rel_err(grads, want) < TOL


def test_gradcache_embeds_once_for_every_dimension():
    """One cached forward (and one recomputing backward) per column, whatever the number of dims."""
    embed, params, cols = setup()
    calls = []

    def counting(p, tokens, rng):
        calls.append(1)
        return embed(p, tokens, rng)

    def count(loss_fn):
        calls.clear()
        jax.eval_shape(make_grad_fn(counting, loss_fn, backend="none", gradcache_chunk=4), params, cols, None)
        return len(calls)
    plain = count(make_column_loss("infonce", **{k: v for k, v in INNER.items() if k != "name"}))
    wrapped = count(make_column_loss("matryoshka", dims=DIMS, weights=WEIGHTS, inner=INNER))
    assert wrapped == plain and plain > 0
