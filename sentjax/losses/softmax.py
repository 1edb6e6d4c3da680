"""Sentence-BERT softmax classifier loss (Reimers & Gurevych 2019, "Sentence-BERT", sec. 3).

For sentence embeddings ``u, v`` ``[batch, dim]`` and integer labels ``y`` ``[batch]``::

    f(u, v) = concat(parts)          parts from ("u", "v", "|u-v|", "u*v"), default (u, v, |u-v|)
    logits  = f(u, v) @ W + b        W [m * dim, num_labels], b [num_labels]
    loss    = mean_i ( logsumexp(logits_i) - logits_i[y_i] )      (cross-entropy)

The head ``{"kernel": W, "bias": b}`` is trained with the encoder and dropped afterwards. It is
initialised like ``torch.nn.Linear`` (U(-1/sqrt(fan_in), 1/sqrt(fan_in))), as sentence-transformers'
SoftmaxLoss does. There is no in-batch interaction, so with ``axis_name`` the loss is the ``pmean``
of the per-device means (the global mean; per-device batches are equal).
"""
from __future__ import annotations

import dataclasses

from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from sentjax.losses.checks import check_embedding_pair
from sentjax.losses.registry import ObjectiveSpec, need

__all__ = ["Config", "OBJECTIVE", "CITATION", "column_loss", "init_softmax_head", "softmax_loss", "softmax_features", "CONCATS", "DEFAULT_CONCAT"]

DEFAULT_CONCAT = ("u", "v", "|u-v|")
CONCATS = (("u", "v"), ("|u-v|",), ("u", "v", "|u-v|"), ("u", "v", "|u-v|", "u*v"))
_PARTS = {"u": lambda u, v: u, "v": lambda u, v: v, "|u-v|": lambda u, v: jnp.abs(u - v),
          "u*v": lambda u, v: u * v}


def _check_concat(concat: Sequence[str]) -> tuple[str, ...]:
    concat = tuple(concat)
    if not concat or any(c not in _PARTS for c in concat):
        raise ValueError(f"concat={concat!r} is not valid: use a tuple of parts from {tuple(_PARTS)}, "
                         f"e.g. one of {CONCATS}.")
    return concat


def softmax_features(u: jax.Array, v: jax.Array, concat: Sequence[str] = DEFAULT_CONCAT) -> jax.Array:
    """[b, d], [b, d] -> [b, len(concat) * d] float32 features."""
    concat = _check_concat(concat)
    u, v = u.astype(jnp.float32), v.astype(jnp.float32)
    return jnp.concatenate([_PARTS[c](u, v) for c in concat], axis=-1)


def init_softmax_head(rng: jax.Array, dim: int, num_labels: int,
                      concat: Sequence[str] = DEFAULT_CONCAT) -> dict[str, jax.Array]:
    """Linear head params ``{"kernel": [len(concat) * dim, num_labels], "bias": [num_labels]}``."""
    concat = _check_concat(concat)
    if dim < 1 or num_labels < 2:
        raise ValueError(f"need dim >= 1 and num_labels >= 2, got dim={dim}, num_labels={num_labels}.")
    fan_in = len(concat) * dim
    bound = 1.0 / fan_in ** 0.5
    kw, kb = jax.random.split(rng)
    return {"kernel": jax.random.uniform(kw, (fan_in, num_labels), jnp.float32, -bound, bound),
            "bias": jax.random.uniform(kb, (num_labels,), jnp.float32, -bound, bound)}


def softmax_loss(head_params: dict[str, jax.Array], u: jax.Array, v: jax.Array, labels: jax.Array, *,
                 concat: Sequence[str] = DEFAULT_CONCAT, axis_name: str | None = None
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Cross-entropy of the Sentence-BERT classifier; returns ``(loss, {"accuracy": ...})``.

    A label outside ``[0, num_labels)`` makes the loss NaN (reported by the non-finite guard)
    rather than silently contributing a wrong term.
    """
    check_embedding_pair(u, v, ("u", "v"))
    feats = softmax_features(u, v, concat)
    kernel = head_params["kernel"]
    if kernel.shape[0] != feats.shape[1]:
        raise ValueError(f"head kernel has {kernel.shape[0]} input rows but concat={tuple(concat)} of "
                         f"dim {u.shape[1]} gives {feats.shape[1]} features; build the head with "
                         "init_softmax_head(rng, dim, num_labels, concat) using the same concat.")
    labels = jnp.asarray(labels)
    if labels.shape != (u.shape[0],) or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integer class ids of shape [{u.shape[0]}], got "
                         f"{labels.dtype}{list(labels.shape)}.")
    logits = feats @ kernel + head_params["bias"]
    num_labels = logits.shape[1]
    valid = (labels >= 0) & (labels < num_labels)
    picked = jnp.take_along_axis(logits, jnp.clip(labels, 0, num_labels - 1)[:, None], axis=1)[:, 0]
    ce = jnp.where(valid, jax.nn.logsumexp(logits, axis=1) - picked, jnp.nan)
    loss = jnp.mean(ce)
    accuracy = jnp.mean((jnp.argmax(logits, axis=1) == labels).astype(jnp.float32))
    if axis_name is not None:
        loss, accuracy = lax.pmean((loss, accuracy), axis_name)
    return loss, {"accuracy": accuracy}


# ============================================================================ the objective


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyperparameters of the ``softmax`` objective (``config.objective``)."""
    num_labels: int = 3                               # classes of the pair labels (NLI: 3)
    concat: tuple[str, ...] = DEFAULT_CONCAT          # features fed to the classifier, from CONCAT parts

    def __post_init__(self):
        _check_concat(self.concat)
        if self.num_labels < 2:
            raise ValueError(f"objective.num_labels must be at least 2, got {self.num_labels}.")


def column_loss(*, concat: Sequence[str] = DEFAULT_CONCAT):
    """``loss_fn(params, embeddings, axis_name)``: columns ``anchor`` / ``positive`` ``[b, d]`` and
    ``label`` ``[b]``; the classifier is ``params["head"]`` (:func:`init_softmax_head`)."""
    def loss_fn(params, embeddings, axis_name=None):
        head = params["head"] if isinstance(params, dict) and "head" in params else None
        if head is None:
            raise KeyError("the softmax loss needs params['head'] from init_softmax_head(...).")
        return softmax_loss(head, need(embeddings, "anchor", "softmax"), need(embeddings, "positive", "softmax"),
                            need(embeddings, "label", "softmax"), concat=concat, axis_name=axis_name)
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
    loss=lambda hp: column_loss(concat=hp.concat),
    columns=lambda hp: ("anchor", "positive"),
    in_batch_negatives=False,
    init_head=lambda hp, rng, dim: init_softmax_head(rng, dim, hp.num_labels, hp.concat),
)
