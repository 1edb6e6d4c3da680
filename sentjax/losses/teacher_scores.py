"""Score distillation with the frozen teacher in the step (``scores='teacher'`` of ``margin_mse`` and
``listwise_kl``): the teacher's embeddings ``teacher:anchor`` / ``teacher:positive`` /
``teacher:negative`` (added by the train step, no gradient) are scored with the student's
similarity ``sim`` and replace the data's ``score`` column.

``candidates='own'``: each query's own ``1 + k`` candidates, as precomputed data would hold::

    s_i = [sim(q_i, p_i), sim(q_i, n_i1), ..., sim(q_i, n_ik)]    t_i the same with the teacher's embeddings

(``t`` is then exactly the ``[b, 1 + k]`` score layout of the data, so the loss equals the loss on
scores precomputed with the same teacher; :func:`sentjax.losses.margin_mse.teacher_candidate_scores`).

``candidates='in_batch'``: with the teacher in the step every document of the global batch can be
scored, so each query ranks all ``B (1 + k)`` candidates
(the B positives in global order, then the B * k negatives, anchor-major; all-gathered across
devices as in InfoNCE); its own positive is candidate ``label_i = device * b + i``.

Shapes: ``q`` / ``p`` ``[b, d]``, ``n`` ``[b, k, d]``; the teacher's have their own dim.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from sentjax.losses.checks import negatives_per_anchor
from sentjax.losses.registry import need
from sentjax.ops import l2_normalize

__all__ = ["SCORE_SOURCES", "CANDIDATES", "check_scores_config", "teacher_columns", "in_batch_scores"]

SCORE_SOURCES = ("data", "teacher")
CANDIDATES = ("own", "in_batch")


def check_scores_config(scores: str, candidates: str) -> None:
    """Raises a clear ValueError for an unknown or unsupported ``scores`` x ``candidates``."""
    if scores not in SCORE_SOURCES:
        raise ValueError(f"objective.scores={scores!r}: use 'data' (the batch's score column) or 'teacher' "
                         "(the frozen objective.teacher scores the batch in the step).")
    if candidates not in CANDIDATES:
        raise ValueError(f"objective.candidates={candidates!r}: use one of {CANDIDATES}.")
    if candidates == "in_batch" and scores != "teacher":
        raise ValueError("objective.candidates='in_batch' needs objective.scores='teacher': precomputed "
                         "scores exist only for each query's own candidates.")


def teacher_columns(scores: str) -> tuple[str, ...]:
    """The columns the frozen teacher embeds in the step (none for precomputed scores)."""
    return ("anchor", "positive", "negative") if scores == "teacher" else ()


def _sim(x, similarity):
    x = jnp.asarray(x).astype(jnp.float32)
    return l2_normalize(x) if similarity == "cosine" else x


def in_batch_scores(embeddings, objective: str, similarity: str, axis_name: str | None
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(s, t, labels)``: student and teacher scores ``[b, B (1 + k)]`` of each local query against
    every candidate of the global batch, and the column of each query's own positive ``[b]``."""
    def gather(x):
        return x if axis_name is None else lax.all_gather(x, axis_name, tiled=True)

    def scores(prefix):
        q = need(embeddings, f"{prefix}anchor", objective)
        n = negatives_per_anchor(q, need(embeddings, f"{prefix}negative", objective))
        p = need(embeddings, f"{prefix}positive", objective)
        b, k, d = n.shape
        cands = jnp.concatenate([gather(_sim(p, similarity)), gather(_sim(n, similarity).reshape(b * k, d))])
        return _sim(q, similarity) @ cands.T

    s, t = scores(""), lax.stop_gradient(scores("teacher:"))
    b = s.shape[0]
    labels = (0 if axis_name is None else lax.axis_index(axis_name) * b) + jnp.arange(b)
    return s, t, labels
