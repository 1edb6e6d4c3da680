"""Deterministic input pipeline: sources -> global batches -> this process's token arrays, built
ahead of the step in a background thread.

Order is a pure function of (seed, epoch, step): epoch ``e`` of a source is the permutation
``jax.random.permutation(fold_in(key(seed + source_id), e), n)``; batches are cut from it
in order; for contrastive objectives an example whose text already appears in the batch
is deferred to the next batch (a duplicate would be a false negative). Several sources
are mixed per batch, round robin (``weights=()``) or proportionally (source of step ``s``
drawn from ``fold_in(key(seed), s)``). Resuming at step ``s`` rebuilds exactly the batch
an uninterrupted run would have seen, so the data position is just ``s``.

Every process computes the same global batch of *indices* (cheap: no text is touched but for
the deduplication, which therefore stays global) and tokenizes only its own rows ``rows`` (by
default ``[p * B / P, (p + 1) * B / P)``; :func:`process_rows` reads them off the batch sharding,
as ``jax.make_array_from_process_local_data`` assigns them). The padded length is the bucket of the
longest text of the *global* batch, so all processes build arrays of one shape: each process
measures its rows and the processes agree on the maximum through the coordination service's
key-value store (:class:`KVLengthSync`; a few bytes per step, off the critical path in the
prefetch thread).

:meth:`Pipeline.iterate` yields ``(step, batch)`` from a background thread that tokenizes and pads
the next ``prefetch`` batches (optionally also placing them on the devices) while the device runs
the current step.

Why a thread and not grain (dropped from the dependencies): the order above, with its cross-example
deduplication and mixing, is already a pure function of (seed, step), so the only resume state is
the step and grain's samplers and checkpointable iterators would add nothing but a second notion
of position; the host work is tokenization in Rust (``tokenizers`` releases the GIL) and numpy
padding, which one thread keeps ahead of the device, and it must run inside the training process
anyway to take part in the length agreement.
"""
from __future__ import annotations

import collections
import itertools
import queue
import threading
import warnings
from typing import Any, Callable, Iterator, Protocol, Sequence

import jax
import numpy as np

from sentjax import rng as rng_lib
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
        key = jax.random.fold_in(rng_lib.key(self.seed), epoch)
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


# ----------------------------------------------------------------------------- rows and lengths


def process_rows(sharding: jax.sharding.Sharding, batch_size: int) -> np.ndarray:
    """The rows of a global batch ``[batch_size, ...]`` placed with ``sharding`` that this process's
    devices hold, in the order ``jax.make_array_from_process_local_data`` expects them (ascending)."""
    spans = set()
    for index in sharding.addressable_devices_indices_map((batch_size,)).values():
        sl = index[0]
        spans.add((sl.start or 0, batch_size if sl.stop is None else sl.stop))
    rows = [np.arange(a, b) for a, b in sorted(spans)]
    return np.unique(np.concatenate(rows)) if rows else np.zeros(0, np.int64)


class LengthSync(Protocol):
    """Agreement of all processes on a step's longest texts: called by every process with the same
    ``step`` sequence and its own ``local`` maxima, returns the elementwise maxima over processes.
    ``cancel``: an event that, once set, makes a waiting call raise :class:`Cancelled`."""

    def __call__(self, step: int, local: tuple[int, ...],
                 cancel: threading.Event | None = None) -> tuple[int, ...]: ...


class Cancelled(Exception):
    """A length agreement stopped waiting because its prefetch thread is shutting down."""


class KeyValueStore(Protocol):
    def set(self, key: str, value: str) -> None: ...
    def get(self, key: str, timeout_ms: int) -> str: ...   # raises TimeoutError
    def delete(self, key: str) -> None: ...


class JaxKeyValueStore:
    """The key-value store of the ``jax.distributed`` coordination service (host-only: no device
    work, safe from a background thread while the step runs collectives)."""

    def __init__(self, client):
        self.client = client

    @classmethod
    def from_jax(cls) -> "JaxKeyValueStore | None":
        from jax._src import distributed
        client = distributed.global_state.client
        return None if client is None else cls(client)

    def set(self, key: str, value: str) -> None:
        self.client.key_value_set(key, value, allow_overwrite=True)

    def get(self, key: str, timeout_ms: int) -> str:
        try:
            return self.client.blocking_key_value_get(key, timeout_ms)
        except Exception as e:  # noqa: BLE001 - jax raises JaxRuntimeError for every status
            if "DEADLINE_EXCEEDED" in str(e):
                raise TimeoutError(str(e)) from None
            raise

    def delete(self, key: str) -> None:
        self.client.key_value_delete(key)


