"""NLI accuracy of a trained Sentence-BERT softmax head (Reimers & Gurevych, 2019, Sec. 3).

  o = softmax(W^T f(u, v) + b),  f(u, v) = concat(parts), parts from ("u", "v", "|u-v|", "u*v")

``u = enc(premise)``, ``v = enc(hypothesis)`` ``[n, dim]``; ``W`` ``[len(parts) * dim, labels]``.
Computed in float64 NumPy (the head is tiny), so the number does not depend on the device.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from sentjax.eval.nli import label_ids, nli_accuracy
from sentjax.eval.sts import encode_unique

_PARTS = {"u": lambda u, v: u, "v": lambda u, v: v, "|u-v|": lambda u, v: np.abs(u - v),
          "u*v": lambda u, v: u * v}


def head_logits(head: Mapping[str, np.ndarray], u: np.ndarray, v: np.ndarray,
                concat: Sequence[str] = ("u", "v", "|u-v|")) -> np.ndarray:
    """``[n, dim] x2 -> [n, num_labels]`` logits ``f(u, v) @ kernel + bias`` (float64)."""
    bad = [c for c in concat if c not in _PARTS]
    if bad or not concat:
        raise ValueError(f"concat={tuple(concat)!r}: use parts from {tuple(_PARTS)}, e.g. ('u', 'v', '|u-v|').")
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    if u.shape != v.shape or u.ndim != 2:
        raise ValueError(f"u and v must both be [n, dim], got {u.shape} and {v.shape}.")
    feats = np.concatenate([_PARTS[c](u, v) for c in concat], axis=1)
    kernel = np.asarray(head["kernel"], np.float64)
    if kernel.shape[0] != feats.shape[1]:
        raise ValueError(f"head kernel has {kernel.shape[0]} input rows but concat={tuple(concat)} of dim "
                         f"{u.shape[1]} gives {feats.shape[1]}; evaluate with the concat the head was trained with.")
    return feats @ kernel + np.asarray(head["bias"], np.float64)


def nli_head_accuracy(encode_fn: Callable[[list[str]], np.ndarray], head: Mapping[str, np.ndarray],
                      premises: Sequence[str], hypotheses: Sequence[str], labels: Sequence[str | int],
                      concat: Sequence[str] = ("u", "v", "|u-v|")) -> dict:
    """Accuracy x100 of ``argmax head_logits`` against gold labels; returns ``{"accuracy", "n"}``."""
    if not (len(premises) == len(hypotheses) == len(labels)) or not premises:
        raise ValueError(f"premises/hypotheses/labels have {len(premises)}/{len(hypotheses)}/{len(labels)} "
                         "items; they must be equal and non-empty.")
    n = len(premises)
    emb = encode_unique(encode_fn, list(premises) + list(hypotheses))
    pred = np.argmax(head_logits(head, emb[:n], emb[n:], concat), axis=1)
    return {"accuracy": nli_accuracy(pred, label_ids(labels)), "n": n}
