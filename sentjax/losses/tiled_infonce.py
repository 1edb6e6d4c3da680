"""Memory-tiled InfoNCE: the exact contrastive loss and its gradient without the B x B logits.

Same math and signature as :func:`sentjax.losses.infonce.infonce_loss` (the dense reference),
plus ``tile_size``. With ``a_i`` the L2-normalised anchors, candidates ``c_j`` = [all positives of
the global batch (B rows, global anchor order), then all hard negatives (B*k rows, anchor-major)]:

    logits[i, j] = cos(a_i, c_j) / T + w * [c_j is one of anchor i's own hard negatives]
    lse_i        = logsumexp_j logits[i, :]                                   (online, per tile)
    loss_fwd     = mean_i (lse_i - cos(a_i, p_i) / T)
    loss_bwd     = mean_j (logsumexp_i cos(p_j, a_i) / T - cos(p_j, a_j) / T)  (symmetric only)
    loss         = loss_fwd                 or (loss_fwd + loss_bwd) / 2 when symmetric

``w`` is SimCSE's ``z3_weight`` (Gao et al. 2021); the symmetric term is sentence-transformers'
MultipleNegativesSymmetricRankingLoss. The forward pass walks [tile, tile] blocks of the
similarity matrix and keeps an online (max, sum-exp) per anchor row (and per positive column for
the symmetric term), as in Milakov & Gimelshein (2018) / FlashAttention; a ``jax.custom_vjp``
saves only the normalised embeddings and the per-row / per-column log-sum-exps and recomputes each
tile in the backward pass (Inf-CL, Cheng et al. 2024):

    dlogits[i, j] = g_i c_f exp(logits[i, j] - lse_i) + g_j c_b exp(S[i, j] - lse'_j) - g_i (c_f + c_b) [j = i]
    da_i = sum_j dlogits[i, j] c_j / T,   dc_j = sum_i dlogits[i, j] a_i / T

with ``c_f = 1/B`` (``1/(2B)`` symmetric) and ``c_b = 0`` (``1/(2B)`` symmetric), and ``g_i`` the
cotangent received by the device that holds row i (``g_j``: that holds positive j). Memory per
device is O(B_local * (1 + k) * d + tile^2); FLOPs are 4 x 2 B^2 (1 + k) d (one similarity matmul
forward, recompute + two gradient matmuls backward).

Across devices (``axis_name`` given, inside ``jax.shard_map``) the inputs are the local shards.
Each device's candidate block (its positives and hard negatives) travels around the ring with
``lax.ppermute`` together with its per-column statistics (forward) or its accumulated gradient
(backward); after ``n`` steps every block is home again, holding its complete column
log-sum-exp or gradient. No device ever holds more than one remote candidate block, and none holds
more than a [tile, tile] block of logits. The loss is the global mean, identical on every device.

The custom VJP covers only each device's share of that mean (its anchor rows and, symmetric, its
positive columns); the global mean is their ordinary ``lax.psum``, applied outside the custom VJP.
JAX's own transpose of that psum then sets the cotangent each device's backward receives: 1 with
the gradient taken outside ``jax.shard_map`` (or with GradCache inside it, whose per-device
gradients are psum-ed), N under ``jax.pmap`` (gradient inside, then pmean-ed) -- the same factors
as for the dense loss's pmean, so every backend of :mod:`sentjax.parallel.global_grads` is exact.
(With the psum inside the custom VJP the backward always saw 1, and pmap's pmean divided the
gradient by N.) The backward weights each block's column terms by its owner's cotangent, which
travels around the ring with the block.

It is the kernel of the ``infonce`` objective's ``impl="tiled"`` (``--config.objective.impl=tiled
--config.objective.tile_size=2048``; :func:`sentjax.losses.infonce.column_loss`)::

    loss, metrics = tiled_infonce_loss(anchors, positives, negatives, temperature=0.05,
                                       tile_size=2048, axis_name="data")
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from sentjax.losses import ring
from sentjax.losses.checks import check_embedding_pair, check_negatives
from sentjax.losses.panel_infonce import PanelConfig, panel_core, panel_rows
from sentjax.ops import l2_normalize

__all__ = ["tiled_infonce_loss", "DEFAULT_TILE_SIZE"]

DEFAULT_TILE_SIZE = 1024
DEFAULT_PANEL_MIB = 256.0
_NEG_INF = -jnp.inf


class _Config(NamedTuple):
    """Static (hashable) settings of one tiled-loss call."""
    inv_temperature: float
    hard_negative_weight: float
    symmetric: bool
    axis_name: str | None
    tile: int
    k: int  # hard negatives per anchor
    masked: bool  # some tile holds padding rows (b or b*k not a multiple of tile)
    shift: float | None  # fixed log-sum-exp shift (a bound on every logit), or None: online max


# ----------------------------------------------------------------------------------------------
# small helpers


def _l2_normalize(x: jax.Array) -> jax.Array:
    """Row-wise unit vectors computed in float32, cast back to ``x``'s dtype (the tiles' matmul dtype)."""
    return l2_normalize(jnp.asarray(x)).astype(x.dtype)


def _explicit_batch_axis(*xs: jax.Array | None):
    """(mesh, axis) when the [B, ...] inputs are batch-sharded on one axis of an Explicit-axes mesh.

    The tile loop slices rows dynamically, which sharding-in-types rejects on a sharded batch dim;
    such a global-batch call is therefore run as the ring version under ``jax.shard_map``.
    """
    found = set()
    for x in xs:
        if x is None:
            continue
        sharding = getattr(jax.typeof(x), "sharding", None)
        mesh = getattr(sharding, "mesh", None)
        if mesh is None or not getattr(mesh, "explicit_axes", ()):
            continue
        spec = tuple(sharding.spec) + (None,) * (x.ndim - len(sharding.spec))
        if any(s is not None for s in spec[1:]):
            raise ValueError(f"tiled_infonce_loss: only the batch dimension may be sharded, got {sharding.spec}; "
                             "reshard the embeddings to P(batch_axis) first.")
        found.add((mesh, spec[0]))
    found.discard(next((f for f in found if f[1] is None), None))
    if not found:
        return None, None
    if len(found) > 1:
        raise ValueError(f"tiled_infonce_loss: anchors/positives/negatives are sharded differently {found}; "
                         "shard all of them the same way along the batch.")
    mesh, axis = found.pop()
    if isinstance(axis, tuple):
        if len(axis) != 1:
            raise ValueError(f"tiled_infonce_loss: batch sharded over several mesh axes {axis}; call it inside "
                             "jax.shard_map with one axis_name instead.")
        axis = axis[0]
    return mesh, axis


def _pad_rows(x: jax.Array, tile: int) -> jax.Array:
    pad = (-x.shape[0]) % tile
    return jnp.pad(x, ((0, pad), (0, 0))) if pad else x


def _tile_size(b: int, tile_size: int) -> int:
    """The tile side actually used: b itself when it fits in one tile, else the largest divisor of b
    in (tile_size / 2, tile_size] (no padding rows, no masks), else tile_size (padded)."""
    if b <= tile_size:
        return max(b, 1)
    return next((t for t in range(tile_size, tile_size // 2, -1) if b % t == 0), tile_size)


# exp(x - shift) keeps float32's full precision down to exp(-87); with |cos| <= 1 every logit lies
# in [-1/T - |w|, 1/T + max(w, 0)], so a fixed shift at the top is safe while the span stays below this.
_MAX_FIXED_SHIFT_SPAN = 64.0


def _fixed_shift(inv_temperature: float, hard_negative_weight: float) -> float | None:
    """The upper bound of every logit when a fixed shift cannot underflow a row's sum (the row's
    label logit is >= the lower bound), else None (use the online max). The bound has a 1% margin
    for unit vectors rounded in bfloat16, whose cosines can exceed 1 by ~2^-8."""
    top = 1.01 * inv_temperature + max(hard_negative_weight, 0.0)
    span = top + 1.01 * inv_temperature + abs(min(hard_negative_weight, 0.0))
    return top if span <= _MAX_FIXED_SHIFT_SPAN else None


def _lse_update(m: jax.Array, s: jax.Array, x: jax.Array, axis: int,
                shift: float | None = None) -> tuple[jax.Array, jax.Array]:
    """Online log-sum-exp: (m, s) with lse = m + log(s) absorbs the block x along ``axis``.

    With a fixed ``shift``, lse = shift + log(s) and the sum needs no rescale (nor the running max
    first: m is still the running max, kept for the accuracy)."""
    if shift is not None:
        return jnp.maximum(m, jnp.max(x, axis=axis)), s + jnp.sum(jnp.exp(x - shift), axis=axis)
    m_new = jnp.maximum(m, jnp.max(x, axis=axis))
    # A row/column that has seen only masked (-inf) entries keeps m = -inf; shift by 0 there.
    shift = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
    s_new = s * jnp.exp(m - shift) + jnp.sum(jnp.exp(x - jnp.expand_dims(shift, axis)), axis=axis)
    return m_new, s_new


class _Layout(NamedTuple):
    """Per-device padded arrays and the static bookkeeping of the candidate block."""
    queries: jax.Array      # [nq * tile, d] local anchors, zero-padded
    cands: jax.Array        # [nc * tile, d] local positives (padded) then local hard negatives (padded)
    c_owner: jax.Array      # [nc * tile] local anchor index owning each candidate (add src * b)
    c_is_neg: jax.Array     # [nc * tile] bool
    c_valid: jax.Array      # [nc * tile] bool, False on padding
    n_pos_rows: int         # padded number of positive rows (positives come first in cands)


def _layout(a: jax.Array, p: jax.Array, n: jax.Array, cfg: _Config) -> _Layout:
    b, t, k = a.shape[0], cfg.tile, cfg.k
    p_pad, n_pad = _pad_rows(p, t), _pad_rows(n, t)
    n_pos, n_neg = p_pad.shape[0], n_pad.shape[0]
    pos_idx = jnp.arange(n_pos, dtype=jnp.int32)
    neg_idx = jnp.arange(n_neg, dtype=jnp.int32)
    owner = jnp.concatenate([pos_idx, neg_idx // max(k, 1)])
    is_neg = jnp.concatenate([jnp.zeros(n_pos, bool), jnp.ones(n_neg, bool)])
    valid = jnp.concatenate([pos_idx < b, neg_idx < b * k])
    return _Layout(_pad_rows(a, t), jnp.concatenate([p_pad, n_pad], axis=0), owner, is_neg, valid,
                   n_pos)


def _tile_logits(q, q_id, kblk, k_id, k_neg, k_valid, cfg: _Config):
    """One [tile, tile] block: raw scaled cosines S and the masked, biased logits L."""
    s = ring.dot_nt(q, kblk) * cfg.inv_temperature
    logits = s
    if cfg.hard_negative_weight != 0.0:
        own_neg = k_neg[None, :] & (k_id[None, :] == q_id[:, None])
        logits = logits + jnp.where(own_neg, jnp.float32(cfg.hard_negative_weight), 0.0)
    if cfg.masked:
        logits = jnp.where(k_valid[None, :], logits, _NEG_INF)
    return s, logits


# ----------------------------------------------------------------------------------------------
# forward: online statistics over the ring and the tiles


def _forward_stats(a: jax.Array, p: jax.Array, n: jax.Array, cfg: _Config):
    """(local loss share, local n_correct, lse_row [b], lse_col [b]) of this device's shard.

    The local share holds this device's anchor rows (and, symmetric, its positive columns) of the
    global mean, so the psum of the shares over the axis is the global loss."""
    b, t = a.shape[0], cfg.tile
    n_dev, rank = ring.size_and_index(cfg.axis_name)
    big_b = b * n_dev
    lay = _layout(a, p, n, cfg)
    nq, nc = lay.queries.shape[0] // t, lay.cands.shape[0] // t
    q_valid_all = jnp.arange(nq * t) < b
    # padded query rows get id -1 so they never match a label or an own hard negative
    q_ids_all = jnp.where(q_valid_all, rank * b + jnp.arange(nq * t, dtype=jnp.int32), -1)

    def full(shape, value, ref):
        return ring.match_vma(jnp.full(shape, value, jnp.float32), ref)

    # row state: running max, sum-exp, label logit, max over the candidates ranked before the label
    row = tuple(full((nq * t,), v, a) for v in (_NEG_INF, 0.0, _NEG_INF, _NEG_INF))

    def ring_step(step, carry):
        row, cands, col = carry
        src = (rank - step) % n_dev  # device whose candidate block we hold now
        c_id_all = lay.c_owner + src * b

        def q_body(qi, carry):
            row, col = carry
            q = lax.dynamic_slice_in_dim(lay.queries, qi * t, t)
            q_id = lax.dynamic_slice_in_dim(q_ids_all, qi * t, t)
            q_valid = lax.dynamic_slice_in_dim(q_valid_all, qi * t, t)
            r_state = tuple(lax.dynamic_slice_in_dim(x, qi * t, t) for x in row)

            def c_body(ci, carry):
                (m, s, lab, mb), col = carry
                sl = lambda x: lax.dynamic_slice_in_dim(x, ci * t, t)  # noqa: E731
                k_id, k_neg, k_valid = sl(c_id_all), sl(lay.c_is_neg), sl(lay.c_valid)
                raw, logits = _tile_logits(q, q_id, sl(cands), k_id, k_neg, k_valid, cfg)
                m, s = _lse_update(m, s, logits, axis=1, shift=cfg.shift)
                # accuracy as jnp.argmax (first maximum) over [positives..., negatives...]: correct iff
                # the label logit is the row max and no candidate ranked before it ties. Only positive
                # tiles that reach an id <= the tile's largest query id can hold a label or an earlier one.
                def label_stats(lab_mb):
                    lab, mb = lab_mb
                    is_lab = k_id[None, :] == q_id[:, None]
                    before = k_id[None, :] < q_id[:, None]
                    return (jnp.maximum(lab, jnp.max(jnp.where(is_lab, logits, _NEG_INF), axis=1)),
                            jnp.maximum(mb, jnp.max(jnp.where(before, logits, _NEG_INF), axis=1)))

                reaches = ~k_neg[0] & (k_id[0] <= jnp.max(q_id))  # tiles are all-positive or all-negative
                lab, mb = lax.cond(reaches, label_stats, lambda x: x, (lab, mb))
                if cfg.symmetric:
                    cm, cs = (lax.dynamic_slice_in_dim(x, ci * t, t) for x in col)
                    # positives as queries, anchors as candidates: the un-biased cosines, columns
                    col_logits = jnp.where(q_valid[:, None], raw, _NEG_INF) if cfg.masked else raw
                    cm, cs = _lse_update(cm, cs, col_logits, axis=0, shift=cfg.shift)
                    col = tuple(lax.dynamic_update_slice_in_dim(x, v, ci * t, 0)
                                for x, v in zip(col, (cm, cs)))
                return (m, s, lab, mb), col

            r_state, col = lax.fori_loop(0, nc, c_body, (r_state, col))
            row = tuple(lax.dynamic_update_slice_in_dim(x, v, qi * t, 0) for x, v in zip(row, r_state))
            return row, col

        row, col = lax.fori_loop(0, nq, q_body, (row, col))
        cands, col = ring.rotate((cands, col), cfg.axis_name, n_dev)
        return row, cands, col

    n_col = lay.cands.shape[0] if cfg.symmetric else 0  # column statistics only for the symmetric term
    col = (full((n_col,), _NEG_INF, a), full((n_col,), 0.0, a))
    row, _, col = lax.fori_loop(0, n_dev, ring_step, (row, lay.cands, col))

    m, s, lab, mb = (x[:b] for x in row)
    lse_row = (m if cfg.shift is None else cfg.shift) + jnp.log(s)
    correct = jnp.sum(((lab >= m) & (lab > mb)).astype(jnp.float32))
    sym = cfg.symmetric
    c_f = 0.5 / big_b if sym else 1.0 / big_b
    c_b = 0.5 / big_b if sym else 0.0
    local = c_f * jnp.sum(lse_row) - (c_f + c_b) * jnp.sum(lab)
    if sym:
        lse_col = (col[0][:b] if cfg.shift is None else cfg.shift) + jnp.log(col[1][:b])
        local = local + c_b * jnp.sum(lse_col)
    else:
        lse_col = jnp.zeros((0,), jnp.float32)
    # This device's share of the global loss and its correct count: the caller psums them
    # OUTSIDE the custom VJP (see tiled_infonce_loss), so JAX transposes that reduction itself.
    return local, correct, lse_row, lse_col


# ----------------------------------------------------------------------------------------------
# backward: recompute tiles, accumulate gradients; candidate gradients ride the ring home


def _backward(a, p, n, lse_row, lse_col, g, cfg: _Config):
    """Cotangents of this device's (a, p, n) given ``g``, THIS device's cotangent of its loss share.

    Row terms (anchor i) are weighted by the cotangent of the anchor's device (local ``g``), column
    terms (positive j, symmetric) by that of the column's device, which travels with its block.
    """
    b, t = a.shape[0], cfg.tile
    n_dev, rank = ring.size_and_index(cfg.axis_name)
    big_b = b * n_dev
    sym = cfg.symmetric
    c_f = 0.5 / big_b if sym else 1.0 / big_b
    c_b = 0.5 / big_b if sym else 0.0
    g = g.astype(jnp.float32)
    lay = _layout(a, p, n, cfg)
    nq, nc = lay.queries.shape[0] // t, lay.cands.shape[0] // t
    q_valid_all = jnp.arange(nq * t) < b
    # padded query rows get id -1 so they never match a label or an own hard negative
    q_ids_all = jnp.where(q_valid_all, rank * b + jnp.arange(nq * t, dtype=jnp.int32), -1)
    lse_row_all = jnp.pad(lse_row, (0, nq * t - b))
    # per-candidate column lse (only the positives' entries are used); travels with the block
    lse_col_all = ring.match_vma(jnp.pad(lse_col, (0, lay.cands.shape[0] - lse_col.shape[0])), a)
    d = a.shape[1]
    d_q = ring.match_vma(jnp.zeros((nq * t, d), jnp.float32), a)
    # Candidate gradients are accumulated transposed, [d, candidates]: dk^T = q^T ds is a plain
    # [d, t] x [t, t] matmul on a once-transposed query block, where dk = ds^T q (contracting the
    # tile's rows) takes XLA:CPU's slower transposed-operand path (116 vs 169 GFLOP/s at t = 1024).
    d_ct = ring.match_vma(jnp.zeros((d, lay.cands.shape[0]), jnp.float32), a)
    queries_t = lay.queries.T
    cdt = lay.cands.dtype

    def ring_step(step, carry):
        d_q, cands, c_lse, c_g, d_ct = carry
        src = (rank - step) % n_dev
        c_id_all = lay.c_owner + src * b

        def q_body(qi, carry):
            d_q, d_ct = carry
            q = lax.dynamic_slice_in_dim(lay.queries, qi * t, t)
            q_t = lax.dynamic_slice_in_dim(queries_t, qi * t, t, axis=1)
            q_id = lax.dynamic_slice_in_dim(q_ids_all, qi * t, t)
            q_valid = lax.dynamic_slice_in_dim(q_valid_all, qi * t, t)
            q_lse = lax.dynamic_slice_in_dim(lse_row_all, qi * t, t)

            def c_body(ci, carry):
                dq_acc, d_ct = carry
                sl = lambda x: lax.dynamic_slice_in_dim(x, ci * t, t)  # noqa: E731
                kblk, k_id, k_neg, k_valid = sl(cands), sl(c_id_all), sl(lay.c_is_neg), sl(lay.c_valid)
                raw, logits = _tile_logits(q, q_id, kblk, k_id, k_neg, k_valid, cfg)
                dlog = jnp.exp(logits - q_lse[:, None])
                if cfg.masked:
                    live = q_valid[:, None] & k_valid[None, :]
                    dlog = jnp.where(live, dlog, 0.0)
                dlog = dlog * (g * c_f)
                if sym:
                    col = jnp.exp(raw - sl(c_lse)[None, :])
                    col_live = ~k_neg[None, :] & (live if cfg.masked else True)
                    dlog = dlog + jnp.where(col_live, col, 0.0) * (c_g * c_b)
                ds = (dlog * cfg.inv_temperature).astype(cdt)
                dq_acc = dq_acc + jnp.dot(ds, kblk, preferred_element_type=jnp.float32)
                dk_t = jnp.dot(q_t, ds, preferred_element_type=jnp.float32)
                old = lax.dynamic_slice_in_dim(d_ct, ci * t, t, axis=1)
                d_ct = lax.dynamic_update_slice_in_dim(d_ct, old + dk_t, ci * t, 1)
                return dq_acc, d_ct

            dq0 = lax.dynamic_slice_in_dim(d_q, qi * t, t)
            dq_acc, d_ct = lax.fori_loop(0, nc, c_body, (dq0, d_ct))
            return lax.dynamic_update_slice_in_dim(d_q, dq_acc, qi * t, 0), d_ct

        d_q, d_ct = lax.fori_loop(0, nq, q_body, (d_q, d_ct))
        cands, c_lse, c_g, d_ct = ring.rotate((cands, c_lse, c_g, d_ct), cfg.axis_name, n_dev)
        return d_q, cands, c_lse, c_g, d_ct

    # the block owner's cotangent rides with the block (only the symmetric column term uses it)
    d_q, _, _, _, d_ct = lax.fori_loop(0, n_dev, ring_step, (d_q, lay.cands, lse_col_all, g, d_ct))
    d_c = d_ct.T
    # the label logit cos(a_i, p_i)/T enters with weight -(c_f + c_b); row i and column i are local
    lab_coef = g * (c_f + c_b) * cfg.inv_temperature
    a32, p32 = a.astype(jnp.float32), p.astype(jnp.float32)
    d_a = d_q[:b] - lab_coef * p32
    d_p = d_c[:b] - lab_coef * a32
    d_n = d_c[lay.n_pos_rows:lay.n_pos_rows + n.shape[0]]
    return d_a.astype(a.dtype), d_p.astype(p.dtype), d_n.astype(n.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _tiled_core(a: jax.Array, p: jax.Array, n: jax.Array, cfg: _Config):
    """(this device's loss share, its n_correct) of L2-normalised a [b, d], p [b, d], n [b*k, d].

    Deliberately NOT reduced over ``cfg.axis_name``: the global psum is applied outside, by
    ordinary differentiable ``lax.psum``, so the cotangent this VJP receives is whatever JAX's
    transpose of that psum gives under the caller's backend (1 under shard_map / jit, N under
    pmap, where the gradient is taken per device and then pmean-ed), exactly as for the dense loss.
    """
    loss, correct, _, _ = _forward_stats(a, p, n, cfg)
    return loss, correct


def _tiled_core_fwd(a, p, n, cfg):
    loss, correct, lse_row, lse_col = _forward_stats(a, p, n, cfg)
    return (loss, correct), (a, p, n, lse_row, lse_col)


def _tiled_core_bwd(cfg, res, cts):
    a, p, n, lse_row, lse_col = res
    g, _ = cts  # the accuracy count has no gradient
    return _backward(a, p, n, lse_row, lse_col, g, cfg)


_tiled_core.defvjp(_tiled_core_fwd, _tiled_core_bwd)


# ----------------------------------------------------------------------------------------------
# public API


def _check_inputs(anchors, positives, negatives, temperature, tile_size, axis_name):
    check_embedding_pair(anchors, positives)
    check_negatives(negatives, anchors.shape[0], anchors.shape[1])
    try:
        temperature = float(temperature)
    except (TypeError, jax.errors.ConcretizationTypeError) as e:
        raise TypeError("tiled_infonce_loss needs a concrete Python float temperature (a traced or learnable "
                        "temperature is not supported; use the dense infonce_loss for that).") from e
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if not isinstance(tile_size, int) or isinstance(tile_size, bool) or tile_size < 1:
        raise ValueError(f"tile_size must be a positive int, got {tile_size!r}.")
    if axis_name is not None and not isinstance(axis_name, str):
        raise TypeError(f"axis_name must be a single mesh axis name (str) or None, got {axis_name!r}.")
    return temperature


def tiled_infonce_loss(anchors: jax.Array, positives: jax.Array, negatives: jax.Array | None = None, *,
                       temperature: float = 0.05, symmetric: bool = False,
                       hard_negative_weight: float = 0.0, axis_name: str | None = None,
                       tile_size: int = DEFAULT_TILE_SIZE,
                       panel_mib: float = DEFAULT_PANEL_MIB) -> tuple[jax.Array, dict[str, jax.Array]]:
    """InfoNCE over [tile, tile] blocks with an exact custom gradient; same result as ``infonce_loss``.

    Args:
      anchors: [b, d] anchor embeddings (local shard when ``axis_name`` is given).
      positives: [b, d]; positive i belongs to anchor i.
      negatives: optional [b, k, d] hard negatives; row i's k negatives belong to anchor i.
      temperature: T > 0, a Python float (logits are cos / T).
      symmetric: add the positives-as-queries term and average the two (see module docstring).
      hard_negative_weight: w added to the logits of each anchor's own hard negatives (SimCSE z3_weight).
      axis_name: mesh axis of the enclosing ``jax.shard_map`` whose devices hold the other shards.
      tile_size: side of the similarity blocks; memory O(b (1 + k) d + tile_size^2) per device.
      panel_mib: with ``symmetric=False``, use the row-panel kernel (:mod:`sentjax.losses.panel_infonce`:
        3 matmuls instead of 4, candidates gathered) when at least 32 rows (or the whole local batch)
        against all B (1 + k) candidates fit in this many MiB; 0 always uses the [tile, tile] ring.

    Returns:
      (loss, {"accuracy": ...}): float32 scalars, both global means over the B = b * devices anchors.
      Embeddings are L2-normalised here (autodiff handles the normalisation's Jacobian); matmuls
      run in the embeddings' dtype with float32 accumulation, statistics are float32.
    """
    temperature = _check_inputs(anchors, positives, negatives, temperature, tile_size, axis_name)
    if not panel_mib >= 0:
        raise ValueError(f"panel_mib must be >= 0, got {panel_mib!r}.")
    dtype = jnp.result_type(anchors.dtype, positives.dtype,
                            *(() if negatives is None else (negatives.dtype,)))
    b, d = anchors.shape
    k = 0 if negatives is None else negatives.shape[1]
    if axis_name is None:
        mesh, axis = _explicit_batch_axis(anchors, positives, negatives)
        if axis is not None:
            spec = jax.sharding.PartitionSpec(axis)
            local = functools.partial(tiled_infonce_loss, temperature=temperature, symmetric=symmetric,
                                      hard_negative_weight=hard_negative_weight, axis_name=axis,
                                      tile_size=tile_size, panel_mib=panel_mib)
            if negatives is None:
                return jax.shard_map(lambda a, p: local(a, p), mesh=mesh, in_specs=(spec, spec),
                                     out_specs=jax.sharding.PartitionSpec())(anchors, positives)
            return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, spec),
                                 out_specs=jax.sharding.PartitionSpec())(anchors, positives, negatives)
    a = _l2_normalize(anchors.astype(dtype))
    p = _l2_normalize(positives.astype(dtype))
    n = (ring.match_vma(jnp.zeros((0, d), dtype), a) if negatives is None
         else _l2_normalize(negatives.astype(dtype).reshape(b * k, d)))
    n_dev = 1 if axis_name is None else lax.axis_size(axis_name)
    rows = 0 if symmetric else panel_rows(b, b * n_dev * (1 + k), panel_mib * 2 ** 20)
    if rows:
        loss, correct = panel_core(a, p, n, PanelConfig(1.0 / temperature, float(hard_negative_weight),
                                                        axis_name, rows, k))
    else:
        tile = _tile_size(b, int(tile_size))
        cfg = _Config(1.0 / temperature, float(hard_negative_weight), bool(symmetric), axis_name, tile, k,
                      masked=b % tile != 0, shift=_fixed_shift(1.0 / temperature, float(hard_negative_weight)))
        loss, correct = _tiled_core(a, p, n, cfg)
    if axis_name is not None:  # outside the custom VJP: JAX transposes it per backend (see _tiled_core)
        loss, correct = lax.psum((loss, correct), axis_name)
    return loss, {"accuracy": correct / (b * n_dev)}
