"""Retrieval tasks (queries, a corpus, relevance judgements) from BEIR / TREC files, bundled data or BEIR by name.

File formats (BEIR, Thakur et al. 2021; TREC):

* corpus ``corpus.jsonl``: one JSON object a line, ``{"_id", "title", "text"}`` (title optional);
  the document text is ``title + " " + text`` when there is a title (as BEIR's dense models encode it).
  Or a TSV with a header holding ``_id``/``id`` and ``text`` (and optionally ``title``).
* queries ``queries.jsonl``: ``{"_id", "text"}`` a line, or a TSV with ``_id``/``id`` and ``text``.
* qrels: BEIR ``qrels/<split>.tsv`` with the header ``query-id corpus-id score``, or TREC qrels
  (``qid iteration docid relevance``, whitespace separated, no header). Relevance > 0 counts as relevant.

``load_task(spec)`` takes one of:

* ``bundled:stsb-retrieval``: STS-B dev (English): each first sentence of a pair scored >= 4 is a
  query, its second sentence the relevant document, the corpus all 1,467 distinct second sentences;
* ``bundled:nli-retrieval``: SNLI dev: premise -> its entailed hypotheses, over all 9,666 distinct hypotheses;
* ``bundled:tatoeba-<xxx>-eng`` / ``bundled:tatoeba-eng-<xxx>``: Tatoeba (LASER v1) sentence -> its
  translation, over all sentences of the other language (identical texts are one document);
* ``beir:<name>`` (e.g. ``beir:scifact``): the BEIR zip, downloaded once into ``~/.cache/sentjax/beir``
  (``SENTJAX_BEIR_URL`` overrides the base URL, ``SENTJAX_BEIR_CACHE`` the folder);
* a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).

Queries without any relevant document are dropped (BEIR evaluates only judged queries).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import urllib.request
import warnings
import zipfile

from sentjax.data import readers
from sentjax.data.readers import DataFormatError

__all__ = ["RetrievalTask", "from_pairs", "read_corpus", "read_queries", "read_qrels", "read_beir", "load_task",
           "bundled_task_names", "download_beir", "BEIR_URL"]

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets"


@dataclasses.dataclass
class RetrievalTask:
    """``queries {qid: text}``, ``corpus {doc_id: text}`` (file order), ``qrels {qid: {doc_id: relevance}}``
    (judged queries only, every one of them in ``queries``)."""

    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, int]]
    name: str = ""

    def __post_init__(self):
        if not self.corpus:
            raise DataFormatError(f"retrieval task {self.name!r}: the corpus is empty.")
        missing = [q for q in self.qrels if q not in self.queries]
        if missing:
            raise DataFormatError(f"retrieval task {self.name!r}: {len(missing)} judged query id(s) are not in the "
                                  f"queries file, e.g. {missing[0]!r}; use the queries file of the same dataset.")
        self.qrels = {q: r for q, r in self.qrels.items() if any(v > 0 for v in r.values())}
        if not self.qrels:
            raise DataFormatError(f"retrieval task {self.name!r}: no query has a relevant document (relevance > 0) "
                                  "in the qrels; check the qrels file and split.")
        unknown = {d for r in self.qrels.values() for d, v in r.items() if v > 0 and d not in self.corpus}
        if unknown:
            n = sum(len(r) for r in self.qrels.values())
            if len(unknown) == len({d for r in self.qrels.values() for d in r}):
                raise DataFormatError(f"retrieval task {self.name!r}: none of the relevant document ids of the qrels "
                                      f"is in the corpus (e.g. {sorted(unknown)[0]!r}); qrels and corpus are from "
                                      "different datasets.")
            warnings.warn(f"retrieval task {self.name!r}: {len(unknown)} relevant document id(s) of {n} judgements "
                          f"are not in the corpus (e.g. {sorted(unknown)[0]!r}); they count as never retrieved.")


# ----------------------------------------------------------------------------- file formats


def _jsonl(path: str, what: str) -> list[dict]:
    out = []
    for ln, line in enumerate(readers._lines(readers.read_text(path, what)), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}, line {ln}: not valid JSON ({e.msg}); a {what} .jsonl file has one "
                                  "JSON object a line.") from None
        if not isinstance(row, dict) or "_id" not in row or "text" not in row:
            raise DataFormatError(f"{path}, line {ln}: expected an object with '_id' and 'text' keys ({what}, BEIR "
                                  f"format), got {line[:80]!r}.")
        out.append(row)
    return out


def _tsv_rows(path: str, what: str) -> list[dict]:
    header = readers._lines(readers.read_text(path, what))[0].split("\t")
    key = "_id" if "_id" in header else "id"
    cols = [key, "text"] + (["title"] if "title" in header else [])
    return [dict(zip(["_id", "text", "title"], r)) for r in zip(*readers.read_headed_tsv(path, cols, what))]


def _rows(path: str | os.PathLike, what: str) -> list[dict]:
    path = os.fspath(path)
    first = readers._lines(readers.read_text(path, what))[0].lstrip()
    return _jsonl(path, what) if first.startswith("{") else _tsv_rows(path, what)


def _unique(rows: list[dict], path: str, what: str, with_title: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in rows:
        i = str(r["_id"])
        if i in out:
            raise DataFormatError(f"{path}: {what} id {i!r} occurs twice; ids must be unique.")
        title = (r.get("title") or "").strip() if with_title else ""
        out[i] = f"{title} {r['text']}".strip() if title else str(r["text"])
    if not out:
        raise DataFormatError(f"{path}: no {what} rows.")
    return out


def read_corpus(path: str | os.PathLike) -> dict[str, str]:
    """``{doc_id: "title text"}`` of a BEIR ``corpus.jsonl`` (or a headed TSV ``_id text [title]``)."""
    return _unique(_rows(path, "corpus"), os.fspath(path), "document", with_title=True)


def read_queries(path: str | os.PathLike) -> dict[str, str]:
    """``{qid: text}`` of a BEIR ``queries.jsonl`` (or a headed TSV ``_id text``)."""
    return _unique(_rows(path, "queries"), os.fspath(path), "query", with_title=False)


def read_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """``{qid: {doc_id: relevance}}`` of BEIR qrels (TSV, header ``query-id corpus-id score``) or TREC qrels
    (``qid iteration docid relevance`` a line)."""
    path = os.fspath(path)
    lines = [ln for ln in readers._lines(readers.read_text(path, "qrels"))]
    beir = lines[0].split("\t")[:2] == ["query-id", "corpus-id"]
    out: dict[str, dict[str, int]] = {}
    for ln, line in enumerate(lines[1:] if beir else lines, 2 if beir else 1):
        if not line.strip():
            continue
        cols = line.split("\t") if beir else line.split()
        if beir and len(cols) == 3:
            q, d, rel = cols
        elif not beir and len(cols) == 4:
            q, _, d, rel = cols
        else:
            raise DataFormatError(f"{path}, line {ln}: {len(cols)} columns; qrels are either BEIR TSV (a header "
                                  "'query-id<TAB>corpus-id<TAB>score', then 3 columns) or TREC "
                                  "('qid iteration docid relevance').")
        try:
            out.setdefault(q, {})[d] = int(float(rel))
        except ValueError:
            raise DataFormatError(f"{path}, line {ln}: relevance {rel!r} is not a number.") from None
    if not out:
        raise DataFormatError(f"{path}: no judgements.")
    return out


def read_beir(folder: str | os.PathLike, split: str = "test") -> RetrievalTask:
    """A BEIR dataset folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``."""
    folder = os.fspath(folder)
    qrels_path = os.path.join(folder, "qrels", f"{split}.tsv")
    if not os.path.isfile(qrels_path):
        have = sorted(f[:-4] for f in os.listdir(os.path.join(folder, "qrels"))) \
            if os.path.isdir(os.path.join(folder, "qrels")) else []
        raise FileNotFoundError(f"{folder}: no qrels/{split}.tsv; splits here: {have or 'none (no qrels/ folder)'}.")
    return RetrievalTask(read_queries(os.path.join(folder, "queries.jsonl")),
                         read_corpus(os.path.join(folder, "corpus.jsonl")), read_qrels(qrels_path),
                         name=f"{os.path.basename(folder.rstrip('/'))}-{split}")


# ----------------------------------------------------------------------------- bundled tasks


def from_pairs(name: str, queries: list[str], docs: list[str], relevant: list[bool],
                extra_docs: list[str] = ()) -> RetrievalTask:
    """Pairs ``(queries[i], docs[i])``; relevant where ``relevant[i]``; the corpus is every distinct
    text of ``docs`` and ``extra_docs``. Identical texts share one id."""
    doc_id = {t: f"d{i}" for i, t in enumerate(dict.fromkeys([*docs, *extra_docs]))}
    q_id = {t: f"q{i}" for i, t in enumerate(dict.fromkeys(q for q, r in zip(queries, relevant) if r))}
    qrels: dict[str, dict[str, int]] = {}
    for q, d, r in zip(queries, docs, relevant):
        if r:
            qrels.setdefault(q_id[q], {})[doc_id[d]] = 1
    return RetrievalTask({i: t for t, i in q_id.items()}, {i: t for t, i in doc_id.items()}, qrels, name=name)


def bundled_task_names() -> list[str]:
    names = ["bundled:stsb-retrieval", "bundled:nli-retrieval"]
    for lang in readers.tatoeba_languages():
        names += [f"bundled:tatoeba-{lang}-eng", f"bundled:tatoeba-eng-{lang}"]
    return names


def _bundled_task(name: str) -> RetrievalTask:
    if name == "stsb-retrieval":
        d = readers.read_sts("stsb-en-dev")
        return from_pairs("stsb-retrieval", d.sentences1, d.sentences2, list(d.scores >= 4.0))
    if name == "nli-retrieval":
        d = readers.read_snli_esnli(split="dev")
        return from_pairs("nli-retrieval", d.premises, d.hypotheses, [y == "entailment" for y in d.labels])
    m = re.fullmatch(r"tatoeba-([a-z]{3})-([a-z]{3})", name)
    if m and "eng" in m.groups() and m.group(1) != m.group(2):
        lang = m.group(2) if m.group(1) == "eng" else m.group(1)
        p = readers.read_tatoeba(lang)
        src, tgt = (p.src, p.tgt) if m.group(2) == "eng" else (p.tgt, p.src)
        return from_pairs(name, src, tgt, [True] * len(src))
    raise FileNotFoundError(f"unknown bundled retrieval task 'bundled:{name}'; use bundled:stsb-retrieval, "
                            "bundled:nli-retrieval or bundled:tatoeba-<xxx>-eng / bundled:tatoeba-eng-<xxx> "
                            "(ISO 639-3, e.g. deu).")


# ----------------------------------------------------------------------------- BEIR by name


def download_beir(name: str, cache: str | None = None, base_url: str | None = None) -> str:
    """The folder of BEIR dataset ``name`` (e.g. ``"scifact"``), downloading and unzipping
    ``<base_url>/<name>.zip`` into ``cache`` the first time."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?", name):
        raise ValueError(f"BEIR dataset name {name!r} is not a plain name like 'scifact' or 'cqadupstack/android'.")
    cache = cache or os.environ.get("SENTJAX_BEIR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                          "sentjax", "beir")
    base_url = (base_url or os.environ.get("SENTJAX_BEIR_URL") or BEIR_URL).rstrip("/")
    top = name.split("/")[0]
    folder = os.path.join(cache, name)
    if os.path.isfile(os.path.join(folder, "corpus.jsonl")):
        return folder
    os.makedirs(cache, exist_ok=True)
    zpath = os.path.join(cache, f"{top}.zip")
    tmp = f"{zpath}.part{os.getpid()}"
    try:
        urllib.request.urlretrieve(f"{base_url}/{top}.zip", tmp)
    except OSError as e:
        raise FileNotFoundError(f"could not download BEIR dataset {top!r} from {base_url}/{top}.zip ({e}); without "
                                "internet, download and unzip it elsewhere and pass the folder instead.") from None
    os.replace(tmp, zpath)
    with zipfile.ZipFile(zpath) as z:
        bad = [n for n in z.namelist() if n.startswith("/") or ".." in n.split("/")]
        if bad:
            raise DataFormatError(f"{zpath}: unsafe path {bad[0]!r} in the zip; not extracting it.")
        z.extractall(cache)
    os.remove(zpath)
    if not os.path.isfile(os.path.join(folder, "corpus.jsonl")):
        raise DataFormatError(f"{base_url}/{top}.zip has no {name}/corpus.jsonl; is {name!r} a BEIR dataset?")
    return folder


def load_task(spec: str, split: str = "test") -> RetrievalTask:
    """A task by spec: ``bundled:<name>``, ``beir:<name>`` or a BEIR folder (see the module docstring)."""
    spec = os.fspath(spec).strip()
    if spec.startswith("bundled:"):
        return _bundled_task(spec[len("bundled:"):])
    if spec.startswith("beir:"):
        return read_beir(download_beir(spec[len("beir:"):]), split)
    if os.path.isdir(spec):
        return read_beir(spec, split)
    raise FileNotFoundError(f"retrieval data {spec!r} is not a BEIR folder, 'beir:<name>' or a bundled task "
                            f"({', '.join(bundled_task_names()[:4])}, ...); for separate files pass queries, corpus "
                            "and qrels paths.")