class KVLengthSync:
    """:class:`LengthSync` through a key-value store shared by the processes.

    Each call of a stream (:meth:`stream`; one per ``Pipeline.iterate`` and one for direct
    ``Pipeline.batch`` calls) is numbered; process ``p`` writes ``<prefix>/<stream>/<seq>/<p>`` =
    ``"<step>:<l1>,<l2>"`` and reads the others' keys of the same ``seq``. When ``p`` writes ``seq``
    every process has written ``seq - 1``, i.e. has finished reading ``seq - 2``: ``p`` then deletes
    its key of ``seq - 2``, so the store holds at most three keys per process and stream. Different
    steps under one ``seq`` (processes asking for different batches) are an error, not a hang."""

    _instances = itertools.count()

    def __init__(self, store: KeyValueStore, process_index: int, process_count: int,
                 prefix: str | None = None, poll_ms: int = 100):
        self.store, self.p, self.n, self.poll_ms = store, process_index, process_count, poll_ms
        # pipelines are built in the same order by every process (SPMD), so the counter agrees
        self.prefix = prefix if prefix is not None else f"sentjax/data/lengths/{next(self._instances)}"
        self._streams = itertools.count()
        self._direct = self.stream()

    def stream(self) -> "Callable[..., tuple[int, ...]]":
        name, seq, mine = f"{self.prefix}/{next(self._streams)}", itertools.count(), collections.deque()
        lock = threading.Lock()

        def agree(step: int, local: tuple[int, ...], cancel: threading.Event | None = None) -> tuple[int, ...]:
            with lock:
                key = f"{name}/{next(seq)}"
                self.store.set(f"{key}/{self.p}", f"{step}:{','.join(map(str, local))}")
                mine.append(f"{key}/{self.p}")
                if len(mine) > 2:
                    self.store.delete(mine.popleft())
                out = list(local)
                for q in range(self.n):
                    if q == self.p:
                        continue
                    their_step, _, vals = self._get(f"{key}/{q}", cancel).partition(":")
                    if int(their_step) != step:
                        raise DataError(f"Process {q} builds the batch of step {their_step} where process "
                                        f"{self.p} builds step {step}: every process must ask the pipeline "
                                        "for the same steps in the same order.")
                    out = [max(a, int(b)) for a, b in zip(out, vals.split(","))]
                return tuple(out)
        return agree

    def __call__(self, step, local, cancel=None):
        return self._direct(step, local, cancel)

    def _get(self, key: str, cancel: threading.Event | None) -> str:
        while True:  # no overall timeout: a dead peer is the coordination service's to report
            if cancel is not None and cancel.is_set():
                raise Cancelled(key)
            try:
                return self.store.get(key, self.poll_ms)
            except TimeoutError:
                continue


