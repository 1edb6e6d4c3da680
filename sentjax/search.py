"""Exact top-k nearest neighbours on the device, in blocks (retrieval evaluation, hard-negative mining).

For queries ``Q [q, dim]`` and a corpus ``C [n, dim]``::

    s(i, j)     = <Q_i, C_j>                       (metric="dot")
                = <Q_i / |Q_i|, C_j / |C_j|>       (metric="cosine")
    top_k(i)    = the k indices j with the largest s(i, j), best first; equal scores: lowest j first

Exact (no approximation): every score is computed, in float32 with the matmul at full precision.
Queries are processed ``query_block`` at a time (a host loop); inside one jitted call a ``lax.scan``
walks the corpus ``corpus_block`` rows at a time, takes ``lax.top_k`` of each chunk and merges it
with the running top-k. ``lax.top_k`` is stable (equal values keep their order) and the running
list always holds lower corpus indices than the chunk it is merged with, so ties go to the lowest
index without any extra key. Memory on the device beyond the corpus itself is
``O(query_block x corpus_block)``.

With a ``mesh``, the corpus is split in contiguous shards over ``axis_name``: each device computes
the top-k of its shard (global indices), the ``[devices, q, k]`` candidates are all-gathered in
device order (= ascending index) and merged by the same stable ``top_k``, so the result equals the
single-device one exactly.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from sentjax.ops import l2_normalize

__all__ = ["top_k", "METRICS"]

METRICS = ("cosine", "dot")


def _check(queries: np.ndarray, corpus: np.ndarray, k: int, metric: str, query_block: int,
           corpus_block: int) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}.")
    for name, x in (("queries", queries), ("corpus", corpus)):
        if x.ndim != 2:
            raise ValueError(f"{name} must be embeddings [n, dim], got shape {x.shape}.")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} contain NaN/inf; the encoder diverged or its weights are broken.")
    if queries.shape[1] != corpus.shape[1]:
        raise ValueError(f"queries have dim {queries.shape[1]} but the corpus dim {corpus.shape[1]}; embed both "
                         "with the same model.")
    if not 1 <= k <= corpus.shape[0]:
        raise ValueError(f"k must be in 1..{corpus.shape[0]} (the corpus size), got {k}.")
    if query_block < 1 or corpus_block < 1:
        raise ValueError(f"query_block and corpus_block must be >= 1, got {query_block} and {corpus_block}.")


def _merge(vals: jax.Array, idx: jax.Array, new_vals: jax.Array, new_idx: jax.Array, k: int):
    # [running, new]: for equal values the running entries (lower indices) come first and top_k is
    # stable, so the lowest index wins a tie.
    v, pos = lax.top_k(jnp.concatenate([vals, new_vals], axis=1), k)
    return v, jnp.take_along_axis(jnp.concatenate([idx, new_idx], axis=1), pos, axis=1)


def _local_top_k(q: jax.Array, chunks: jax.Array, n: int, offset, k: int):
    """Top-k of ``q [b, d]`` against ``chunks [m, cb, d]`` (rows ``offset + i`` of the corpus; rows
    ``>= n`` are padding and never chosen)."""
    m, cb, _ = chunks.shape
    kc = min(k, cb)
    init = (jnp.full((q.shape[0], k), -jnp.inf, jnp.float32),
            jnp.full((q.shape[0], k), jnp.iinfo(jnp.int32).max, jnp.int32))

    def step(carry, xs):
        chunk, start = xs
        s = jnp.dot(q, chunk.T, precision=lax.Precision.HIGHEST)
        gidx = start + jnp.arange(cb, dtype=jnp.int32)
        s = jnp.where(gidx[None, :] < n, s, -jnp.inf)
        v, j = lax.top_k(s, kc)
        return _merge(*carry, v, jnp.take(gidx, j), k), None

    starts = offset + jnp.arange(m, dtype=jnp.int32) * cb
    (vals, idx), _ = lax.scan(step, init, (chunks, starts))
    return vals, idx


@functools.partial(jax.jit, static_argnames=("n", "k", "normalize"))
def _block_single(q, chunks, *, n: int, k: int, normalize: bool):
    if normalize:
        q = l2_normalize(q)
    return _local_top_k(q.astype(jnp.float32), chunks, n, 0, k)


@functools.lru_cache(maxsize=16)
def _block_sharded(mesh: jax.sharding.Mesh, axis_name: str, n: int, k: int, normalize: bool):
    def body(q, chunks):
        if normalize:
            q = l2_normalize(q)
        m, cb, _ = chunks.shape
        offset = lax.axis_index(axis_name) * (m * cb)
        vals, idx = _local_top_k(q.astype(jnp.float32), chunks, n, offset, k)
        # [devices, b, k] in device order = ascending corpus index, then the same stable merge.
        gv = lax.all_gather(vals, axis_name)
        gi = lax.all_gather(idx, axis_name)
        b = q.shape[0]
        gv = jnp.moveaxis(gv, 0, 1).reshape(b, -1)
        gi = jnp.moveaxis(gi, 0, 1).reshape(b, -1)
        v, pos = lax.top_k(gv, k)
        return v, jnp.take_along_axis(gi, pos, axis=1)

    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(), P(axis_name)), out_specs=(P(), P()),
                                 check_vma=False))


def top_k(queries: np.ndarray, corpus: np.ndarray, k: int, *, metric: str = "cosine", query_block: int = 256,
          corpus_block: int = 4096, mesh: jax.sharding.Mesh | None = None, axis_name: str = "data",
          progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(scores float32 [q, k], indices int64 [q, k])`` of the ``k`` best corpus rows per query, best first.

    ``queries [q, dim]``, ``corpus [n, dim]`` (NumPy or JAX, any float dtype; computed in float32);
    ``metric``: ``"cosine"`` or ``"dot"``; ``1 <= k <= n``. ``mesh``: split the corpus over its
    ``axis_name`` devices (same result as one device). ``progress``: a tqdm bar over query blocks.
    """
    queries, corpus = np.asarray(queries, np.float32), np.asarray(corpus, np.float32)
    _check(queries, corpus, k, metric, query_block, corpus_block)
    n, d = corpus.shape
    normalize = metric == "cosine"
    shards = 1 if mesh is None else mesh.shape[axis_name]
    cb = min(corpus_block, math.ceil(n / shards))
    m = math.ceil(n / (cb * shards))  # chunks per device
    pad = np.zeros((shards * m * cb - n, d), np.float32)
    c = np.concatenate([corpus, pad]) if len(pad) else corpus
    if normalize:
        c = np.asarray(l2_normalize(jnp.asarray(c)))
    chunks = c.reshape(shards * m, cb, d)
    if mesh is None:
        chunks = jnp.asarray(chunks)
        fn = functools.partial(_block_single, n=n, k=k, normalize=normalize)
    else:
        chunks = jax.device_put(chunks, NamedSharding(mesh, P(axis_name)))
        fn = _block_sharded(mesh, axis_name, n, k, normalize)

    qb = min(query_block, len(queries))
    scores = np.empty((len(queries), k), np.float32)
    indices = np.empty((len(queries), k), np.int64)
    starts = range(0, len(queries), qb)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="top-k", unit="block")
    for s in starts:
        block = queries[s: s + qb]
        if len(block) < qb:  # one shape, one compilation
            block = np.concatenate([block, np.zeros((qb - len(block), d), np.float32)])
        v, i = fn(jnp.asarray(block), chunks)
        r = min(qb, len(queries) - s)
        scores[s: s + r] = np.asarray(v)[:r]
        indices[s: s + r] = np.asarray(i)[:r]
    return scores, indices
