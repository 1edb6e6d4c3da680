"""Training objectives by name: a batch of token dicts -> (loss, metrics).

Every objective is ``loss_fn(embed, params, batch, rng, aux) -> (loss, metrics)`` where
``embed(params_model, tokens, rng) -> [n, dim]`` runs the sentence encoder (dropout on iff
rng), ``batch`` holds token dicts ``anchor`` / ``positive`` / ``negative`` ``[n, L]`` and
arrays ``label`` / ``score`` ``[B]``, and ``aux`` carries frozen inputs (a teacher).

The losses are computed on the *global* batch inside ``jax.jit`` with the batch sharded
over the mesh's ``data`` axis; XLA inserts the collectives, so the in-batch negatives are
those of the whole global batch and the gradient is exact (JAX-NOTES). The loss math lives
in ``sentjax.losses``; the small fallbacks below are used only if that package lacks a loss.

``in_batch_negatives`` marks objectives whose loss couples the examples of a batch: for
them gradient accumulation would change the loss (fewer negatives), so it is refused.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from sentjax.models.pooling import l2_normalize


@dataclasses.dataclass(frozen=True)
class Objective:
    """A named training objective.

    Attributes:
      loss_fn: ``(embed, params, batch, rng, aux) -> (loss, metrics)``.
      fields: batch text fields it needs.
      in_batch_negatives: the loss couples examples of a batch (contrastive).
      init_head: ``(rng, dim) -> params`` of a trainable head (classifier), or None.
    """
    loss_fn: Callable
    fields: tuple[str, ...]
    in_batch_negatives: bool
    init_head: Callable | None = None


def _lib_loss(name: str):
    try:
        from sentjax.losses import get_loss
        return get_loss(name)
    except (ImportError, KeyError, AttributeError, ValueError):
        return None


def _infonce_fallback(anchors, positives, negatives=None, *, temperature=0.05, symmetric=False,
                      hard_negative_weight=0.0):
    """InfoNCE on the global batch as in the shared contract (see sentjax.losses.infonce)."""
    a, p = l2_normalize(anchors.astype(jnp.float32)), l2_normalize(positives.astype(jnp.float32))
    b = a.shape[0]
    logits = a @ p.T / temperature
    if negatives is not None:
        n = l2_normalize(negatives.astype(jnp.float32)).reshape(-1, a.shape[1])
        k = negatives.shape[1]
        neg = a @ n.T / temperature
        own = (jnp.arange(b * k)[None, :] // k) == jnp.arange(b)[:, None]
        logits = jnp.concatenate([logits, neg + hard_negative_weight * own], axis=1)
    diag = jnp.diagonal(logits[:, :b])
    loss = jnp.mean(jax.nn.logsumexp(logits, axis=1) - diag)
    if symmetric:
        back = p @ a.T / temperature
        loss = (loss + jnp.mean(jax.nn.logsumexp(back, axis=1) - jnp.diagonal(back))) / 2
    acc = jnp.mean(jnp.argmax(logits, axis=1) == jnp.arange(b))
    return loss, {"accuracy": acc}


def _embed_fields(embed, params, batch, rng, fields):
    """Embeds several text fields; one dropout key per field so views differ (SimCSE)."""
    keys = jax.random.split(rng, len(fields)) if rng is not None else [None] * len(fields)
    return [embed(params, batch[f], k) for f, k in zip(fields, keys)]


def make_objective(cfg: ml_collections.ConfigDict) -> Objective:
    """Builds ``config.objective``: name in OBJECTIVES plus its hyperparameters."""
    name = cfg.name
    if name not in OBJECTIVES:
        raise ValueError(f"Unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}.")
    return OBJECTIVES[name](cfg)


def _infonce(cfg) -> Objective:
    lib = _lib_loss("infonce")
    use_negatives = cfg.get("use_hard_negatives", True)

    def loss_fn(embed, params, batch, rng, aux):
        fields = ["anchor", "positive"] + (["negative"] if use_negatives and "negative" in batch else [])
        embs = _embed_fields(embed, params["model"], batch, rng, fields)
        negs = None
        if len(embs) == 3:
            negs = embs[2].reshape(embs[0].shape[0], -1, embs[0].shape[1])
        kw = dict(temperature=cfg.temperature, symmetric=cfg.symmetric,
                  hard_negative_weight=cfg.hard_negative_weight)
        return (lib or _infonce_fallback)(embs[0], embs[1], negs, **kw)
    return Objective(loss_fn, ("anchor", "positive"), True)


def _softmax(cfg) -> Objective:
    """Sentence-BERT NLI classifier: softmax(W [u; v; |u - v|]) cross-entropy (Reimers & Gurevych, 2019)."""
    def init_head(rng, dim):
        w = jax.random.normal(rng, (3 * dim, cfg.num_labels), jnp.float32) * (1.0 / (3 * dim) ** 0.5)
        return {"kernel": w, "bias": jnp.zeros((cfg.num_labels,), jnp.float32)}

    def loss_fn(embed, params, batch, rng, aux):
        u, v = _embed_fields(embed, params["model"], batch, rng, ["anchor", "positive"])
        feats = jnp.concatenate([u, v, jnp.abs(u - v)], axis=-1).astype(jnp.float32)
        logits = feats @ params["head"]["kernel"] + params["head"]["bias"]
        labels = batch["label"]
        loss = jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, labels[:, None], 1)[:, 0])
        return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
    return Objective(loss_fn, ("anchor", "positive"), False, init_head)


def _cos(u, v):
    return jnp.sum(l2_normalize(u.astype(jnp.float32)) * l2_normalize(v.astype(jnp.float32)), -1)


def _cosine(cfg) -> Objective:
    """Cosine regression: mean (cos(u, v) - score)^2, scores scaled to [0, 1] by the data."""
    def loss_fn(embed, params, batch, rng, aux):
        u, v = _embed_fields(embed, params["model"], batch, rng, ["anchor", "positive"])
        return jnp.mean(jnp.square(_cos(u, v) - batch["score"])), {}
    return Objective(loss_fn, ("anchor", "positive"), False)


def _cosent(cfg) -> Objective:
    """CoSENT: log(1 + sum_{s_i > s_j} exp(scale * (cos_j - cos_i))) (Su, 2022).

    Pairs are compared across the batch, so it couples examples: no accumulation."""
    def loss_fn(embed, params, batch, rng, aux):
        u, v = _embed_fields(embed, params["model"], batch, rng, ["anchor", "positive"])
        c = _cos(u, v) * cfg.scale
        diff = c[None, :] - c[:, None]  # [i, j] = cos_j - cos_i
        s = batch["score"]
        diff = jnp.where(s[:, None] > s[None, :], diff, -1e12)
        return jax.nn.logsumexp(jnp.concatenate([jnp.zeros(1), diff.reshape(-1)])), {}
    return Objective(loss_fn, ("anchor", "positive"), True)


def _distill(cfg) -> Objective:
    """Embedding distillation: MSE(student(x), teacher(x)); with a ``positive`` field (a
    translation) also MSE(student(y), teacher(x)) (Reimers & Gurevych, 2020)."""
    def loss_fn(embed, params, batch, rng, aux):
        target = jax.lax.stop_gradient(aux["teacher_embed"](aux["teacher_params"], batch["anchor"], None))
        fields = ["anchor"] + (["positive"] if "positive" in batch else [])
        embs = _embed_fields(embed, params["model"], batch, rng, fields)
        losses = [jnp.mean(jnp.square(e.astype(jnp.float32) - target.astype(jnp.float32))) for e in embs]
        return sum(losses) / len(losses), {}
    return Objective(loss_fn, ("anchor",), False)


OBJECTIVES: dict[str, Callable[[ml_collections.ConfigDict], Objective]] = {
    "infonce": _infonce, "softmax": _softmax, "cosine": _cosine, "cosent": _cosent,
    "distill": _distill,
}
