"""sentjax's random keys: always ``threefry2x32``, whatever ``jax_default_prng_impl`` says.

Two guarantees rest on it. Dropout: each row of a batch is embedded under its own key
(``parallel/dropout_keys.py``), so its mask is the same on 1 or 8 devices and in any GradCache chunk;
that needs the bits drawn under ``jax.vmap`` over keys to equal the bits of each key alone. threefry
gives that; ``rbg`` and ``unsafe_rbg`` do not (their vmap rule draws every row from the first key:
``tests/test_rng.py`` shows it), so a global ``jax.config.update("jax_default_prng_impl", "rbg")``
would silently change masks with the device count. Data order and initialisation: a run is a
function of its config and seed, not of a process-wide flag. (rbg is also not faster in the training
step here: ``experiments/bench/results/profile-step-rbg.md``.)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["IMPL", "key", "wrap", "check_key"]

IMPL = "threefry2x32"


def key(seed: int | jax.Array) -> jax.Array:
    """A typed threefry key of ``seed``."""
    return jax.random.key(seed, impl=IMPL)


def wrap(data: jax.Array) -> jax.Array:
    """A typed threefry key from its raw ``uint32[2]`` data (as kept in the train state)."""
    return jax.random.wrap_key_data(data, impl=IMPL)


def check_key(rng: jax.Array) -> jax.Array:
    """``rng`` as a typed threefry key; a raw ``uint32[2]`` key is wrapped, any other impl refused."""
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        impl = str(jax.random.key_impl(rng))
        if IMPL not in impl:
            raise ValueError(
                f"sentjax's per-row dropout keys need {IMPL} keys, got a {impl!r} key: its bits under "
                f"jax.vmap are not each row's own, so masks would change with the device count or the "
                f"GradCache chunking. Make the key with sentjax.rng.key(seed) or "
                f"jax.random.key(seed, impl={IMPL!r}).")
        return rng
    if rng.shape[-1:] != (2,):
        raise ValueError(f"a raw key must be {IMPL} data uint32[2], got shape {rng.shape}; make the key with "
                         f"sentjax.rng.key(seed).")
    return wrap(rng)
