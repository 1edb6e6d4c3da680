"""Bitext retrieval accuracy (Tatoeba protocol of LASER, Artetxe & Schwenk 2019; Reimers & Gurevych 2020).

For line-aligned translations ``src[i] <-> tgt[i]`` with embeddings ``S [n, dim]``, ``T [n, dim]``::

    pred_src2tgt[i] = argmax_j cos(S_i, T_j)      acc_src2tgt = mean_i [pred_src2tgt[i] == i]
    pred_tgt2src[j] = argmax_i cos(T_j, S_i)      acc_tgt2src = mean_j [pred_tgt2src[j] == j]
    accuracy        = (acc_src2tgt + acc_tgt2src) / 2          (x100; LASER reports the error 100 - this)

The nearest neighbour is found block by block (queries x candidates), so memory is
``O(block_size^2)`` rather than ``O(n^2)``. Ties go to the lowest index (``np.argmax``); a duplicate
sentence at another index therefore counts as a miss, as in LASER's evaluation.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from sentjax.data import readers
from sentjax.eval.sts import encode_unique
from sentjax.ops import l2_normalize

__all__ = ["nearest_neighbours", "bitext_retrieval", "evaluate_tatoeba"]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"Expected embeddings [n, dim], got shape {x.shape}.")
    return l2_normalize(x)


def nearest_neighbours(queries: np.ndarray, candidates: np.ndarray, block_size: int = 1024) -> np.ndarray:
    """``[q]`` index of the most cosine-similar candidate for each query (``[q, dim]``, ``[c, dim]``)."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}.")
    q, c = _unit(queries), _unit(candidates)
    if q.shape[1] != c.shape[1]:
        raise ValueError(f"queries have dim {q.shape[1]} but candidates dim {c.shape[1]}; use the same encoder.")
    best = np.full(q.shape[0], -np.inf)
    arg = np.zeros(q.shape[0], np.int64)
    for i in range(0, q.shape[0], block_size):
        qb = q[i: i + block_size]
        for j in range(0, c.shape[0], block_size):
            sim = qb @ c[j: j + block_size].T
            loc = np.argmax(sim, axis=1)
            val = sim[np.arange(len(qb)), loc]
            better = val > best[i: i + block_size]  # strict: earlier block wins ties, like a global argmax
            best[i: i + block_size] = np.where(better, val, best[i: i + block_size])
            arg[i: i + block_size] = np.where(better, loc + j, arg[i: i + block_size])
    return arg


def bitext_retrieval(src_emb: np.ndarray, tgt_emb: np.ndarray, block_size: int = 1024) -> dict[str, float]:
    """Accuracies x100 ``{"src2tgt", "tgt2src", "accuracy", "n"}`` for aligned ``[n, dim]`` embeddings."""
    if np.shape(src_emb)[0] != np.shape(tgt_emb)[0]:
        raise ValueError(f"src has {np.shape(src_emb)[0]} rows, tgt {np.shape(tgt_emb)[0]}; row i of each must be "
                         "a translation pair.")
    n = np.shape(src_emb)[0]
    if n == 0:
        raise ValueError("bitext_retrieval got no pairs.")
    gold = np.arange(n)
    s2t = float(np.mean(nearest_neighbours(src_emb, tgt_emb, block_size) == gold)) * 100
    t2s = float(np.mean(nearest_neighbours(tgt_emb, src_emb, block_size) == gold)) * 100
    return {"src2tgt": s2t, "tgt2src": t2s, "accuracy": (s2t + t2s) / 2, "n": n}


def evaluate_tatoeba(encode_fn: Callable[[list[str]], np.ndarray], langs: Sequence[str],
                     root: str | os.PathLike | None = None, block_size: int = 1024) -> dict:
    """Tatoeba accuracy per language (ISO 639-3 codes, e.g. ``["deu", "fra"]``) plus their ``"mean"``."""
    if not langs:
        raise ValueError("evaluate_tatoeba needs at least one language code, e.g. ['deu', 'fra'].")
    out = {}
    for lang in langs:
        p = readers.read_tatoeba(lang, root)
        emb = encode_unique(encode_fn, p.src + p.tgt)
        out[lang] = bitext_retrieval(emb[: len(p)], emb[len(p):], block_size)
    out["mean"] = float(np.mean([out[lang]["accuracy"] for lang in langs]))
    return out
