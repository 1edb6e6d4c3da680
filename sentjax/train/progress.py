"""What the training loop reports: metric means over each log window, pairs/s, the progress bar,
``metrics.jsonl`` / TensorBoard rows (process 0, ``workdir.MetricsLog``) and skipped steps.

Every process computes the same means (the metrics are replicated), so all of them see a
divergence at the same step and stop together; only process 0 writes and prints progress.
"""
from __future__ import annotations

import logging
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from sentjax.train import step as step_lib

logger = logging.getLogger(__name__)

__all__ = ["StepLog"]


class StepLog:
    """Args:
      workdir: the run folder (process 0 writes ``metrics.jsonl`` and ``tensorboard/`` there).
      start, total: first and last step of this process's loop.
      batch_size: global examples per step (for pairs/s).
      log_every: steps per log row (and at ``total``).
      progress: show a tqdm bar (process 0).
    """

    def __init__(self, workdir: str, start: int, total: int, batch_size: int, log_every: int,
                 progress: bool = True, source_names: list[str] | None = None):
        from sentjax.train.workdir import MetricsLog
        self.is_main = jax.process_index() == 0
        self.total, self.batch_size, self.log_every = total, batch_size, log_every
        self.file = MetricsLog(workdir, start_step=start) if self.is_main else None
        self.bar = None
        if self.is_main and progress:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True, file=sys.stdout)
        self.sums, self.last, self.n = None, None, 0   # device-side sums since the last row
        self.t0, self.n0 = None, start  # pairs/s counts from the end of the first step: it compiles
        self.skipped = 0                # steps whose update was skipped (non-finite loss / gradient)
        self.latest: dict = {}          # the last row of step metrics
        # several datasets (config.data.sources): rows drawn from each in the window -> data_<name>,
        # its share of the window's examples, and data_last_source, the index the row's step drew
        self.source_names = source_names
        self.drawn = np.zeros(len(source_names or ()), np.int64)
        self.last_draw: dict[int, int] = {}

    def write(self, step: int, metrics: dict) -> None:
        if self.file is not None and metrics:
            self.file.write(step, metrics)

    def step(self, step: int, m: dict, draws: dict[int, int] | None = None) -> None:
        """Adds the metrics ``m`` of ``step`` (device arrays); at a log step writes their means over
        the window (``lr``: the current rate) and reports steps that were skipped. ``draws``:
        ``{source index: rows}`` of the step's batch (``Pipeline.draws``)."""
        if draws is not None and self.source_names:
            for i, n in draws.items():
                self.drawn[i] += n
            self.last_draw = draws
        if self.t0 is None:
            jax.block_until_ready(m)
            self.t0, self.n0 = time.perf_counter(), step
        self.sums = m if self.sums is None else jax.tree.map(jnp.add, self.sums, m)
        self.last, self.n = m, self.n + 1
        if step % self.log_every == 0 or step == self.total:
            self._row(step)
        if self.bar is not None:
            self.bar.update(1)

    def _row(self, step: int) -> None:
        n, metrics = self.n, {k: float(v) / self.n for k, v in step_lib.to_host(self.sums).items()}
        self.sums, self.n = None, 0
        if "lr" in self.last:
            metrics["lr"] = float(step_lib.to_host(self.last["lr"]))
        if self.source_names and self.drawn.sum():
            metrics.update({f"data_{name}": float(k) / float(self.drawn.sum())
                            for name, k in zip(self.source_names, self.drawn)})
            if len(self.last_draw) == 1:  # homogeneous batches: which dataset this row's step drew
                metrics["data_source"] = float(next(iter(self.last_draw)))
            self.drawn[:] = 0
        if step > self.n0:
            metrics["pairs_per_s"] = (step - self.n0) * self.batch_size / max(time.perf_counter() - self.t0, 1e-9)
        self.latest = metrics
        self.write(step, metrics)
        bad = int(round(metrics.get("nonfinite", 0.0) * n))
        if bad:
            self.skipped += bad
            logger.warning(f"{bad} of the last {n} steps (up to step {step}) had a non-finite "
                           f"loss or gradient; their updates were skipped ({self.skipped} so far).")
        if self.bar is not None:
            shown = {"loss": f"{metrics['loss']:.4f}"}
            if "pairs_per_s" in metrics:
                shown["pairs_s"] = f"{metrics['pairs_per_s']:.1f}"
            self.bar.set_postfix(**shown)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.file is not None:
            self.file.close()
            self.file = None