# ----------------------------------------------------------------------------- pipeline


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
      rows: the rows of the global batch this process builds, ascending (default: the block
        ``[p * B / P, (p + 1) * B / P)``; ``process_rows(sharding, B)`` gives those of a sharding).
      length_sync: how the processes agree on the padded length (a :class:`LengthSync`). Default:
        nothing to agree on with one process; the coordination service's store when ``process_count``
        is the real number of JAX processes; otherwise (processes simulated in one Python process,
        e.g. in tests) this process also tokenizes the other rows to measure them.
      prompts: per text column, a prompt prepended to its texts before tokenization
        (``{"anchor": "query: ", "positive": "passage: "}``; ``sentjax.data.prompts``).
      prompt_lengths: also give each prompted column's token batch ``prompt_length`` ``[rows]``
        (the pooling leaves those tokens out: ``include_prompt=False``).

    In a run with several JAX processes :meth:`batch` and :meth:`iterate` are collective: every
    process must ask for the same steps in the same order (as the train loop does).
    """

    def __init__(self, sources: Sequence[Source], tokenizer, batch_size: int, seed: int,
                 weights: Sequence[float] = (), dedup: bool = True,
                 process_index: int | None = None, process_count: int | None = None,
                 teacher_tokenizer=None, rows: Sequence[int] | None = None,
                 length_sync: LengthSync | None = None, prompts: dict[str, str] | None = None,
                 prompt_lengths: bool = False):
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
        per = batch_size // self.process_count
        self.rows = (np.arange(self.process_index * per, (self.process_index + 1) * per) if rows is None
                     else np.asarray(rows, np.int64).reshape(-1))
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= batch_size
                               or np.any(np.diff(self.rows) <= 0)):
            raise DataError(f"rows must be ascending distinct rows of the global batch [0, {batch_size}).")
        self._length_sync = length_sync
        self._lock = threading.RLock()  # the order caches, shared by the caller and the prefetch thread
        self._augmenters: dict[str, Callable | None] = {}
        from sentjax.data.prompts import column_prompts
        self.prompts = column_prompts(prompts, self.sources)
        self._prompt_lengths = ({f: tokenizer.prompt_length(p) for f, p in self.prompts.items()}
                                if prompt_lengths else {})

    # -- which source and which of its batches a step uses
    _BLOCK = 1024

    def _block_choices(self, block: int) -> np.ndarray:
        with self._lock:  # one draw per block of steps, not one per step
            cached = getattr(self, "_choices", None)
            if cached is not None and cached[0] == block:
                return cached[1]
        key = jax.random.fold_in(rng_lib.key(self.seed), block)
        choices = np.asarray(jax.random.choice(key, len(self.sources), (self._BLOCK,), p=self.weights))
        with self._lock:
            self._choices = (block, choices)
        return choices

    def locate(self, step: int) -> tuple[int, int]:
        """(source index, k-th batch of that source) used at global step ``step``."""
        d = len(self.sources)
        if self.weights is None:
            return step % d, step // d
        block, off = divmod(step, self._BLOCK)
        with self._lock:
            if block not in self._counts_cache:  # counts of each source in blocks < block
                prev = self._counts_cache.get(block - 1)
                if prev is None:
                    prev = np.zeros(d, np.int64)
                    for b in range(block):
                        prev = prev + np.bincount(self._block_choices(b), minlength=d)
                    self._counts_cache[block] = prev
                else:
                    self._counts_cache[block] = prev + np.bincount(self._block_choices(block - 1), minlength=d)
            counts = self._counts_cache[block]
        choices = self._block_choices(block)
        src = int(choices[off])
        return src, int(counts[src] + np.sum(choices[:off] == src))

    @property
    def source_names(self) -> list[str]:
        """The datasets, in the order of :meth:`draws`' indices."""
        return [s.name for s in self.sources]

    def draws(self, step: int) -> dict[int, int]:
        """``{source index: rows}`` of step ``step``'s global batch (one source: the whole batch)."""
        return {self.locate(step)[0]: self.batch_size}

    def global_indices(self, step: int) -> tuple[int, int, np.ndarray]:
        """(source, epoch of that source, example indices [B]) of step ``step``."""
        src, k = self.locate(step)
        with self._lock:
            epoch, idx = self.orders[src].batch(k)
        return src, epoch, idx

    def texts(self, step: int, rows: Sequence[int] | None = None) -> dict[str, Any]:
        """The texts of ``step``'s global batch (``rows`` of it; default all): ``{field: [str]}`` for
        the source's text fields (kind ``text``: ``positive`` = the anchor or its augmented view),
        ``label`` / ``score`` arrays, and ``source`` / ``epoch`` / ``indices``."""
        src, epoch, idx = self.global_indices(step)
        source = self.sources[src]
        rows = np.arange(self.batch_size) if rows is None else np.asarray(rows, np.int64)
        mine = idx[rows]
        out: dict[str, Any] = {f: [source.columns[f][i] for i in mine] for f in source.text_fields}
        if source.kind == "text":
            fn = self._augmenter(source.augment)
            if fn is None:
                out["positive"] = list(out["anchor"])
            else:  # augmented positive view x+ = aug(x), one generator per global row
                from sentjax.data import augment
                out["positive"] = [fn(t, augment.row_rng(self.seed, epoch, step, int(r)))
                                   for t, r in zip(out["anchor"], rows)]
        for extra in ("label", "score"):
            if extra in source.columns:
                out[extra] = np.asarray(source.columns[extra])[mine]
        out.update(source=src, epoch=epoch, indices=mine)
        return out

    def _augmenter(self, spec: str):
        if spec not in self._augmenters:
            fn = None
            if spec:
                from sentjax.data import augment
                fn = augment.parse_spec(spec)
            self._augmenters[spec] = fn
        return self._augmenters[spec]

    def _token_ids(self, texts: dict[str, Any]) -> tuple[dict[str, list], list | None]:
        """Unpadded token ids of every text field (``positive`` of kind text too) and, with a
        teacher tokenizer, of the anchors for the teacher."""
        source = self.sources[texts["source"]]
        ids = {f: self._encode(f, texts[f]) for f in source.text_fields}
        if source.kind == "text" and (self._augmenter(source.augment) is not None
                                      or self.prompts.get("positive") != self.prompts.get("anchor")):
            ids["positive"] = self._encode("positive", texts["positive"])
        t_ids = self.teacher_tokenizer.encode_ids(texts["anchor"]) if self.teacher_tokenizer is not None else None
        return ids, t_ids

    def _encode(self, column: str, texts: list[str]) -> list:
        prompt = self.prompts.get(column, "")
        return self.tokenizer.encode_ids([prompt + t for t in texts] if prompt else texts)

    @staticmethod
    def _longest(ids: dict[str, list], t_ids: list | None) -> tuple[int, int]:
        return (max((len(x) for col in ids.values() for x in col), default=0),
                max((len(x) for x in t_ids), default=0) if t_ids is not None else 0)

    def _agree(self, step: int, local: tuple[int, int], sync, cancel) -> tuple[int, int]:
        if self.process_count == 1:
            return local
        if sync is None:  # processes simulated in this Python process: measure the other rows here
            others = np.setdiff1d(np.arange(self.batch_size), self.rows)
            theirs = self._longest(*self._token_ids(self.texts(step, others))) if len(others) else (0, 0)
            return tuple(max(a, b) for a, b in zip(local, theirs))
        return sync(step, local, cancel)

    def _sync(self):
        """The LengthSync of :meth:`batch` calls (None: measure the other rows locally)."""
        if self._length_sync is None and self.process_count > 1 and self.process_count == jax.process_count():
            store = JaxKeyValueStore.from_jax()
            if store is not None:
                self._length_sync = KVLengthSync(store, self.process_index, self.process_count)
        return self._length_sync

    def _stream(self):
        """A fresh LengthSync stream for one :meth:`iterate`."""
        sync = self._sync()
        return sync.stream() if isinstance(sync, KVLengthSync) else sync

    def batch(self, step: int) -> dict:
        """This process's rows of the global batch of ``step``: token dicts ``[R, L]`` (R =
        ``len(rows)``, B/P by default; ``negative``: ``[R * k, L]``), ``label`` / ``score`` ``[R]``;
        all processes get equal ``L``. Every text field of a batch shares one ``L`` (the bucket of the
        global batch's longest text): a pair batch then has one of ``max_length / bucket_multiple``
        shapes instead of its square, and each new shape is a new compilation of the step.
        With a ``teacher_tokenizer`` the anchors are also tokenized for the teacher
        (``teacher_anchor``; distillation into a student with another vocabulary)."""
        return self._build(step, self._sync(), None)

    def _build(self, step: int, sync, cancel) -> dict:
        texts = self.texts(step, self.rows)
        ids, t_ids = self._token_ids(texts)
        longest, t_longest = self._agree(step, self._longest(ids, t_ids), sync, cancel)
        tok = self.tokenizer
        length = bucket_length(longest, tok.max_length, tok.bucket_multiple)
        out: dict[str, Any] = {f: tok.pad(col, length) for f, col in ids.items()}
        if self.sources[texts["source"]].kind == "text" and "positive" not in out:
            out["positive"] = out["anchor"]  # SimCSE: the same sentence under another dropout mask
        for f, n in self._prompt_lengths.items():
            if f in out:
                out[f] = dict(out[f], prompt_length=np.full(len(out[f]["input_ids"]), n, np.int32))
        if t_ids is not None:
            t = self.teacher_tokenizer
            out["teacher_anchor"] = t.pad(t_ids, bucket_length(t_longest, t.max_length, t.bucket_multiple))
        for extra in ("label", "score"):
            if extra in texts:
                out[extra] = texts[extra]
        return out

    def iterate(self, start: int = 0, stop: int | None = None, prefetch: int = 2,
                transform: Callable[[dict], Any] | None = None) -> "Prefetcher":
        """``(step, batch)`` for ``step = start, start + 1, ...`` (``< stop``), each ``batch`` equal to
        ``batch(step)`` (or ``transform(batch(step))``), built ``prefetch`` steps ahead by a background
        thread. ``transform`` runs in that thread too, e.g. ``lambda b: global_batch(b, mesh)`` to
        have the host-to-device copy done before the step asks for it. ``prefetch=0`` builds each
        batch when it is asked for (no thread). The thread stops when the iterator is exhausted,
        closed (``close()``, ``with``, garbage collected after a ``break``) or the consumer raises;
        an error while building a batch is raised by ``next()``, naming the step::

            with pipeline.iterate(start, total_steps, prefetch=2, transform=place) as batches:
                for step, batch in batches:
                    state, metrics = train_step(state, batch, rng(step))
        """
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}.")
        stream = self._stream()  # in the caller's thread: every process numbers its streams alike
        return Prefetcher(lambda s, cancel: self._build(s, stream, cancel), start, stop, prefetch, transform)


