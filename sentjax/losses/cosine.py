"""Cosine-similarity regression (Reimers & Gurevych 2019, "Sentence-BERT", STS regression objective;
sentence-transformers' CosineSimilarityLoss).

For embeddings ``u, v`` ``[batch, dim]`` and gold scores ``s`` ``[batch]`` in ``[lo, hi]``::

    target_i = (s_i - lo) / (hi - lo)                 (score_range=(lo, hi); None: s used as is)
    loss     = mean_i ( cos(u_i, v_i) - target_i )^2

No in-batch interaction: with ``axis_name`` the loss is the ``pmean`` of per-device means.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from sentjax.losses.checks import check_embedding_pair
from sentjax.losses.registry import ObjectiveSpec, need
from sentjax.ops import cosine_similarity

__all__ = ["Config", "OBJECTIVE", "CITATION", "column_loss", "cosine_loss", "pair_cosine", "rescale_scores"]


def pair_cosine(u: jax.Array, v: jax.Array) -> jax.Array:
    """Row-wise cosine similarity ``[b, d], [b, d] -> [b]`` in float32 (norms clamped at 1e-12)."""
    return cosine_similarity(jnp.asarray(u), jnp.asarray(v))


def rescale_scores(scores: jax.Array, n: int, score_range: tuple[float, float] | None) -> jax.Array:
    """Checks ``scores`` is ``[n]`` and maps ``[lo, hi]`` linearly onto ``[0, 1]``."""
    scores = jnp.asarray(scores)
    if scores.shape != (n,):
        raise ValueError(f"scores must have shape [{n}] (one gold score per pair), got {list(scores.shape)}.")
    scores = scores.astype(jnp.float32)
    if score_range is None:
        return scores
    lo, hi = (float(x) for x in score_range)
    if not hi > lo:
        raise ValueError(f"score_range=(lo, hi) needs hi > lo, got {score_range}; e.g. (0, 5) for STS-B.")
    return (scores - lo) / (hi - lo)


def cosine_loss(u: jax.Array, v: jax.Array, scores: jax.Array, *,
                score_range: tuple[float, float] | None = (0.0, 5.0), axis_name: str | None = None
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """MSE between cos(u, v) and the rescaled gold score; returns ``(loss, {})``."""
    check_embedding_pair(u, v, ("u", "v"))
    target = rescale_scores(scores, u.shape[0], score_range)
    loss = jnp.mean(jnp.square(pair_cosine(u, v) - target))
    if axis_name is not None:
        loss = lax.pmean(loss, axis_name)
    return loss, {}


# ============================================================================ the objective


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyperparameters of the ``cosine`` objective (``config.objective``)."""
    score_range: tuple[float, float] = (0.0, 1.0)  # gold scores' range; the pipeline already scales them to [0, 1]


def column_loss(*, score_range: tuple[float, float] | None = (0.0, 5.0)):
    """``loss_fn(params, embeddings, axis_name)``: columns ``anchor`` / ``positive`` ``[b, d]`` and
    ``score`` ``[b]``."""
    def loss_fn(params, embeddings, axis_name=None):
        return cosine_loss(need(embeddings, "anchor", "cosine"), need(embeddings, "positive", "cosine"),
                           need(embeddings, "score", "cosine"), score_range=score_range, axis_name=axis_name)
    return loss_fn


# BibTeX of the paper(s) behind this objective; model cards of runs that train with it cite it.
CITATION = """\
@inproceedings{reimers-2019-sentence-bert,
  title = "Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks",
  author = "Reimers, Nils and Gurevych, Iryna",
  booktitle = "Proceedings of the 2019 Conference on Empirical Methods in Natural Language Processing",
  year = "2019",
  publisher = "Association for Computational Linguistics",
  url = "https://arxiv.org/abs/1908.10084",
}
"""

OBJECTIVE = ObjectiveSpec(
    config=Config,
    loss=lambda hp: column_loss(score_range=tuple(hp.score_range)),
    columns=lambda hp: ("anchor", "positive"),
    in_batch_negatives=False,
)
