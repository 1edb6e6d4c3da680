"""Reusable experiment rows: ``{row name: config overrides}`` that experiment modules (``ROWS``) combine.

Each recipe is a function of its own (several engineers add recipes here side by side); an
experiment module imports the ones it runs, e.g. ``experiments/sigmoid_ablation.py``.
"""
from __future__ import annotations


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
