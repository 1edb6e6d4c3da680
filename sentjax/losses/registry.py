"""The objective registry: ``sentjax/losses/<name>.py`` is the whole objective ``<name>``.

An objective module defines, next to its loss function:

``Config``     a frozen dataclass of its hyperparameters (defaults, one comment per field);
``CITATION``   the BibTeX of its paper(s), quoted by the model cards of runs that train with it;
``OBJECTIVE``  an :class:`ObjectiveSpec`: how a ``Config`` becomes the column loss
               ``loss_fn(params, embeddings, axis_name) -> (loss, metrics)`` that
               :func:`sentjax.parallel.global_grads.make_grad_fn` runs on one device, under
               ``jax.shard_map`` or ``jax.pmap``, with or without GradCache; the text columns it
               embeds; whether it couples the examples of a batch; an optional trainable head.

Objectives are found by module name (as big_vision finds models and evaluators), so adding one is
adding one file (plus its tests). The training config names one with its own fields only::

    config.objective = {"name": "infonce", "temperature": 0.05, ...}   # fields of infonce.Config

and :func:`build` checks every key against that dataclass: a field of another objective is an
error that lists the valid ones.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
from typing import Any, Callable, Mapping

from sentjax.errors import ConfigError

__all__ = ["ObjectiveSpec", "Objective", "get", "names", "build", "defaults", "hparams_from", "need", "citation"]

LossFn = Callable[[Any, Mapping[str, Any], Any], tuple[Any, dict]]


@dataclasses.dataclass(frozen=True)
class ObjectiveSpec:
    """What an objective module registers (its ``OBJECTIVE``).

    Attributes:
      config: the frozen hyperparameter dataclass (``Config`` of the module).
      loss: ``Config -> loss_fn(params, embeddings, axis_name) -> (loss, metrics)``.
      columns: ``Config -> text columns embedded``, e.g. ``("anchor", "positive")``.
      in_batch_negatives: the loss couples the examples of a batch (a contrastive denominator, a
        ranking over pairs): gradient accumulation would change it, so it is refused. A
        ``Config -> bool`` when that depends on the hyperparameters.
      init_head: ``(Config, rng, dim) -> params`` of a trainable head (``params["head"]``: trained,
        checkpointed, not exported), or None; it may return None for hyperparameters without one.
      clip_head: ``(Config, head) -> head`` projecting the head back into its allowed range after
        each optimizer update (CLIP's clipped logit scale), or None.
      needs_teacher: the step adds a ``teacher`` column (a frozen model's embeddings).
      teacher_columns: ``Config -> text columns`` the frozen teacher (or guide) embeds in the step,
        each passed to the loss as ``teacher:<column>`` (same rows, no gradient, once per step);
        ``()`` for hyperparameters without one. Its path is the Config's ``teacher`` or ``guide``.
      token_level: the objective reads token-level encoder outputs (an MLM column, see
        :mod:`sentjax.losses.mlm`): the trainer masks its column and refuses packing.

    ``in_batch_negatives``, ``needs_teacher`` and ``token_level`` may also be ``Config -> bool``
    (a wrapper objective such as ``multi`` inherits them from its terms).
    """
    config: type
    loss: Callable[[Any], LossFn]
    columns: Callable[[Any], tuple[str, ...]]
    in_batch_negatives: bool | Callable[[Any], bool]
    init_head: Callable[[Any, Any, int], Any] | None = None
    needs_teacher: bool | Callable[[Any], bool] = False
    clip_head: Callable[[Any, Any], Any] | None = None
    token_level: bool | Callable[[Any], bool] = False
    teacher_columns: Callable[[Any], tuple[str, ...]] | None = None


@dataclasses.dataclass(frozen=True)
class Objective:
    """A built objective: a spec bound to its hyperparameters.

    Attributes:
      name: the module name.
      hparams: the ``Config`` instance.
      loss_fn: ``(params, embeddings: dict, axis_name | None) -> (loss, metrics)``.
      fields: text columns of the batch it embeds (the other columns are passed through).
      in_batch_negatives, needs_teacher, token_level: as in :class:`ObjectiveSpec`.
      init_head: ``(rng, dim) -> params`` of the trainable head, or None (it may also return None).
      clip_head: ``head -> head`` applied after each optimizer update, or None.
      teacher_fields: text columns the frozen teacher embeds as ``teacher:<column>`` (``()``: none,
        or only the legacy ``teacher`` column of the anchors when ``needs_teacher``).
    """
    name: str
    hparams: Any
    loss_fn: LossFn
    fields: tuple[str, ...]
    in_batch_negatives: bool
    init_head: Callable[[Any, int], Any] | None = None
    needs_teacher: bool = False
    clip_head: Callable[[Any], Any] | None = None
    token_level: bool = False
    teacher_fields: tuple[str, ...] = ()


def names() -> tuple[str, ...]:
    """Every registered objective (modules of ``sentjax.losses`` that define ``OBJECTIVE``)."""
    found = []
    for m in pkgutil.iter_modules([os.path.dirname(os.path.abspath(__file__))]):
        if m.name not in ("registry", "checks") and not m.name.startswith("_") \
                and hasattr(_module(m.name), "OBJECTIVE"):
            found.append(m.name)
    return tuple(sorted(found))


def _module(name: str):
    return importlib.import_module(f"sentjax.losses.{name}")


def get(name: str) -> ObjectiveSpec:
    """The spec of objective ``name``; a clear error listing the registered ones otherwise."""
    try:
        spec = getattr(_module(name), "OBJECTIVE", None) if name.isidentifier() else None
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        raise ConfigError(f"Unknown objective {name!r}; choose one of {list(names())}.")
    return spec


def citation(name: str) -> str:
    """The BibTeX of objective ``name`` (its module's ``CITATION``; model cards quote it), or ""."""
    get(name)  # an unknown name is the usual error
    return getattr(_module(name), "CITATION", "").strip()


def defaults(name: str) -> dict[str, Any]:
    """``{"name": name, **fields of its Config with their defaults}`` (a config's objective block)."""
    return {"name": name, **dataclasses.asdict(get(name).config())}


def hparams_from(name: str, fields: Mapping[str, Any]) -> Any:
    """``Config(**fields)`` of objective ``name``; a key it does not have is an error listing its fields."""
    cls = get(name).config
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(fields) - set(valid))
    if unknown:
        raise ConfigError(f"objective {name!r} has no field {unknown[0]!r}; its fields are {valid} "
                          "(switching objectives from the command line with --config.objective.name "
                          "resets the block to the new objective's defaults).")
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"objective {name!r}: {e}") from None


def build(config: Mapping[str, Any]) -> Objective:
    """Builds a config's objective block ``{"name": ..., <its fields>}``."""
    fields = dict(config)
    name = fields.pop("name", None)
    if not name:
        raise ConfigError(f"the objective block needs a name; choose one of {list(names())}.")
    spec = get(name)
    hp = hparams_from(name, fields)
    init_head = None
    if spec.init_head is not None:
        init_head = lambda rng, dim: spec.init_head(hp, rng, dim)  # noqa: E731
    clip_head = None
    if spec.clip_head is not None:
        clip_head = lambda head: spec.clip_head(hp, head)  # noqa: E731
    flag = lambda v: bool(v(hp)) if callable(v) else v  # noqa: E731
    teacher_fields = tuple(spec.teacher_columns(hp)) if spec.teacher_columns is not None else ()
    return Objective(name, hp, spec.loss(hp), tuple(spec.columns(hp)), flag(spec.in_batch_negatives),
                     init_head, flag(spec.needs_teacher) or bool(teacher_fields), clip_head,
                     flag(spec.token_level), teacher_fields)


def need(embeddings: Mapping[str, Any], column: str, objective: str):
    """``embeddings[column]``, or an error naming the objective and the columns it got."""
    if column not in embeddings:
        raise KeyError(f"the {objective} loss needs a {column!r} column, got columns {sorted(embeddings)}.")
    return embeddings[column]
