"""One command per experiment: rows x seeds -> ``train(cfg)`` + evaluators -> table, plots, RESULTS.md.

  python experiments/run.py <name> [--seeds 0,1,2] [--rows 'a;b'] [--smoke] [--out DIR]

``<name>`` is a config module in ``experiments/`` (``simcse_unsup``, ``sbert_nli``, ...) that defines

  get_config()  the paper-shaped config (also usable as ``sentjax train --config experiments/<name>.py``)
  PAPER         the paper-scale setting (model, batch, steps, lr) for users with accelerators
  CPU           overrides {"dotted.key": value} that make a run fit 2 CPU cores (a few minutes)
  ROWS          {row name: overrides} of the ablation (the first row is the main setting)
  FULL_EVAL     rows that also get STS12-16 (about 100 s of encoding on this machine)
  BASELINES     {name: dict(pooling=...)} of untrained models evaluated the same way
  TITLE, NOTES  for the Markdown section; optional hooks ``prepare(cfg, row, workroot)`` (edit the
                built config, write derived data) and ``extra_eval(model, summary, cfg, baseline) -> dict``.

Overrides go through ``sentjax.train.config_cli.apply_overrides``, the path of ``--config.k=v``:
a key the config does not have is an error (configs are locked). Each row x seed is trained with
``sentjax.train.train.train(cfg)`` and its exported final model is evaluated by the evaluators of
``sentjax.eval.evaluators`` in ``EVALS`` (each column is an evaluator's main metric, x100): STS-B dev
(SentEval file) and SICK-R trial Spearman of cosine, and for FULL_EVAL rows STS12-16 (pooled "all",
SimCSE's number). Outputs go to
``experiments/results/<name>/`` (``results.json``, ``table.md``, ``loss.png``, ``heatmap.png``)
and the section between ``<!-- BEGIN name -->`` / ``<!-- END name -->`` of
``experiments/RESULTS.md`` is replaced. A run of a subset of the rows (``--rows``) keeps the other
rows' results, loss curves and commands from the previous ``results.json`` in ``--out`` (so an
ablation can be extended row by row; ``--fresh`` drops them). ``--smoke`` swaps in a tiny random encoder (MiniLM's
tokenizer, 2 layers of width 32), 3 steps of batch 8 and STS-B dev only, into a temporary
``--out``: the test suite runs it so the configs cannot rot.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from sentjax.data.readers import SENTEVAL_YEARS
from sentjax.eval.evaluators import EVALUATORS
from sentjax.train.config_cli import apply_overrides, set_key

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

SMOKE = {"total_steps": 3, "batch_size": 8, "log_every": 1, "model.init_from": "",
         "model.encoder.vocab_size": 30522, "model.encoder.hidden_size": 32,
         "model.encoder.num_hidden_layers": 2, "model.encoder.num_attention_heads": 4,
         "model.encoder.intermediate_size": 64, "model.encoder.max_position_embeddings": 64,
         "model.max_length": 16}
# {column: evaluator config} of every exported model; FULL_EVAL rows add STS12-16, smoke runs check
# the path on the first 64 STS-B dev pairs (fewer shapes to compile), not the number.
EVALS = {"stsb_dev": {"type": "sts", "data": "stsbenchmark-dev"}, "sickr_trial": {"type": "sts", "data": "sick-trial"}}
FULL_EVALS = {y.lower(): {"type": "sts", "data": y} for y in SENTEVAL_YEARS}
SMOKE_EVALS = {"stsb_dev": {"type": "sts", "data": "stsbenchmark-dev", "limit": 64}}


# ----------------------------------------------------------------------------- config


def build_config(mod, row: str, seed: int, smoke: bool, workroot: str):
    """The locked config of ``row`` x ``seed``: get_config() + CPU + the row (+ the smoke settings)."""
    overrides = {**getattr(mod, "CPU", {}), **mod.ROWS[row]}
    if smoke:
        from sentjax.testing import minilm_dir
        overrides.update({**SMOKE, "model.tokenizer": minilm_dir() or "", **getattr(mod, "SMOKE", {})})
    cfg = apply_overrides(mod.get_config(), overrides)
    if smoke and cfg.gradient.gradcache_chunk > 0:
        set_key(cfg, "gradient.gradcache_chunk", 1)  # keep the GradCache path with the tiny batch
    cfg = apply_overrides(cfg, {
        "seed": seed, "workdir": os.path.join(workroot, row, f"seed{seed}"),
        **{f"evals.{name}.every_steps": 0 for name in cfg.evals},  # evaluated after training, on the export
        "checkpoint.every_steps": cfg.total_steps, "checkpoint.max_to_keep": 1, "checkpoint.async_save": False,
        "export.best_model": False})
    if hasattr(mod, "prepare"):
        mod.prepare(cfg, row, workroot)
    return cfg


# ----------------------------------------------------------------------------- evaluation


def encoder_of(model) -> Callable[[list[str]], np.ndarray]:
    return lambda texts: model.encode(texts, batch_size=128, show_progress=False)


def evaluate(evals: dict[str, dict], encode_fn, head=None) -> dict[str, float]:
    """``{column: main metric}`` of the evaluators ``{column: evaluator config}`` on ``encode_fn``."""
    out = {}
    for column, spec in evals.items():
        ev = EVALUATORS.build(spec, column)
        out[column] = ev(encode_fn, head)[ev.metric_names()[0]]
    return out


def evaluate_model(model, full: bool, smoke: bool) -> dict:
    """STS-B dev, SICK-R trial and (``full``) SentEval STS12-16: Spearman x100 of cosine."""
    return evaluate(SMOKE_EVALS if smoke else {**EVALS, **(FULL_EVALS if full else {})}, encoder_of(model))


def train_and_evaluate(mod, cfg, full: bool, smoke: bool) -> tuple[dict, dict, Any]:
    """``train(cfg)``, then the exported final model through ``evaluate_model`` and the module's
    ``extra_eval``; the checkpoints are deleted (the export stays). Returns (metrics, {"losses":
    [(step, loss)], "wall_s": training, "eval_wall_s", "pairs_per_s"}, the loaded model)."""
    import sentjax
    from sentjax.train.train import train
    t0 = time.time()
    summary = train(cfg, progress=False)
    wall = time.time() - t0
    if "preempted_at" in summary:  # SIGTERM: train() saved and returned; stop the whole run
        raise SystemExit(f"stopped by SIGTERM at step {summary['preempted_at']} of {cfg.workdir}; finished "
                         "runs are saved.")
    model = sentjax.load(summary["final_model"], max_length=cfg.model.max_length)
    t1 = time.time()
    r = evaluate_model(model, full=full, smoke=smoke)
    if hasattr(mod, "extra_eval"):
        r.update(mod.extra_eval(model, summary, cfg, baseline=False))
    m = read_metrics(cfg.workdir)
    shutil.rmtree(os.path.join(cfg.workdir, "checkpoints"), ignore_errors=True)
    return r, {"losses": [(x["step"], x["loss"]) for x in m if "loss" in x], "wall_s": wall,
               "eval_wall_s": time.time() - t1,
               "pairs_per_s": next((x["pairs_per_s"] for x in reversed(m) if "pairs_per_s" in x), None)}, model


def heatmap_pairs(n: int = 8) -> tuple[list[str], list[str], np.ndarray]:
    """n STS-B dev pairs spread over the gold-score range (sorted by score)."""
    from sentjax.data import readers
    d = readers.read_stsbenchmark_senteval(readers.resolve_sts_data("stsbenchmark-dev")[0])
    order = np.argsort(d.scores, kind="stable")
    pick = order[np.linspace(0, len(order) - 1, n).astype(int)]
    return [d.sentences1[i] for i in pick], [d.sentences2[i] for i in pick], np.asarray(d.scores)[pick]


def cosine_matrix(model, s1: Sequence[str], s2: Sequence[str]) -> np.ndarray:
    u = np.asarray(model.encode(list(s1), show_progress=False), np.float64)
    v = np.asarray(model.encode(list(s2), show_progress=False), np.float64)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return u @ v.T


# ----------------------------------------------------------------------------- plots


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_losses(curves: dict[str, list[tuple[int, float]]], path: str, title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    # tab10 repeats after 10 curves; an 11-row ablation needs distinct colours and line styles
    colours = plt.get_cmap("tab20" if len(curves) > 10 else "tab10").colors
    for i, (name, pts) in enumerate(curves.items()):
        if pts:
            s, l = zip(*pts)
            ax.plot(s, l, label=name, lw=1.2, color=colours[i % len(colours)], ls=("-", "--", ":")[i // 10 % 3],
                    marker="o" if len(pts) <= 4 else None)  # a one-step row is a single point
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean over the log window)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_heatmaps(mats: dict[str, np.ndarray], gold: np.ndarray, path: str) -> None:
    plt = _plt()
    import textwrap
    fig, axes = plt.subplots(1, len(mats), figsize=(5.0 * len(mats), 4.4))
    axes = np.atleast_1d(axes)
    for ax, (name, m) in zip(axes, mats.items()):
        im = ax.imshow(m, vmin=-0.2, vmax=1.0, cmap="viridis")
        ax.set_title("\n".join(textwrap.wrap(name, 40)), fontsize=9)
        ax.set_xlabel("sentence2 of pair j")
        ax.set_ylabel("sentence1 of pair i (gold score)")
        ax.set_yticks(range(len(gold)), [f"{g:.1f}" for g in gold], fontsize=7)
        ax.set_xticks(range(len(gold)))
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="cosine")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# ----------------------------------------------------------------------------- tables


METRIC_NAMES = {"stsb_dev": "STS-B dev", "sickr_trial": "SICK-R trial", "sts12": "STS12", "sts13": "STS13",
                "sts14": "STS14", "sts15": "STS15", "sts16": "STS16", "snli_dev_acc": "SNLI dev acc",
                "final_loss": "final loss", "wall_s": "train s/run"}


def fmt(vals: list[float]) -> str:
    vals = [v for v in vals if v is not None and np.isfinite(v)]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{np.mean(vals):.2f} ± {np.std(vals, ddof=1):.2f}"


def make_table(results: dict, metric_order: Sequence[str], names: dict | None = None) -> str:
    names = {**METRIC_NAMES, **(names or {})}
    metrics = [m for m in metric_order if any(m in r for row in results.values() for r in row)]
    head = "| row | " + " | ".join(names.get(m, m) for m in metrics) + " |"
    lines = [head, "|" + "---|" * (len(metrics) + 1)]
    for row, runs in results.items():
        cell = row.replace("|", "\\|")  # |u-v| in a row name must not split the Markdown cell
        lines.append(f"| {cell} | " + " | ".join(fmt([r.get(m) for r in runs]) for m in metrics) + " |")
    return "\n".join(lines)


def versions() -> str:
    import flax
    import jax
    import optax
    import sentjax
    return (f"sentjax {getattr(sentjax, '__version__', '?')}, jax {jax.__version__}, flax {flax.__version__}, "
            f"optax {optax.__version__}, Python {platform.python_version()}, {platform.machine()} "
            f"{os.cpu_count()} CPU cores ({jax.devices()[0].platform})")


def update_results_md(path: str, name: str, section: str) -> None:
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = open(path, encoding="utf-8").read() if os.path.isfile(path) else (
        "# Experiment results\n\nReduced-scale CPU reproductions; see each section for the command.\n")
    block = f"{begin}\n{section.strip()}\n{end}"
    if begin in text and end in text:
        pre, rest = text.split(begin, 1)
        text = pre + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


# ----------------------------------------------------------------------------- main


def command(name: str, seeds: Sequence[int], rows: Sequence[str], all_rows: Sequence[str]) -> str:
    cmd = f"python experiments/run.py {name} --seeds {','.join(map(str, seeds))}"
    if list(rows) != list(all_rows):
        cmd += f" --rows '{';'.join(rows)}'"
    return cmd


def previous_rows(out: str, name: str, all_rows: Sequence[str], workroot: str) -> dict[str, dict]:
    """{row: {"runs", "curve", "command"}} of the finished rows in ``out/results.json`` that are still
    rows of the experiment. A results file from before curves were saved takes the curve from the
    row's run folder (``metrics.jsonl`` of its first seed) where that is still there."""
    path = os.path.join(out, "results.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        old = json.load(f)
    cmds = old.get("row_commands") or {}
    fallback = command(name, old.get("seeds", [0]), old.get("rows", all_rows), all_rows)
    prev = {}
    for row in all_rows:
        runs = old.get("results", {}).get(row)
        if not runs:
            continue
        curve = (old.get("curves") or {}).get(row) or [
            (x["step"], x["loss"]) for x in read_metrics(os.path.join(workroot, row, f"seed{runs[0].get('seed', 0)}"))
            if "loss" in x]
        prev[row] = {"runs": runs, "curve": curve, "command": cmds.get(row, fallback)}
    return prev


def run(name: str, seeds: Sequence[int] = (0,), rows: Sequence[str] | None = None, smoke: bool = False,
        out: str | None = None, workroot: str | None = None, results_md: str | None = None,
        fresh: bool = False) -> dict:
    """Trains and evaluates ``rows`` x ``seeds`` of experiment ``name``; returns the results dict.

    Rows not in ``rows`` keep their earlier results from ``out/results.json`` unless ``fresh``."""
    import sentjax
    mod = importlib.import_module(name)
    all_rows = list(mod.ROWS)
    rows = list(rows) if rows else all_rows
    bad = [r for r in rows if r not in mod.ROWS]
    if bad:
        raise SystemExit(f"error: unknown row(s) {bad} of {name}; choose from {all_rows}.")
    out = out or os.path.join(HERE, "results", name)
    workroot = workroot or os.path.join(REPO, "runs", "experiments", name)
    os.makedirs(out, exist_ok=True)
    carried = {} if fresh else {r: v for r, v in previous_rows(out, name, all_rows, workroot).items()
                                if r not in rows}
    for row in rows:  # a rerun starts fresh (train() refuses to overwrite checkpoints); other rows' logs stay
        shutil.rmtree(os.path.join(workroot, row), ignore_errors=True)
    full_rows = set(getattr(mod, "FULL_EVAL", all_rows[:1]))
    results: dict[str, list[dict]] = {}
    curves: dict[str, list] = {r: v["curve"] for r, v in carried.items()}
    row_commands = {r: v["command"] for r, v in carried.items()}
    row_commands.update({r: command(name, seeds, rows, all_rows) for r in rows})
    mats: dict[str, np.ndarray] = {}
    s1, s2, gold = heatmap_pairs()
    t_all = time.time()

    cache_path = os.path.join(out, "baselines.json")
    cache = json.load(open(cache_path, encoding="utf-8")) if os.path.isfile(cache_path) else {}
    if not smoke:
        for bname, kw in getattr(mod, "BASELINES", {}).items():
            from sentjax.testing import minilm_dir
            base = sentjax.load(kw.get("path") or minilm_dir(), max_length=kw.get("max_length", 32),
                               pooling=kw.get("pooling"))
            if kw.get("vocab_from"):  # e.g. the distillation student before training
                from sentjax.models.build import transfer_vocab
                base = transfer_vocab(base, kw["vocab_from"], kw.get("max_length", 32))
            if not mats:
                mats[bname] = cosine_matrix(base, s1, s2)
            if bname in cache and cache[bname].get("kw") == kw:
                # untrained models do not change between runs: reuse (delete baselines.json to redo)
                results[bname] = [cache[bname]["result"]]
                continue
            r = evaluate_model(base, full=True, smoke=False)
            if hasattr(mod, "extra_eval"):
                r.update(mod.extra_eval(base, None, None, baseline=True))
            results[bname] = [r]
            cache[bname] = {"kw": kw, "result": r}
            with open(cache_path, "w", encoding="utf-8") as f:
                json.dump(cache, f, indent=1, default=float)
            print(f"[{name}] {bname}: {r}", flush=True)

    for row in all_rows:  # table order = the experiment's order, carried rows in their place
        if row in carried:
            results[row] = carried[row]["runs"]
        elif row in rows:
            results[row] = []
    for row in rows:
        for seed in seeds:
            cfg = build_config(mod, row, seed, smoke, workroot)
            r, info, model = train_and_evaluate(mod, cfg, full=row in full_rows and seed == seeds[0], smoke=smoke)
            losses = info["losses"]
            r.update(final_loss=losses[-1][1] if losses else None, wall_s=info["wall_s"],
                     pairs_per_s=info["pairs_per_s"], seed=seed, steps=cfg.total_steps, batch=cfg.batch_size)
            results[row].append(r)
            if seed == seeds[0]:
                curves[row] = losses
                if row == all_rows[0] and not smoke:
                    mats[f"{row} (trained)"] = cosine_matrix(model, s1, s2)
            print(f"[{name}] {row} seed {seed}: {json.dumps(r, default=float)}", flush=True)
            # after every run, so a run that is stopped still leaves its finished rows
            section = write_outputs(mod, name, results, curves, mats, gold, seeds, rows, all_rows, smoke,
                                    out, workroot, time.time() - t_all, results_md, row_commands)
    return {"results": results, "section": section, "out": out}


def write_outputs(mod, name, results, curves, mats, gold, seeds, rows, all_rows, smoke, out, workroot,
                  total, results_md, row_commands) -> str:
    """results.json, table.md, loss.png, heatmap.png and (not smoke) the RESULTS.md section."""
    # An experiment with many metrics (e.g. one per language) groups them as TABLES = {title: [metrics]}.
    groups = getattr(mod, "TABLES", None)
    if groups:
        names = getattr(mod, "METRIC_NAMES", {})
        table = "\n\n".join(f"**{title}**\n\n{make_table(results, ms, names)}" for title, ms in groups.items())
    else:
        table = make_table(results, [*METRIC_NAMES])
    plot_losses({r: curves[r] for r in all_rows if curves.get(r)}, os.path.join(out, "loss.png"),
                f"{name}: training loss (first seed of each row)")
    heatmap = os.path.join(out, "heatmap.png")
    if len(mats) >= 2:  # untrained + trained main row; otherwise an earlier heat map stays
        plot_heatmaps(mats, gold, heatmap)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"results": results, "curves": curves, "row_commands": row_commands,
                   "done_rows": [r for r in rows if results.get(r)], "seeds": list(seeds), "rows": rows,
                   "smoke": smoke, "total_wall_s": total, "versions": versions()}, f, indent=1, default=float)
    cmd = command(name, seeds, rows, all_rows)
    others: dict[str, list[str]] = {}
    for r, c in row_commands.items():
        if c != cmd and results.get(r):
            others.setdefault(c, []).append(r)
    earlier = "".join(f" Rows from an earlier command `{c}`: " + ", ".join(f'"{r}"' for r in rs) + "."
                      for c, rs in others.items())
    done = [r for r in rows if results.get(r)]
    partial = "" if done == rows else f" Finished {len(done)} of {len(rows)} rows so far."
    cfg0 = build_config(mod, all_rows[0], seeds[0], smoke, os.path.join(workroot, '_cfg'))  # the main setting
    setting = (f"{cfg0.total_steps} steps x batch {cfg0.batch_size}, lr {cfg0.optim.lr}, max length "
               f"{cfg0.model.max_length}, init {cfg0.model.init_from or 'random'}")
    section = "\n".join([
        f"## {mod.TITLE}", "",
        f"Command: `{cmd}` (total wall time {total / 60:.1f} min; seeds {list(seeds)}).{partial}{earlier}  ",
        f"Reduced CPU setting: {setting}. Paper setting: {mod.PAPER}.  ",
        f"Versions: {versions()}.", "",
        table, "",
        "Spearman x100 of cosine similarity; mean ± std over seeds where more than one. "
        "STS12-16 = SentEval pooled ('all'), run for the first seed of the main rows only.", "",
        getattr(mod, "NOTES", "").strip(), "",
        f"![loss](results/{name}/loss.png)" + (f" ![heatmap](results/{name}/heatmap.png)"
                                               if os.path.isfile(heatmap) else ""),
    ])
    with open(os.path.join(out, "table.md"), "w", encoding="utf-8") as f:
        f.write(section + "\n")
    if not smoke:
        update_results_md(results_md or os.path.join(HERE, "RESULTS.md"), name, section)
    return section


