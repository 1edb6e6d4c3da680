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

Learnable temperature (CLIP, Radford et al. 2021, sec. 2.5; ``learn_temperature=True``): the logit
scale ``1/T = exp(s)`` with ``s = params["head"]["log_scale"]`` trained from ``log(1/temperature)``,
kept in ``[0, log max_logit_scale]`` (1/T <= 100, as CLIP) both in the forward pass and by a
projection after each optimizer update (``clip_head``; open_clip clamps the parameter in place).
Its gradient is a sum over the batch like any parameter's: exact across devices by the same rules.

Numerics: similarities and the log-sum-exp are computed in float32 whatever the input dtype
(bfloat16 embeddings at T = 0.01 give logits up to 100, far beyond bfloat16's 8-bit mantissa).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax import lax

from sentjax.losses.checks import (check_embedding_pair, check_negatives, check_temperature,
                                   negatives_per_anchor)
from sentjax.losses.registry import ObjectiveSpec, need
from sentjax.ops import l2_normalize

__all__ = ["Config", "OBJECTIVE", "CITATION", "IMPLS", "column_loss", "infonce_loss", "check_embedding_pair",
           "check_temperature", "init_temperature_head", "clip_temperature_head"]


def infonce_loss(anchors: jax.Array, positives: jax.Array, negatives: jax.Array | None = None, *,
                 temperature: float = 0.05, symmetric: bool = False, hard_negative_weight: float = 0.0,
                 axis_name: str | None = None, logit_scale: jax.Array | None = None
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """InfoNCE with in-batch (and optionally global, cross-device) negatives; see the module doc.

    Args:
      anchors: ``[b, d]`` anchor embeddings (local shard when ``axis_name`` is given).
      positives: ``[b, d]``; row i is anchor i's positive.
      negatives: ``[b, k, d]`` hard negatives of each anchor, or None.
      temperature: T > 0 dividing the cosine similarities.
      symmetric: add the positives-as-queries term (averaged with the forward term).
      hard_negative_weight: ``w`` added to the logits of each anchor's own hard negatives.
      axis_name: mesh / pmap axis over which the batch is split, or None for one device.
      logit_scale: 1 / T as a (learnable, traced) scalar; replaces ``temperature`` when given.

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
    inv_t = (1.0 / jnp.asarray(temperature, jnp.float32) if logit_scale is None
             else jnp.asarray(logit_scale, jnp.float32))
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


# ============================================================================ the objective

IMPLS = ("dense", "tiled")  # the dense [b, B] logits, or the memory-tiled kernel (tiled_infonce.py)


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyperparameters of the ``infonce`` objective (``config.objective``)."""
    temperature: float = 0.05          # T: cosine similarities are divided by it (SimCSE: 0.05)
    symmetric: bool = False            # also rank the anchors for each positive, averaged (MNSRL)
    hard_negative_weight: float = 0.0  # w added to the logits of an anchor's own hard negatives (log alpha)
    use_hard_negatives: bool = True    # embed the batch's "negative" column when the data has one
    impl: str = "dense"                # "dense" [b, B] logits, or "tiled": never builds them (tiled_infonce.py)
    tile_size: int = 1024              # rows per tile of impl="tiled"
    panel_mib: float = 256.0           # impl="tiled", not symmetric: 3-matmul row panels when they fit (0: ring)
    learn_temperature: bool = False    # CLIP: train log(1/T) from 1/temperature (params["head"]["log_scale"])
    max_logit_scale: float = 100.0     # CLIP's clip of the learned 1/T (kept in [1, max_logit_scale])

    def __post_init__(self):
        if self.impl not in IMPLS:
            raise ValueError(f"objective.impl={self.impl!r}: use one of {IMPLS}.")
        check_temperature(self.temperature)
        if self.tile_size <= 0:
            raise ValueError(f"objective.tile_size must be positive, got {self.tile_size}.")
        if not self.panel_mib >= 0:
            raise ValueError(f"objective.panel_mib must be >= 0 (0: always the [tile, tile] ring), got {self.panel_mib}.")
        if self.learn_temperature:
            if self.impl == "tiled":
                raise ValueError("objective.learn_temperature=True needs impl='dense': the tiled kernel "
                                 "(tiled_infonce.py) takes a fixed Python temperature. Use impl='dense', or "
                                 "keep a fixed temperature with impl='tiled'.")
            if not 1.0 <= 1.0 / self.temperature <= self.max_logit_scale:
                raise ValueError(f"objective.temperature={self.temperature} starts the learned logit scale "
                                 f"1/T={1.0 / self.temperature:g} outside [1, max_logit_scale="
                                 f"{self.max_logit_scale:g}]; raise max_logit_scale or the temperature.")


def init_temperature_head(temperature: float) -> dict[str, jax.Array]:
    """CLIP's learnable temperature: ``{"log_scale": log(1 / temperature)}`` (float32 scalar)."""
    return {"log_scale": jnp.asarray(math.log(1.0 / temperature), jnp.float32)}


def clip_temperature_head(head: dict[str, jax.Array], max_logit_scale: float = 100.0) -> dict[str, jax.Array]:
    """The head with ``log_scale`` clipped to [0, log max_logit_scale] (1 <= 1/T <= max, as CLIP)."""
    return dict(head, log_scale=jnp.clip(head["log_scale"], 0.0, math.log(max_logit_scale)))


def column_loss(*, temperature: float = 0.05, symmetric: bool = False, hard_negative_weight: float = 0.0,
                impl: str = "dense", tile_size: int = 1024, learn_temperature: bool = False,
                max_logit_scale: float = 100.0, panel_mib: float = 256.0):
    """``loss_fn(params, embeddings, axis_name)`` over the columns ``anchor`` / ``positive`` ``[b, d]``
    and optionally ``negative`` ``[b * k, d]`` (anchor-major: anchor i's k negatives are rows
    ``i*k .. i*k+k-1``; reshaped to ``[b, k, d]`` here). With ``learn_temperature`` the logit scale
    is ``exp(clip(params["head"]["log_scale"], 0, log max_logit_scale))`` (:func:`init_temperature_head`)."""
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r}: use 'dense' or 'tiled'.")
    if learn_temperature and impl != "dense":
        raise ValueError("learn_temperature=True needs impl='dense' (the tiled kernel takes a fixed temperature).")
    if impl == "tiled":
        from sentjax.losses.tiled_infonce import tiled_infonce_loss

        def kernel(a, p, n, axis_name, logit_scale=None):
            assert logit_scale is None  # refused above: the tiled kernel takes a fixed temperature
            return tiled_infonce_loss(a, p, n, temperature=temperature, symmetric=symmetric,
                                      hard_negative_weight=hard_negative_weight, tile_size=tile_size,
                                      panel_mib=panel_mib, axis_name=axis_name)
    else:
        def kernel(a, p, n, axis_name, logit_scale=None):
            return infonce_loss(a, p, n, temperature=temperature, symmetric=symmetric,
                                hard_negative_weight=hard_negative_weight, axis_name=axis_name,
                                logit_scale=logit_scale)

    def loss_fn(params, embeddings, axis_name=None):
        if learn_temperature:
            head = params.get("head") if isinstance(params, dict) else None
            if head is None or "log_scale" not in head:
                raise KeyError("infonce with learn_temperature=True needs params['head'] from "
                               "init_temperature_head(temperature).")
            # clipped here too: the optimizer's projection (clip_temperature_head) can leave an ulp over
            scale = jnp.exp(clip_temperature_head(head, max_logit_scale)["log_scale"])
            loss, metrics = _columns(kernel, embeddings, axis_name, logit_scale=scale)
            return loss, dict(metrics, logit_scale=lax.stop_gradient(scale))
        return _columns(kernel, embeddings, axis_name)
    return loss_fn


def _columns(kernel, embeddings, axis_name, **kw):
    """Runs ``kernel`` on the anchor / positive / negative columns (negatives reshaped to [b, k, d])."""
    a = need(embeddings, "anchor", "infonce")
    n = negatives_per_anchor(a, embeddings.get("negative"))
    return kernel(a, need(embeddings, "positive", "infonce"), n, axis_name, **kw)


# BibTeX of the paper(s) behind this objective; model cards of runs that train with it cite it.
CITATION = """\
@article{oord2018cpc,
  title = "Representation Learning with Contrastive Predictive Coding",
  author = "van den Oord, Aaron and Li, Yazhe and Vinyals, Oriol",
  journal = "arXiv preprint arXiv:1807.03748",
  year = "2018",
}
@article{henderson2017efficient,
  title = "Efficient Natural Language Response Suggestion for Smart Reply",
  author = "Henderson, Matthew and Al-Rfou, Rami and Strope, Brian and Sung, Yun-Hsuan and Lukacs, Laszlo and Guo, Ruiqi and Kumar, Sanjiv and Miklos, Balint and Kurzweil, Ray",
  journal = "arXiv preprint arXiv:1705.00652",
  year = "2017",
}
@inproceedings{gao2021simcse,
  title = "{SimCSE}: Simple Contrastive Learning of Sentence Embeddings",
  author = "Gao, Tianyu and Yao, Xingcheng and Chen, Danqi",
  booktitle = "Proceedings of the 2021 Conference on Empirical Methods in Natural Language Processing",
  year = "2021",
  url = "https://arxiv.org/abs/2104.08821",
}
"""

OBJECTIVE = ObjectiveSpec(
    config=Config,
    loss=lambda hp: column_loss(temperature=hp.temperature, symmetric=hp.symmetric,
                                hard_negative_weight=hp.hard_negative_weight, impl=hp.impl,
                                tile_size=hp.tile_size, learn_temperature=hp.learn_temperature,
                                max_logit_scale=hp.max_logit_scale, panel_mib=hp.panel_mib),
    columns=lambda hp: ("anchor", "positive") + (("negative",) if hp.use_hard_negatives else ()),
    in_batch_negatives=True,
    init_head=lambda hp, rng, dim: init_temperature_head(hp.temperature) if hp.learn_temperature else None,
    clip_head=lambda hp, head: clip_temperature_head(head, hp.max_logit_scale),
)
