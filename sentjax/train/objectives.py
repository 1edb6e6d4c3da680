"""Training objectives by name: which batch columns to embed, and the loss on their embeddings.

The loss math lives once in ``sentjax.losses`` (one file per objective); this registry only maps
a config to ``sentjax.losses.make_column_loss(name, **hparams)``, i.e. a
``loss_fn(params, embeddings, axis_name) -> (loss, metrics)`` over named columns
(``anchor`` / ``positive`` / ``negative`` ``[n, dim]`` embeddings; ``label`` / ``score`` / ``teacher``
passed through), which ``sentjax.parallel.global_grads.make_grad_fn`` runs on one device, under
``jax.shard_map`` or under ``jax.pmap``, with or without GradCache.

``in_batch_negatives`` marks objectives whose loss couples the examples of a batch: for them
gradient accumulation would change the loss (fewer negatives), so it is refused.

``GRADIENT_METHODS`` maps the config's ``gradient.method`` to the ``make_grad_fn`` backend that
runs it ('jit': backend 'none' on the global batch, sharded over the mesh by the jit-compiled
train step, XLA inserting the collectives). Every objective (and ``objective.impl``) that
``make_objective`` accepts is exact under every method, with and without GradCache
(tests/test_parallel_grads.py, tests/test_gradcache.py); ``objective.impl='tiled'`` exists only
for the objectives in ``sentjax.losses.TILED_LOSSES`` and is refused for the others.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import ml_collections

from sentjax.losses import IMPLS, TILED_LOSSES, init_softmax_head, make_column_loss
from sentjax.train.config_cli import ConfigError

# config gradient.method -> sentjax.parallel.global_grads backend
GRADIENT_METHODS: dict[str, str] = {"shard_map": "shard_map", "pmap": "pmap", "jit": "none"}


@dataclasses.dataclass(frozen=True)
class Objective:
    """A named training objective.

    Attributes:
      loss_fn: ``(params, embeddings: dict, axis_name | None) -> (loss, metrics)``.
      fields: text columns of the batch it embeds (others in the batch are passed through).
      in_batch_negatives: the loss couples examples of a batch (contrastive / CoSENT).
      init_head: ``(rng, dim) -> params`` of a trainable head (classifier), or None.
      needs_teacher: the step must add a ``teacher`` column (distillation).
    """
    loss_fn: Callable
    fields: tuple[str, ...]
    in_batch_negatives: bool
    init_head: Callable | None = None
    needs_teacher: bool = False


def _infonce(cfg) -> Objective:
    impl = cfg.get("impl", "dense")
    hp = dict(temperature=cfg.temperature, symmetric=cfg.symmetric,
              hard_negative_weight=cfg.hard_negative_weight)
    if impl == "tiled":
        hp["tile_size"] = cfg.get("tile_size", 1024)
    loss_fn = make_column_loss("infonce", impl=impl, **hp)
    fields = ("anchor", "positive") + (("negative",) if cfg.get("use_hard_negatives", True) else ())
    return Objective(loss_fn, fields, True)


def _softmax(cfg) -> Objective:
    concat = tuple(cfg.get("concat", ("u", "v", "|u-v|")))

    def init_head(rng, dim):
        return init_softmax_head(rng, dim, cfg.num_labels, concat)
    return Objective(make_column_loss("softmax", concat=concat), ("anchor", "positive"), False,
                     init_head)


def _cosine(cfg) -> Objective:
    # The pipeline already scales gold scores to [0, 1].
    return Objective(make_column_loss("cosine", score_range=(0.0, 1.0)), ("anchor", "positive"), False)


def _cosent(cfg) -> Objective:
    return Objective(make_column_loss("cosent", scale=cfg.scale), ("anchor", "positive"), True)


def _distill(cfg) -> Objective:
    return Objective(make_column_loss("distill"), ("anchor", "positive"), False, needs_teacher=True)


OBJECTIVES: dict[str, Callable[[ml_collections.ConfigDict], Objective]] = {
    "infonce": _infonce, "softmax": _softmax, "cosine": _cosine, "cosent": _cosent,
    "distill": _distill,
}


def make_objective(cfg: ml_collections.ConfigDict) -> Objective:
    """Builds ``config.objective``: name in OBJECTIVES plus its hyperparameters."""
    if cfg.name not in OBJECTIVES:
        raise ValueError(f"Unknown objective {cfg.name!r}; choose one of {sorted(OBJECTIVES)}.")
    impl = cfg.get("impl", "dense")
    if impl not in IMPLS:
        raise ConfigError(f"objective.impl={impl!r}: use one of {IMPLS}.")
    if impl != "dense" and cfg.name not in TILED_LOSSES:
        # the other objectives would silently run their dense loss
        raise ConfigError(f"objective.impl={impl!r} exists only for objective.name in {TILED_LOSSES}; "
                          f"objective {cfg.name!r} has no {impl} kernel: set objective.impl='dense'.")
    return OBJECTIVES[cfg.name](cfg)


def select_columns(objective: Objective, batch: dict) -> dict:
    """The batch columns the objective uses: its text fields that are present, plus label/score."""
    cols = {k: batch[k] for k in objective.fields if k in batch}
    missing = [k for k in objective.fields[:1] if k not in cols]
    if missing:
        raise KeyError(f"the batch has no {missing[0]!r} column (columns: {sorted(batch)}).")
    for k in ("label", "score"):
        if k in batch:
            cols[k] = batch[k]
    return cols


__all__ = ["Objective", "OBJECTIVES", "GRADIENT_METHODS", "make_objective", "select_columns"]
