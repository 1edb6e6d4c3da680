"""Dense retrieval evaluation (BEIR protocol, Thakur et al. 2021): nDCG@10, MRR@10, Recall@k, MAP.

For each judged query ``q`` the corpus is ranked by ``cos(f(q), f(d))`` (or the dot product) with the
exact blocked top-k of :mod:`sentjax.search` (depth ``max(k_values)``, ties to the lower corpus
index); the metrics of that ranking against the qrels, averaged over queries, x100::

    ndcg_at_10     sum_{r<=10} rel_r / log2(r + 1)  /  the same for the ideal ranking (trec_eval: gain = relevance)
    mrr_at_10      1 / rank of the first relevant document within the top 10 (0 if none)
    recall_at_k    |relevant in top k| / |relevant|
    map            average precision of the retrieved list (trec_eval ``map`` on a run of depth max(k_values))

The metrics come from ``ir-measures`` (the ``retrieval`` extra), not our own code. Compared with
``pytrec-eval`` (December 2026): ``pytrec-eval`` 0.5 on PyPI is a 2020 source-only release (a C++
build at install); its maintained fork ``pytrec-eval-terrier`` has wheels but, like ``trec_eval``,
no cut-off for the reciprocal rank (BEIR computes MRR@k by hand for that reason). ``ir-measures``
(pure Python, maintained, 0.4.3 of 2025-11) runs ``pytrec-eval-terrier`` for nDCG/AP/Recall and the
official MS MARCO implementation for RR@10, from one measure spec. It is slower (0.21 s against
0.04 s for 1,000 queries x 100 documents here), which does not matter next to encoding.

``trec_eval`` re-sorts a run by score and breaks ties by document id, so the run handed to the
library scores each document by its rank (``depth - rank``): the library then sees exactly our
ranking (ties to the lower corpus index).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from sentjax.data.ir import RetrievalTask
from sentjax.eval.sts import encode_unique
from sentjax.search import top_k

__all__ = ["ir_metrics", "metric_names", "retrieve", "evaluate_retrieval"]


def metric_names(k_values: Sequence[int]) -> tuple[str, ...]:
    """The keys of :func:`ir_metrics`, main one (``ndcg_at_10``) first."""
    return ("ndcg_at_10", "mrr_at_10", *(f"recall_at_{k}" for k in k_values), "map")


def _measures():
    try:
        import ir_measures
    except ImportError:
        raise ImportError("retrieval metrics need the 'ir-measures' package: pip install 'sentjax[retrieval]'.") \
            from None
    return ir_measures


def ir_metrics(qrels: Mapping[str, Mapping[str, int]], ranking: Mapping[str, Sequence[str]],
               k_values: Sequence[int] = (1, 10, 100)) -> dict[str, float]:
    """Mean metrics x100 (:func:`metric_names`) of ``ranking {qid: [doc_id, ...] best first}`` against
    ``qrels {qid: {doc_id: relevance}}`` over the judged queries (a judged query with no ranking scores 0)."""
    if not k_values or any(int(k) < 1 for k in k_values):
        raise ValueError(f"k_values must be positive integers, got {tuple(k_values)}.")
    irm = _measures()
    from ir_measures import AP, R, RR, nDCG
    judged = {q: {d: int(v) for d, v in r.items()} for q, r in qrels.items() if any(v > 0 for v in r.values())}
    if not judged:
        raise ValueError("no query has a relevant document (relevance > 0) in the qrels.")
    run = {q: {d: float(len(docs) - i) for i, d in enumerate(docs)} for q, docs in ranking.items() if q in judged}
    spec = {"ndcg_at_10": nDCG @ 10, "mrr_at_10": RR @ 10, **{f"recall_at_{k}": R @ int(k) for k in k_values},
            "map": AP}
    sums = dict.fromkeys(spec, 0.0)
    for m in irm.iter_calc(list(spec.values()), judged, run):
        sums[next(k for k, v in spec.items() if v == m.measure)] += m.value
    # per-query sums divided by all judged queries: one with an empty ranking counts as 0 (the
    # library's own mean would skip it)
    return {k: 100.0 * s / len(judged) for k, s in sums.items()}


def retrieve(query_emb: np.ndarray, doc_emb: np.ndarray, k: int, metric: str = "cosine",
             **search_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, indices) [q, min(k, n)]``: :func:`sentjax.search.top_k`, with k capped at the corpus size."""
    return top_k(query_emb, doc_emb, min(k, len(doc_emb)), metric=metric, **search_kwargs)


def evaluate_retrieval(encode_fn: Callable[[list[str]], np.ndarray], task: RetrievalTask,
                       k_values: Sequence[int] = (1, 10, 100), metric: str = "cosine", query_prefix: str = "",
                       doc_prefix: str = "", limit: int = 0, **search_kwargs) -> dict:
    """Metrics x100 of ``encode_fn`` on ``task`` plus ``"n_queries"``, ``"n_docs"`` and ``"run"``
    (``{qid: [(doc_id, score), ...]}``, best first). ``limit``: the first N judged queries only;
    ``query_prefix`` / ``doc_prefix`` are prepended to the texts (e.g. e5's ``"query: "``)."""
    qids = list(task.qrels)[: limit or None]
    dids = list(task.corpus)
    q_emb = encode_unique(encode_fn, [query_prefix + task.queries[q] for q in qids])
    d_emb = encode_unique(encode_fn, [doc_prefix + task.corpus[d] for d in dids])
    scores, idx = retrieve(q_emb, d_emb, max(k_values), metric, **search_kwargs)
    run = {q: [(dids[j], float(s)) for j, s in zip(idx[i], scores[i])] for i, q in enumerate(qids)}
    out = ir_metrics({q: task.qrels[q] for q in qids}, {q: [d for d, _ in r] for q, r in run.items()}, k_values)
    return {**out, "n_queries": len(qids), "n_docs": len(dids), "run": run}
