"""Listwise KL score distillation (Lin, Yang & Lin 2020, "Distilling Dense Representations for
Ranking using Tightly-Coupled Teachers", arXiv:2010.11386; sentence-transformers' DistillKLDivLoss).

Columns: ``anchor`` (the query) ``q`` ``[b, d]``, ``positive`` ``p`` ``[b, d]``, ``negative`` ``n``
``[b * k, d]`` (anchor-major, k >= 1) and the teacher's ``score`` ``[b, 1 + k]``: the precomputed
teacher scores of each query's candidates ``[t(q, p), t(q, n_1), ..., t(q, n_k)]``. With the
student scores ``s_ij`` (dot product, sentence-transformers' default; ``cosine`` optional) over the
same candidates, student / teacher temperatures ``T_s`` / ``T_t``::

    P_i  = softmax_j( t_ij / T_t )          Q_i = softmax_j( s_ij / T_s )
    loss = T_s^2 * mean_i sum_j P_ij ( log P_ij - log Q_ij )       (KL(P || Q), "batchmean")

The candidate list of a query is its OWN 1 + k candidates: precomputed data holds teacher scores for
those only, so other queries' documents (in-batch candidates, on this or another device) cannot be
scored by the teacher and are not used. Across devices the loss is therefore the ``pmean`` of
equal-sized per-device means (the global mean). The teacher scores get no gradient.

``scores='teacher'``: the frozen ``teacher`` model embeds query, positive and negatives in the step
and its similarities (the student's ``similarity``) replace the ``score`` column
(:mod:`sentjax.losses.teacher_scores`). With ``candidates='in_batch'`` ``j`` runs over all
``B (1 + k)`` candidates of the global batch (all-gathered across devices), as in Lin et al.'s
in-batch distillation.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import xlogy

from sentjax.losses.checks import check_temperature
from sentjax.losses.margin_mse import SIMILARITIES, candidate_scores, split_negatives, teacher_candidate_scores
from sentjax.losses import teacher_scores
from sentjax.losses.registry import ObjectiveSpec, need

__all__ = ["Config", "OBJECTIVE", "CITATION", "column_loss", "listwise_kl_loss", "kl_from_scores"]


def listwise_kl_loss(queries: jax.Array, positives: jax.Array, negatives: jax.Array, scores: jax.Array, *,
                     temperature: float = 1.0, student_temperature: float | None = None,
                     teacher_temperature: float | None = None, similarity: str = "dot",
                     axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """KL(teacher || student) over each query's 1 + k candidates; ``negatives`` ``[b, k, d]``,
    ``scores`` ``[b, 1 + k]``. The temperatures default to ``temperature``.

    Returns ``(loss, {"accuracy"})``: the loss and the fraction of queries whose top student
    candidate is the teacher's top one, both over the global batch."""
    t_s = temperature if student_temperature is None else student_temperature
    t_t = temperature if teacher_temperature is None else teacher_temperature
    check_temperature(t_s)
    check_temperature(t_t)
    s = candidate_scores(queries, positives, negatives, similarity)  # [b, 1 + k]
    t = lax.stop_gradient(jnp.asarray(scores)).astype(jnp.float32)
    if t.shape != s.shape:
        raise ValueError(f"listwise_kl: teacher scores of shape {tuple(t.shape)}; expected {tuple(s.shape)} "
                         "= [queries, 1 + k]: [t(q, positive), t(q, negative_1), ..., t(q, negative_k)].")
    return kl_from_scores(s, t, t_s, t_t, axis_name)


