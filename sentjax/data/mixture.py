"""Multi-dataset training: ``config.data.sources``, a list of datasets with optional weights.

Each entry is a dataset spec (``"nli-triplets:FILE"``, as ``config.data.datasets`` holds) or a dict
``{"spec": ..., "weight": w, "name": ...}`` (``weight`` > 0, optional; ``name``: the label in
``metrics.jsonl`` and messages, default the spec's file name). ``config.data.sampling``:

  proportional   source i drawn with probability w_i / sum_j w_j, w_i = the entry's weight or, when
                 no entry has one, the source's size (sentence-transformers' ``ProportionalBatchSampler``:
                 larger datasets are drawn more often; here as independent draws per step, so the
                 run never "runs out" and every source keeps its own epochs)
  round_robin    sources in list order, one after the other (``RoundRobinBatchSampler``)

``config.data.homogeneous`` (default True): every global batch comes from ONE source, as in
sentence-transformers' multi-dataset samplers: in-batch negatives from another dataset differ in
topic and style and are too easy. Sources may then have different columns (pairs and triplets): a
batch carries its source's columns, and every source's column set is checked against the objective
at config time (a source it cannot take is a ConfigError). ``homogeneous=False``: each global batch
holds a fixed share of rows of every source (largest-remainder split of the batch by the weights;
equal weights for round_robin); the sources must then have the same columns.

Order and resume: the source of step ``s`` and the examples of its batch are a pure function of
(seed, s) (``sentjax.data.pipeline``), so a resumed run continues with exactly the batches of an
uninterrupted one. No text appears twice in a global batch (the whole batch across devices and
processes, which all compute the same global indices): within a source by ``BatchOrder``'s
deferral; in a mixed batch a row whose text is already in the batch (a duplicate planted across
datasets) is replaced by the next example of its source's per-step substitute permutation
``permutation(fold_in(key(seed'), step))`` whose texts are new to the batch.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from sentjax import rng as rng_lib
from sentjax.data.pipeline import BatchOrder, Pipeline
from sentjax.data.sources import DataError, Source
from sentjax.errors import ConfigError

__all__ = ["SAMPLINGS", "SourceEntry", "parse_sources", "mixture_weights", "batch_shares",
           "check_objective_columns", "MixedPipeline", "build_mixture_pipeline"]

SAMPLINGS = ("proportional", "round_robin")
_ENTRY_KEYS = ("spec", "weight", "name")


@dataclasses.dataclass(frozen=True)
class SourceEntry:
    spec: str
    name: str
    weight: float | None = None


def _default_name(spec: str) -> str:
    rest = spec.partition(":")[2] or spec
    base = os.path.basename(rest.rstrip("/")) or rest
    for ext in (".gz", ".tsv", ".txt", ".jsonl", ".csv"):
        base = base[: -len(ext)] if base.endswith(ext) else base
    return base or spec


def parse_sources(entries: Sequence[Any], sampling: str) -> list[SourceEntry]:
    """``config.data.sources`` -> entries; every mistake is a ConfigError saying how to fix it."""
    if sampling not in SAMPLINGS:
        raise ConfigError(f"config.data.sampling={sampling!r}: use one of {list(SAMPLINGS)}.")
    if not entries:
        raise ConfigError("config.data.sources is empty: give at least one dataset, e.g. "
                          "--config.data.sources=nli-triplets:FILE,pairs:FILE2.")
    out = []
    for i, e in enumerate(entries):
        if isinstance(e, str):
            e = {"spec": e}
        if not isinstance(e, Mapping):
            raise ConfigError(f"config.data.sources[{i}] = {e!r}: each entry is a spec 'kind:path' or a dict "
                              "{'spec': 'kind:path', 'weight': 2.0, 'name': 'nli'}.")
        unknown = sorted(set(e) - set(_ENTRY_KEYS))
        if unknown:
            raise ConfigError(f"config.data.sources[{i}] has unknown key(s) {unknown}; the keys are {list(_ENTRY_KEYS)}.")
        spec = e.get("spec")
        if not isinstance(spec, str) or ":" not in spec:
            raise ConfigError(f"config.data.sources[{i}] needs a 'spec' like 'nli-triplets:FILE', got {spec!r}.")
        w = e.get("weight")
        if w is not None:
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not np.isfinite(w) or w <= 0:
                raise ConfigError(f"config.data.sources[{i}] ({spec}): weight must be a number > 0, got {w!r}; "
                                  "leave it out to weight by dataset size.")
            w = float(w)
        out.append(SourceEntry(spec, str(e.get("name") or _default_name(spec)), w))
    names = [x.name for x in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"config.data.sources: the name(s) {dup} are used twice; give each entry its own "
                          "'name' (it labels the dataset in metrics.jsonl).")
    given = [x.weight is not None for x in out]
    if any(given) and not all(given):
        raise ConfigError("config.data.sources: give a weight to every entry or to none (none: proportional "
                          "to dataset size).")
    if all(given) and sampling == "round_robin":
        raise ConfigError("config.data.sources has weights but sampling='round_robin' takes the sources in "
                          "turn; use sampling='proportional' or drop the weights.")
    return out


def mixture_weights(entries: Sequence[SourceEntry], sources: Sequence[Source], sampling: str) -> tuple[float, ...]:
    """Normalised source probabilities; () for round robin."""
    if sampling == "round_robin":
        return ()
    w = np.asarray([e.weight if e.weight is not None else len(s) for e, s in zip(entries, sources)], np.float64)
    return tuple(float(x) for x in w / w.sum())


def batch_shares(weights: Sequence[float], batch_size: int) -> np.ndarray:
    """Rows of each source in a mixed batch: largest-remainder split of ``batch_size`` by ``weights``
    (ties to the earlier source), each >= 1."""
    w = np.asarray(weights, np.float64)
    exact = batch_size * w / w.sum()
    n = np.floor(exact).astype(np.int64)
    order = sorted(range(len(w)), key=lambda i: (-(exact[i] - n[i]), i))
    for i in order[: batch_size - int(n.sum())]:
        n[i] += 1
    if np.any(n < 1):
        raise ConfigError(f"a mixed batch of {batch_size} gives source(s) {np.flatnonzero(n < 1).tolist()} no "
                          f"row at weights {list(np.round(w / w.sum(), 4))}; raise their weight or the batch, or "
                          "use config.data.homogeneous=true (one dataset per batch).")
    return n


def check_objective_columns(objective, sources: Sequence[Source], names: Sequence[str]) -> None:
    """Runs the objective's loss abstractly (``jax.eval_shape``) on the columns of a batch of each
    source; a source whose batches it cannot take is a ConfigError naming the source."""
    b, d = 4, 8
    head = None
    if objective.init_head is not None:
        head = jax.eval_shape(lambda: objective.init_head(jax.random.key(0), d))
    params = {} if head is None else {"head": head}
    for name, s in zip(names, sources):
        cols = list(s.text_fields) + (["positive"] if s.kind == "text" else [])
        emb = {f: jax.ShapeDtypeStruct((b, d), np.float32) for f in cols if f in objective.fields}
        for extra in ("label", "score"):
            if extra in s.columns:
                x = np.asarray(s.columns[extra][:1])
                emb[extra] = jax.ShapeDtypeStruct((b, *x.shape[1:]), x.dtype)
        if objective.needs_teacher:
            emb["teacher"] = jax.ShapeDtypeStruct((b, d), np.float32)
        try:
            jax.eval_shape(lambda p, e: objective.loss_fn(p, e, None), params, emb)
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise ConfigError(f"data source {name!r} (kind {s.kind}, columns {sorted(s.columns)}) cannot train "
                              f"objective {objective.name!r}: {e}. Drop it from config.data.sources or convert "
                              "it to the columns the objective needs.") from None


class MixedPipeline(Pipeline):
    """A :class:`Pipeline` whose every global batch holds ``shares[i]`` rows of source ``i`` (in source
    order), with no text twice in the batch. The parent sees one concatenated source; ``parts`` are
    the datasets."""

    def __init__(self, sources: Sequence[Source], tokenizer, batch_size: int, seed: int,
                 shares: Sequence[int] | np.ndarray, dedup: bool = True, **kwargs):
        parts = list(sources)
        cols = set(parts[0].columns)
        for s in parts[1:]:
            if set(s.columns) != cols or (s.kind == "text") != (parts[0].kind == "text") or s.augment != parts[0].augment:
                raise ConfigError(f"mixed batches (config.data.homogeneous=false) need sources with the same columns: "
                                  f"{parts[0].name!r} has {sorted(cols)} ({parts[0].kind}), {s.name!r} has "
                                  f"{sorted(s.columns)} ({s.kind}); use config.data.homogeneous=true (one dataset "
                                  "per batch, each with its own columns).")
        columns: dict[str, Any] = {}
        for c in parts[0].columns:
            vals = [s.columns[c] for s in parts]
            columns[c] = (np.concatenate([np.asarray(v) for v in vals]) if isinstance(vals[0], np.ndarray)
                          else [t for v in vals for t in v])
        combined = Source("+".join(s.name for s in parts), parts[0].kind, columns, parts[0].augment)
        super().__init__([combined], tokenizer, batch_size, seed, dedup=dedup, **kwargs)
        self.parts, self.shares, self.dedup = parts, np.asarray(shares, np.int64), dedup
        if len(self.shares) != len(parts) or int(self.shares.sum()) != batch_size or self.shares.min() < 1:
            raise DataError(f"shares {list(self.shares)} must give each of {len(parts)} sources >= 1 row and sum "
                            f"to the batch {batch_size}.")
        self.offsets = np.concatenate([[0], np.cumsum([len(s) for s in parts])[:-1]])
        self.part_orders = [BatchOrder(s, int(n), seed + 1000 * i, dedup) for i, (s, n) in enumerate(zip(parts, shares))]
        self._indices_cache: dict[int, tuple[int, np.ndarray]] = {}

    def _texts_of(self, part: int, i: int) -> set:
        s = self.parts[part]
        return {s.columns[f][i] for f in s.text_fields}

    def _substitutes(self, part: int, step: int):
        key = jax.random.fold_in(rng_lib.key(self.seed + 1000 * part + 500), step)
        yield from (int(i) for i in np.asarray(jax.random.permutation(key, len(self.parts[part]))))

    def global_indices(self, step: int) -> tuple[int, int, np.ndarray]:
        with self._lock:
            if step not in self._indices_cache:
                if len(self._indices_cache) > 64:
                    self._indices_cache.clear()
                self._indices_cache[step] = self._compose(step)
            epoch, idx = self._indices_cache[step]
        return 0, epoch, idx

    def _compose(self, step: int) -> tuple[int, np.ndarray]:
        seen: set = set()
        out, epoch0 = [], 0
        for p, order in enumerate(self.part_orders):
            epoch, idx = order.batch(step)
            epoch0 = epoch if p == 0 else epoch0
            subs = None
            for i in idx:
                i = int(i)
                texts = self._texts_of(p, i)
                if self.dedup and texts & seen:  # a duplicate across datasets: the next new example
                    subs = subs if subs is not None else self._substitutes(p, step)
                    i = next((j for j in subs if not (self._texts_of(p, j) & seen)), -1)
                    if i < 0:
                        raise DataError(f"step {step}: source {self.parts[p].name!r} has no example left whose "
                                        f"texts are new to the mixed batch; lower the batch or its share.")
                    texts = self._texts_of(p, i)
                seen |= texts
                out.append(int(self.offsets[p]) + i)
        return epoch0, np.asarray(out, np.int64)

    @property
    def source_names(self) -> list[str]:
        return [s.name for s in self.parts]

    def draws(self, step: int) -> dict[int, int]:
        return {i: int(n) for i, n in enumerate(self.shares)}


def build_mixture_pipeline(data: Mapping[str, Any], tokenizer, batch_size: int, seed: int, dedup: bool,
                           objective=None, **kwargs) -> Pipeline:
    """The pipeline of ``config.data.sources`` (``data`` = ``config.data``); ``kwargs`` go to the
    :class:`Pipeline` (rows, prompts, teacher tokenizer...)."""
    from sentjax.data.sources import load_source
    entries = parse_sources(tuple(data["sources"]), data["sampling"])
    sources = [dataclasses.replace(load_source(e.spec), name=e.name) for e in entries]
    if objective is not None:
        check_objective_columns(objective, sources, [e.name for e in entries])
    weights = mixture_weights(entries, sources, data["sampling"])
    if data["homogeneous"]:
        return Pipeline(sources, tokenizer, batch_size, seed, weights=weights, dedup=dedup, **kwargs)
    shares = batch_shares(weights or [1.0] * len(sources), batch_size)
    return MixedPipeline(sources, tokenizer, batch_size, seed, shares, dedup=dedup, **kwargs)
