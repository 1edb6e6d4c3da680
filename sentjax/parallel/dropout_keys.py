"""Per-row dropout keys: the dropout mask of a row depends only on (step key, column, global row).

    key(c, r) = fold_in(fold_in(rng, crc32(c)), r)      c: column name, r: row in the global batch

Each row is embedded under its own key (``jax.vmap`` over rows), so the masks do not depend on
how the batch is split: over 1 or 8 devices, in one piece or in GradCache chunks, in the first
(no-grad) or the second (VJP) GradCache pass the same row gets the same mask. That is what lets
unsupervised SimCSE (anchor = positive text, two dropout masks, one per column) train identically
with and without caching; re-drawing keys between the passes is GradCache issues #7/#16/#38.
"""
from __future__ import annotations

import functools
import zlib
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from sentjax.rng import check_key

__all__ = ["column_key", "row_keys", "embed_column", "embed_rows", "column_embedder"]

EmbedFn = Callable[[Any, Mapping[str, jax.Array], Any], jax.Array]


def column_key(rng: jax.Array, column: str) -> jax.Array:
    """The key of a column: ``fold_in(rng, crc32(column))`` (stable across processes and runs).
    ``rng`` must be a threefry key (``sentjax.rng``: other impls are not vmap-invariant)."""
    return jax.random.fold_in(check_key(rng), zlib.crc32(column.encode()) & 0x7FFFFFFF)


def row_keys(rng: jax.Array, column: str, first_row: jax.Array | int, n: int) -> jax.Array:
    """Keys ``[n]`` of global rows ``first_row .. first_row + n - 1`` of ``column``."""
    ck = column_key(rng, column)
    return jax.vmap(lambda r: jax.random.fold_in(ck, r))(first_row + jnp.arange(n))


def embed_column(embed_fn: EmbedFn, params: Any, tokens: Mapping[str, jax.Array], rng: jax.Array | None,
                 column: str, first_row: jax.Array | int = 0) -> jax.Array:
    """Embeds a token batch ``[n, L] -> [n, dim]``; with ``rng``, row i uses ``row_keys(...)[i]``.

    Without ``rng`` (dropout off) it is one plain call of ``embed_fn(params, tokens, None)``.
    """
    if rng is None:
        return embed_rows(embed_fn, params, tokens, None)
    n = next(iter(tokens.values())).shape[0]
    return embed_rows(embed_fn, params, tokens, row_keys(rng, column, first_row, n))


def embed_rows(embed_fn: EmbedFn, params: Any, tokens: Mapping[str, jax.Array],
               keys: jax.Array | None) -> jax.Array:
    """``[n, L] -> [n, dim]``: row i under ``keys[i]`` (``jax.vmap`` over rows), or one plain call
    of ``embed_fn(params, tokens, None)`` when ``keys`` is None (dropout off)."""
    if keys is None:
        return embed_fn(params, tokens, None)

    def one(row, key):
        return embed_fn(params, jax.tree.map(lambda x: x[None], row), key)[0]
    return jax.vmap(one)(dict(tokens), keys)


def column_embedder(embed_fn: EmbedFn, rng: jax.Array | None
                    ) -> Callable[[Any, Mapping[str, jax.Array], str, Any], jax.Array]:
    """``f(params, tokens, column, first_row) -> [n, dim]``, equal to :func:`embed_column`, with
    one ``jax.jit`` of :func:`embed_rows` shared by every call.

    Why: a train step embeds several columns (anchor / positive / negatives; GradCache: every
    chunk forward and VJP) of one shape. Through one jit JAX traces, differentiates and lowers
    the encoder once per distinct shape instead of once per call. XLA inlines the calls, so the
    program is the same as with one inlined encoder per call (the columns stay independent, and
    XLA:CPU runs them concurrently). Build it inside the traced function: a new jit per trace,
    so nothing outlives that trace.
    """
    rows = jax.jit(functools.partial(embed_rows, embed_fn))

    def f(params: Any, tokens: Mapping[str, jax.Array], column: str, first_row: Any) -> jax.Array:
        n = next(iter(tokens.values())).shape[0]
        keys = None if rng is None else row_keys(rng, column, first_row, n)
        return rows(params, dict(tokens), keys)
    return f
