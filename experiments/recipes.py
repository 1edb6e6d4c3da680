"""Recipe entry points kept for their old command lines:  python experiments/recipes.py matryoshka [--smoke]

The recipes are run.py experiment modules now (seeds, mean ± std, RESULTS.md sections):

  matryoshka   moved to ``python experiments/run.py matryoshka`` (experiments/matryoshka.py); this name
               forwards there (``--with-infonce`` adds its InfoNCE row)

One vs several positives per anchor (NLI premises with two entailed hypotheses) is the run.py module
``experiments/multipos.py``:  python experiments/run.py multipos --seeds 0,1,2

Row sets other experiment modules import (``experiments/sigmoid_ablation.py``, run by
``python experiments/run.py sigmoid_ablation``): ``contrastive_objective_rows`` (InfoNCE vs learned T vs SigLIP).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_MD = os.path.join(HERE, "RESULTS.md")  # tests check a smoke run leaves it unchanged


# ============================================================================ matryoshka
# The Matryoshka recipe is the run.py experiment module experiments/matryoshka.py (one place for it:
# seeds, the plain-InfoNCE row, STS-B dev at every truncation, the sentence-transformers peer).


def matryoshka(out: str | None, smoke: bool, with_infonce: bool = False, seeds: tuple[int, ...] = (0,)) -> dict:
    """``python experiments/run.py matryoshka``: rows "Matryoshka(InfoNCE)" (and with ``with_infonce``
    "InfoNCE") of ``experiments/matryoshka.py`` into ``out`` (None: run.py's default folders); run.py
    writes the ``matryoshka`` section of RESULTS.md (not in smoke runs). Returns run.run's dict
    (``results``, ``section``, ``out``)."""
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    import run
    import matryoshka as module
    rows = [module.MAIN] + (["InfoNCE"] if with_infonce else [])
    return run.run("matryoshka", seeds=seeds, rows=rows, smoke=smoke,
                   out=None if out is None else os.path.join(out, "results"),
                   workroot=None if out is None else os.path.join(out, "runs"), fresh=True)


# ============================================================================ driver

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("row", choices=["matryoshka"])
    p.add_argument("--smoke", action="store_true", help="tiny random encoder, 2 steps, temporary folder")
    p.add_argument("--with-infonce", action="store_true", help="matryoshka: also train plain InfoNCE")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:  # the run.py module writes its own outputs and section
        res = matryoshka(tmp if a.smoke else None, a.smoke, a.with_infonce)
    print(res["section"])
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
