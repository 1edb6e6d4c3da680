"""Short recipes on bundled data, one function per row group:  python experiments/recipes.py <row> [--smoke]

Each recipe trains from all-MiniLM-L6-v2 for a tiny budget on 2 CPU cores, evaluates the exported
models, writes ``experiments/results/recipes/<row>.json`` and its section of
``experiments/RESULTS.md`` (between ``<!-- BEGIN recipes-<row> -->`` / ``<!-- END ... -->``).
``--smoke`` swaps in a tiny random encoder and 2 steps into a temporary folder (checks the path only).

  matryoshka   STS-B dev Spearman at 384/256/128/64/32 dims: untrained MiniLM truncated, InfoNCE-trained,
               Matryoshka(InfoNCE)-trained (same data, steps, seed)

One vs several positives per anchor (NLI premises with two entailed hypotheses) is the run.py module
``experiments/multipos.py``:  python experiments/run.py multipos --seeds 0,1,2

Row sets other experiment modules import (``experiments/sigmoid_ablation.py``, run by
``python experiments/run.py sigmoid_ablation``): ``contrastive_objective_rows`` (InfoNCE vs learned T vs SigLIP).
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_MD = os.path.join(HERE, "RESULTS.md")
SMOKE = {"total_steps": 2, "batch_size": 8, "log_every": 1, "model.init_from": "",
         "model.encoder.vocab_size": 30522, "model.encoder.hidden_size": 32,
         "model.encoder.num_hidden_layers": 1, "model.encoder.num_attention_heads": 4,
         "model.encoder.intermediate_size": 64, "model.encoder.max_position_embeddings": 64,
         "model.max_length": 16, "model.tokenizer": "minilm"}


def _train_and_export(workdir: str, overrides: dict[str, Any], smoke: bool, objective: dict | None = None) -> dict:
    """Trains the demo setting (MiniLM, mean pooling, lr 5e-5) with ``overrides``; returns the summary."""
    from sentjax.configs import demo
    from sentjax.train.config_cli import apply_overrides
    from sentjax.train.train import train
    base = {"workdir": workdir, "evals.sts_dev.every_steps": 0, "best_metric": "", "log_every": 4,
            "checkpoint.every_steps": 10_000}
    c = apply_overrides(demo.get_config(), {**base, **overrides, **(SMOKE if smoke else {})})
    if objective is not None:  # a whole block (matryoshka's nested inner block)
        c.unlock()
        c.objective = objective
        c.lock()
    t0 = time.time()
    s = train(c, progress=False)
    return {"final_model": s["final_model"], "loss": float(s["final"]["loss"]), "train_s": round(time.time() - t0, 1)}


def _minilm() -> str:
    from sentjax.models.bundled import minilm_dir
    return minilm_dir()


def _sts(model_dir: str | None, dims: tuple[int, ...], smoke: bool) -> dict[str, float]:
    """STS-B dev (SentEval's file) Spearman x100 at full size and at each of ``dims``."""
    import sentjax
    from sentjax.eval.evaluators import EVALUATORS
    model = sentjax.load(model_dir or _minilm())
    cfg = {"type": "sts", "data": "stsbenchmark-dev", "limit": 64 if smoke else 0}
    ev = EVALUATORS.build({**cfg, "type": "sts_dims", "dims": dims} if dims else cfg)
    return ev(lambda texts: model.encode(texts, batch_size=128))


# ============================================================================ matryoshka

MATRYOSHKA_DIMS = (384, 256, 128, 64, 32)


def matryoshka(out: str, smoke: bool, with_infonce: bool = False) -> dict:
    """NLI-CAD triplets (the demo's data), batch 32, 12 steps, T = 0.05: Matryoshka(InfoNCE) at dims
    384..32 with weights 1 (sentence-transformers' defaults) vs the untrained model truncated
    (``with_infonce``: also plain InfoNCE with the same data and steps)."""
    from sentjax.losses import registry
    dims = (32, 16, 8) if smoke else MATRYOSHKA_DIMS
    steps = {} if smoke else {"total_steps": 12}
    inner = registry.defaults("infonce")  # the demo's objective block: T 0.05, hard negatives on
    rows = {} if smoke else {"MiniLM untrained, truncated": _sts(None, dims, smoke)}
    if with_infonce:  # the same training with plain InfoNCE (doubles the run time)
        plain = _train_and_export(os.path.join(out, "infonce"), steps, smoke)
        rows["InfoNCE, truncated"] = {**_sts(plain["final_model"], dims, smoke), "loss": plain["loss"],
                                      "train_s": plain["train_s"]}
    mat = _train_and_export(os.path.join(out, "matryoshka"), steps, smoke,
                            objective={"name": "matryoshka", "dims": dims, "weights": (), "inner": inner})
    rows["Matryoshka(InfoNCE)"] = {**_sts(mat["final_model"], dims, smoke), "loss": mat["loss"],
                                   "train_s": mat["train_s"]}
    cols = [f"spearman_{m}" for m in dims]
    lines = ["| model | " + " | ".join(f"{m} dims" for m in dims) + " | train s |",
             "|---|" + "---|" * (len(dims) + 1)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.2f}" for c in cols) + f" | {r.get('train_s', '')} |")
    return {"rows": rows, "table": "\n".join(lines),
            "title": "Matryoshka: STS-B dev Spearman at each truncation (all-MiniLM-L6-v2, NLI-CAD, 12 steps of 32)"}


# ============================================================================ driver

RECIPES: dict[str, Callable[[str, bool], dict]] = {"matryoshka": matryoshka}


def _write_section(row: str, result: dict, command: str, wall: float) -> None:
    import jax
    body = (f"<!-- BEGIN recipes-{row} -->\n## {result['title']}\n\n`{command}` "
            f"({time.strftime('%Y-%m-%d', time.gmtime())}, one seed, {wall:.0f} s wall on 2 shared CPU cores, "
            f"jax {jax.__version__}, Python {platform.python_version()})\n\n{result['table']}\n\n"
            f"{inspect.cleandoc(RECIPES[row].__doc__ or '')}\n<!-- END recipes-{row} -->")
    text = open(RESULTS_MD, encoding="utf-8").read() if os.path.exists(RESULTS_MD) else ""
    begin, end = f"<!-- BEGIN recipes-{row} -->", f"<!-- END recipes-{row} -->"
    if begin in text:
        text = text[:text.index(begin)] + body + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    with open(RESULTS_MD, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("row", choices=sorted(RECIPES))
    p.add_argument("--smoke", action="store_true", help="tiny random encoder, 2 steps, temporary folder")
    p.add_argument("--out", default=os.path.join("runs", "recipes"))
    p.add_argument("--with-infonce", action="store_true", help="matryoshka: also train plain InfoNCE")
    a = p.parse_args(argv)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp if a.smoke else a.out, a.row)
        extra = {"with_infonce": True} if a.with_infonce and a.row == "matryoshka" else {}
        result = RECIPES[a.row](out, a.smoke, **extra)
    wall = time.time() - t0
    print(result["table"])
    if not a.smoke:
        os.makedirs(os.path.join(HERE, "results", "recipes"), exist_ok=True)
        with open(os.path.join(HERE, "results", "recipes", f"{a.row}.json"), "w", encoding="utf-8") as f:
            json.dump({"rows": result["rows"], "wall_s": round(wall, 1)}, f, indent=2)
        _write_section(a.row, result, f"python experiments/recipes.py {a.row}", wall)
    return 0


# ============================================================================ sigmoid vs InfoNCE

def contrastive_objective_rows(head_lr_mult: float = 200.0) -> dict[str, dict]:
    """InfoNCE (fixed T = 0.05), InfoNCE with CLIP's learned temperature, and the sigmoid loss (SigLIP)
    with learned t' and b, on the same batches. The learned scalars start at T = 0.05 (1/T = 20) and at
    SigLIP's t' = log 10, b = -10. At a fine-tuning lr (5e-5) AdamW moves a scalar by about lr per step,
    so in a short run they stay where they started; the ``head lr x{mult}`` rows train them at
    ``head_lr_mult`` times the encoder's lr (CLIP and SigLIP train them at the pre-training lr)."""
    learned_t = {"objective.learn_temperature": True}
    sigmoid = {"objective.name": "sigmoid"}
    fast = {"optim.head_lr_mult": head_lr_mult}
    x = f"head lr x{head_lr_mult:g}"
    return {
        "InfoNCE, T = 0.05 fixed": {},
        f"InfoNCE, learned T (from 0.05), {x}": {**learned_t, **fast},
        "sigmoid (SigLIP), learned t and b, head lr x1": sigmoid,
        f"sigmoid (SigLIP), learned t and b, {x}": {**sigmoid, **fast},
    }


if __name__ == "__main__":
    sys.exit(main())
