"""Semantic textual similarity (STS) evaluation: correlation of cosine similarity with gold scores.

Metric (SentEval, Conneau & Kiela 2018; SimCSE, Gao et al. 2021; SBERT, Reimers & Gurevych 2019)::

    sim_i    = cos(u_i, v_i) = u_i . v_i / (|u_i| |v_i|)      u = f(sentence1) [n, dim], v = f(sentence2)
    spearman = 100 * rho(rank(sim), rank(gold))               (average ranks for ties, scipy.stats.spearmanr)
    pearson  = 100 * r(sim, gold)

All arithmetic is float64. For SentEval STS12-16 both aggregations are returned per year:

* ``"all"``: correlation of the POOLED pairs of every subset of that year (what SentEval's ``all``
  entry holds and what SimCSE's ``evaluation.py`` reports for STS12-16, ``results[t]['all']['spearman']['all']``);
* ``"mean"``: unweighted mean of the per-subset correlations (SentEval's ``mean``; SBERT's tables),
  and ``"wmean"``: the mean weighted by subset size.

``encode_fn(list[str]) -> np.ndarray [n, dim]`` is any encoder; sentences are de-duplicated before
encoding (STS files repeat many sentences) and mapped back.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

from sentjax import ops
from sentjax.data import readers

EncodeFn = Callable[[list[str]], np.ndarray]

__all__ = ["EncodeFn", "encode_unique", "cosine_similarity", "sts_correlations", "evaluate_sts",
           "evaluate_sts_file", "evaluate_senteval"]


def encode_unique(encode_fn: EncodeFn, sentences: Sequence[str]) -> np.ndarray:
    """Embeddings ``[n, dim]`` (float64) of ``sentences``, calling ``encode_fn`` once on the unique ones."""
    uniq = list(dict.fromkeys(sentences))
    if not uniq:
        raise ValueError("No sentences to encode; the evaluation data is empty.")
    emb = np.asarray(encode_fn(uniq))
    if emb.ndim != 2 or emb.shape[0] != len(uniq):
        raise ValueError(f"encode_fn returned shape {emb.shape} for {len(uniq)} sentences; it must return "
                         "[n_sentences, dim] (one row per input sentence, in order).")
    emb = emb.astype(np.float64)
    if not np.all(np.isfinite(emb)):
        bad = int(np.sum(~np.all(np.isfinite(emb), axis=1)))
        raise ValueError(f"encode_fn returned non-finite values (NaN/inf) for {bad} of {len(uniq)} sentences; "
                         "the model diverged or its weights are broken.")
    index = {s: i for i, s in enumerate(uniq)}
    return emb[[index[s] for s in sentences]]


def cosine_similarity(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Row-wise ``cos(u_i, v_i)`` in float64, ``[n, dim] x [n, dim] -> [n]``. Zero vectors give 0."""
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    if u.shape != v.shape or u.ndim != 2:
        raise ValueError(f"cosine_similarity needs two [n, dim] arrays of equal shape, got {u.shape} and {v.shape}.")
    # sqrt(|u|^2 |v|^2): identical pairs score exactly 1.0 and tie (see sentjax.ops).
    return ops.cosine_similarity(u, v)


def _check_scores(scores, n: int) -> np.ndarray:
    s = np.asarray(scores, np.float64)
    if s.shape != (n,):
        raise ValueError(f"scores has shape {s.shape} but there are {n} sentence pairs; pass one gold score per pair.")
    if n < 2:
        raise ValueError(f"STS correlation needs at least 2 pairs, got {n}.")
    if not np.all(np.isfinite(s)):
        raise ValueError("Gold scores contain NaN/inf; fix the data file.")
    if np.ptp(s) == 0:
        raise ValueError(f"All {n} gold scores equal {s[0]:g}; a correlation is undefined. Use a file with varied scores.")
    return s


