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

``scores='teacher'``: the frozen ``teacher`` model embeds query, positive and negatives in the step
and its similarities (the student's ``similarity``) replace the ``score`` column
(:mod:`sentjax.losses.teacher_scores`). With ``candidates='in_batch'`` each query's margins are taken
against every candidate ``c_j`` of the global batch (its own positive ``p_i`` excluded)::

    loss = mean_{i, j != label_i} ( s(q_i, p_i) - s(q_i, c_j) - (t(q_i, p_i) - t(q_i, c_j)) )^2
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from sentjax.losses.checks import check_embedding_pair, check_negatives
from sentjax.losses import teacher_scores
from sentjax.losses.registry import ObjectiveSpec, need
from sentjax.ops import l2_normalize

__all__ = ["Config", "OBJECTIVE", "CITATION", "SIMILARITIES", "column_loss", "margin_mse_loss",
           "candidate_scores", "split_negatives", "margin_mse_in_batch", "teacher_candidate_scores"]

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


def teacher_candidate_scores(embeddings, objective: str, similarity: str) -> jax.Array:
    """``[b, 1 + k]`` teacher scores ``[t(q, p), t(q, n_1), ...]`` from the ``teacher:*`` columns."""
    tq = need(embeddings, "teacher:anchor", objective)
    tn = split_negatives(tq, need(embeddings, "teacher:negative", objective), objective)
    return lax.stop_gradient(candidate_scores(tq, need(embeddings, "teacher:positive", objective), tn, similarity))


def margin_mse_in_batch(s: jax.Array, t: jax.Array, labels: jax.Array, axis_name: str | None = None
                        ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """MarginMSE over in-batch candidates: student / teacher scores ``[b, C]``, own positive ``labels``
    ``[b]`` (:func:`sentjax.losses.teacher_scores.in_batch_scores`); the module doc's last formula."""
    b, c = s.shape
    others = jnp.arange(c)[None, :] != labels[:, None]  # [b, C]: every candidate but the own positive
    margins = jnp.take_along_axis(s, labels[:, None], axis=1) - s
    t_margins = jnp.take_along_axis(t, labels[:, None], axis=1) - t
    loss = jnp.sum(jnp.where(others, jnp.square(margins - t_margins), 0.0)) / (b * (c - 1))
    accuracy = jnp.sum(jnp.where(others, margins > 0, False)) / (b * (c - 1))
    if axis_name is not None:
        loss, accuracy = lax.pmean((loss, accuracy), axis_name)
    return loss, {"accuracy": accuracy}


# ============================================================================ the objective


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyperparameters of the ``margin_mse`` objective (``config.objective``)."""
    similarity: str = "dot"  # student score s(q, d): "dot" (sentence-transformers' default) or "cosine"
    scores: str = "data"     # teacher scores: the batch's "score" column, or "teacher" (embedded in the step)
    teacher: str = ""        # scores="teacher": model folder, hub id or "minilm"; "" = model.init_from
    candidates: str = "own"  # scores="teacher": each query's "own" 1 + k candidates, or all "in_batch"

    def __post_init__(self):
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"objective.similarity={self.similarity!r}: use one of {SIMILARITIES}.")
        teacher_scores.check_scores_config(self.scores, self.candidates)


def column_loss(*, similarity: str = "dot", scores: str = "data", candidates: str = "own"):
    """``loss_fn(params, embeddings, axis_name)``: columns ``anchor`` / ``positive`` ``[b, d]``,
    ``negative`` ``[b * k, d]`` (anchor-major) and ``score`` (the teacher's; see the module doc), or
    with ``scores='teacher'`` the teacher's embeddings ``teacher:anchor`` / ``teacher:positive`` /
    ``teacher:negative`` instead of ``score``."""
    teacher_scores.check_scores_config(scores, candidates)

    def loss_fn(params, embeddings, axis_name=None):
        if candidates == "in_batch":
            return margin_mse_in_batch(*teacher_scores.in_batch_scores(embeddings, "margin_mse", similarity,
                                                                       axis_name), axis_name)
        a = need(embeddings, "anchor", "margin_mse")
        n = split_negatives(a, need(embeddings, "negative", "margin_mse"), "margin_mse")
        t = (teacher_candidate_scores(embeddings, "margin_mse", similarity) if scores == "teacher"
             else need(embeddings, "score", "margin_mse"))
        return margin_mse_loss(a, need(embeddings, "positive", "margin_mse"), n, t, similarity=similarity,
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
    loss=lambda hp: column_loss(similarity=hp.similarity, scores=hp.scores, candidates=hp.candidates),
    columns=lambda hp: ("anchor", "positive", "negative"),
    in_batch_negatives=lambda hp: hp.candidates == "in_batch",  # else each query's own candidates only
    teacher_columns=lambda hp: teacher_scores.teacher_columns(hp.scores),
)
