"""Deterministic input pipeline: sources -> global batches -> this process's token arrays.

Order is a pure function of (seed, epoch, step): epoch ``e`` of a source is the permutation
``jax.random.permutation(fold_in(key(seed + source_id), e), n)``; batches are cut from it
in order; for contrastive objectives an example whose text already appears in the batch
is deferred to the next batch (a duplicate would be a false negative). Several sources
are mixed per batch, round robin (``weights=()``) or proportionally (source of step ``s``
drawn from ``fold_in(key(seed), s)``). Resuming at step ``s`` rebuilds exactly the batch
an uninterrupted run would have seen, so the data position is just ``s``.

Every process computes the same global batch of indices and keeps rows
``[p * B / P, (p + 1) * B / P)``; the padded length is the bucket of the longest text of
the *global* batch, so all processes build arrays of one shape.

Sources (``kind`` says which text fields an example has):
  text      anchor                     (unsupervised SimCSE: positive = same text)
  pairs     anchor, positive
  parallel  anchor, positive           (translation pairs)
  triplets  anchor, positive, negative (SimCSE supervised, from NLI)
  sts       anchor, positive, score in [0, 1]
  nli       anchor, positive, label
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax
import numpy as np

from sentjax.data import readers
from sentjax.tokenization import bucket_length

KIND_FIELDS = {
    "text": ("anchor",), "pairs": ("anchor", "positive"), "parallel": ("anchor", "positive"),
    "triplets": ("anchor", "positive", "negative"), "sts": ("anchor", "positive"),
    "nli": ("anchor", "positive"),
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
        return KIND_FIELDS[self.kind]


# ----------------------------------------------------------------------------- sources
# File parsing lives in ``sentjax.data.readers`` (one reader per format); this section only maps
# their records to ``Source`` columns. The headed TSVs below (SimCSE's ``sent0 sent1 hard_neg``,
# ``sentence1 sentence2 [score]``) are the one format readers.py does not cover.


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


def read_tsv(path: str, kind: str, name: str | None = None) -> Source:
    """A TSV with a header row (``.gz`` ok). Columns: pairs/parallel ``sentence1 sentence2``;
    triplets ``sent0 sent1 hard_neg`` (SimCSE's file); sts ``sentence1 sentence2 score`` (0..5,
    scaled to 0..1); nli ``sentence1 sentence2 gold_label`` or ``premise hypothesis label``
    (``readers.read_nli_tsv``; labels entailment/neutral/contradiction -> 0/1/2, '-' skipped)."""
    if kind == "nli":
        pairs = _reader_errors(readers.read_nli_tsv, path)
        return Source(name or path, "nli", {"anchor": pairs.premises, "positive": pairs.hypotheses,
                                            "label": pairs.label_ids})
    names = {"pairs": ["sentence1", "sentence2"], "parallel": ["sentence1", "sentence2"],
             "triplets": ["sent0", "sent1", "hard_neg"], "sts": ["sentence1", "sentence2", "score"]}
    if kind not in names:
        raise DataError(f"read_tsv cannot read kind {kind!r}; use one of {sorted(names) + ['nli']}.")
    text = _reader_errors(readers.read_text, path, f"{kind} TSV")
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
    header = lines[0].split("\t")
    missing = [c for c in names[kind] if c not in header]
    if missing:
        raise DataError(f"{path}, line 1: missing column(s) {missing}; its header is {header}, expected a "
                        f"tab-separated header with {names[kind]} for kind {kind!r}.")
    idx = [header.index(c) for c in names[kind]]
    cols: list[list[str]] = [[] for _ in idx]
    for ln, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        row = line.split("\t")
        if len(row) != len(header):
            raise DataError(f"{path}, line {ln}: {len(row)} tab-separated columns, the header has "
                            f"{len(header)}; sentences must not contain tabs.")
        for c, i in zip(cols, idx):
            c.append(row[i])
    fields = ["anchor", "positive", "negative"] if kind == "triplets" else ["anchor", "positive"]
    out: dict[str, Any] = dict(zip(fields, cols))
    if kind == "sts":
        try:
            out["score"] = np.asarray(cols[2], np.float32) / 5.0
        except ValueError as e:
            raise DataError(f"{path}: a score is not a number ({e}); scores are 0..5.") from e
    return Source(name or path, kind, out)


def read_sts(path: str, name: str | None = None) -> Source:
    """Scored pairs, scores scaled to [0, 1]: a headed TSV (``read_tsv``) or any format of
    ``readers.resolve_sts_data`` (STS-B multi-mt CSV, SentEval STS-B, SICK, or a bundled name
    like ``stsb-en-train``). STS-B scores 0..5 -> s / 5; SICK relatedness 1..5 -> (s - 1) / 4."""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            head = f.read(2)
        if head != b"\x1f\x8b":
            first = _reader_errors(readers.read_text, path, "STS").split("\n", 1)[0].split("\t")
            senteval = len(first) >= 7 and first[4].replace(".", "", 1).isdigit()
            if len(first) > 1 and not senteval and "sentence_A" not in first:
                return read_tsv(path, "sts", name)  # headed TSV (tab-separated, not SentEval / SICK)
    resolved, fmt = _reader_errors(readers.resolve_sts_data, path)
    read = {"stsb": readers.read_sts_csv, "stsbenchmark": readers.read_stsbenchmark_senteval,
            "sick": readers.read_sick}.get(fmt)
    if read is None:
        raise DataError(f"{path}: STS format {fmt!r} is an evaluation set (SentEval years), not training "
                        "data; use an STS-B / SICK file.")
    pairs = _reader_errors(read, resolved)
    scores = (pairs.scores - 1.0) / 4.0 if fmt == "sick" else pairs.scores / 5.0
    return Source(name or path, "sts", {"anchor": pairs.sentences1, "positive": pairs.sentences2,
                                        "score": np.asarray(scores, np.float32)})


def read_parallel(spec: str, name: str | None = None) -> Source:
    """Translation pairs: ``SRC_FILE|TGT_FILE`` (line-aligned, ``readers.read_parallel``) or a
    headed ``sentence1 sentence2`` TSV."""
    if "|" in spec:
        src, tgt = (_bundled_path(p) for p in spec.split("|", 1))
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
        path, fmt = _reader_errors(readers.resolve_sts_data, _bundled_path(part))
        pairs = _reader_errors(readers.read_sts_csv, path) if fmt == "stsb" else None
        if pairs is None:
            raise DataError(f"parallel-sts: {part!r} is a {fmt!r} file; use stsb_multi_mt CSVs.")
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


def _bundled_path(path: str) -> str:
    if path.startswith("bundled/"):
        from sentjax.data import bundled
        return _reader_errors(bundled.path, path[len("bundled/"):])
    return path


def load_source(spec: str) -> Source:
    """A dataset from its spec ``kind:path``:

    ``text:FILE[,FILE...]``, ``pairs:TSV``, ``triplets:TSV``, ``nli:TSV``, ``nli-triplets:TSV`` (SimCSE
    triplets from NLI), ``sts:FILE_OR_NAME`` (see ``read_sts``), ``parallel:SRC|TGT`` or
    ``parallel:TSV``, ``parallel-sts:SRC|TGT`` (row-aligned STS-B translations); a path ``bundled/<dataset>/<file>`` is a bundled file; ``tfds:<name>[:split]``
    reads a TFDS dataset (``sentjax.data.tfds_builders``: local builders or ``glue/stsb``,
    ``snli``, ``multi_nli``). ``text+AUG:FILE`` augments the positive view with the
    ``sentjax.data.augment`` spec AUG, e.g. ``text+crop=0.1:FILE`` (SimCSE Table 1)."""
    kinds = sorted(KIND_FIELDS) + ["nli-triplets", "parallel-sts", "tfds"]
    kind, sep, rest = spec.partition(":")
    if not sep:
        raise DataError(f"Dataset spec {spec!r} must look like 'kind:path', kind one of {kinds}.")
    if kind.startswith("text+"):
        from sentjax.data import augment
        try:
            augment.parse_spec(kind[len("text+"):])
        except (ValueError, FileNotFoundError) as e:
            raise DataError(f"{spec!r}: {e}") from e
        return dataclasses.replace(read_text(_bundled_path(rest)), augment=kind[len("text+"):])
    if kind == "tfds":
        from sentjax.data.tfds_builders import load_tfds
        return load_tfds(rest)
    if kind == "bundled":
        raise DataError("bundled:<...> specs need a kind: use e.g. 'text:bundled/<dataset>/<file>'.")
    if kind == "parallel":
        return read_parallel(rest)
    if kind == "parallel-sts":
        return read_parallel_sts(rest)
    if kind == "text" and "," in rest:
        # Several sentence files as one source (e.g. to reach a very large unique-text batch).
        parts = [read_text(_bundled_path(p)) for p in rest.split(",")]
        return Source(rest, "text", {"anchor": [t for p in parts for t in p.columns["anchor"]]})
    rest = _bundled_path(rest)
    if kind == "text":
        return read_text(rest)
    if kind == "sts":
        return read_sts(rest)
    if kind == "nli-triplets":
        return nli_to_triplets(read_tsv(rest, "nli"))
    if kind in KIND_FIELDS:
        return read_tsv(rest, kind)
    raise DataError(f"Unknown dataset kind {kind!r} in {spec!r}; use one of {kinds}.")


# ----------------------------------------------------------------------------- order

class BatchOrder:
    """Global batches of example indices of one source; batch ``k`` is a pure function of
    (seed, k). Epoch plans are computed on demand and cached."""

    def __init__(self, source: Source, batch_size: int, seed: int, dedup: bool):
        if len(source) < batch_size:
            raise DataError(f"Dataset {source.name!r} has {len(source)} examples, fewer than one "
                            f"global batch ({batch_size}); lower --config.batch_size or add data.")
        self.source, self.batch_size, self.seed, self.dedup = source, batch_size, seed, dedup
        self._plans: list[np.ndarray] = []

    def _epoch_plan(self, epoch: int) -> np.ndarray:
        key = jax.random.fold_in(jax.random.key(self.seed), epoch)
        perm = np.asarray(jax.random.permutation(key, len(self.source)))
        b = self.batch_size
        if not self.dedup:
            nb = len(perm) // b
            return perm[: nb * b].reshape(nb, b)
        fields = [self.source.columns[f] for f in self.source.text_fields]
        batches, cur, seen, deferred = [], [], set(), []
        pending = list(perm)
        pos = 0
        while pos < len(pending):
            i = pending[pos]
            pos += 1
            texts = {col[i] for col in fields}
            if texts & seen:
                deferred.append(i)
                continue
            cur.append(i)
            seen |= texts
            if len(cur) == b:
                batches.append(cur)
                cur, seen = [], set()
                # deferred examples go first into the next batch
                pending = pending[:pos] + deferred + pending[pos:]
                deferred = []
        if not batches:
            raise DataError(f"Dataset {self.source.name!r} cannot fill one batch of {b} distinct "
                            "texts; it has too many duplicates for this batch size.")
        return np.asarray(batches, np.int64)

    def batch(self, k: int) -> tuple[int, np.ndarray]:
        """(epoch, indices [batch_size]) of the source's k-th batch."""
        epoch = 0
        while True:
            while len(self._plans) <= epoch:
                self._plans.append(self._epoch_plan(len(self._plans)))
            n = len(self._plans[epoch])
            if k < n:
                return epoch, self._plans[epoch][k]
            k -= n
            epoch += 1


