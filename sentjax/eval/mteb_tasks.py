"""Local mteb tasks built from files on disk, so an mteb run needs no download (offline checks, CI).

* :func:`sts_task`: an mteb STS task (``AbsTaskSTS``, main score ``cosine_spearman`` = Spearman rho
  of cos(u_i, v_i) vs the gold score, on a 0-1 scale) over any STS file or bundled name that
  ``sentjax eval sts --data`` accepts (``"stsb-en-dev"``, ``"sick-trial"``, a path...).
* :func:`retrieval_task`: an mteb retrieval task (``AbsTaskRetrieval``, main score ``ndcg_at_10``)
  made from the same pairs: every distinct ``sentence2`` is a document, every distinct
  ``sentence1`` of a pair scored ``>= min_score`` is a query whose relevant documents (relevance 1)
  are the ``sentence2`` of its pairs at or above that score.

CLI names (``sentjax eval mteb --tasks ...``): ``local-sts:<data>[@limit]`` and
``local-retrieval:<data>[@limit]``, e.g. ``local-sts:stsb-en-dev@200`` (the first 200 pairs).
Requires the ``mteb`` extra (``pip install 'sentjax[mteb]'``).
"""
from __future__ import annotations

import re
from typing import Any

from sentjax.data import readers

__all__ = ["sts_task", "retrieval_task", "retrieval_split", "local_task", "LOCAL_PREFIXES"]

LOCAL_PREFIXES = ("local-sts", "local-retrieval")

# ISO 639-3 + script of the stsb_multi_mt languages; other files are taken as English.
_STSB_LANGS = {"en": "eng-Latn", "de": "deu-Latn", "es": "spa-Latn", "fr": "fra-Latn", "it": "ita-Latn",
               "ja": "jpn-Jpan", "nl": "nld-Latn", "pl": "pol-Latn", "pt": "por-Latn", "ru": "rus-Cyrl",
               "zh": "cmn-Hans"}


def _metadata(name: str, task_type: str, main_score: str, data: str, lang: str) -> Any:
    from mteb.abstasks.task_metadata import TaskMetadata
    return TaskMetadata(
        name=name, type=task_type, main_score=main_score,
        description=f"sentjax local {task_type} task built from {data} (no download).",
        reference="https://github.com/embeddings-benchmark/mteb",
        dataset={"path": f"sentjax-local/{data}", "revision": "local"},
        category="t2t", modalities=["text"], eval_splits=["test"], eval_langs=[lang],
        date=None, dialect=[], domains=[], task_subtypes=[], license="not specified",
        annotations_creators="human-annotated", sample_creation="found", bibtex_citation="")


def _pairs(data: str, limit: int | None) -> readers.STSPairs:
    d = readers.read_sts(data)
    if limit is not None:
        if limit < 2:
            raise ValueError(f"limit must be >= 2 pairs, got {limit}.")
        d = readers.STSPairs(d.sentences1[:limit], d.sentences2[:limit], d.scores[:limit], d.name,
                             None if d.labels is None else d.labels[:limit], d.score_range, d.format)
    return d


def _lang(data: str) -> str:
    m = re.fullmatch(r"stsb-([a-z]{2})-(train|dev)", data)
    return _STSB_LANGS.get(m.group(1), "eng-Latn") if m else "eng-Latn"


def sts_task(data: str = "stsb-en-dev", limit: int | None = None, name: str | None = None) -> Any:
    """An mteb STS task over ``data`` (first ``limit`` pairs); its ``dataset`` is ready in memory."""
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.sts import AbsTaskSTS
    d = _pairs(data, limit)
    lo, hi = d.score_range
    meta = _metadata(name or f"sentjax-local-sts-{data}" + (f"-{limit}" if limit else ""), "STS",
                     "cosine_spearman", data, _lang(data))

    class LocalSTS(AbsTaskSTS):
        metadata = meta
        min_score, max_score = lo, hi  # only rescales the gold scores: correlations do not change

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            self.dataset = DatasetDict({"test": Dataset.from_dict(
                {"sentence1": d.sentences1, "sentence2": d.sentences2, "score": [float(s) for s in d.scores]})})
            self.data_loaded = True

    return LocalSTS()


def retrieval_split(data: str = "stsb-en-dev", limit: int | None = None,
                    min_score: float = 4.0) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """``(queries {id: text}, corpus {id: text}, qrels {query id: {doc id: 1}})`` of :func:`retrieval_task`."""
    d = _pairs(data, limit)
    docs = list(dict.fromkeys(d.sentences2))
    doc_id = {t: f"d{i}" for i, t in enumerate(docs)}
    qrels_by_text: dict[str, dict[str, int]] = {}
    for s1, s2, score in zip(d.sentences1, d.sentences2, d.scores):
        if score >= min_score:
            qrels_by_text.setdefault(s1, {})[doc_id[s2]] = 1
    if not qrels_by_text:
        raise ValueError(f"No pair of {data!r} (limit {limit}) scores >= {min_score}: the retrieval task would "
                         "have no query. Lower min_score or use more pairs.")
    queries = {f"q{i}": t for i, t in enumerate(qrels_by_text)}
    qrels = {f"q{i}": rel for i, rel in enumerate(qrels_by_text.values())}
    return queries, {doc_id[t]: t for t in docs}, qrels


def retrieval_task(data: str = "stsb-en-dev", limit: int | None = None, min_score: float = 4.0,
                   name: str | None = None) -> Any:
    """An mteb retrieval task from the pairs of ``data`` (see the module docstring)."""
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    queries, corpus, qrels = retrieval_split(data, limit, min_score)
    meta = _metadata(name or f"sentjax-local-retrieval-{data}" + (f"-{limit}" if limit else ""), "Retrieval",
                     "ndcg_at_10", data, _lang(data))

    class LocalRetrieval(AbsTaskRetrieval):
        metadata = meta

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            split = {"queries": Dataset.from_dict({"id": list(queries), "text": list(queries.values())}),
                     "corpus": Dataset.from_dict({"id": list(corpus), "text": list(corpus.values())}),
                     "relevant_docs": qrels, "top_ranked": None}
            self.dataset = {"default": {"test": split}}
            self.data_loaded = True

    return LocalRetrieval()


def local_task(spec: str) -> Any:
    """The task a CLI name stands for: ``local-sts:<data>[@limit]`` or ``local-retrieval:<data>[@limit]``."""
    kind, _, rest = spec.partition(":")
    data, _, lim = rest.partition("@")
    if kind not in LOCAL_PREFIXES or not data:
        raise ValueError(f"Local task {spec!r} is not of the form local-sts:<data>[@limit] or "
                         "local-retrieval:<data>[@limit] (e.g. local-sts:stsb-en-dev@200).")
    if lim and not lim.isdigit():
        raise ValueError(f"Local task {spec!r}: the limit after '@' must be a number of pairs, got {lim!r}.")
    limit = int(lim) if lim else None
    return sts_task(data, limit) if kind == "local-sts" else retrieval_task(data, limit)
