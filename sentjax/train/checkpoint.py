"""Orbax checkpoints: train state + data position + metadata, atomic and asynchronous.

Each step folder holds three items (``ocp.args.Composite``):
  state  the state dict (params, opt_state, step, rng, data_pos), ``StandardSave``
  data   JSON data position ``{"step", "data_pos", "seed"}``
  meta   JSON run metadata (the config)
Orbax writes a save into a temporary folder and renames it when complete, so a process
killed mid-save (preemption, SIGKILL) leaves a ``*.orbax-checkpoint-tmp*`` folder that is
never mistaken for a checkpoint; ``Checkpointer`` reports it with a warning and restores
the last complete step. Retention: the last ``max_to_keep`` steps plus the best by a dev
metric. In a multi-process run every process must call ``save`` and ``restore``.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm


class TornCheckpointWarning(UserWarning):
    """An interrupted (incomplete) save was found and skipped."""


def _incomplete(directory: str) -> list[str]:
    if not os.path.isdir(directory):
        return []
    return sorted(n for n in os.listdir(directory) if "orbax-checkpoint-tmp" in n)


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` for the train state.

    Args:
      directory: checkpoint root (local path or gs://...).
      max_to_keep: how many of the latest steps to keep.
      best_metric: metric name (e.g. "sts_dev_spearman") whose best step is kept too.
      best_mode: "max" or "min".
      async_save: write in a background thread (wait with ``wait()``).
    """

    def __init__(self, directory: str, max_to_keep: int = 2, best_metric: str | None = None,
                 best_mode: str = "max", async_save: bool = True):
        self.directory = os.path.abspath(directory) if "://" not in directory else directory
        torn = _incomplete(self.directory) if jax.process_index() == 0 else []
        policies: list[Any] = [ocm.LatestN(n=max_to_keep)]
        if best_metric:
            policies.append(ocm.BestN(get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min",
                                      n=1, keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocm.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save, create=True,
            best_fn=(lambda m: m[best_metric]) if best_metric else None, best_mode=best_mode)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data", "meta"))
        self.best_metric = best_metric
        if torn:
            latest = self.manager.latest_step()
            warnings.warn(f"{self.directory}: incomplete checkpoint(s) {torn} from an interrupted save "
                          f"were skipped; the last complete checkpoint is step {latest}.",
                          TornCheckpointWarning, stacklevel=2)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step() if self.best_metric else None

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: dict, data: dict, meta: dict | None = None,
             metrics: dict | None = None, force: bool = True) -> bool:
        """Starts an (async) save of ``state`` and JSON ``data`` position at ``step``."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  data=ocp.args.JsonSave(data),
                                  meta=ocp.args.JsonSave(meta or {}))
        return self.manager.save(step, args=args, metrics=metrics, force=force)

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[dict, dict]:
        """Restores (state, data position) of ``step`` (default: latest complete one).

        ``abstract_state``: a state pytree (or ShapeDtypeStructs with shardings) giving
        shapes, dtypes and target shardings."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No complete checkpoint in {self.directory} to resume from; "
                                    "drop --resume to start a new run.")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
        return out["state"], dict(out["data"])

    def read_meta(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        path = os.path.join(self.directory, str(step), "meta", "metadata")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        return {}

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
