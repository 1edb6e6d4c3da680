"""The training loop gives the same parameters whichever gradient engine computes the step.

Reference: the global-batch loss under jit on ONE device. Every other engine (explicit shard_map
all-gather, pmap, GradCache under either, the memory-tiled InfoNCE) runs on 8 fake devices and
must land on the same parameters after a few AdamW steps with dropout on (per-row dropout keys
make the masks independent of device count and chunking).
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sentjax.train import step as step_lib
from sentjax.train.train import train
from tiny import tiny_config


def _final_params(tmp_path, name, **overrides):
    c = tiny_config(str(tmp_path / name), **{"total_steps": 3, **overrides})
    return jax.tree.map(np.asarray, step_lib.to_host(train(c, progress=False)["state"]["params"]))


def _assert_trained(params, tmp_path):
    """Equal parameters prove nothing if neither run moved them."""
    from sentjax.train.train import build_model
    init = build_model(tiny_config(str(tmp_path / "init"))).params
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(params["model"]), jax.tree.leaves(init)))
    assert moved > 1e-4


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _final_params(tmp_path_factory.mktemp("ref"), "ref", **{"mesh.data": 1, "gradient.method": "jit"})


@pytest.mark.parametrize("overrides", [
    {"gradient.method": "shard_map"},
    # pmap's step and the symmetric loss under jit are pinned at step level in test_parallel_grads.py;
    # their whole-trainer runs are the slowest of this matrix (-m slow)
    pytest.param({"gradient.method": "pmap"}, marks=pytest.mark.slow),
    {"gradient.method": "shard_map", "gradient.gradcache_chunk": 1},
    pytest.param({"gradient.method": "pmap", "gradient.gradcache_chunk": 2}, marks=pytest.mark.slow),
    {"gradient.method": "shard_map", "objective.impl": "tiled", "objective.tile_size": 1},
    pytest.param({"gradient.method": "jit", "objective.symmetric": True}, marks=pytest.mark.slow),
], ids=lambda o: ",".join(f"{k.split('.')[-1]}={v}" for k, v in o.items()))
def test_engines_match_single_device_jit(tmp_path, reference, overrides):
    got = _final_params(tmp_path, "run", **{"mesh.data": 8, **overrides})
    _assert_trained(got, tmp_path)
    want = reference
    if overrides.get("objective.symmetric"):
        want = _final_params(tmp_path, "sym1", **{"mesh.data": 1, **overrides})
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=0, err_msg=jax.tree_util.keystr(path))


def test_nonfinite_step_is_skipped_and_reported():
    params = {"w": jnp.ones(3)}
    tx = optax.adamw(0.1)

    def grad_fn(params, batch, rng):
        loss = jnp.sum(params["w"] * batch["x"])  # NaN when x holds a NaN
        return (loss, {}), {"w": batch["x"]}

    step = jax.jit(step_lib.make_train_step(grad_fn, tx))
    state = step_lib.init_state(params, tx, 0)
    state, m = step(state, {"x": jnp.array([1.0, jnp.nan, 0.0])}, jax.random.key(0))
    assert float(m["nonfinite"]) == 1.0
    np.testing.assert_array_equal(np.asarray(state["params"]["w"]), np.ones(3))
    assert int(state["opt_state"][0].count) == 0  # optimizer moments untouched
    state, m = step(state, {"x": jnp.array([1.0, 2.0, 0.0])}, jax.random.key(0))
    assert float(m["nonfinite"]) == 0.0
    assert not np.allclose(np.asarray(state["params"]["w"]), np.ones(3))


def test_unknown_gradient_method_is_an_error(tmp_path):
    from sentjax.train.config_cli import ConfigError
    with pytest.raises(ConfigError, match="gradient.method"):
        train(tiny_config(str(tmp_path), **{"gradient.method": "allreduce"}), progress=False)
