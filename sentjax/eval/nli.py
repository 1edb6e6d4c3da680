"""NLI classification accuracy (SNLI/MNLI/SICK-E style) for a classifier head's predictions.

``accuracy = 100 * mean_i [pred_i == gold_i]``; labels may be ids (entailment 0, neutral 1,
contradiction 2 — :data:`sentjax.data.readers.NLI_LABELS`) or label names (any case).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sentjax.data.readers import NLI_LABELS

__all__ = ["NLI_LABELS", "label_ids", "nli_accuracy", "confusion_matrix"]


def label_ids(labels: Sequence[str | int] | np.ndarray) -> np.ndarray:
    """int64 ``[n]`` ids for label names or ids; raises ValueError naming the first unknown label."""
    out = []
    items = labels.tolist() if isinstance(labels, np.ndarray) else list(labels)
    for i, x in enumerate(items):
        if isinstance(x, str) and x.strip().lower() in NLI_LABELS:
            out.append(NLI_LABELS[x.strip().lower()])
        elif isinstance(x, (int, np.integer)) and not isinstance(x, bool) and 0 <= x < len(NLI_LABELS):
            out.append(int(x))
        else:
            raise ValueError(f"Label {x!r} at position {i} is not an NLI label; use one of {sorted(NLI_LABELS)} "
                             f"or ids 0..{len(NLI_LABELS) - 1} ({NLI_LABELS}).")
    return np.asarray(out, np.int64)


def nli_accuracy(pred: Sequence[str | int] | np.ndarray, gold: Sequence[str | int] | np.ndarray) -> float:
    """Accuracy x100 of predicted vs gold labels (ids or names), ``[n]`` each."""
    p, g = label_ids(pred), label_ids(gold)
    if p.shape != g.shape or p.size == 0:
        raise ValueError(f"pred has {p.size} labels and gold {g.size}; they must be equal and non-empty.")
    return float(np.mean(p == g)) * 100.0


def confusion_matrix(pred, gold) -> np.ndarray:
    """``[3, 3]`` counts, rows = gold, columns = predicted (order entailment, neutral, contradiction)."""
    p, g = label_ids(pred), label_ids(gold)
    if p.shape != g.shape:
        raise ValueError(f"pred has {p.size} labels and gold {g.size}; they must be equal.")
    m = np.zeros((len(NLI_LABELS),) * 2, np.int64)
    np.add.at(m, (g, p), 1)
    return m