class _Failure:
    def __init__(self, step: int, error: BaseException):
        self.step, self.error = step, error


_END = object()


def _produce(build, transform, steps: Iterator[int], out: queue.Queue, cancel: threading.Event) -> None:
    """The prefetch thread: builds batches in step order into ``out`` until ``cancel`` or the end."""
    def put(item) -> bool:
        while not cancel.is_set():
            try:
                out.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    step = None
    try:
        for step in steps:
            if cancel.is_set():
                return
            batch = build(step, cancel)
            if transform is not None:
                batch = transform(batch)
            if not put((step, batch)):
                return
        put(_END)
    except Cancelled:
        return
    except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
        put(_Failure(step, e))


class Prefetcher:
    """Iterator of ``(step, batch)`` built by a daemon thread ``depth`` batches ahead (see
    ``Pipeline.iterate``). The thread holds no reference to this object, so dropping the iterator
    (e.g. a ``break`` out of ``for ... in pipeline.iterate(...)``) closes it."""

    def __init__(self, build: Callable[[int, threading.Event], dict], start: int, stop: int | None,
                 depth: int, transform: Callable[[dict], Any] | None = None):
        self._steps = itertools.count(start) if stop is None else iter(range(start, stop))
        self._build, self._transform = build, transform
        self._done = False
        self._cancel = threading.Event()
        self._thread = None
        if depth > 0:
            self._queue: queue.Queue = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(
                target=_produce, args=(build, transform, self._steps, self._queue, self._cancel),
                name=f"sentjax-prefetch-{start}", daemon=True)
            self._thread.start()

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self) -> tuple[int, Any]:
        if self._done:
            raise StopIteration
        if self._thread is None:
            step = next(self._steps, None)
            if step is None:
                self._done = True
                raise StopIteration
            batch = self._build(step, self._cancel)
            return step, (batch if self._transform is None else self._transform(batch))
        item = self._queue.get()
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            item.error.add_note(f"(raised while building the batch of step {item.step} in the prefetch thread)")
            raise item.error
        return item

    @property
    def alive(self) -> bool:
        """Whether the prefetch thread is still running."""
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout: float = 60.0) -> None:
        """Stops the thread (it finishes the batch in hand) and waits for it."""
        self._done = True
        self._cancel.set()
        if self._thread is None:
            return
        while True:  # unblock a producer waiting for room
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                warnings.warn(f"the data prefetch thread did not stop within {timeout:g} s; it is a daemon "
                              "thread and will not keep the process alive.", RuntimeWarning, stacklevel=2)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close(timeout=5.0)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