class Pipeline:
    """Batches for step ``s`` of a run: which source, which examples, tokenized for this process.

    Args:
      sources: the datasets to mix (all of kinds the objective can use).
      tokenizer: a ``sentjax.tokenization.Tokenizer``.
      batch_size: global batch size B (examples, across all processes and devices).
      seed: data seed.
      weights: mixing proportions (empty: round robin).
      dedup: no repeated text inside a batch (contrastive objectives).
      process_index / process_count: this process's share of the global batch.
      teacher_tokenizer: also tokenize each anchor for a teacher with another vocabulary
        (distillation); the batch gets a ``teacher_anchor`` token dict.
    """

    def __init__(self, sources: Sequence[Source], tokenizer, batch_size: int, seed: int,
                 weights: Sequence[float] = (), dedup: bool = True,
                 process_index: int | None = None, process_count: int | None = None,
                 teacher_tokenizer=None):
        if not sources:
            raise DataError("No datasets configured; set --config.data.datasets.")
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        if batch_size % self.process_count:
            raise DataError(f"Global batch {batch_size} is not divisible by {self.process_count} processes.")
        if weights and len(weights) != len(sources):
            raise DataError(f"{len(weights)} mixing weights for {len(sources)} datasets.")
        if weights and (min(weights) < 0 or sum(weights) <= 0):
            raise DataError(f"Mixing weights must be non-negative with a positive sum, got {list(weights)}.")
        self.sources, self.tokenizer, self.batch_size, self.seed = list(sources), tokenizer, batch_size, seed
        self.weights = np.asarray(weights, np.float64) / np.sum(weights) if weights else None
        self.orders = [BatchOrder(s, batch_size, seed + 1000 * i, dedup) for i, s in enumerate(sources)]
        self._counts_cache: dict[int, np.ndarray] = {}
        self.teacher_tokenizer = teacher_tokenizer

    # -- which source and which of its batches a step uses
    _BLOCK = 1024

    def _block_choices(self, block: int) -> np.ndarray:
        key = jax.random.fold_in(jax.random.key(self.seed), block)
        return np.asarray(jax.random.choice(key, len(self.sources), (self._BLOCK,), p=self.weights))

    def locate(self, step: int) -> tuple[int, int]:
        """(source index, k-th batch of that source) used at global step ``step``."""
        d = len(self.sources)
        if self.weights is None:
            return step % d, step // d
        block, off = divmod(step, self._BLOCK)
        if block not in self._counts_cache:  # counts of each source in blocks < block
            prev = self._counts_cache.get(block - 1)
            if prev is None:
                prev = np.zeros(d, np.int64)
                for b in range(block):
                    prev = prev + np.bincount(self._block_choices(b), minlength=d)
                self._counts_cache[block] = prev
            else:
                self._counts_cache[block] = prev + np.bincount(self._block_choices(block - 1), minlength=d)
        choices = self._block_choices(block)
        src = int(choices[off])
        return src, int(self._counts_cache[block][src] + np.sum(choices[:off] == src))

    def global_indices(self, step: int) -> tuple[int, int, np.ndarray]:
        """(source, epoch of that source, example indices [B]) of step ``step``."""
        src, k = self.locate(step)
        epoch, idx = self.orders[src].batch(k)
        return src, epoch, idx

    def batch(self, step: int) -> dict:
        """This process's rows of the global batch of ``step``: token dicts ``[B/P, L]``
        (``negative``: ``[B/P * k, L]``), ``label`` / ``score`` ``[B/P]``; all processes
        get equal ``L``. Every text field of a batch shares one ``L`` (the bucket of the
        batch's longest text): a pair batch then has one of ``max_length / bucket_multiple``
        shapes instead of its square, and each new shape is a new compilation of the step.
        With a ``teacher_tokenizer`` the anchors are also tokenized for the teacher
        (``teacher_anchor``; distillation into a student with another vocabulary)."""
        src, epoch, idx = self.global_indices(step)
        source = self.sources[src]
        per = self.batch_size // self.process_count
        lo, hi = self.process_index * per, (self.process_index + 1) * per
        ids: dict[str, list] = {f: self.tokenizer.encode_ids([source.columns[f][i] for i in idx])
                                for f in source.text_fields}
        if source.kind == "text" and source.augment:
            from sentjax.data import augment
            fn = augment.parse_spec(source.augment)
            if fn is not None:  # augmented positive view x+ = aug(x), one generator per global row
                aug = augment.augment_batch([source.columns["anchor"][i] for i in idx], fn, self.seed, epoch, step)
                ids["positive"] = self.tokenizer.encode_ids(aug)
        length = bucket_length(max(len(x) for col in ids.values() for x in col), self.tokenizer.max_length,
                               self.tokenizer.bucket_multiple)
        out: dict[str, Any] = {f: self.tokenizer.pad(col[lo:hi], length) for f, col in ids.items()}
        if source.kind == "text" and "positive" not in out:
            out["positive"] = out["anchor"]  # SimCSE: the same sentence under another dropout mask
        if self.teacher_tokenizer is not None:
            t = self.teacher_tokenizer
            t_ids = t.encode_ids([source.columns["anchor"][i] for i in idx])
            out["teacher_anchor"] = t.pad(t_ids[lo:hi], bucket_length(max(len(x) for x in t_ids), t.max_length,
                                                                       t.bucket_multiple))
        for extra in ("label", "score"):
            if extra in source.columns:
                out[extra] = np.asarray(source.columns[extra])[idx[lo:hi]]
        return out