def replot(out: str, name: str, workroot: str | None = None, results_md: str | None = None) -> str:
    """Rewrites ``out/loss.png``, ``table.md`` and the RESULTS.md section from ``out/results.json``
    (no training: after editing an experiment's NOTES, or to redraw). Curves missing from
    results.json are read from the rows' run folders and saved into it."""
    path = os.path.join(out, "results.json")
    if not os.path.isfile(path):
        raise SystemExit(f"error: {path} does not exist; run the experiment first.")
    mod = importlib.import_module(name)
    all_rows = list(mod.ROWS)
    workroot = workroot or os.path.join(REPO, "runs", "experiments", name)
    prev = previous_rows(out, name, all_rows, workroot)
    if not any(v["curve"] for v in prev.values()):
        raise SystemExit(f"error: no loss curves in {path} or the run folders; rerun the rows.")
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    seeds, rows = saved.get("seeds", [0]), [r for r in saved.get("rows", all_rows) if r in mod.ROWS]
    write_outputs(mod, name, saved["results"], {r: v["curve"] for r, v in prev.items()}, {}, None, seeds,
                  rows or all_rows, all_rows, bool(saved.get("smoke")), out, workroot,
                  saved.get("total_wall_s", 0.0), results_md, {r: v["command"] for r, v in prev.items()})
    return os.path.join(out, "loss.png")


