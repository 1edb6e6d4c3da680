"""``sentjax plot RUN_DIR [--out DIR]``: PNG curves of a run's ``metrics.jsonl``.

One PNG per scalar: the training loss (``loss.png``), the learning rate (``lr.png``), the gradient
norm (``grad_norm.png``), the other step metrics (the objective's ``accuracy``, ``pairs_per_s``, ...)
and every evaluator's metric (``eval_<name>_<metric>.png``, one point per evaluation), each
against the training step. The same scalars are in the run's TensorBoard event files
(``RUN_DIR/tensorboard``, written by ``sentjax.train.workdir.MetricsLog``).

Needs matplotlib (the ``plot`` extra). It draws through matplotlib's object API onto Agg canvases,
so it never touches pyplot's global state or needs a display.
"""
from __future__ import annotations

import math
import os
import re

from sentjax.train.workdir import read_metrics

__all__ = ["series", "plot_run", "main_args"]

# Drawn first and named plainly; the rest follow in the order they first appear.
_TRAIN_FIRST = ("loss", "lr", "grad_norm")
_LABELS = {"loss": "loss (log-window mean)", "lr": "learning rate",
           "grad_norm": "gradient norm (log-window mean)", "pairs_per_s": "examples / s",
           "nonfinite": "skipped steps (fraction)"}


def series(rows: list[dict]) -> tuple[dict[str, tuple[list[int], list[float]]], set[str]]:
    """-> (``{scalar: (steps, values)}``, the names that are evaluation metrics).

    Training rows carry ``loss``; evaluation rows (written separately, at evaluation steps) do not,
    which is how their metrics are told apart without the run's config."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    evals: set[str] = set()
    for row in rows:
        is_eval = "loss" not in row
        for k, v in row.items():
            if k == "step" or not isinstance(v, (int, float)):
                continue
            steps, values = out.setdefault(k, ([], []))
            steps.append(int(row["step"]))
            values.append(float(v))
            if is_eval:
                evals.add(k)
    return out, evals


def _file_name(key: str, is_eval: bool) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
    return f"eval_{safe}.png" if is_eval else f"{safe}.png"


def plot_run(run_dir: str, out: str | None = None) -> list[str]:
    """Writes the PNGs of ``run_dir``'s ``metrics.jsonl`` into ``out`` (default ``run_dir/plots``);
    returns their paths, loss / lr / grad_norm first."""
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a folder; pass the workdir of a training run "
                                "(config.workdir, e.g. runs/demo-...).")
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl: pass the workdir of a `sentjax train` / "
                                "`sentjax demo` run (config.workdir), which holds metrics.jsonl, "
                                "tensorboard/ and checkpoints/.")
    data, evals = series(read_metrics(run_dir))
    if not data:
        raise ValueError(f"{path} holds no metric rows yet: the run has not reached its first log step "
                         "(config.log_every) or evaluation.")
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise ImportError("sentjax plot needs matplotlib: pip install 'sentjax[plot]' "
                          "(or pip install matplotlib).") from None
    out = os.path.join(run_dir, "plots") if out is None else out
    os.makedirs(out, exist_ok=True)
    rest = [k for k in data if k not in _TRAIN_FIRST]
    order = ([k for k in _TRAIN_FIRST if k in data] + [k for k in rest if k not in evals]
             + [k for k in rest if k in evals])
    written = []
    for key in order:
        steps, values = data[key]
        if key == "nonfinite" and not any(values):
            continue  # all zero: nothing to look at
        fig = Figure(figsize=(6.4, 4.0), layout="constrained")
        ax = fig.add_subplot()
        finite = [v for v in values if math.isfinite(v)]
        style = dict(marker="o") if key in evals or len(steps) < 20 else {}
        ax.plot(steps, values, **style)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{key} (evaluation)" if key in evals else _LABELS.get(key, key))
        ax.set_title(key + (f" (last {finite[-1]:.4g})" if finite else ""))
        ax.grid(True, alpha=0.3)
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        target = os.path.join(out, _file_name(key, key in evals))
        fig.savefig(target, dpi=100)
        written.append(target)
    return written


def main_args(run_dir: str, out: str | None) -> int:
    """The ``sentjax plot`` command: writes the PNGs and lists them."""
    paths = plot_run(run_dir, out)
    print(f"{len(paths)} plots in {os.path.dirname(paths[0]) if paths else out}:")
    for p in paths:
        print(f"  {os.path.basename(p)}")
    return 0
