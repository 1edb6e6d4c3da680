"""The device ring shared by the tiled losses (``tiled_infonce``, ``tiled_sigmoid``).

Each device keeps its own rows and passes its candidate block to the next device with
``lax.ppermute``; after ``n_dev`` steps every device has seen every block once and no device ever
held the global ``[B, B]`` logits. Without an axis (one device) the ring has one member and
``rotate`` is the identity.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["size_and_index", "rotate", "dot_nt", "match_vma"]


def size_and_index(axis_name: str | None) -> tuple[int, jax.Array]:
    """(number of devices on the axis, this device's index) - (1, 0) without an axis."""
    if axis_name is None:
        return 1, jnp.int32(0)
    return lax.axis_size(axis_name), lax.axis_index(axis_name).astype(jnp.int32)


def rotate(tree, axis_name: str | None, n_dev: int):
    """Sends every array of ``tree`` to the next device on the ring (device r -> r + 1)."""
    if n_dev == 1:
        return tree
    perm = [(i, (i + 1) % n_dev) for i in range(n_dev)]
    return jax.tree.map(lambda x: lax.ppermute(x, axis_name, perm), tree)


def dot_nt(q: jax.Array, k: jax.Array) -> jax.Array:
    """[tq, d] x [tc, d] -> [tq, tc] in float32 (accumulates in float32 for bfloat16 inputs)."""
    return lax.dot_general(q, k, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


def match_vma(x: jax.Array, ref: jax.Array) -> jax.Array:
    """Marks a fresh constant as device-varying like ``ref``, so loop carries keep one type under shard_map."""
    want: frozenset = getattr(getattr(jax.typeof(ref), "manual_axis_type", None), "varying", frozenset())
    have: frozenset = getattr(getattr(jax.typeof(x), "manual_axis_type", None), "varying", frozenset())
    missing = tuple(sorted(want - have))
    return lax.pcast(x, missing, to="varying") if missing else x
