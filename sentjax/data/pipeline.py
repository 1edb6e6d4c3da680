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

Sources, their kinds and the dataset specs live in ``sentjax.data.sources``.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

from sentjax.data.sources import DataError, Source, load_source  # noqa: F401 (load_source: old import path)
from sentjax.tokenization import bucket_length

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
