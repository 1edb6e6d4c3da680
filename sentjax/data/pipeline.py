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

import csv
import dataclasses
import os
from typing import Any, Sequence

import jax
import numpy as np

from sentjax.tokenization import bucket_length

KIND_FIELDS = {
    "text": ("anchor",), "pairs": ("anchor", "positive"), "parallel": ("anchor", "positive"),
    "triplets": ("anchor", "positive", "negative"), "sts": ("anchor", "positive"),
    "nli": ("anchor", "positive"),
}
NLI_LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2}


class DataError(ValueError):
    """A data source that is missing, empty or malformed."""


@dataclasses.dataclass
class Source:
    """An in-memory, random-access dataset of sentence examples.

    Attributes:
      name: for messages and metrics.
      kind: one of KIND_FIELDS.
      columns: text fields -> list[str] of length n; optional "label" (int) / "score" (float).
    """
    name: str
    kind: str
    columns: dict[str, Any]

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


# ----------------------------------------------------------------------------- readers

def _need_file(path: str) -> str:
    if not os.path.isfile(path):
        raise DataError(f"Data file {path!r} does not exist; check the path in "
                        "--config.data.datasets (specs look like 'text:/path/sentences.txt').")
    return path


def read_text(path: str, name: str | None = None) -> Source:
    """One sentence per line (blank lines skipped)."""
    with open(_need_file(path), encoding="utf-8") as f:
        lines = [ln.strip() for ln in f]
    return Source(name or path, "text", {"anchor": [ln for ln in lines if ln]})


def _read_tsv(path: str) -> tuple[list[str], list[list[str]]]:
    with open(_need_file(path), encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise DataError(f"Dataset {path!r} is empty (no header row).")
    return rows[0], rows[1:]


def _cols(path: str, header: list[str], rows: list[list[str]], names: Sequence[str]) -> list[list[str]]:
    missing = [c for c in names if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; its header is {header}.")
    idx = [header.index(c) for c in names]
    return [[r[i] for r in rows if len(r) == len(header)] for i in idx]


def read_tsv(path: str, kind: str, name: str | None = None) -> Source:
    """TSV with a header. Columns: pairs/parallel ``sentence1 sentence2``; triplets
    ``sent0 sent1 hard_neg`` (SimCSE's file); sts ``sentence1 sentence2 score`` (0..5, scaled to
    0..1); nli ``premise hypothesis label`` (entailment/neutral/contradiction or 0/1/2)."""
    header, rows = _read_tsv(path)
    if kind in ("pairs", "parallel"):
        a, p = _cols(path, header, rows, ["sentence1", "sentence2"])
        cols = {"anchor": a, "positive": p}
    elif kind == "triplets":
        a, p, n = _cols(path, header, rows, ["sent0", "sent1", "hard_neg"])
        cols = {"anchor": a, "positive": p, "negative": n}
    elif kind == "sts":
        a, p, s = _cols(path, header, rows, ["sentence1", "sentence2", "score"])
        cols = {"anchor": a, "positive": p, "score": np.asarray(s, np.float32) / 5.0}
    elif kind == "nli":
        a, p, lab = _cols(path, header, rows, ["premise", "hypothesis", "label"])
        labels = [NLI_LABELS.get(x, int(x) if x.lstrip("-").isdigit() else -1) for x in lab]
        keep = [i for i, x in enumerate(labels) if x in (0, 1, 2)]  # SNLI's "-" = no gold label
        cols = {"anchor": [a[i] for i in keep], "positive": [p[i] for i in keep],
                "label": np.asarray([labels[i] for i in keep], np.int32)}
    else:
        raise DataError(f"read_tsv cannot read kind {kind!r}.")
    return Source(name or path, kind, cols)


def nli_to_triplets(nli: Source) -> Source:
    """SimCSE supervised data (Gao et al., 2021): (premise, entailment, contradiction) for
    every premise that has both an entailment and a contradiction hypothesis."""
    ent, con = {}, {}
    for a, p, lab in zip(nli.columns["anchor"], nli.columns["positive"], nli.columns["label"]):
        if lab == 0:
            ent.setdefault(a, p)
        elif lab == 2:
            con.setdefault(a, p)
    prem = [a for a in ent if a in con]
    return Source(f"{nli.name}:triplets", "triplets",
                  {"anchor": prem, "positive": [ent[a] for a in prem], "negative": [con[a] for a in prem]})


def load_source(spec: str) -> Source:
    """``kind:path`` (kind in KIND_FIELDS, or ``nli-triplets``), ``bundled:<dataset>/<file>``
    (kind from the file) or ``tfds:<name>[:split]`` (``glue/stsb``, ``snli``, ``multi_nli``; online)."""
    kind, sep, rest = spec.partition(":")
    if not sep:
        raise DataError(f"Dataset spec {spec!r} must look like 'kind:path', kind one of "
                        f"{sorted(KIND_FIELDS) + ['nli-triplets', 'tfds']}.")
    if kind == "tfds":
        from sentjax.data.tfds_builders import load_tfds
        return load_tfds(rest)
    if kind == "bundled":
        raise DataError("bundled:<...> specs need a kind: use e.g. 'text:bundled/<dataset>/<file>'.")
    if rest.startswith("bundled/"):
        from sentjax.data import bundled
        rest = bundled.path(rest[len("bundled/"):])
    if kind == "text":
        return read_text(rest)
    if kind == "nli-triplets":
        return nli_to_triplets(read_tsv(rest, "nli"))
    if kind in KIND_FIELDS:
        return read_tsv(rest, kind)
    raise DataError(f"Unknown dataset kind {kind!r} in {spec!r}; use one of "
                    f"{sorted(KIND_FIELDS) + ['nli-triplets', 'tfds']}.")


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
    """

    def __init__(self, sources: Sequence[Source], tokenizer, batch_size: int, seed: int,
                 weights: Sequence[float] = (), dedup: bool = True,
                 process_index: int | None = None, process_count: int | None = None):
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
        get equal ``L`` per field."""
        src, _, idx = self.global_indices(step)
        source = self.sources[src]
        per = self.batch_size // self.process_count
        lo, hi = self.process_index * per, (self.process_index + 1) * per
        out: dict[str, Any] = {}
        for field in source.text_fields:
            col = source.columns[field]
            ids = self.tokenizer.encode_ids([col[i] for i in idx])
            length = bucket_length(max(len(x) for x in ids), self.tokenizer.max_length,
                                   self.tokenizer.bucket_multiple)
            out[field] = self.tokenizer.pad(ids[lo:hi], length)
        if source.kind == "text":
            out["positive"] = out["anchor"]  # SimCSE: the same sentence under another dropout mask
        for extra in ("label", "score"):
            if extra in source.columns:
                out[extra] = np.asarray(source.columns[extra])[idx[lo:hi]]
        return out
