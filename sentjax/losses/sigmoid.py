"""Sigmoid loss (SigLIP) with a learnable logit scale and bias, exact across devices.

Paper: Zhai, Mustafa, Kolesnikov, Beyer 2023, "Sigmoid Loss for Language Image Pre-Training"
(Algorithm 1). Every (anchor, candidate) pair is an independent binary classification, so there is
no softmax normaliser over the batch.

Expected columns (as sentence-transformers' loss docstrings say): ``anchor`` and ``positive``
(pairs: row i of positive belongs to row i of anchor), optionally ``negative`` (k hard negatives per
anchor, anchor-major; every one is a negative for every anchor). Shapes (local to one device when
``axis_name`` is given, else the whole batch)::

    anchors [b, d], positives [b, d], negatives [b, k, d] or None

With ``x`` the L2-normalised anchors and ``c`` the L2-normalised candidates of the global batch of
``B = n * b`` anchors (all B positives in global anchor order, then all B*k hard negatives)::

    t            = exp(t')                    t' and b learnable, initialised t' = log 10, b = -10
    logits[i, j] = t x_i . c_j + b
    z[i, j]      = +1 if c_j is anchor i's positive, else -1
    loss         = -(1/B) sum_i sum_j log sigmoid(z[i, j] logits[i, j])
    accuracy     = mean_i [ logits[i, i] > max_{j != i} logits[i, j] ]

The loss is divided by the global batch size B, as in the paper (not by the number of pairs).
``t'`` and ``b`` are the objective's trainable parameters ``params["head"] = {"log_scale": t',
"bias": b}`` (like the softmax objective's classifier: trained, checkpointed, not exported with
the encoder). The scale is not clipped (the paper does not clip it).

``impl="dense"`` (this file) all-gathers the candidates and builds this device's ``[b, B (1 + k)]``
logits; the ``pmean`` of the per-device means is the global loss. ``impl="tiled"``
(:mod:`sentjax.losses.tiled_sigmoid`) rotates the candidate blocks around a ``ppermute`` ring
instead and never builds more than a ``[b, tile]`` slice of logits. Both are exact under
``jax.shard_map``, ``jax.pmap`` and the trainer's ``jit`` method, with and without GradCache
(tests/test_sigmoid.py pins every combination to the single-device gradient).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax import lax

from sentjax.losses.checks import check_embedding_pair, check_negatives, negatives_per_anchor
from sentjax.losses.registry import ObjectiveSpec, need
from sentjax.ops import l2_normalize

__all__ = ["Config", "OBJECTIVE", "CITATION", "IMPLS", "column_loss", "sigmoid_loss", "init_sigmoid_head"]

IMPLS = ("dense", "tiled")  # all-gathered [b, B] logits, or the ppermute ring (tiled_sigmoid.py)


def sigmoid_loss(anchors: jax.Array, positives: jax.Array, negatives: jax.Array | None = None, *,
                 log_scale: jax.Array | float = math.log(10.0), bias: jax.Array | float = -10.0,
                 axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """SigLIP's sigmoid loss with in-batch (and cross-device) negatives; see the module doc.

    Args:
      anchors: ``[b, d]`` (local shard when ``axis_name`` is given).
      positives: ``[b, d]``; row i is anchor i's positive.
      negatives: ``[b, k, d]`` hard negatives, or None.
      log_scale: t' (scalar; a traced learnable parameter or a number); the scale is exp(t').
      bias: b (scalar, likewise).
      axis_name: mesh / pmap axis over which the batch is split, or None for one device.

    Returns:
      ``(loss, {"accuracy": ...})``: float32 scalars over the global batch.
    """
    check_embedding_pair(anchors, positives)
    b, d = anchors.shape
    check_negatives(negatives, b, d)
    if axis_name is not None and not isinstance(axis_name, str):
        raise TypeError(f"axis_name must be one mesh axis name (str) or None, got {axis_name!r}.")

    def gather(v):
        return v if axis_name is None else lax.all_gather(v, axis_name, tiled=True)

    offset = 0 if axis_name is None else lax.axis_index(axis_name) * b
    x = l2_normalize(jnp.asarray(anchors))
    cands = gather(l2_normalize(jnp.asarray(positives)))  # [B, d]
    if negatives is not None and negatives.shape[1] > 0:
        n = l2_normalize(jnp.asarray(negatives)).reshape(b * negatives.shape[1], d)
        cands = jnp.concatenate([cands, gather(n)], axis=0)  # [B (1 + k), d]
    logits = jnp.exp(jnp.asarray(log_scale, jnp.float32)) * (x @ cands.T) + jnp.asarray(bias, jnp.float32)
    is_pos = jnp.arange(cands.shape[0])[None, :] == (offset + jnp.arange(b))[:, None]
    z = jnp.where(is_pos, 1.0, -1.0)
    loss = -jnp.sum(jax.nn.log_sigmoid(z * logits)) / b
    lab = jnp.max(jnp.where(is_pos, logits, -jnp.inf), axis=1)
    other = jnp.max(jnp.where(is_pos, -jnp.inf, logits), axis=1)
    accuracy = jnp.mean((lab > other).astype(jnp.float32))
    if axis_name is not None:
        loss, accuracy = lax.pmean((loss, accuracy), axis_name)
    return loss, {"accuracy": accuracy}


# ============================================================================ the objective


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyperparameters of the ``sigmoid`` objective (``config.objective``)."""
    init_scale: float = 10.0         # t = exp(t') at the start (SigLIP: t' = log 10)
    init_bias: float = -10.0         # b at the start (SigLIP: -10, so the many negatives start near 0 loss)
    learnable: bool = True           # train t' and b (params["head"]); False: fixed at the initial values
    use_hard_negatives: bool = True  # embed the batch's "negative" column when the data has one
    impl: str = "dense"              # "dense" gathered [b, B] logits, or "tiled": the ppermute ring (tiled_sigmoid.py)
    tile_size: int = 1024            # candidate rows per logits slice of impl="tiled"

    def __post_init__(self):
        if self.impl not in IMPLS:
            raise ValueError(f"objective.impl={self.impl!r}: use one of {IMPLS}.")
        if not self.init_scale > 0:
            raise ValueError(f"objective.init_scale must be > 0 (t = exp(t')), got {self.init_scale}.")
        if self.tile_size <= 0:
            raise ValueError(f"objective.tile_size must be positive, got {self.tile_size}.")


