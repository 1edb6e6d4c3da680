"""Training datasets: ``Source`` (an in-memory dataset of one kind), ``DataError``, and the registry
of dataset specs ``kind:path`` that ``--config.data.datasets`` holds.

A spec names a kind and where its rows come from; :func:`load_source` looks the kind up in
:data:`SPECS` and returns a ``Source``. Adding a data source is one function here::

    @register_spec("mykind", "mykind:FILE  what it reads")
    def _mykind(rest: str) -> Source:
        return Source(rest, "pairs", {"anchor": [...], "positive": [...]})

File formats are parsed by ``sentjax.data.readers`` only (one reader per format, each resolving
``bundled/<dataset>/<file>`` paths through ``sentjax.data.bundled.resolve``); this module maps their
records to ``Source`` columns and turns their errors into ``DataError`` with the same message.

``Source.kind`` says which text fields an example has:
  text      anchor                     (unsupervised SimCSE: positive = same text)
  pairs     anchor, positive
  parallel  anchor, positive           (translation pairs)
  triplets  anchor, positive, negative (SimCSE supervised, from NLI)
  sts       anchor, positive, score in [0, 1]
  nli       anchor, positive, label
  multipos  anchor, positive, positive_1, ..., positive_{k-1}[, negative]   (k positives per anchor)
  scored    anchor, positive, negative, score [n, 2] (teacher scores of positive / negative)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from sentjax.data import readers

__all__ = ["KIND_FIELDS", "NLI_LABELS", "DataError", "Source", "SPECS", "register_spec", "load_source",
           "read_text", "read_tsv", "read_sts", "read_parallel", "read_parallel_sts", "nli_to_triplets"]

KIND_FIELDS = {
    "text": ("anchor",), "pairs": ("anchor", "positive"), "parallel": ("anchor", "positive"),
    "triplets": ("anchor", "positive", "negative"), "sts": ("anchor", "positive"),
    "nli": ("anchor", "positive"),
    "multipos": ("anchor", "positive"),  # plus positive_1 .. positive_{k-1} and negative: Source.text_fields
    "scored": ("anchor", "positive", "negative"),
}
NLI_LABELS = readers.NLI_LABELS


class DataError(readers.DataFormatError):
    """A data source that is missing, empty or malformed (a ``readers.DataFormatError``)."""


@dataclasses.dataclass
class Source:
    """An in-memory, random-access dataset of sentence examples.

    Attributes:
      name: for messages and metrics.
      kind: one of KIND_FIELDS.
      columns: text fields -> list[str] of length n; optional "label" (int) / "score" (float).
      augment: for kind "text", a ``sentjax.data.augment`` spec applied to the positive view
        (e.g. ``"crop=0.1"``; "" = the sentence itself, SimCSE's dropout-only positive).
    """
    name: str
    kind: str
    columns: dict[str, Any]
    augment: str = ""

    def __post_init__(self):
        if self.kind not in KIND_FIELDS:
            raise DataError(f"{self.name}: unknown kind {self.kind!r}; use one of {sorted(KIND_FIELDS)}.")
        n = len(self)
        if n == 0:
            raise DataError(f"Dataset {self.name!r} is empty (0 examples); check the file or the "
                            "filters (e.g. labels) applied to it.")
        for k, v in self.columns.items():
            if len(v) != n:
                raise DataError(f"{self.name}: column {k} has {len(v)} rows, expected {n}.")

    def __len__(self) -> int:
        return len(self.columns["anchor"])

    @property
    def text_fields(self) -> tuple[str, ...]:
        if self.kind == "multipos":  # k is the data's: its positive_j columns (and a negative, if any)
            return tuple(c for c in self.columns if c in ("anchor", "negative") or c.startswith("positive"))
        return KIND_FIELDS[self.kind]


# ----------------------------------------------------------------------------- readers -> sources


def _reader_errors(fn, *args):
    """Calls a readers.py function, turning its errors into DataError with the same message."""
    try:
        return fn(*args)
    except readers.DataFormatError as e:
        raise DataError(str(e)) from e
    except FileNotFoundError as e:
        raise DataError(f"{e} (data specs look like 'text:/path/sentences.txt'; see "
                        "--config.data.datasets).") from e


def read_text(path: str, name: str | None = None) -> Source:
    """One sentence per line (``.gz`` ok, blank lines skipped): ``readers.read_lines``."""
    return Source(name or path, "text", {"anchor": _reader_errors(readers.read_lines, path)})


_TSV_COLUMNS = {"pairs": ("sentence1", "sentence2"), "parallel": ("sentence1", "sentence2"),
                "triplets": ("sent0", "sent1", "hard_neg")}


def read_tsv(path: str, kind: str, name: str | None = None) -> Source:
    """A TSV with a header row (``.gz`` ok). Columns: pairs/parallel ``sentence1 sentence2``;
    triplets ``sent0 sent1 hard_neg`` (SimCSE's file); sts ``sentence1 sentence2 score`` (0..5,
    scaled to 0..1); nli ``sentence1 sentence2 gold_label`` or ``premise hypothesis label``
    (``readers.read_nli_tsv``; labels entailment/neutral/contradiction -> 0/1/2, '-' skipped)."""
    if kind == "nli":
        pairs = _reader_errors(readers.read_nli_tsv, path)
        return Source(name or path, "nli", {"anchor": pairs.premises, "positive": pairs.hypotheses,
                                            "label": pairs.label_ids})
    if kind == "sts":
        return _sts_source(_reader_errors(readers.read_sts_tsv, path), name or path)
    if kind not in _TSV_COLUMNS:
        raise DataError(f"read_tsv cannot read kind {kind!r}; use one of {sorted(_TSV_COLUMNS) + ['nli', 'sts']}.")
    cols = _reader_errors(readers.read_headed_tsv, path, _TSV_COLUMNS[kind], f"{kind} TSV")
    return Source(name or path, kind, dict(zip(KIND_FIELDS[kind], cols)))


def _sts_source(pairs: readers.STSPairs, name: str) -> Source:
    """Scores mapped linearly from ``pairs.score_range`` to [0, 1] (STS-B s / 5, SICK (s - 1) / 4)."""
    lo, hi = pairs.score_range
    if pairs.format == "tsv":  # divided in float32 since the first version: kept bit for bit
        score = np.asarray(pairs.scores, np.float32) / 5.0
    else:
        score = np.asarray((pairs.scores - lo) / (hi - lo), np.float32)
    return Source(name, "sts", {"anchor": pairs.sentences1, "positive": pairs.sentences2, "score": score})


def read_sts(path: str, name: str | None = None) -> Source:
    """Scored pairs, scores scaled to [0, 1], from any file or bundled name ``readers.read_sts``
    reads (headed TSV, STS-B multi-mt CSV, SentEval STS-B, SICK, ``stsb-en-train``...)."""
    return _sts_source(_reader_errors(readers.read_sts, path), name or path)


def read_parallel(spec: str, name: str | None = None) -> Source:
    """Translation pairs: ``SRC_FILE|TGT_FILE`` (line-aligned, ``readers.read_parallel``) or a
    headed ``sentence1 sentence2`` TSV."""
    if "|" in spec:
        src, tgt = spec.split("|", 1)
        par = _reader_errors(readers.read_parallel, src, tgt)
        return Source(name or spec, "parallel", {"anchor": par.src, "positive": par.tgt})
    return read_tsv(spec, "parallel", name)


def read_parallel_sts(spec: str, name: str | None = None) -> Source:
    """Translation pairs from two row-aligned STS files ``SRC|TGT`` (stsb_multi_mt: row i of the
    German file translates row i of the English one): both sentences of each row, scores dropped.
    Files or bundled names (``stsb-en-train|stsb-de-train``)."""
    if "|" not in spec:
        raise DataError(f"parallel-sts:{spec!r} must name two row-aligned STS files 'SRC|TGT', e.g. "
                        "'parallel-sts:stsb-en-train|stsb-de-train'.")
    sides = []
    for part in spec.split("|", 1):
        pairs = _reader_errors(readers.read_sts, part)
        if pairs.format != "stsb":
            raise DataError(f"parallel-sts: {part!r} is a {pairs.format!r} file; use stsb_multi_mt CSVs.")
        sides.append(list(pairs.sentences1) + list(pairs.sentences2))
    if len(sides[0]) != len(sides[1]):
        raise DataError(f"parallel-sts:{spec!r}: the files have {len(sides[0]) // 2} and {len(sides[1]) // 2} "
                        "rows; row-aligned translations must have equal row counts (same split?).")
    return Source(name or spec, "parallel", {"anchor": sides[0], "positive": sides[1]})


def nli_to_triplets(nli: Source) -> Source:
    """SimCSE supervised data (Gao et al., 2021) from NLI pairs: ``readers.nli_triplets``
    ((premise, entailment, contradiction); the k-th entailment with the k-th contradiction)."""
    names = {v: k for k, v in NLI_LABELS.items()}
    pairs = readers.NLIPairs(list(nli.columns["anchor"]), list(nli.columns["positive"]),
                             [names[int(x)] for x in nli.columns["label"]], name=nli.name)
    tri = readers.nli_triplets(pairs)
    return Source(f"{nli.name}:triplets", "triplets",
                  {"anchor": tri.anchors, "positive": tri.positives, "negative": tri.negatives})


# ----------------------------------------------------------------------------- the spec registry

#: spec kind -> (loader of the part after ``kind:``, one line of help).
SPECS: dict[str, tuple[Callable[[str], Source], str]] = {}


def register_spec(kind: str, help: str) -> Callable:
    """Decorator: ``loader(rest) -> Source`` answers the dataset specs ``kind:rest``."""
    def deco(fn: Callable[[str], Source]) -> Callable[[str], Source]:
        if kind in SPECS:
            raise ValueError(f"Dataset spec kind {kind!r} is registered twice.")
        SPECS[kind] = (fn, help)
        return fn
    return deco


def load_source(spec: str) -> Source:
    """A dataset from its spec ``kind:path`` (see :data:`SPECS`, e.g. ``text:FILE[,FILE...]``,
    ``sts:stsb-en-train``, ``nli-triplets:TSV``, ``tfds:<name>[:split][@data_dir]``). Any path may be
    ``bundled/<dataset>/<file>``. ``text+AUG:FILE`` augments the positive view with the
    ``sentjax.data.augment`` spec AUG, e.g. ``text+crop=0.1:FILE`` (SimCSE Table 1)."""
    kind, sep, rest = spec.partition(":")
    if not sep:
        raise DataError(f"Dataset spec {spec!r} must look like 'kind:path', kind one of {sorted(SPECS)}.")
    if kind.startswith("text+"):
        aug = kind[len("text+"):]
        from sentjax.data import augment
        try:
            augment.parse_spec(aug)
        except (ValueError, FileNotFoundError) as e:
            raise DataError(f"{spec!r}: {e}") from e
        return dataclasses.replace(load_source(f"text:{rest}"), augment=aug)
    if kind == "bundled":
        raise DataError("bundled:<...> specs need a kind: use e.g. 'text:bundled/<dataset>/<file>'.")
    if kind not in SPECS:
        raise DataError(f"Unknown dataset kind {kind!r} in {spec!r}; use one of {sorted(SPECS)} "
                        "(or text+AUG).")
    return SPECS[kind][0](rest)


@register_spec("text", "text:FILE[,FILE...]  one sentence per line; several files make one source")
def _text(rest: str) -> Source:
    if "," in rest:  # several sentence files as one source (e.g. to reach a very large unique-text batch)
        parts = [read_text(p) for p in rest.split(",")]
        return Source(rest, "text", {"anchor": [t for p in parts for t in p.columns["anchor"]]})
    return read_text(rest)


@register_spec("pairs", "pairs:TSV  headed sentence1 sentence2")
def _pairs(rest: str) -> Source:
    return read_tsv(rest, "pairs")


@register_spec("triplets", "triplets:TSV  headed sent0 sent1 hard_neg (SimCSE)")
def _triplets(rest: str) -> Source:
    return read_tsv(rest, "triplets")


@register_spec("nli", "nli:TSV  headed sentence1 sentence2 gold_label (or premise hypothesis label)")
def _nli(rest: str) -> Source:
    return read_tsv(rest, "nli")


@register_spec("nli-triplets", "nli-triplets:TSV  SimCSE triplets from an NLI TSV")
def _nli_triplets(rest: str) -> Source:
    return nli_to_triplets(read_tsv(rest, "nli"))


@register_spec("sts", "sts:FILE_OR_NAME  any readers.read_sts format or bundled name; scores to [0, 1]")
def _sts(rest: str) -> Source:
    return read_sts(rest)


@register_spec("parallel", "parallel:SRC|TGT or parallel:TSV  translation pairs")
def _parallel(rest: str) -> Source:
    return read_parallel(rest)


@register_spec("parallel-sts", "parallel-sts:SRC|TGT  row-aligned STS-B translations")
def _parallel_sts(rest: str) -> Source:
    return read_parallel_sts(rest)


def multipos_source(mp: readers.MultiPositives, name: str) -> Source:
    """``anchor``, ``positive``, ``positive_1``, ... (the ``multipos`` objective's columns), ``negative``."""
    k = len(mp.positives[0])
    cols: dict[str, Any] = {"anchor": mp.anchors}
    for j in range(k):
        cols["positive" if j == 0 else f"positive_{j}"] = [p[j] for p in mp.positives]
    if mp.negatives is not None:
        cols["negative"] = mp.negatives
    return Source(name, "multipos", cols)


@register_spec("multipos", "multipos:JSONL  {anchor, positives: [k texts], negative?} per line")
def _multipos(rest: str) -> Source:
    return multipos_source(_reader_errors(readers.read_multipos_jsonl, rest), rest)


@register_spec("nli-multipos", "nli-multipos:K:TSV[,TSV...]  premises with their first K entailments "
               "(TSV: an NLI TSV, or snli-dev / snli-test)")
def _nli_multipos(rest: str) -> Source:
    k, sep, files = rest.partition(":")
    if not sep or not k.isdigit() or int(k) < 1 or not files:
        raise DataError(f"nli-multipos:{rest!r} must look like 'nli-multipos:K:FILE[,FILE...]' with K >= 1, "
                        "e.g. 'nli-multipos:2:snli-dev,snli-test'.")
    parts = []
    for f in files.split(","):
        if f in ("snli-dev", "snli-test"):
            parts.append(_reader_errors(readers.read_snli_esnli, None, f.split("-")[1]))
        else:
            parts.append(_reader_errors(readers.read_nli_tsv, f))
    pairs = readers.NLIPairs([p for x in parts for p in x.premises], [h for x in parts for h in x.hypotheses],
                             [y for x in parts for y in x.labels], name=files)
    mp = readers.nli_multipos(pairs, int(k))
    if not len(mp):
        raise DataError(f"nli-multipos:{rest}: no premise has {k} entailment hypotheses; lower K.")
    return multipos_source(mp, f"nli-multipos:{rest}")


@register_spec("scored-triplets", "scored-triplets:TSV  headed sent0 sent1 hard_neg pos_score neg_score "
                                  "(teacher scores; margin_mse / listwise_kl)")
def _scored_triplets(rest: str) -> Source:
    tri, scores = _reader_errors(readers.read_scored_triplets, rest)
    return Source(rest, "scored", {"anchor": tri.anchors, "positive": tri.positives,
                                   "negative": tri.negatives, "score": scores.astype(np.float32)})


@register_spec("tfds", "tfds:NAME[:SPLIT][@DATA_DIR]  a TFDS dataset (sentjax.data.tfds_builders)")
def _tfds(rest: str) -> Source:
    from sentjax.data import tfds_builders  # imports tensorflow_datasets: only when asked for
    name, kind, columns = _reader_errors(tfds_builders.read_tfds, rest)
    return Source(name, kind, columns)
