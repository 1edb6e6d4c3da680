"""InfoNCE / multiple-negatives ranking loss with exact cross-device in-batch negatives.

Papers: van den Oord et al. 2018 (InfoNCE, "CPC"); Henderson et al. 2017 (multiple negatives
ranking); Gao et al. 2021 (SimCSE, hard negatives and ``z3_weight``). The symmetric term is
sentence-transformers' MultipleNegativesSymmetricRankingLoss.

Shapes (local to one device when ``axis_name`` is given, else the whole batch)::

    anchors [b, d], positives [b, d], negatives [b, k, d] or None

With ``n`` devices the global batch has ``B = n * b`` anchors in device-major order (device 0's
rows, then device 1's, ...). All embeddings are L2-normalised here, so ``s(x, y) = cos(x, y)``.
Candidates ``c`` = [the B positives in global anchor order, then the B*k hard negatives,
anchor-major: the k negatives of global anchor 0, then of anchor 1, ...]::

    logits[i, j] = s(a_i, c_j) / T + w * [c_j is one of anchor i's own hard negatives]
    loss_fwd     = mean_i ( logsumexp_j logits[i, :] - logits[i, i] )
    loss_bwd     = mean_j ( logsumexp_i s(p_j, a_i) / T - s(p_j, a_j) / T )      (symmetric)
    loss         = loss_fwd, or (loss_fwd + loss_bwd) / 2 when symmetric
    accuracy     = mean_i [ argmax_j logits[i, :] == i ]

Across devices the anchors stay local; positives and negatives (and, for the symmetric term,
anchors) are all-gathered with ``lax.all_gather(..., tiled=True)``. Because every device holds its
own anchors' negatives anchor-major, the tiled gather of the flattened ``[b*k, d]`` blocks is
already anchor-major over the global batch (the order sentence-transformers got wrong before its
PR #3453). Device ``r``'s local anchor ``i`` is global anchor ``r*b + i``: its label and the
positions of its own hard negatives are offset by ``lax.axis_index * b``. The loss is the
``pmean`` of the per-device means, i.e. the mean over all B anchors, identical on every device;
it is NOT divided by the device count (the SimCSE / Tevatron ``1/world_size`` bug).

The gather's transpose is a reduce-scatter, so when the gradient is taken OUTSIDE ``shard_map``
(see :mod:`sentjax.parallel.global_grads`) every candidate receives the gradient from every
device's anchors and the result equals the single-device gradient on the concatenated batch.

Numerics: similarities and the log-sum-exp are computed in float32 whatever the input dtype
(bfloat16 embeddings at T = 0.01 give logits up to 100, far beyond bfloat16's 8-bit mantissa).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from sentjax.ops import l2_normalize

__all__ = ["infonce_loss", "check_embedding_pair", "check_temperature"]


def check_embedding_pair(u: jax.Array, v: jax.Array, names: tuple[str, str] = ("anchors", "positives")
                         ) -> None:
    """Raises a clear error unless ``u`` and ``v`` are floating ``[batch, dim]`` arrays of one shape."""
    for name, x in zip(names, (u, v)):
        if getattr(x, "ndim", None) != 2:
            raise ValueError(f"{name} must be a [batch, dim] array, got shape {getattr(x, 'shape', None)}; "
                             "pass one embedding per row.")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"{name} must be floating point (float32 or bfloat16), got {x.dtype}.")
    if u.shape != v.shape:
        raise ValueError(f"{names[0]} {u.shape} and {names[1]} {v.shape} must have the same [batch, dim] "
                         f"shape (row i of {names[1]} belongs to row i of {names[0]}); check that both "
                         "columns come from the same batch.")
    if u.shape[0] == 0:
        raise ValueError(f"the batch is empty: {names[0]} has 0 rows.")


def check_negatives(negatives: jax.Array | None, b: int, d: int) -> None:
    """Raises a clear error unless ``negatives`` is None or a floating ``[b, k, d]`` array."""
    if negatives is None:
        return
    if getattr(negatives, "ndim", None) != 3 or negatives.shape[0] != b or negatives.shape[2] != d:
        raise ValueError(f"negatives must be [batch, k, dim] = [{b}, k, {d}], got "
                         f"{getattr(negatives, 'shape', None)}; for one hard negative per anchor use "
                         "negatives[:, None, :], and keep the k negatives of an anchor together.")
    if not jnp.issubdtype(negatives.dtype, jnp.floating):
        raise TypeError(f"negatives must be floating point, got {negatives.dtype}.")


def check_temperature(temperature) -> None:
    """Raises unless a concrete temperature is > 0 (a traced, learnable one is not checked)."""
    try:
        t = float(temperature)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return
    if not t > 0:
        raise ValueError(f"temperature must be > 0 (logits are divided by it), got {temperature}; "
                         "typical values are 0.01-0.1 (default 0.05).")


def infonce_loss(anchors: jax.Array, positives: jax.Array, negatives: jax.Array | None = None, *,
                 temperature: float = 0.05, symmetric: bool = False, hard_negative_weight: float = 0.0,
                 axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """InfoNCE with in-batch (and optionally global, cross-device) negatives; see the module doc.

    Args:
      anchors: ``[b, d]`` anchor embeddings (local shard when ``axis_name`` is given).
      positives: ``[b, d]``; row i is anchor i's positive.
      negatives: ``[b, k, d]`` hard negatives of each anchor, or None.
      temperature: T > 0 dividing the cosine similarities.
      symmetric: add the positives-as-queries term (averaged with the forward term).
      hard_negative_weight: ``w`` added to the logits of each anchor's own hard negatives.
      axis_name: mesh / pmap axis over which the batch is split, or None for one device.

    Returns:
      ``(loss, {"accuracy": ...})``: float32 scalars, means over the global batch.
    """
    check_embedding_pair(anchors, positives)
    b, d = anchors.shape
    check_negatives(negatives, b, d)
    check_temperature(temperature)
    if axis_name is not None and not isinstance(axis_name, str):
        raise TypeError(f"axis_name must be one mesh axis name (str) or None, got {axis_name!r}.")

    def gather(x):
        return x if axis_name is None else lax.all_gather(x, axis_name, tiled=True)

    offset = 0 if axis_name is None else lax.axis_index(axis_name) * b
    a, p = l2_normalize(jnp.asarray(anchors)), l2_normalize(jnp.asarray(positives))
    inv_t = 1.0 / jnp.asarray(temperature, jnp.float32)
    rows = jnp.arange(b)
    labels = offset + rows  # global index of each local anchor's positive
    logits = (a @ gather(p).T) * inv_t  # [b, B]
    if negatives is not None and negatives.shape[1] > 0:
        k = negatives.shape[1]
        n_all = gather(l2_normalize(jnp.asarray(negatives)).reshape(b * k, d))  # [B*k, d], anchor-major
        neg = (a @ n_all.T) * inv_t  # [b, B*k]
        own = (jnp.arange(n_all.shape[0])[None, :] // k) == labels[:, None]
        logits = jnp.concatenate([logits, neg + hard_negative_weight * own], axis=1)
    pos = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    loss = jnp.mean(jax.nn.logsumexp(logits, axis=1) - pos)
    if symmetric:
        back = (p @ gather(a).T) * inv_t  # [b, B]: local positives against all anchors
        back_pos = jnp.take_along_axis(back, labels[:, None], axis=1)[:, 0]
        loss = (loss + jnp.mean(jax.nn.logsumexp(back, axis=1) - back_pos)) / 2
    accuracy = jnp.mean((jnp.argmax(logits, axis=1) == labels).astype(jnp.float32))
    if axis_name is not None:
        loss, accuracy = lax.pmean((loss, accuracy), axis_name)
    return loss, {"accuracy": accuracy}
