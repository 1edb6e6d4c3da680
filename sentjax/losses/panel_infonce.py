"""Row-panel InfoNCE: the tiled loss's other kernel, three matmuls and one exp per logit.

:mod:`sentjax.losses.tiled_infonce` walks [tile, tile] blocks and must recompute every block in the
backward pass, because a row's log-sum-exp is final only after the row's last block: four matmuls
of 2 B^2 (1 + k) d and two exps per logit. When a panel of ``rows`` query rows against ALL the
candidates ([rows, B (1 + k)] float32) fits in memory, the row's log-sum-exp is final within the
panel, so the gradient can be taken right away (Inf-CL's "intra-GPU" panel, Cheng et al. 2024):

    S       = q c^T / T (+ w on each row's own hard negatives)        [rows, N]   matmul 1
    lse     = logsumexp_j S[:, j];  P = exp(S - lse) / B               (one exp per logit)
    dq      = P c / T - p_label / (B T)                                [rows, d]   matmul 2
    dc^T   += q^T P / T   (label column: - a / (B T))                  [d, N]      matmul 3

That is the 3-matmul FLOP floor. Nothing of size [B, B] is ever built; the panel is
O(rows x N). The custom VJP's forward therefore computes the gradient for a unit cotangent and
saves it (O(N d), like the inputs); the backward only scales it by the cotangent it receives.

Across devices (``axis_name``) each device gathers every candidate (positives in global order,
then hard negatives, as the dense loss), runs its own anchor rows, and the candidate gradients
go home with ``lax.psum_scatter`` in the backward pass, weighted by each device's own cotangent
(1 under ``jax.shard_map``, N under ``jax.pmap``; see tiled_infonce's notes on the psum outside
the custom VJP). Memory per device is O(N d + rows x N) instead of the ring's O(b (1 + k) d +
tile^2): the candidates are gathered, as in the dense loss.

Only the one-directional loss is computed here (``symmetric=False``): the symmetric term's
column log-sum-exp needs every row first, and the ring kernel already shares its four matmuls
between both directions. ``tiled_infonce_loss`` picks this kernel when the panel fits its
``panel_mib`` budget.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from sentjax.losses import ring

__all__ = ["panel_rows", "panel_core", "PanelConfig"]


class PanelConfig(NamedTuple):
    """Static (hashable) settings of one panel-kernel call."""
    inv_temperature: float
    hard_negative_weight: float
    axis_name: str | None
    rows: int  # query rows per panel
    k: int     # hard negatives per anchor


MIN_ROWS = 32  # below this the panel's matmuls run far from the machine's rate: use the ring kernel


def panel_rows(b: int, n_cands: int, budget_bytes: float) -> int:
    """Query rows per panel: what fits ``budget_bytes`` with the panel's float32 logits and
    probabilities ([rows, n_cands] each), preferring a divisor of ``b`` above half of that (no
    padded rows); 0 when fewer than ``MIN_ROWS`` (and not all of ``b``) fit."""
    fit = int(budget_bytes // (2 * 4 * max(n_cands, 1)))
    if fit >= b:
        return max(b, 1)
    if fit < MIN_ROWS:
        return 0
    return next((t for t in range(fit, fit // 2, -1) if b % t == 0), fit)


def _candidates(p, n, axis_name, n_dev):
    """All candidates in the dense loss's order: the global batch's positives, then its negatives."""
    if n_dev == 1:
        return jnp.concatenate([p, n], axis=0)
    gathered = [lax.all_gather(x, axis_name, tiled=True) for x in (p, n) if x.shape[0]]  # XLA: no empty gathers
    return jnp.concatenate(gathered, axis=0) if len(gathered) > 1 else gathered[0]


def _panels(a, p, n, cfg: PanelConfig, with_grad: bool):
    """(loss share, n_correct[, d_a, d_cands_all]) of this device's anchor rows; gradients for a
    unit cotangent of the share, d_cands_all over the gathered candidates [N, d] (not yet summed
    over devices)."""
    b, d = a.shape
    t, k = cfg.rows, cfg.k
    n_dev, rank = ring.size_and_index(cfg.axis_name)
    big_b = b * n_dev
    cands = _candidates(p, n, cfg.axis_name, n_dev)  # [N, d], N = B (1 + k)
    n_c = cands.shape[0]
    c_idx = jnp.arange(n_c, dtype=jnp.int32)
    c_owner = jnp.where(c_idx < big_b, c_idx, (c_idx - big_b) // max(k, 1))  # anchor each candidate serves
    c_is_neg = c_idx >= big_b
    pad = (-b) % t
    queries = jnp.pad(a, ((0, pad), (0, 0))) if pad else a
    n_q = queries.shape[0] // t
    q_ids_all = rank * b + jnp.arange(n_q * t, dtype=jnp.int32)  # global anchor id = its label column
    coef = 1.0 / big_b

    def body(qi, carry):
        loss, correct, d_q, d_ct = carry
        q = lax.dynamic_slice_in_dim(queries, qi * t, t)
        q_id = lax.dynamic_slice_in_dim(q_ids_all, qi * t, t)
        q_valid = (qi * t + jnp.arange(t)) < b
        # The 1/T scale and the bias are applied inside each fused pass over the raw cosines (an
        # extra pass over a panel that outgrows the cache costs as much as a third of its matmul).
        raw = ring.dot_nt(q, cands)

        def logits_of(x):
            x = x * cfg.inv_temperature
            if cfg.hard_negative_weight != 0.0:
                own = c_is_neg[None, :] & (c_owner[None, :] == q_id[:, None])
                x = x + jnp.where(own, jnp.float32(cfg.hard_negative_weight), 0.0)
            return x

        logits = logits_of(raw)
        m = jnp.max(logits, axis=1)
        lse = m + jnp.log(jnp.sum(jnp.exp(logits - m[:, None]), axis=1))
        label_col = jnp.clip(q_id, 0, n_c - 1)[:, None]
        label = jnp.take_along_axis(raw, label_col, axis=1)[:, 0] * cfg.inv_temperature  # no bias on positives
        # accuracy as jnp.argmax (first maximum): the label is the row max and no earlier column ties
        # (a masked max instead of argmax, whose variadic reduce XLA:CPU does not vectorise)
        before = jnp.max(jnp.where(c_idx[None, :] < q_id[:, None], logits, -jnp.inf), axis=1)
        loss = loss + coef * jnp.sum(jnp.where(q_valid, lse - label, 0.0))
        correct = correct + jnp.sum((q_valid & (label >= m) & (label > before)).astype(jnp.float32))
        if with_grad:
            scale = jnp.where(q_valid, coef * cfg.inv_temperature, 0.0)[:, None]
            probs = (jnp.exp(logits - lse[:, None]) * scale).astype(cands.dtype)
            d_q = lax.dynamic_update_slice_in_dim(
                d_q, jnp.dot(probs, cands, preferred_element_type=jnp.float32), qi * t, 0)
            q_t = lax.dynamic_slice_in_dim(queries_t, qi * t, t, axis=1)
            d_ct = d_ct + jnp.dot(q_t, probs, preferred_element_type=jnp.float32)
        return loss, correct, d_q, d_ct

    zero = ring.match_vma(jnp.zeros((), jnp.float32), a)
    queries_t = queries.T
    if with_grad:
        d_q = ring.match_vma(jnp.zeros((n_q * t, d), jnp.float32), a)
        d_ct = ring.match_vma(jnp.zeros((d, n_c), jnp.float32), a)
    else:
        d_q = d_ct = ring.match_vma(jnp.zeros((0,), jnp.float32), a)
    loss, correct, d_q, d_ct = lax.fori_loop(0, n_q, body, (zero, zero, d_q, d_ct))
    if not with_grad:
        return loss, correct
    lab = coef * cfg.inv_temperature
    d_a = d_q[:b] - lab * p.astype(jnp.float32)
    return loss, correct, d_a, d_ct.T


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def panel_core(a: jax.Array, p: jax.Array, n: jax.Array, cfg: PanelConfig):
    """(this device's loss share, its n_correct) of L2-normalised a [b, d], p [b, d], n [b*k, d];
    unreduced over ``cfg.axis_name`` (the caller psums, outside the custom VJP)."""
    return _panels(a, p, n, cfg, with_grad=False)


def _panel_fwd(a, p, n, cfg):
    loss, correct, d_a, d_c = _panels(a, p, n, cfg, with_grad=True)
    return (loss, correct), (a, p, n, d_a, d_c)


def _panel_bwd(cfg, res, cts):
    a, p, n, d_a, d_c = res
    g = cts[0].astype(jnp.float32)  # this device's cotangent; the accuracy count has none
    b = a.shape[0]
    n_dev, _ = ring.size_and_index(cfg.axis_name)
    d_c = g * d_c
    d_cp, d_cn = d_c[:b * n_dev], d_c[b * n_dev:]
    if n_dev > 1:  # each device's rows gave every candidate a share: sum them at the owner
        d_cp = lax.psum_scatter(d_cp, cfg.axis_name, tiled=True)
        if n.shape[0]:
            d_cn = lax.psum_scatter(d_cn, cfg.axis_name, tiled=True)
        else:
            d_cn = ring.match_vma(jnp.zeros(n.shape, jnp.float32), n)
    # the label logit cos(a_i, p_i)/T enters with weight -1/B; row i and positive i live together
    d_p = d_cp - g * (cfg.inv_temperature / (b * n_dev)) * a.astype(jnp.float32)
    return (g * d_a).astype(a.dtype), d_p.astype(p.dtype), d_cn.astype(n.dtype)


panel_core.defvjp(_panel_fwd, _panel_bwd)
