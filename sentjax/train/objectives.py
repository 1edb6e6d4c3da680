"""The objective of a training config, built through the registry of :mod:`sentjax.losses`.

``config.objective = {"name": ..., <the fields of sentjax.losses.<name>.Config>}``;
:func:`make_objective` checks every key against that dataclass and returns the built
:class:`sentjax.losses.registry.Objective` (its column loss, the text columns it embeds, whether it
couples the examples of a batch, its head). ``GRADIENT_METHODS`` maps ``gradient.method`` to the
``sentjax.parallel.global_grads`` backend that runs it ('jit': backend 'none' on the global batch,
sharded over the mesh by the jit-compiled train step, XLA inserting the collectives). Every
objective (and ``impl``) accepted here is exact under every method, with and without GradCache
(tests/test_parallel_grads.py, tests/test_gradcache.py).
"""
from __future__ import annotations

from typing import Any, Mapping

from sentjax.losses import registry
from sentjax.losses.registry import Objective

__all__ = ["Objective", "OBJECTIVES", "GRADIENT_METHODS", "make_objective", "select_columns"]

# config gradient.method -> sentjax.parallel.global_grads backend
GRADIENT_METHODS: dict[str, str] = {"shard_map": "shard_map", "pmap": "pmap", "jit": "none"}

OBJECTIVES: tuple[str, ...] = registry.names()


def make_objective(cfg: Mapping[str, Any]) -> Objective:
    """Builds ``config.objective`` (a ConfigDict or dict: ``name`` plus that objective's fields)."""
    fields = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    return registry.build(fields)


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
