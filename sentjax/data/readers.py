"""Readers for the sentence-pair / sentence-list formats sentjax trains and evaluates on.

Pure Python (plus NumPy for score arrays). Every reader validates what it reads and raises
:class:`DataFormatError` naming the file, the 1-based line number, what was expected and how to
fix it. ``.gz`` files are decompressed transparently (the bundled copies of large files are
gzipped), and text must be UTF-8 (a UTF-8 byte-order mark is accepted).

Formats (see ``sentjax/data/bundled/README.md`` for sources and licences):

* STS-B multi-mt CSV (``read_sts_csv``): no header, ``sentence1,sentence2,score``, excel dialect.
* SentEval STS12-16 (``read_senteval_sts``): ``STS.input.<subset>.txt`` + ``STS.gs.<subset>.txt``.
* SentEval STS-Benchmark TSV (``read_stsbenchmark_senteval``): ``genre source year id score s1 s2``.
* SICK (``read_sick``): TSV with header; relatedness 1-5 and an entailment label.
* Headed TSV (``read_headed_tsv``; ``read_sts_tsv`` for ``sentence1 sentence2 score``).
* Any of the STS formats above, dispatched on the file's content: ``read_sts`` (the one STS entry point).
* e-SNLI line files (``read_snli_esnli``) and NLI TSV with header (``read_nli_tsv``).
* Plain sentence lists (``read_lines``), line-aligned bitext (``read_parallel``, ``read_tatoeba``).

Every path argument may be spelled ``bundled/<dataset>/<file>`` (``sentjax.data.bundled.resolve``).
This module knows file formats only: datasets for training (``Source``, dataset specs) live in
``sentjax.data.sources``.
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import math
import os
import re
from collections.abc import Sequence

import numpy as np

from sentjax.data import bundled

__all__ = ["MultiPositives", "read_multipos_jsonl", "nli_multipos",
    "DataFormatError", "STSPairs", "SentEvalSTS", "NLIPairs", "Parallel", "Triplets", "NLI_LABELS",
    "read_text", "read_sts_csv", "read_senteval_sts", "read_stsbenchmark_senteval", "read_sick",
    "read_snli_esnli", "read_nli_tsv", "read_lines", "read_parallel", "read_tatoeba", "nli_triplets",
    "tatoeba_languages", "SENTEVAL_YEARS", "resolve_sts_data", "bundled_sts_names", "read_sts",
    "read_sts_tsv", "read_headed_tsv", "STS_FORMATS",
    "SCORED_TRIPLET_COLUMNS", "read_scored_triplets",
]

NLI_LABELS: dict[str, int] = {"entailment": 0, "neutral": 1, "contradiction": 2}
SENTEVAL_YEARS: tuple[str, ...] = ("STS12", "STS13", "STS14", "STS15", "STS16")
STSB_LANGS: tuple[str, ...] = ("de", "en", "es", "fr", "it", "ja", "nl", "pl", "pt", "ru", "zh")
#: ``resolve_sts_data`` formats (``tsv``: a headed ``sentence1 sentence2 score`` TSV).
STS_FORMATS: tuple[str, ...] = ("stsb", "senteval", "stsbenchmark", "sick", "tsv")


class DataFormatError(ValueError):
    """A data file is not in the expected format; the message names file, line and the fix."""


# ----------------------------------------------------------------------------- records


@dataclasses.dataclass
class STSPairs:
    """Scored sentence pairs. ``scores``: float64 ``[n]`` as in the file, on the scale
    ``score_range`` (STS-B 0..5, SICK relatedness 1..5); ``labels`` (SICK only): entailment labels;
    ``format``: the :data:`STS_FORMATS` entry the file was read as."""

    sentences1: list[str]
    sentences2: list[str]
    scores: np.ndarray
    name: str = ""
    labels: list[str] | None = None
    score_range: tuple[float, float] = (0.0, 5.0)
    format: str = ""

    def __len__(self) -> int:
        return len(self.sentences1)


@dataclasses.dataclass
class SentEvalSTS:
    """One SentEval STS year: ``subsets[name]`` are the scored pairs of each subset (file order).

    ``skipped`` lists gold files without an input file (STS13 ``SMT``: LDC-licensed text, which
    SentEval skips too).
    """

    year: str
    subsets: dict[str, STSPairs]
    skipped: list[str] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(s) for s in self.subsets.values())


@dataclasses.dataclass
class NLIPairs:
    """Premise/hypothesis pairs; ``labels`` are lower-case names in :data:`NLI_LABELS`."""

    premises: list[str]
    hypotheses: list[str]
    labels: list[str]
    name: str = ""

    def __len__(self) -> int:
        return len(self.premises)

    @property
    def label_ids(self) -> np.ndarray:
        """int32 ``[n]``: entailment 0, neutral 1, contradiction 2 (same ids as ``data.pipeline``)."""
        return np.asarray([NLI_LABELS[x] for x in self.labels], np.int32)


@dataclasses.dataclass
class Parallel:
    """Line-aligned translations: ``src[i]`` and ``tgt[i]`` are one pair."""

    src: list[str]
    tgt: list[str]
    name: str = ""

    def __len__(self) -> int:
        return len(self.src)


@dataclasses.dataclass
class Triplets:
    """SimCSE supervised triplets (anchor, positive, hard negative)."""

    anchors: list[str]
    positives: list[str]
    negatives: list[str]

    def __len__(self) -> int:
        return len(self.anchors)


@dataclasses.dataclass
class MultiPositives:
    """Anchors with k positives each (``positives[i]``: anchor i's k texts), optionally one hard negative."""

    anchors: list[str]
    positives: list[list[str]]
    negatives: list[str] | None = None
    name: str = ""

    def __len__(self) -> int:
        return len(self.anchors)


# ----------------------------------------------------------------------------- low level


def _bundled(rel: str) -> str:
    return bundled.path(rel)


def _existing(path: str | os.PathLike, what: str) -> str:
    path = bundled.resolve(path)
    if os.path.isfile(path):
        return path
    if os.path.isfile(path + ".gz"):
        return path + ".gz"
    if os.path.isdir(path):
        raise DataFormatError(f"{path}: is a folder, but a {what} file was expected; pass the file itself.")
    raise FileNotFoundError(f"{what} file {path!r} does not exist; check the path (bundled files are "
                            "found with sentjax.data.bundled.path('<dataset>/<file>')).")


def read_text(path: str | os.PathLike, what: str = "data") -> str:
    """The whole file as text: gunzipped if it is gzip, decoded strictly as UTF-8 (BOM dropped).

    Raises DataFormatError with the line number of the first invalid byte for non-UTF-8 data.
    """
    path = _existing(path, what)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip magic: trust content, not the file name
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataFormatError(f"{path}: looks like gzip but cannot be decompressed ({e}); the file is "
                                  "truncated or corrupt, re-copy or re-compress it.") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        bad = raw[e.start: e.start + 4]
        raise DataFormatError(
            f"{path}, line {line}: not valid UTF-8 (byte(s) {bad!r} at offset {e.start}). sentjax reads "
            "UTF-8 text only; convert the file, e.g. `iconv -f latin1 -t utf-8 IN > OUT` (use the "
            "file's real encoding), then retry.") from None
    if not text.strip():
        raise DataFormatError(f"{path}: the {what} file is empty; expected at least one row.")
    return text


def _lines(text: str) -> list[str]:
    # splitlines() would also split on \x0b, \x1c, U+2028 ... that occur inside real sentences.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _score(tok: str, path: str, lineno: int, lo: float, hi: float, col: str) -> float:
    try:
        v = float(tok)
    except ValueError:
        v = math.nan
    if math.isnan(v):
        raise DataFormatError(f"{path}, line {lineno}: {col} {tok!r} is not a number; expected a "
                              f"similarity score in [{lo:g}, {hi:g}]. Fix or delete that row.")
    if not lo <= v <= hi:
        raise DataFormatError(f"{path}, line {lineno}: {col} {v:g} is outside [{lo:g}, {hi:g}]; "
                              "fix the row, or rescale the file's scores to that range.")
    return v


def _need_text(s: str, path: str, lineno: int, col: str) -> str:
    s = s.strip()
    if not s:
        raise DataFormatError(f"{path}, line {lineno}: {col} is empty; every pair needs two "
                              "non-empty sentences. Fix or delete that row.")
    return s


def _label(tok: str, path: str, lineno: int) -> str:
    lab = tok.strip().lower()
    if lab not in NLI_LABELS:
        raise DataFormatError(f"{path}, line {lineno}: NLI label {tok!r} is not one of "
                              f"{sorted(NLI_LABELS)}; fix the label (rows with '-' = no gold label "
                              "are skipped).")
    return lab


def _tsv_header(path: str, text: str, required: Sequence[str]) -> tuple[list[str], list[int]]:
    lines = _lines(text)
    header = lines[0].split("\t")
    missing = [c for c in required if c not in header]
    if missing:
        raise DataFormatError(f"{path}, line 1: header {header} lacks column(s) {missing}; expected a "
                              f"tab-separated header containing {list(required)}.")
    return lines, [header.index(c) for c in required]


# ----------------------------------------------------------------------------- STS


def read_sts_csv(path: str | os.PathLike, score_range: tuple[float, float] = (0.0, 5.0)) -> STSPairs:
    """STS-B multi-mt CSV (PhilipMay/stsb-multi-mt): no header, ``sentence1,sentence2,score``.

    Excel dialect: fields containing commas or quotes are double-quoted. Scores must lie in
    ``score_range`` (STS-B: 0-5).
    """
    text = read_text(path, "STS CSV")
    path = os.fspath(path)
    s1, s2, sc = [], [], []
    reader = csv.reader(io.StringIO(text, newline=""), dialect="excel")
    try:
        for row in reader:
            ln = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != 3:
                raise DataFormatError(
                    f"{path}, line {ln}: expected 3 comma-separated columns (sentence1,sentence2,score), "
                    f"found {len(row)}: {row[:4]!r}. Quote sentences that contain commas with double "
                    "quotes (excel CSV), and do not add a header row.")
            if not s1 and not _is_number(row[2]):
                raise DataFormatError(f"{path}, line {ln}: the score column is {row[2]!r}; this format has "
                                      "no header row — delete the header line.")
            s1.append(_need_text(row[0], path, ln, "sentence1"))
            s2.append(_need_text(row[1], path, ln, "sentence2"))
            sc.append(_score(row[2], path, ln, *score_range, "score"))
    except csv.Error as e:
        raise DataFormatError(f"{path}, line {reader.line_num}: malformed CSV ({e}); check the quoting "
                              "of that row.") from None
    return STSPairs(s1, s2, np.asarray(sc, np.float64), name=os.path.basename(path), format="stsb")


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def read_stsbenchmark_senteval(path: str | os.PathLike) -> STSPairs:
    """SentEval's STS-Benchmark TSV: ``genre source year id score sentence1 sentence2`` (no header).

    Like SentEval, extra trailing columns (source notes in the official test file) are ignored.
    """
    text = read_text(path, "STS-Benchmark TSV")
    path = os.fspath(path)
    s1, s2, sc = [], [], []
    for ln, line in enumerate(_lines(text), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 7:
            raise DataFormatError(f"{path}, line {ln}: expected 7 tab-separated columns (genre, source, "
                                  f"year, id, score, sentence1, sentence2), found {len(cols)}. Use tabs, not "
                                  "spaces, between columns.")
        sc.append(_score(cols[4], path, ln, 0.0, 5.0, "score (column 5)"))
        s1.append(_need_text(cols[5], path, ln, "sentence1"))
        s2.append(_need_text(cols[6], path, ln, "sentence2"))
    return STSPairs(s1, s2, np.asarray(sc, np.float64), name=os.path.basename(path), format="stsbenchmark")


def read_sick(path: str | os.PathLike) -> STSPairs:
    """SICK 2014 TSV with header ``pair_ID sentence_A sentence_B relatedness_score entailment_judgment``.

    Returns relatedness scores (1-5) and lower-case entailment labels in ``labels``.
    """
    text = read_text(path, "SICK")
    path = os.fspath(path)
    lines, idx = _tsv_header(path, text, ("sentence_A", "sentence_B", "relatedness_score", "entailment_judgment"))
    ncol = len(lines[0].split("\t"))
    s1, s2, sc, lab = [], [], [], []
    for ln, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != ncol:
            raise DataFormatError(f"{path}, line {ln}: expected {ncol} tab-separated columns like the "
                                  f"header, found {len(cols)}. Sentences must not contain tabs.")
        s1.append(_need_text(cols[idx[0]], path, ln, "sentence_A"))
        s2.append(_need_text(cols[idx[1]], path, ln, "sentence_B"))
        sc.append(_score(cols[idx[2]], path, ln, 1.0, 5.0, "relatedness_score"))
        lab.append(_label(cols[idx[3]], path, ln))
    if not s1:
        raise DataFormatError(f"{path}: header only, no rows.")
    return STSPairs(s1, s2, np.asarray(sc, np.float64), name=os.path.basename(path), labels=lab,
                    score_range=(1.0, 5.0), format="sick")


def read_senteval_sts(dir_or_year: str | os.PathLike) -> SentEvalSTS:
    """SentEval STS12-16 folder: ``STS.input.<subset>.txt`` (``s1<TAB>s2``) + ``STS.gs.<subset>.txt``.

    ``dir_or_year`` is a folder or a bundled year (``"STS12"`` ... ``"STS16"``). Pairs whose gold
    line is blank are unscored and skipped (as SentEval does); ``STS.gs.ALL.txt`` is ignored.
    """
    arg = bundled.resolve(dir_or_year)
    if arg.upper() in SENTEVAL_YEARS and not os.path.isdir(arg):
        folder, year = _bundled(f"sts12_16_senteval/{arg.upper()}-en-test"), arg.upper()
    else:
        folder = arg
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"SentEval STS folder {folder!r} does not exist; pass a folder holding "
                                    f"STS.input.*.txt / STS.gs.*.txt, or a bundled year {SENTEVAL_YEARS}.")
        m = re.search(r"STS1\d", os.path.basename(os.path.normpath(folder)).upper())
        year = m.group(0) if m else os.path.basename(os.path.normpath(folder))

    def subset_of(prefix: str) -> dict[str, str]:
        out = {}
        for f in os.listdir(folder):
            name = f[:-3] if f.endswith(".gz") else f
            if name.startswith(prefix) and name.endswith(".txt"):
                out[name[len(prefix):-4]] = os.path.join(folder, f)
        return out

    inputs, golds = subset_of("STS.input."), subset_of("STS.gs.")
    golds.pop("ALL", None)
    if not inputs:
        raise DataFormatError(f"{folder}: no STS.input.<subset>.txt files; expected the SentEval STS layout "
                              "(STS.input.<subset>.txt + STS.gs.<subset>.txt per subset).")
    missing_gold = sorted(set(inputs) - set(golds))
    if missing_gold:
        raise DataFormatError(f"{folder}: input file(s) without gold scores for subset(s) {missing_gold}; "
                              "add STS.gs.<subset>.txt or remove the input file.")
    subsets = {}
    for name in sorted(inputs):
        ipath, gpath = inputs[name], golds[name]
        in_lines, gs_lines = _lines(read_text(ipath, "STS input")), _lines(read_text(gpath, "STS gold"))
        if len(in_lines) != len(gs_lines):
            raise DataFormatError(f"{gpath}: {len(gs_lines)} lines but {ipath} has {len(in_lines)}; gold "
                                  "and input files must be line-aligned (blank gold line = unscored pair).")
        s1, s2, sc = [], [], []
        for ln, (pair, g) in enumerate(zip(in_lines, gs_lines), 1):
            if not g.strip():
                continue
            cols = pair.split("\t")
            if len(cols) != 2:
                raise DataFormatError(f"{ipath}, line {ln}: expected 2 tab-separated sentences, found "
                                      f"{len(cols)} column(s). Sentences must not contain tabs.")
            sc.append(_score(g.strip(), gpath, ln, 0.0, 5.0, "gold score"))
            s1.append(_need_text(cols[0], ipath, ln, "sentence1"))
            s2.append(_need_text(cols[1], ipath, ln, "sentence2"))
        subsets[name] = STSPairs(s1, s2, np.asarray(sc, np.float64), name=f"{year}/{name}")
    return SentEvalSTS(year, subsets, skipped=sorted(set(golds) - set(inputs)))


def bundled_sts_names() -> list[str]:
    """Short names of the bundled STS files accepted by :func:`resolve_sts_data` / the CLI."""
    names = [f"stsb-{lang}-{split}" for lang in STSB_LANGS for split in ("train", "dev")]
    names += ["stsbenchmark-train", "stsbenchmark-dev", "sick-train", "sick-trial"]
    return names


def resolve_sts_data(name_or_path: str, fmt: str = "auto") -> tuple[str, str]:
    """``(path, format)`` for an STS file path or a bundled short name (``"stsb-en-dev"``,
    ``"stsbenchmark-dev"``, ``"sick-trial"``...). ``format`` is one of ``stsb``, ``senteval``
    (a SentEval STS12-16 folder / year), ``stsbenchmark``, ``sick``; ``"auto"`` guesses from the
    name and, for files, from the first line.
    """
    formats = ("auto",) + STS_FORMATS
    if fmt not in formats:
        raise ValueError(f"Unknown STS format {fmt!r}; use one of {formats}.")
    key = bundled.resolve(os.fspath(name_or_path).strip())
    if not os.path.exists(key) and not os.path.exists(key + ".gz"):
        m = re.fullmatch(r"stsb-([a-z]{2})-(train|dev)", key)
        if m and m.group(1) in STSB_LANGS:
            return _bundled(f"stsb_multi_mt/{key}.csv"), "stsb"
        m = re.fullmatch(r"stsbenchmark-(train|dev)", key)
        if m:
            return _bundled(f"stsbenchmark_senteval/sts-{m.group(1)}.csv"), "stsbenchmark"
        m = re.fullmatch(r"sick-(train|trial)", key)
        if m:
            return _bundled(f"sick/SICK_{m.group(1)}.txt"), "sick"
        if key.upper() in SENTEVAL_YEARS:
            return key.upper(), "senteval"
        raise FileNotFoundError(f"STS data {key!r} is neither an existing file/folder nor a bundled name; "
                                f"bundled names: {', '.join(bundled_sts_names())}, or a year "
                                f"{', '.join(SENTEVAL_YEARS)}.")
    if os.path.isdir(key):
        return key, "senteval"
    if fmt != "auto":
        return key, fmt
    first = _lines(read_text(key, "STS"))[0]
    cols = first.split("\t")
    if "sentence_A" in cols and "relatedness_score" in cols:
        return key, "sick"
    if len(cols) >= 7 and _is_number(cols[4]):
        return key, "stsbenchmark"
    if len(cols) > 1:  # tab-separated and neither SICK nor SentEval: a headed TSV
        return key, "tsv"
    return key, "stsb"


def read_sts(name_or_path: str | os.PathLike, fmt: str = "auto") -> STSPairs:
    """Scored pairs from any STS file format, a bundled short name (``"stsb-en-dev"``) or a
    ``bundled/...`` path: :func:`resolve_sts_data` picks the format, then ``stsb`` ->
    :func:`read_sts_csv`, ``stsbenchmark`` -> :func:`read_stsbenchmark_senteval`, ``sick`` ->
    :func:`read_sick`, ``tsv`` -> :func:`read_sts_tsv`. Scores stay on the file's scale
    (``STSPairs.score_range``). A SentEval STS12-16 year holds several subsets: read it with
    :func:`read_senteval_sts`."""
    path, fmt = resolve_sts_data(os.fspath(name_or_path), fmt)
    if fmt == "senteval":
        raise DataFormatError(f"{os.fspath(name_or_path)}: STS format 'senteval' is an evaluation set (SentEval "
                              "years, several subsets), not one list of pairs; read it with read_senteval_sts, "
                              "or use an STS-B / SICK file.")
    return {"stsb": read_sts_csv, "stsbenchmark": read_stsbenchmark_senteval, "sick": read_sick,
            "tsv": read_sts_tsv}[fmt](path)


# ----------------------------------------------------------------------------- headed TSV


def read_headed_tsv(path: str | os.PathLike, columns: Sequence[str], what: str = "TSV") -> list[list[str]]:
    """The named ``columns`` (in that order) of a TSV whose first row is a header; blank rows
    skipped, every row must have the header's number of columns (sentences cannot hold tabs)."""
    text = read_text(path, what)
    path = os.fspath(path)
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
    header = lines[0].split("\t")
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataFormatError(f"{path}, line 1: missing column(s) {missing}; its header is {header}, expected a "
                              f"tab-separated header with {list(columns)} ({what}).")
    idx = [header.index(c) for c in columns]
    cols: list[list[str]] = [[] for _ in idx]
    for ln, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        row = line.split("\t")
        if len(row) != len(header):
            raise DataFormatError(f"{path}, line {ln}: {len(row)} tab-separated columns, the header has "
                                  f"{len(header)}; sentences must not contain tabs.")
        for c, i in zip(cols, idx):
            c.append(row[i])
    return cols


def read_sts_tsv(path: str | os.PathLike) -> STSPairs:
    """A headed TSV with columns ``sentence1 sentence2 score`` (scores 0..5, any other columns ignored)."""
    s1, s2, sc = read_headed_tsv(path, ("sentence1", "sentence2", "score"), "STS TSV")
    try:
        scores = np.asarray([float(x) for x in sc], np.float64)
    except ValueError as e:
        raise DataFormatError(f"{os.fspath(path)}: a score is not a number ({e}); scores are 0..5.") from None
    return STSPairs(s1, s2, scores, name=os.path.basename(os.fspath(path)), format="tsv")


# ----------------------------------------------------------------------------- NLI


def read_snli_esnli(dir: str | os.PathLike | None = None, split: str = "dev") -> NLIPairs:
    """e-SNLI line files ``s1.<split>`` (premise), ``s2.<split>`` (hypothesis), ``labels.<split>``.

    ``dir`` defaults to the bundled SNLI dev/test copy.
    """
    folder = bundled.resolve(dir) if dir is not None else _bundled("snli_esnli")
    files = [_existing(os.path.join(folder, f"{p}.{split}"), f"SNLI {p}.{split}") for p in ("s1", "s2", "labels")]
    cols = [_lines(read_text(f, "SNLI")) for f in files]
    if not len(cols[0]) == len(cols[1]) == len(cols[2]):
        raise DataFormatError(f"{folder}: s1/s2/labels.{split} have {[len(c) for c in cols]} lines; they must be "
                              "line-aligned (one pair per line in each file).")
    prem, hyp, lab = [], [], []
    for ln, (a, b, y) in enumerate(zip(*cols), 1):
        if y.strip() == "-":
            continue
        lab.append(_label(y, files[2], ln))
        prem.append(_need_text(a, files[0], ln, "premise"))
        hyp.append(_need_text(b, files[1], ln, "hypothesis"))
    return NLIPairs(prem, hyp, lab, name=f"snli-{split}")


def read_nli_tsv(path: str | os.PathLike) -> NLIPairs:
    """NLI TSV with header ``sentence1 sentence2 gold_label`` (NLI-CAD, SNLI/MNLI jsonl-derived TSVs).

    Also accepts ``premise hypothesis label`` headers. Rows labelled ``-`` (no gold label) are skipped.
    """
    text = read_text(path, "NLI TSV")
    path = os.fspath(path)
    header = _lines(text)[0].split("\t")
    names = ("premise", "hypothesis", "label") if "premise" in header else ("sentence1", "sentence2", "gold_label")
    lines, idx = _tsv_header(path, text, names)
    ncol = len(header)
    prem, hyp, lab = [], [], []
    for ln, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != ncol:
            raise DataFormatError(f"{path}, line {ln}: expected {ncol} tab-separated columns like the header, "
                                  f"found {len(cols)}. Sentences must not contain tabs.")
        if cols[idx[2]].strip() == "-":
            continue
        lab.append(_label(cols[idx[2]], path, ln))
        prem.append(_need_text(cols[idx[0]], path, ln, names[0]))
        hyp.append(_need_text(cols[idx[1]], path, ln, names[1]))
    if not prem:
        raise DataFormatError(f"{path}: no labelled rows after the header.")
    return NLIPairs(prem, hyp, lab, name=os.path.basename(path))


def nli_triplets(pairs: NLIPairs) -> Triplets:
    """SimCSE supervised triplets (Gao et al., 2021, Sec. 5): (premise, entailment hyp., contradiction hyp.).

    For each premise with ``e`` entailment and ``c`` contradiction hypotheses, the k-th entailment is
    paired with the k-th contradiction (file order), giving ``min(e, c)`` triplets; premises lacking
    either label give none. Deterministic: premises in order of first appearance.
    """
    ent: dict[str, list[str]] = {}
    con: dict[str, list[str]] = {}
    for p, h, y in zip(pairs.premises, pairs.hypotheses, pairs.labels):
        if y == "entailment":
            ent.setdefault(p, []).append(h)
        elif y == "contradiction":
            con.setdefault(p, []).append(h)
    a, pos, neg = [], [], []
    for p in dict.fromkeys(pairs.premises):
        for e, c in zip(ent.get(p, ()), con.get(p, ())):
            a.append(p), pos.append(e), neg.append(c)
    return Triplets(a, pos, neg)


def nli_multipos(pairs: NLIPairs, k: int) -> MultiPositives:
    """Anchors with several positives from NLI: each premise with at least ``k`` entailment
    hypotheses and its first ``k`` of them (file order); premises with fewer give none.
    Deterministic: premises in order of first appearance."""
    if k < 1:
        raise DataFormatError(f"nli_multipos: k must be >= 1, got {k}.")
    ent: dict[str, list[str]] = {}
    for p, h, y in zip(pairs.premises, pairs.hypotheses, pairs.labels):
        if y == "entailment" and h not in ent.setdefault(p, []):
            ent[p].append(h)
    anchors = [p for p in ent if len(ent[p]) >= k]
    return MultiPositives(anchors, [ent[p][:k] for p in anchors], None, name=pairs.name)


def read_multipos_jsonl(path: str | os.PathLike) -> MultiPositives:
    """JSON lines ``{"anchor": str, "positives": [str, ... k], "negative": str (optional)}``; every
    line has the same k, and either every line or none has a ``negative`` (``.gz`` ok)."""
    import json
    text = read_text(path, "multi-positive JSONL")
    path = os.fspath(path)
    anchors, positives, negatives = [], [], []
    k = has_neg = None
    for ln, line in enumerate(_lines(text), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}, line {ln}: not valid JSON ({e.msg}); write one object per line.") from None
        pos = row.get("positives") if isinstance(row, dict) else None
        if not isinstance(row, dict) or not isinstance(row.get("anchor"), str) or not isinstance(pos, list) \
                or not pos or not all(isinstance(x, str) for x in pos):
            raise DataFormatError(f"{path}, line {ln}: expected {{\"anchor\": str, \"positives\": [str, ...]}}, "
                                  f"got {line[:120]!r}.")
        if k is None:
            k, has_neg = len(pos), "negative" in row
        if len(pos) != k:
            raise DataFormatError(f"{path}, line {ln}: {len(pos)} positives, but line 1 has {k}; every anchor "
                                  "needs the same number k (drop or repeat positives to make them equal).")
        if ("negative" in row) != has_neg or (has_neg and not isinstance(row["negative"], str)):
            raise DataFormatError(f"{path}, line {ln}: give a string \"negative\" on every line or on none.")
        anchors.append(_need_text(row["anchor"], path, ln, "anchor"))
        positives.append([_need_text(x, path, ln, "positives") for x in pos])
        if has_neg:
            negatives.append(_need_text(row["negative"], path, ln, "negative"))
    if not anchors:
        raise DataFormatError(f"{path}: no rows.")
    return MultiPositives(anchors, positives, negatives if has_neg else None, name=os.path.basename(path))


# ----------------------------------------------------------------------------- sentences / bitext


def read_lines(path: str | os.PathLike) -> list[str]:
    """One sentence per line (``.gz`` ok): stripped, empty lines dropped."""
    out = [s.strip() for s in _lines(read_text(path, "sentence list"))]
    return [s for s in out if s]


def read_parallel(src_path: str | os.PathLike, tgt_path: str | os.PathLike) -> Parallel:
    """Line-aligned bitext: line i of ``src_path`` translates line i of ``tgt_path``.

    Different line counts are an error (the alignment would be wrong); pairs where either side is
    blank are dropped together so the alignment is kept.
    """
    src, tgt = (_lines(read_text(p, "parallel text")) for p in (src_path, tgt_path))
    if len(src) != len(tgt):
        raise DataFormatError(f"{os.fspath(src_path)} has {len(src)} lines but {os.fspath(tgt_path)} has "
                              f"{len(tgt)}; line-aligned files must have equal line counts. Check that both "
                              "are the same split and that no sentence contains a newline.")
    keep = [(s.strip(), t.strip()) for s, t in zip(src, tgt) if s.strip() and t.strip()]
    return Parallel([s for s, _ in keep], [t for _, t in keep],
                    name=f"{os.path.basename(os.fspath(src_path))}|{os.path.basename(os.fspath(tgt_path))}")


def tatoeba_languages(root: str | os.PathLike | None = None) -> list[str]:
    """ISO 639-3 codes available in a LASER Tatoeba v1 folder (bundled by default)."""
    folder = bundled.resolve(root) if root is not None else _bundled("tatoeba_laser_v1")
    langs = {m.group(1) for f in os.listdir(folder) if (m := re.fullmatch(r"tatoeba\.([a-z]{3})-eng\.\1(\.gz)?", f))}
    return sorted(langs)


def read_tatoeba(lang: str, root: str | os.PathLike | None = None) -> Parallel:
    """LASER Tatoeba v1 test pairs for ``lang`` (ISO 639-3, e.g. ``"deu"``): ``src`` = lang, ``tgt`` = English."""
    folder = bundled.resolve(root) if root is not None else _bundled("tatoeba_laser_v1")
    lang = lang.strip().lower()
    src = os.path.join(folder, f"tatoeba.{lang}-eng.{lang}")
    if not (os.path.isfile(src) or os.path.isfile(src + ".gz")):
        avail = tatoeba_languages(folder)
        raise FileNotFoundError(f"No Tatoeba data for language {lang!r} in {folder}; use an ISO 639-3 code "
                                f"(e.g. 'deu', not 'de'). Available: {', '.join(avail)}.")
    p = read_parallel(src, os.path.join(folder, f"tatoeba.{lang}-eng.eng"))
    p.name = f"tatoeba-{lang}"
    return p


# ----------------------------------------------------------------------------- scored triplets


SCORED_TRIPLET_COLUMNS = ("sent0", "sent1", "hard_neg", "pos_score", "neg_score")


def read_scored_triplets(path: str | os.PathLike) -> tuple[Triplets, np.ndarray]:
    """A headed TSV ``sent0 sent1 hard_neg pos_score neg_score`` (other columns ignored; the layout
    ``sentjax.data.mining.write_triplets`` writes): (query, positive, negative) triplets and the
    teacher's scores ``[n, 2]`` float64 ``[t(query, positive), t(query, negative)]`` for score
    distillation (objectives ``margin_mse`` / ``listwise_kl``)."""
    q, p, n, sp, sn = read_headed_tsv(path, SCORED_TRIPLET_COLUMNS, "scored triplets TSV")
    scores = np.empty((len(q), 2), np.float64)
    for i, pair in enumerate(zip(sp, sn)):
        for j, tok in enumerate(pair):
            try:
                scores[i, j] = float(tok)
            except ValueError:
                scores[i, j] = np.nan
            if not np.isfinite(scores[i, j]):
                raise DataFormatError(f"{os.fspath(path)}, row {i + 1} after the header: "
                                      f"{SCORED_TRIPLET_COLUMNS[3 + j]} is {tok!r}, not a finite number; "
                                      "write the teacher's score of that pair there.")
    for i, texts in enumerate(zip(q, p, n)):
        if not all(t.strip() for t in texts):
            raise DataFormatError(f"{os.fspath(path)}, row {i + 1} after the header: an empty text in "
                                  f"{SCORED_TRIPLET_COLUMNS[:3]}; fix or delete that row.")
    return Triplets(q, p, n), scores