def init_sigmoid_head(init_scale: float = 10.0, init_bias: float = -10.0) -> dict[str, jax.Array]:
    """The trainable ``{"log_scale": t' = log(init_scale), "bias": b}`` (float32 scalars)."""
    return {"log_scale": jnp.asarray(math.log(init_scale), jnp.float32),
            "bias": jnp.asarray(init_bias, jnp.float32)}


def column_loss(*, init_scale: float = 10.0, init_bias: float = -10.0, impl: str = "dense",
                tile_size: int = 1024):
    """``loss_fn(params, embeddings, axis_name)`` over the columns ``anchor`` / ``positive`` ``[b, d]``
    and optionally ``negative`` ``[b * k, d]`` (anchor-major). t' and b are ``params["head"]``
    (:func:`init_sigmoid_head`) when the params have a head, else the fixed initial values."""
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r}: use one of {IMPLS}.")
    fixed = init_sigmoid_head(init_scale, init_bias)

    def loss_fn(params, embeddings, axis_name=None):
        head = params.get("head") if isinstance(params, dict) else None
        head = fixed if head is None else head
        a = need(embeddings, "anchor", "sigmoid")
        n = negatives_per_anchor(a, embeddings.get("negative"))
        p = need(embeddings, "positive", "sigmoid")
        if impl == "tiled":
            from sentjax.losses.tiled_sigmoid import tiled_sigmoid_loss
            loss, metrics = tiled_sigmoid_loss(a, p, n, log_scale=head["log_scale"], bias=head["bias"],
                                               axis_name=axis_name, tile_size=tile_size)
        else:
            loss, metrics = sigmoid_loss(a, p, n, log_scale=head["log_scale"], bias=head["bias"],
                                         axis_name=axis_name)
        # the learned values in the training log (metrics.jsonl)
        return loss, dict(metrics, logit_scale=jnp.exp(lax.stop_gradient(head["log_scale"])),
                          logit_bias=lax.stop_gradient(jnp.asarray(head["bias"], jnp.float32)))
    return loss_fn


OBJECTIVE = ObjectiveSpec(
    config=Config,
    loss=lambda hp: column_loss(init_scale=hp.init_scale, init_bias=hp.init_bias, impl=hp.impl,
                                tile_size=hp.tile_size),
    columns=lambda hp: ("anchor", "positive") + (("negative",) if hp.use_hard_negatives else ()),
    in_batch_negatives=True,
    init_head=lambda hp, rng, dim: init_sigmoid_head(hp.init_scale, hp.init_bias) if hp.learnable else None,
)


# BibTeX of the paper(s) behind this objective; model cards of runs that train with it cite it.
CITATION = """\
@inproceedings{zhai2023siglip,
  title = "Sigmoid Loss for Language Image Pre-Training",
  author = "Zhai, Xiaohua and Mustafa, Basil and Kolesnikov, Alexander and Beyer, Lucas",
  booktitle = "Proceedings of the IEEE/CVF International Conference on Computer Vision",
  year = "2023",
  url = "https://arxiv.org/abs/2303.15343",
}
"""
