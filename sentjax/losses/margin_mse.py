"""MarginMSE score distillation (Hofstätter et al. 2020, "Improving Efficient Neural Ranking Models
with Cross-Architecture Knowledge Distillation", arXiv:2010.02666; sentence-transformers'
MarginMSELoss).

Columns: ``anchor`` (the query) ``q`` ``[b, d]``, ``positive`` ``p`` ``[b, d]``, ``negative`` ``n``
``[b * k, d]`` (anchor-major: the k negatives of anchor i are rows ``i*k .. i*k+k-1``) and the
teacher's ``score`` (not embedded; a precomputed column of the data), in any of the label layouts
sentence-transformers accepts::

    [b]         the teacher margin t(q, p) - t(q, n)          (k = 1)
    [b, k]      the margins t(q, p) - t(q, n_j)
    [b, k + 1]  the raw teacher scores [t(q, p), t(q, n_1), ..., t(q, n_k)] (margins taken here)

With the student similarity ``s`` = dot product (sentence-transformers' default; ``cosine``
optional) and ``m_ij`` the teacher margins::

    loss = mean_{i, j} ( s(q_i, p_i) - s(q_i, n_ij) - m_ij )^2

No in-batch interaction: each query sees only its own candidates, so across devices the loss is the
``pmean`` of equal-sized per-device means (the global mean). The teacher scores get no gradient.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from sentjax.losses.checks import check_embedding_pair, check_negatives
from sentjax.losses.registry import ObjectiveSpec, need
from sentjax.ops import l2_normalize

__all__ = ["Config", "OBJECTIVE", "CITATION", "SIMILARITIES", "column_loss", "margin_mse_loss",
           "candidate_scores", "split_negatives"]

SIMILARITIES = ("dot", "cosine")


def candidate_scores(queries: jax.Array, positives: jax.Array, negatives: jax.Array,
                     similarity: str = "dot") -> jax.Array:
    """``[b, 1 + k]`` student scores ``[s(q_i, p_i), s(q_i, n_i1), ..., s(q_i, n_ik)]`` in float32.

    ``queries`` / ``positives`` ``[b, d]``, ``negatives`` ``[b, k, d]``."""
    check_embedding_pair(queries, positives, ("queries", "positives"))
    b, d = queries.shape
    check_negatives(negatives, b, d)
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity={similarity!r}: use one of {SIMILARITIES}.")
    q, p, n = (jnp.asarray(x).astype(jnp.float32) for x in (queries, positives, negatives))
    if similarity == "cosine":
        q, p, n = l2_normalize(q), l2_normalize(p), l2_normalize(n)
    cands = jnp.concatenate([p[:, None, :], n], axis=1)  # [b, 1 + k, d]
    return jnp.einsum("bd,bcd->bc", q, cands)


def split_negatives(anchors: jax.Array, negatives: jax.Array, objective: str) -> jax.Array:
    """The ``negative`` column ``[b * k, d]`` (anchor-major) as ``[b, k, d]``; a clear error otherwise."""
    b = anchors.shape[0]
    if negatives.ndim != 2 or negatives.shape[0] % b or negatives.shape[0] == 0:
        raise ValueError(f"the {objective} loss needs a negative column of [b * k, dim] rows for the {b} "
                         f"anchors (k >= 1 negatives each, anchor-major), got shape {negatives.shape}.")
    return negatives.reshape(b, negatives.shape[0] // b, negatives.shape[1])


def _teacher_margins(scores: jax.Array, b: int, k: int) -> jax.Array:
    """The teacher margins ``[b, k]`` from any accepted ``score`` layout (see the module doc)."""
    s = lax.stop_gradient(jnp.asarray(scores)).astype(jnp.float32)
    if s.shape == (b, k + 1):
        return s[:, :1] - s[:, 1:]
    if s.shape == (b,) and k == 1:
        return s[:, None]
    if s.shape == (b, k):
        return s
    raise ValueError(f"margin_mse: teacher scores of shape {tuple(s.shape)} do not fit {b} queries with "
                     f"{k} negative(s) each; give the margins t(q,p) - t(q,n_j) as [{b}, {k}] "
                     f"(or [{b}] when k = 1), or the raw scores [t(q,p), t(q,n_1), ...] as [{b}, {k + 1}].")


def margin_mse_loss(queries: jax.Array, positives: jax.Array, negatives: jax.Array, scores: jax.Array, *,
                    similarity: str = "dot", axis_name: str | None = None
                    ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """MarginMSE; ``negatives`` ``[b, k, d]``, ``scores`` ``[b]`` / ``[b, k]`` / ``[b, k + 1]``.

    Returns ``(loss, {"accuracy"})``: the mean squared margin error and the fraction of
    (query, negative) pairs the student ranks below the positive, both over the global batch."""
    s = candidate_scores(queries, positives, negatives, similarity)  # [b, 1 + k]
    b, c = s.shape
    margins = s[:, :1] - s[:, 1:]  # [b, k]
    loss = jnp.mean(jnp.square(margins - _teacher_margins(scores, b, c - 1)))
    accuracy = jnp.mean((margins > 0).astype(jnp.float32))
    if axis_name is not None:
        loss, accuracy = lax.pmean((loss, accuracy), axis_name)
    return loss, {"accuracy": accuracy}


# ============================================================================ the objective


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyperparameters of the ``margin_mse`` objective (``config.objective``)."""
    similarity: str = "dot"  # student score s(q, d): "dot" (sentence-transformers' default) or "cosine"

    def __post_init__(self):
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"objective.similarity={self.similarity!r}: use one of {SIMILARITIES}.")


def column_loss(*, similarity: str = "dot"):
    """``loss_fn(params, embeddings, axis_name)``: columns ``anchor`` / ``positive`` ``[b, d]``,
    ``negative`` ``[b * k, d]`` (anchor-major) and ``score`` (the teacher's; see the module doc)."""
    def loss_fn(params, embeddings, axis_name=None):
        a = need(embeddings, "anchor", "margin_mse")
        n = split_negatives(a, need(embeddings, "negative", "margin_mse"), "margin_mse")
        return margin_mse_loss(a, need(embeddings, "positive", "margin_mse"), n,
                               need(embeddings, "score", "margin_mse"), similarity=similarity,
                               axis_name=axis_name)
    return loss_fn


# BibTeX of the paper(s) behind this objective; model cards of runs that train with it cite it.
CITATION = """\
@misc{hofstatter2020improving,
  title = "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation",
  author = "Hofst{\\"a}tter, Sebastian and Althammer, Sophia and Schr{\\"o}der, Michael and Sertkan, Mete and Hanbury, Allan",
  year = "2020",
  eprint = "2010.02666",
  archivePrefix = "arXiv",
  url = "https://arxiv.org/abs/2010.02666",
}
"""

OBJECTIVE = ObjectiveSpec(
    config=Config,
    loss=lambda hp: column_loss(similarity=hp.similarity),
    columns=lambda hp: ("anchor", "positive", "negative"),
    in_batch_negatives=False,  # each query is scored against its own candidates only
)
