"""CoSENT ranking loss (Su 2022, "CoSENT: a more efficient sentence vector scheme";
sentence-transformers' CoSENTLoss).

For pairs ``(u_i, v_i)`` ``[batch, dim]`` with gold scores ``s`` ``[batch]`` and ``c_i = cos(u_i, v_i)``::

    loss = log( 1 + sum_{(i, j): s_i > s_j} exp( scale * (c_j - c_i) ) )

Every pair of examples interacts, so across devices the cosines and scores are all-gathered and
the loss of the whole global batch is computed (identically) on every device; ``pmean`` of those
equal values makes it invariant, and its transpose gives each device the gradient of its own rows.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from sentjax.losses.cosine import pair_cosine, rescale_scores
from sentjax.losses.checks import check_embedding_pair
from sentjax.losses.registry import ObjectiveSpec, need

__all__ = ["Config", "OBJECTIVE", "CITATION", "column_loss", "cosent_loss"]


def cosent_loss(u: jax.Array, v: jax.Array, scores: jax.Array, *, scale: float = 20.0,
                axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """CoSENT over the global batch; returns ``(loss, {})``."""
    check_embedding_pair(u, v, ("u", "v"))
    s = rescale_scores(scores, u.shape[0], None)
    c = pair_cosine(u, v) * scale
    if axis_name is not None:
        c = lax.all_gather(c, axis_name, tiled=True)
        s = lax.all_gather(s, axis_name, tiled=True)
    diff = c[None, :] - c[:, None]  # [i, j] = scale * (c_j - c_i)
    diff = jnp.where(s[:, None] > s[None, :], diff, -jnp.inf)
    loss = jax.nn.logsumexp(jnp.concatenate([jnp.zeros((1,), jnp.float32), diff.reshape(-1)]))
    if axis_name is not None:
        loss = lax.pmean(loss, axis_name)
    return loss, {}


# ============================================================================ the objective


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyperparameters of the ``cosent`` objective (``config.objective``)."""
    scale: float = 20.0  # multiplies the cosines before the pairwise log-sum-exp (Su 2022: 20)


def column_loss(*, scale: float = 20.0):
    """``loss_fn(params, embeddings, axis_name)``: columns ``anchor`` / ``positive`` ``[b, d]`` and
    ``score`` ``[b]``."""
    def loss_fn(params, embeddings, axis_name=None):
        return cosent_loss(need(embeddings, "anchor", "cosent"), need(embeddings, "positive", "cosent"),
                           need(embeddings, "score", "cosent"), scale=scale, axis_name=axis_name)
    return loss_fn


# BibTeX of the paper(s) behind this objective; model cards of runs that train with it cite it.
CITATION = """\
@online{su2022cosent,
  title = "CoSENT: A more efficient sentence vector scheme than Sentence-BERT",
  author = "Su, Jianlin",
  year = "2022",
  month = "Jan",
  url = "https://kexue.fm/archives/8847",
}
"""

OBJECTIVE = ObjectiveSpec(
    config=Config,
    loss=lambda hp: column_loss(scale=hp.scale),
    columns=lambda hp: ("anchor", "positive"),
    in_batch_negatives=True,  # every pair of examples of the (global) batch is ranked
)
