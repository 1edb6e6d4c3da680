"""The sigmoid (SigLIP) loss chunked across devices: a ``ppermute`` ring, never the B x B logits.

Same math as :func:`sentjax.losses.sigmoid.sigmoid_loss` (the dense reference), plus ``tile_size``.
With ``x_i`` the L2-normalised anchors and ``c_j`` the L2-normalised candidates of the global batch
(all B positives in global anchor order, then all B*k hard negatives, anchor-major)::

    logits[i, j] = t x_i . c_j + b,      t = exp(t')
    z[i, j]      = +1 if c_j is anchor i's positive, else -1
    loss         = -(1/B) sum_i sum_j log sigmoid(z[i, j] logits[i, j])        (Zhai et al. 2023)

The loss is a plain sum over pairs (no normaliser per row), so it splits into blocks with no
online statistics: each device keeps its ``b`` anchors and the candidate blocks travel around the
ring with ``lax.ppermute`` (device r -> r + 1; after ``n`` steps every block is home), as in the
SigLIP paper's "chunked" implementation (Fig. 1) that big_vision's own loss leaves as a TODO. Inside
a device the block is walked ``tile_size`` candidate rows at a time, so a device holds at most one
remote candidate block and a ``[b, tile]`` slice of logits.

Gradient: a ``jax.custom_vjp`` saves only the normalised inputs and recomputes each slice in the
backward pass, where with ``s = x_i . c_j`` and ``g`` this device's cotangent of its loss share::

    dlogits[i, j] = -(g / B) z[i, j] sigmoid(-z[i, j] logits[i, j])
    dx_i = t sum_j dlogits[i, j] c_j,     dc_j = t sum_i dlogits[i, j] x_i   (rides home with the block)
    dt'  = t sum dlogits * s,             db  = sum dlogits                  (this device's share)

(Plain autodiff through the ring would keep every step's ``[b, b (1 + k)]`` logits: ``B x b`` per
device.) As in :mod:`sentjax.losses.tiled_infonce`, the custom VJP covers only this device's share
of the loss; the global sum is an ordinary ``lax.psum`` outside it, so JAX's transpose of that psum
gives the backward the right cotangent under every backend (1 under ``jax.shard_map`` with the
gradient outside, N under ``jax.pmap`` whose per-device gradients are then ``pmean``-ed). ``t'`` and
``b`` enter the custom VJP as device-varying values (``lax.pcast``), whose transpose sums their
per-device shares; under GradCache the caller's ``psum`` of the per-device gradients does the same.

Memory per device: O(b (1 + k) d) for the local and the travelling block plus O(b tile) logits;
FLOPs 4 x 2 b B (1 + k) d per device (the forward similarity matmul, its recomputation and the two
gradient matmuls).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from sentjax.losses import ring
from sentjax.losses.checks import check_embedding_pair, check_negatives
from sentjax.ops import l2_normalize

__all__ = ["tiled_sigmoid_loss", "DEFAULT_TILE_SIZE"]

DEFAULT_TILE_SIZE = 1024


class _Config(NamedTuple):
    """Static (hashable) settings of one call."""
    axis_name: str | None
    tile: int
    k: int  # hard negatives per anchor


class _Block(NamedTuple):
    """A device's candidate block (padded to whole tiles) and its static bookkeeping."""
    cands: jax.Array   # [nc * tile, d]: the b positives, then the b*k negatives, then zero rows
    owner: jax.Array   # [nc * tile] local anchor index owning each row (add src * b for the global one)
    is_pos: jax.Array  # [nc * tile] bool: a positive (z = +1 for its owner)
    valid: jax.Array   # [nc * tile] bool: False on padding