def sts_correlations(sims: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """``{"spearman", "pearson"}`` x100 of predicted similarities ``[n]`` vs gold ``[n]`` (float64).

    A constant prediction (e.g. a collapsed model) gives NaN, as scipy does, with a warning.
    """
    sims = np.asarray(sims, np.float64)
    scores = _check_scores(scores, sims.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        sp = stats.spearmanr(sims, scores).statistic
        pe = stats.pearsonr(sims, scores).statistic if np.ptp(sims) > 0 else np.nan
    if np.isnan(sp):
        warnings.warn("All predicted similarities are equal: the correlation is undefined (NaN). "
                      "The embeddings have probably collapsed.", RuntimeWarning, stacklevel=2)
    return {"spearman": float(sp) * 100.0, "pearson": float(pe) * 100.0, "n": int(sims.shape[0])}


def evaluate_sts(encode_fn: EncodeFn, sentences1: Sequence[str], sentences2: Sequence[str],
                 scores: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Spearman and Pearson x100 of ``cos(f(s1_i), f(s2_i))`` vs ``scores``; returns
    ``{"spearman", "pearson", "n"}``. Each distinct sentence is encoded once."""
    if len(sentences1) != len(sentences2):
        raise ValueError(f"sentences1 has {len(sentences1)} items, sentences2 {len(sentences2)}; they must be paired.")
    n = len(sentences1)
    _check_scores(scores, n)
    emb = encode_unique(encode_fn, list(sentences1) + list(sentences2))
    return sts_correlations(cosine_similarity(emb[:n], emb[n:]), scores)


def _year_result(encode_fn: EncodeFn, data: readers.SentEvalSTS) -> dict:
    names = list(data.subsets)
    sents = [s for name in names for s in (*data.subsets[name].sentences1, *data.subsets[name].sentences2)]
    emb = encode_unique(encode_fn, sents)  # one encode call per year
    out, sims_all, gold_all, pos = {"subsets": {}}, [], [], 0
    for name in names:
        sub = data.subsets[name]
        n = len(sub)
        sims = cosine_similarity(emb[pos: pos + n], emb[pos + n: pos + 2 * n])
        pos += 2 * n
        out["subsets"][name] = sts_correlations(sims, sub.scores)
        sims_all.append(sims), gold_all.append(sub.scores)
    pooled = sts_correlations(np.concatenate(sims_all), np.concatenate(gold_all))
    sizes = np.asarray([len(data.subsets[n]) for n in names], np.float64)
    for metric in ("spearman", "pearson"):
        vals = np.asarray([out["subsets"][n][metric] for n in names])
        out[metric] = {"all": pooled[metric], "mean": float(vals.mean()),
                       "wmean": float((vals * sizes).sum() / sizes.sum())}
    out["n"] = int(sizes.sum())
    out["skipped_subsets"] = list(data.skipped)
    return out


def evaluate_senteval(encode_fn: EncodeFn, root: str | os.PathLike | None = None,
                      years: Sequence[str] = readers.SENTEVAL_YEARS) -> dict:
    """SentEval STS12-16 with cosine similarity.

    ``root`` holds ``STS12-en-test/`` ... ``STS16-en-test/`` (SentEval's ``data/downstream/STS``);
    default: the bundled copy. Returns ``{year: {"spearman": {"all", "mean", "wmean"}, "pearson": {...},
    "subsets": {name: {"spearman", "pearson", "n"}}, "n"}, "avg": {"spearman_all", "spearman_mean"}}``.
    ``"all"`` (pooled) is the number SimCSE reports; ``"mean"`` the mean over subsets.
    """
    res: dict = {}
    for y in years:
        y = y.upper()
        if y not in readers.SENTEVAL_YEARS:
            raise ValueError(f"Unknown SentEval STS year {y!r}; use some of {readers.SENTEVAL_YEARS}.")
        src = y if root is None else os.path.join(os.fspath(root), f"{y}-en-test")
        res[y] = _year_result(encode_fn, readers.read_senteval_sts(src))
    res["avg"] = {"spearman_all": float(np.mean([res[y.upper()]["spearman"]["all"] for y in years])),
                  "spearman_mean": float(np.mean([res[y.upper()]["spearman"]["mean"] for y in years]))}
    return res


def evaluate_sts_file(encode_fn: EncodeFn, path: str | os.PathLike, fmt: str = "auto") -> dict:
    """Evaluate on one STS file, a SentEval STS year folder, or a bundled name (``"stsb-en-dev"``,
    ``"stsbenchmark-dev"``, ``"sick-trial"``, ``"STS12"``...).

    ``fmt``: ``auto`` | ``stsb`` (STS-B multi-mt CSV) | ``stsbenchmark`` (SentEval TSV) | ``sick`` |
    ``tsv`` (headed ``sentence1 sentence2 score``) | ``senteval`` (STS12-16 folder). Returns
    ``{"spearman", "pearson", "n"}``; for a SentEval folder the per-year dict of :func:`evaluate_senteval`
    with top-level ``spearman``/``pearson`` = the pooled ``all``.
    """
    p, f = readers.resolve_sts_data(os.fspath(path), fmt)
    if f == "senteval":
        r = _year_result(encode_fn, readers.read_senteval_sts(p))
        return {**r, "spearman": r["spearman"]["all"], "pearson": r["pearson"]["all"],
                "aggregation": "all (pooled subsets)", "spearman_mean": r["spearman"]["mean"]}
    d = readers.read_sts(p, f)
    return evaluate_sts(encode_fn, d.sentences1, d.sentences2, d.scores)