def kl_from_scores(s: jax.Array, t: jax.Array, t_s: float, t_t: float, axis_name: str | None = None
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The loss of the module doc from student / teacher scores ``[b, C]`` over the same candidates."""
    t = lax.stop_gradient(t).astype(jnp.float32)
    log_q = jax.nn.log_softmax(s / t_s, axis=1)
    log_p = jax.nn.log_softmax(t / t_t, axis=1)
    p = jnp.exp(log_p)
    # xlogy: a candidate whose teacher probability underflows to 0 adds 0 (as torch's KLDivLoss), not nan
    kl = jnp.sum(xlogy(p, p) - p * log_q, axis=1)
    loss = jnp.mean(kl) * (t_s ** 2)
    accuracy = jnp.mean((jnp.argmax(s, axis=1) == jnp.argmax(t, axis=1)).astype(jnp.float32))
    if axis_name is not None:
        loss, accuracy = lax.pmean((loss, accuracy), axis_name)
    return loss, {"accuracy": accuracy}


# ============================================================================ the objective


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyperparameters of the ``listwise_kl`` objective (``config.objective``)."""
    temperature: float = 1.0          # T dividing student and teacher scores (sentence-transformers: 1.0)
    student_temperature: float = 0.0  # T_s override (0 = temperature); the loss is scaled by T_s^2
    teacher_temperature: float = 0.0  # T_t override (0 = temperature)
    similarity: str = "dot"           # student score s(q, d): "dot" or "cosine"
    scores: str = "data"              # teacher scores: the batch's "score" column, or "teacher" (in the step)
    teacher: str = ""                 # scores="teacher": model folder, hub id or "minilm"; "" = model.init_from
    candidates: str = "own"           # scores="teacher": each query's "own" 1 + k candidates, or all "in_batch"

    def __post_init__(self):
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"objective.similarity={self.similarity!r}: use one of {SIMILARITIES}.")
        teacher_scores.check_scores_config(self.scores, self.candidates)
        check_temperature(self.temperature)
        for name in ("student_temperature", "teacher_temperature"):
            if getattr(self, name) < 0:
                raise ValueError(f"objective.{name} must be > 0, or 0 for objective.temperature; "
                                 f"got {getattr(self, name)}.")


def column_loss(*, temperature: float = 1.0, student_temperature: float | None = None,
                teacher_temperature: float | None = None, similarity: str = "dot", scores: str = "data",
                candidates: str = "own"):
    """``loss_fn(params, embeddings, axis_name)``: columns ``anchor`` / ``positive`` ``[b, d]``,
    ``negative`` ``[b * k, d]`` (anchor-major) and the teacher's ``score`` ``[b, 1 + k]``, or with
    ``scores='teacher'`` the teacher's embeddings ``teacher:anchor`` / ``teacher:positive`` /
    ``teacher:negative`` instead of ``score``."""
    teacher_scores.check_scores_config(scores, candidates)

    def loss_fn(params, embeddings, axis_name=None):
        if candidates == "in_batch":
            t_s = temperature if student_temperature is None else student_temperature
            t_t = temperature if teacher_temperature is None else teacher_temperature
            s, t, _ = teacher_scores.in_batch_scores(embeddings, "listwise_kl", similarity, axis_name)
            return kl_from_scores(s, t, t_s, t_t, axis_name)
        a = need(embeddings, "anchor", "listwise_kl")
        n = split_negatives(a, need(embeddings, "negative", "listwise_kl"), "listwise_kl")
        t = (teacher_candidate_scores(embeddings, "listwise_kl", similarity) if scores == "teacher"
             else need(embeddings, "score", "listwise_kl"))
        return listwise_kl_loss(a, need(embeddings, "positive", "listwise_kl"), n, t, temperature=temperature,
                                student_temperature=student_temperature,
                                teacher_temperature=teacher_temperature, similarity=similarity,
                                axis_name=axis_name)
    return loss_fn


# BibTeX of the paper(s) behind this objective; model cards of runs that train with it cite it.
CITATION = """\
@misc{lin2020distilling,
  title = "Distilling Dense Representations for Ranking using Tightly-Coupled Teachers",
  author = "Lin, Sheng-Chieh and Yang, Jheng-Hong and Lin, Jimmy",
  year = "2020",
  eprint = "2010.11386",
  archivePrefix = "arXiv",
  url = "https://arxiv.org/abs/2010.11386",
}
"""

OBJECTIVE = ObjectiveSpec(
    config=Config,
    loss=lambda hp: column_loss(temperature=hp.temperature,
                                student_temperature=hp.student_temperature or None,
                                teacher_temperature=hp.teacher_temperature or None,
                                similarity=hp.similarity, scores=hp.scores, candidates=hp.candidates),
    columns=lambda hp: ("anchor", "positive", "negative"),
    in_batch_negatives=lambda hp: hp.candidates == "in_batch",  # else each query's own candidates only
    teacher_columns=lambda hp: teacher_scores.teacher_columns(hp.scores),
)
