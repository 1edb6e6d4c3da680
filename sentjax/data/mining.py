"""Hard-negative mining for contrastive training (the recipe of Sentence-Transformers'
``mine_hard_negatives``; margins as in NV-Retriever, Moreira et al. 2024), on the exact top-k of
:mod:`sentjax.search`.

For a query ``q`` with positive ``p`` (a relevant document of the task) and the corpus ranked by
``s(q, d)`` (cosine or dot, best first, ranks counted from 0, ties to the lower corpus index), a
document ``d`` at rank ``r`` is a hard negative when all of:

    start <= r < end                                   (``rank_range``: skip the very top, which
                                                        often holds unlabelled positives)
    d is not a positive of q, and its text is neither q's text nor the text of a positive of q
    s(q, d) <= s(q, p) - margin                        (absolute margin), or
    s(q, d) <= s(q, p) * (1 - margin)                  (``relative=True``; s(q, p) > 0 expected)

and the first ``num_negatives`` such documents (by rank) are kept. Every ``(query, positive,
negative)`` becomes one triplet row; a positive with fewer candidates gets fewer rows (counted in
the stats). Queries ``[q, dim]`` and documents ``[n, dim]`` are embeddings of the task's texts.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

from sentjax.data.ir import RetrievalTask
from sentjax.ops import l2_normalize
from sentjax.search import top_k

__all__ = ["MiningConfig", "mine_hard_negatives", "write_triplets"]

_WS = re.compile(r"[\t\r\n]+")


@dataclasses.dataclass(frozen=True)
class MiningConfig:
    rank_range: tuple[int, int] = (10, 50)  # candidate ranks start..end-1 (0-based, end exclusive)
    margin: float = 0.05        # a negative scores at most s(q, p) - margin (or s(q, p) * (1 - margin))
    relative: bool = False      # the margin is relative to the positive's score
    num_negatives: int = 4      # negatives kept per (query, positive)
    metric: str = "cosine"      # "cosine" or "dot"

    def __post_init__(self):
        start, end = self.rank_range
        if not 0 <= start < end:
            raise ValueError(f"rank range must be START:END with 0 <= START < END, got {start}:{end}.")
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {self.num_negatives}.")
        if self.margin < 0 or (self.relative and self.margin >= 1):
            raise ValueError(f"margin must be >= 0 (and < 1 when relative), got {self.margin}.")


def _scores(q: np.ndarray, d: np.ndarray, metric: str) -> np.ndarray:
    # the same float32 arithmetic as the search, so s(q, p) is comparable with the ranked scores
    q, d = np.asarray(q, np.float32), np.asarray(d, np.float32)
    if metric == "cosine":
        q, d = l2_normalize(q), l2_normalize(d)
    return np.sum(q * d, axis=-1)


def mine_hard_negatives(task: RetrievalTask, query_emb: np.ndarray, doc_emb: np.ndarray,
                        config: MiningConfig = MiningConfig(), **search_kwargs) -> tuple[list[dict], dict]:
    """``(rows, stats)``: rows ``{query, positive, negative, qid, pos_id, neg_id, pos_score, neg_score,
    rank}`` in query order; ``query_emb`` rows follow ``task.qrels`` (judged queries), ``doc_emb`` rows
    follow ``task.corpus``. ``stats``: ``{"pairs", "rows", "short"}`` (pairs with < num_negatives)."""
    qids, dids = list(task.qrels), list(task.corpus)
    if len(query_emb) != len(qids) or len(doc_emb) != len(dids):
        raise ValueError(f"got {len(query_emb)} query and {len(doc_emb)} document embeddings for {len(qids)} judged "
                         f"queries and {len(dids)} documents; embed task.qrels' queries and task.corpus in order.")
    row_of = {d: i for i, d in enumerate(dids)}
    start, end = config.rank_range
    scores, idx = top_k(query_emb, doc_emb, min(end, len(dids)), metric=config.metric, **search_kwargs)
    rows, pairs, short = [], 0, 0
    for i, q in enumerate(qids):
        pos = [d for d, rel in task.qrels[q].items() if rel > 0 and d in row_of]
        pos_set = set(pos)  # a document judged non-relevant (0) stays a candidate: a known negative
        banned_text = {task.queries[q]} | {task.corpus[d] for d in pos}
        pos_scores = _scores(np.repeat(query_emb[i:i + 1], len(pos), 0), doc_emb[[row_of[d] for d in pos]],
                             config.metric)
        cands = [(r, dids[j], float(s)) for r, (j, s) in enumerate(zip(idx[i], scores[i]))
                 if r >= start and dids[j] not in pos_set and task.corpus[dids[j]] not in banned_text]
        for p, ps in zip(pos, pos_scores):
            limit = ps * (1 - config.margin) if config.relative else ps - config.margin
            chosen = [c for c in cands if c[2] <= limit][: config.num_negatives]
            pairs += 1
            short += len(chosen) < config.num_negatives
            rows += [{"query": task.queries[q], "positive": task.corpus[p], "negative": task.corpus[d], "qid": q,
                      "pos_id": p, "neg_id": d, "pos_score": float(ps), "neg_score": s, "rank": r}
                     for r, d, s in chosen]
    return rows, {"pairs": pairs, "rows": len(rows), "short": short}


def write_triplets(rows: list[dict], path: str) -> None:
    """A headed TSV ``sent0 sent1 hard_neg`` (+ ids, scores and rank): ``triplets:<path>`` in ``config.data``.
    Tabs and newlines inside a text become spaces (a TSV row cannot hold them)."""
    cols = ("sent0", "sent1", "hard_neg", "qid", "pos_id", "neg_id", "pos_score", "neg_score", "rank")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(cols) + "\n")
        for r in rows:
            texts = [_WS.sub(" ", r[k]) for k in ("query", "positive", "negative")]
            f.write("\t".join([*texts, r["qid"], r["pos_id"], r["neg_id"], f"{r['pos_score']:.6f}",
                               f"{r['neg_score']:.6f}", str(r["rank"])]) + "\n")