def parse_seeds(p: argparse.ArgumentParser, text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; a malformed or empty list is an argparse error."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers like 0,1,2, got {text!r}")
    if not seeds:
        p.error("--seeds is empty")
    return seeds


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="experiments/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("name", help="experiment module in experiments/, e.g. simcse_unsup")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--rows", default="", help="';'-separated subset of the experiment's rows (names as in ROWS)")
    p.add_argument("--smoke", action="store_true", help="a few steps of a tiny model (tests)")
    p.add_argument("--out", default=None, help="output folder (default experiments/results/<name>)")
    p.add_argument("--workroot", default=None, help="run folders (default runs/experiments/<name>)")
    p.add_argument("--replot", action="store_true",
                   help="no training: rewrite loss.png, table.md and the RESULTS.md section from results.json")
    p.add_argument("--fresh", action="store_true",
                   help="with --rows: drop the other rows' earlier results instead of keeping them")
    a = p.parse_args(argv)
    seeds = parse_seeds(p, a.seeds)
    if not os.path.isfile(os.path.join(HERE, f"{a.name}.py")) or a.name in ("run", "demo"):
        p.error(f"no experiment {a.name!r}; choose one of "
                f"{sorted(f[:-3] for f in os.listdir(HERE) if f.endswith('.py') and f not in ('run.py', 'demo.py'))}")
    if a.replot:
        print(replot(a.out or os.path.join(HERE, "results", a.name), a.name, a.workroot))
        return 0
    rows = [r.strip() for r in a.rows.split(";") if r.strip()]
    res = run(a.name, seeds, rows or None, a.smoke, a.out, a.workroot, fresh=a.fresh)
    print(res["section"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