def _block(p: jax.Array, n: jax.Array, cfg: _Config) -> _Block:
    b = p.shape[0]
    rows = b + n.shape[0]
    pad = (-rows) % cfg.tile
    cands = jnp.concatenate([p, n] + ([jnp.zeros((pad, p.shape[1]), p.dtype)] if pad else []), axis=0)
    j = jnp.arange(rows + pad, dtype=jnp.int32)
    owner = jnp.where(j < b, j, (j - b) // max(cfg.k, 1))
    return _Block(cands, owner, j < b, j < rows)


def _slice_logits(x, kblk, q_id, k_id, k_pos, k_valid, scale, bias):
    """One [b, tile] slice: the cosines S, the logits t S + b, the signs z and the live mask."""
    s = ring.dot_nt(x, kblk)
    logits = scale * s + bias
    z = jnp.where(k_pos[None, :] & (k_id[None, :] == q_id[:, None]), 1.0, -1.0)
    return s, logits, z, jnp.broadcast_to(k_valid[None, :], s.shape)


def _forward(x, p, n, log_scale, bias, cfg: _Config):
    """(this device's loss share, its correct count) of normalised x [b, d], p [b, d], n [b*k, d]."""
    b = x.shape[0]
    n_dev, rank = ring.size_and_index(cfg.axis_name)
    big_b = b * n_dev
    blk = _block(p, n, cfg)
    t, nc = cfg.tile, blk.cands.shape[0] // cfg.tile
    q_id = rank * b + jnp.arange(b, dtype=jnp.int32)
    scale = jnp.exp(log_scale)
    zero = ring.match_vma(jnp.zeros((), jnp.float32), x)
    neg_inf = ring.match_vma(jnp.full((b,), -jnp.inf, jnp.float32), x)

    def ring_step(step, carry):
        total, lab, other, cands = carry
        k_id_all = blk.owner + ((rank - step) % n_dev) * b

        def tile_body(ci, carry):
            total, lab, other = carry
            sl = lambda v: lax.dynamic_slice_in_dim(v, ci * t, t)  # noqa: E731
            _, logits, z, live = _slice_logits(x, sl(cands), q_id, sl(k_id_all), sl(blk.is_pos),
                                               sl(blk.valid), scale, bias)
            total = total + jnp.sum(jnp.where(live, jax.nn.log_sigmoid(z * logits), 0.0))
            # accuracy: the positive's logit beats every other live candidate of the row
            lab = jnp.maximum(lab, jnp.max(jnp.where(live & (z > 0), logits, -jnp.inf), axis=1))
            other = jnp.maximum(other, jnp.max(jnp.where(live & (z < 0), logits, -jnp.inf), axis=1))
            return total, lab, other

        total, lab, other = lax.fori_loop(0, nc, tile_body, (total, lab, other))
        return total, lab, other, ring.rotate(cands, cfg.axis_name, n_dev)

    total, lab, other, _ = lax.fori_loop(0, n_dev, ring_step, (zero, neg_inf, neg_inf, blk.cands))
    return -total / big_b, jnp.sum((lab > other).astype(jnp.float32))


def _backward(x, p, n, log_scale, bias, g, cfg: _Config):
    b, d = x.shape
    n_dev, rank = ring.size_and_index(cfg.axis_name)
    big_b = b * n_dev
    blk = _block(p, n, cfg)
    t, nc = cfg.tile, blk.cands.shape[0] // cfg.tile
    q_id = rank * b + jnp.arange(b, dtype=jnp.int32)
    scale = jnp.exp(log_scale)
    cdt = blk.cands.dtype
    coef = -g / big_b
    d_x = ring.match_vma(jnp.zeros((b, d), jnp.float32), x)
    d_c = ring.match_vma(jnp.zeros(blk.cands.shape, jnp.float32), x)
    zero = ring.match_vma(jnp.zeros((), jnp.float32), x)

    def ring_step(step, carry):
        d_x, cands, d_c, d_ls, d_b = carry
        k_id_all = blk.owner + ((rank - step) % n_dev) * b

        def tile_body(ci, carry):
            d_x, d_c, d_ls, d_b = carry
            sl = lambda v: lax.dynamic_slice_in_dim(v, ci * t, t)  # noqa: E731
            kblk = sl(cands)
            s, logits, z, live = _slice_logits(x, kblk, q_id, sl(k_id_all), sl(blk.is_pos), sl(blk.valid),
                                               scale, bias)
            dlog = jnp.where(live, coef * z * jax.nn.sigmoid(-z * logits), 0.0)
            d_ls = d_ls + scale * jnp.sum(dlog * s)
            d_b = d_b + jnp.sum(dlog)
            ds = (dlog * scale).astype(cdt)
            d_x = d_x + jnp.dot(ds, kblk, preferred_element_type=jnp.float32)
            dk = lax.dot_general(ds, x, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
            d_c = lax.dynamic_update_slice_in_dim(d_c, sl(d_c) + dk, ci * t, 0)
            return d_x, d_c, d_ls, d_b

        d_x, d_c, d_ls, d_b = lax.fori_loop(0, nc, tile_body, (d_x, d_c, d_ls, d_b))
        cands, d_c = ring.rotate((cands, d_c), cfg.axis_name, n_dev)
        return d_x, cands, d_c, d_ls, d_b

    # after n rotations every block, and the gradient it collected on the way, is home again
    d_x, _, d_c, d_ls, d_b = lax.fori_loop(0, n_dev, ring_step, (d_x, blk.cands, d_c, zero, zero))
    d_p, d_n = d_c[:b], d_c[b:b + n.shape[0]]
    return (d_x.astype(x.dtype), d_p.astype(p.dtype), d_n.astype(n.dtype),
            d_ls.astype(log_scale.dtype), d_b.astype(bias.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _ring_core(x, p, n, log_scale, bias, cfg: _Config):
    """(this device's loss share, its correct count); NOT reduced over the axis (see the module doc)."""
    return _forward(x, p, n, log_scale, bias, cfg)


def _ring_core_fwd(x, p, n, log_scale, bias, cfg):
    return _forward(x, p, n, log_scale, bias, cfg), (x, p, n, log_scale, bias)


def _ring_core_bwd(cfg, res, cts):
    g, _ = cts  # the correct count has no gradient
    return _backward(*res, g, cfg)


_ring_core.defvjp(_ring_core_fwd, _ring_core_bwd)


def tiled_sigmoid_loss(anchors: jax.Array, positives: jax.Array, negatives: jax.Array | None = None, *,
                       log_scale: jax.Array | float, bias: jax.Array | float, axis_name: str | None = None,
                       tile_size: int = DEFAULT_TILE_SIZE) -> tuple[jax.Array, dict[str, jax.Array]]:
    """SigLIP's sigmoid loss over a ``ppermute`` ring of candidate blocks; same result as ``sigmoid_loss``.

    Args:
      anchors: [b, d] (local shard when ``axis_name`` is given).
      positives: [b, d]; positive i belongs to anchor i.
      negatives: optional [b, k, d] hard negatives (z = -1 for every anchor).
      log_scale: t' (scalar, may be a traced learnable parameter); the logit scale is exp(t').
      bias: b (scalar, may be traced and learnable).
      axis_name: the mesh / pmap axis whose devices hold the other shards, or None for one device.
      tile_size: candidate rows per logits slice; memory O(b (1 + k) d + b tile_size) per device.

    Returns:
      (loss, {"accuracy": ...}): float32 global values, identical on every device.
    """
    check_embedding_pair(anchors, positives)
    b, d = anchors.shape
    check_negatives(negatives, b, d)
    if not isinstance(tile_size, int) or isinstance(tile_size, bool) or tile_size < 1:
        raise ValueError(f"tile_size must be a positive int, got {tile_size!r}.")
    if axis_name is not None and not isinstance(axis_name, str):
        raise TypeError(f"axis_name must be one mesh axis name (str) or None, got {axis_name!r}.")
    dtype = jnp.result_type(anchors.dtype, positives.dtype, *(() if negatives is None else (negatives.dtype,)))
    k = 0 if negatives is None else negatives.shape[1]
    x = l2_normalize(jnp.asarray(anchors)).astype(dtype)
    p = l2_normalize(jnp.asarray(positives)).astype(dtype)
    n = (ring.match_vma(jnp.zeros((0, d), dtype), x) if negatives is None
         else l2_normalize(jnp.asarray(negatives)).astype(dtype).reshape(b * k, d))
    # device-varying copies: the transpose of this cast sums the per-device gradient shares
    log_scale = ring.match_vma(jnp.asarray(log_scale, jnp.float32), x)
    bias = ring.match_vma(jnp.asarray(bias, jnp.float32), x)
    cfg = _Config(axis_name, int(min(tile_size, b * (1 + k))), k)
    loss, correct = _ring_core(x, p, n, log_scale, bias, cfg)
    n_dev = 1
    if axis_name is not None:  # outside the custom VJP: JAX transposes it per backend
        loss, correct = lax.psum((loss, correct), axis_name)
        n_dev = lax.axis_size(axis_name)
    return loss, {"accuracy": correct / (b * n_dev)}
