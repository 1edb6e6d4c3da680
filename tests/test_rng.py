"""sentjax's keys are threefry whatever jax_default_prng_impl says, because the per-row dropout keys
need vmap-invariant bits (sentjax/rng.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sentjax import rng as rng_lib
from sentjax.parallel.dropout_keys import embed_column, row_keys
from sentjax.train import step as step_lib


def _masks(keys):
    return jax.vmap(lambda k: jax.random.bernoulli(k, 0.5, (16,)))(keys)


@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg"])
def test_rbg_bits_under_vmap_are_not_each_keys_own(impl):
    """The fact the design avoids: with rbg keys, a row's mask depends on the other rows of the vmap."""
    base = jax.random.key(0, impl=impl)
    keys = jax.vmap(lambda r: jax.random.fold_in(base, r))(jnp.arange(4))
    assert not np.array_equal(_masks(keys)[2:], _masks(keys[2:]))


def test_threefry_bits_under_vmap_are_each_keys_own():
    keys = row_keys(rng_lib.key(0), "anchor", 0, 4)
    np.testing.assert_array_equal(_masks(keys)[2:], _masks(keys[2:]))
    np.testing.assert_array_equal(_masks(keys)[2:], _masks(row_keys(rng_lib.key(0), "anchor", 2, 2)))  # rows 2, 3 as a chunk


def test_keys_are_threefry_under_a_global_rbg_default():
    """Train state, step keys, data order and init do not follow a process-wide rbg default."""
    before_state = step_lib.init_state({"w": jnp.zeros(2)}, optax.sgd(0.1), seed=3)
    before_perm = np.asarray(jax.random.permutation(jax.random.fold_in(rng_lib.key(3), 1), 50))
    old = jax.config.jax_default_prng_impl
    jax.config.update("jax_default_prng_impl", "rbg")
    try:
        state = step_lib.init_state({"w": jnp.zeros(2)}, optax.sgd(0.1), seed=3)
        np.testing.assert_array_equal(state["rng"], before_state["rng"])
        k = step_lib.step_rng(state["rng"], 5)
        assert "threefry" in str(jax.random.key_impl(k))
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(rng_lib.key(3), 1), 50))
        np.testing.assert_array_equal(perm, before_perm)
    finally:
        jax.config.update("jax_default_prng_impl", old)


def test_embed_column_refuses_a_non_threefry_key():
    embed = lambda params, tokens, key: tokens["input_ids"].astype(jnp.float32)  # noqa: E731
    tokens = {"input_ids": jnp.ones((3, 4), jnp.int32)}
    with pytest.raises(ValueError, match="threefry2x32 keys, got"):
        embed_column(embed, None, tokens, jax.random.key(0, impl="rbg"), "anchor")
    with pytest.raises(ValueError, match="raw key must be"):
        embed_column(embed, None, tokens, jnp.zeros((4,), jnp.uint32), "anchor")
    out = embed_column(embed, None, tokens, jax.random.key_data(rng_lib.key(0)), "anchor")  # raw threefry data
    assert out.shape == (3, 4)
