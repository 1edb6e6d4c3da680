"""Evaluators by name: ``config.evals.<name> = {"type": ..., "every_steps": ..., <its fields>}``.

An evaluator is a frozen dataclass (its fields are its config: a default and one comment each)
called as ``evaluator(encode_fn, head=None) -> {metric: value}``, where ``encode_fn(list[str]) ->
np.ndarray [n, dim]`` is any encoder (the model being trained, an exported folder, another
library) and ``head`` the objective's trainable head, for evaluators that need it (NLI accuracy).

During training (``sentjax.train.train``) an evaluator runs every ``every_steps`` steps, at the last
step and, with ``at_start``, before the first step of a new run (``every_steps = 0``: never); its
values are logged as ``<name>_<metric>`` (``evals.sts_dev`` -> ``sts_dev_spearman``) and
``config.best_metric`` names the one that picks ``best_model/``. ``experiments/run.py`` evaluates
each exported model with the same evaluators.

  type      metrics (x100)                                         fields
  sts       spearman, pearson of cosine vs gold scores             data, limit
  sts_dims  sts + spearman_<m> of the first m coordinates          data, limit, dims (Matryoshka)
  senteval  avg, sts12 .. sts16: SentEval STS, pooled "all"        years, root
  nli       accuracy of the softmax head (Sentence-BERT)           data, limit, concat
  tatoeba   mean, <lang>: bitext retrieval, both directions        langs, root
  retrieval ndcg_at_10, mrr_at_10, recall_at_<k>, map (BEIR/TREC)    data, split, k_values, dot, limit, prefixes

Adding an evaluator: a frozen dataclass subclass of :class:`Evaluator` with
``@EVALUATORS.register("<type>")``, its ``metric_names`` and ``__call__``, and a line in
``tests/test_registry_evals.py``.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import numpy as np

from sentjax.data import readers
from sentjax.registry import ConfigError, Registry

__all__ = ["EVALUATORS", "Evaluator", "STS", "STSDims", "SentEval", "NLIAccuracy", "Tatoeba", "Retrieval",
           "build_evaluators", "eval_config"]

EncodeFn = Callable[[list[str]], np.ndarray]
EVALUATORS = Registry("evaluator")


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """Fields every evaluator has (they only matter during training)."""
    every_steps: int = 0        # evaluate every this many training steps and at the last; 0: never in training
    at_start: bool = True       # also before the first step of a new run (the untrained model)
    batch_size: int = 64        # sentences per encoder call during training

    def __post_init__(self):
        if self.every_steps < 0 or self.batch_size < 1:
            raise ValueError(f"every_steps must be >= 0 and batch_size >= 1, got {self.every_steps} and "
                             f"{self.batch_size}.")

    def metric_names(self) -> tuple[str, ...]:
        """The keys ``__call__`` returns, the main one first."""
        raise NotImplementedError

    def __call__(self, encode_fn: EncodeFn, head: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
        raise NotImplementedError


@EVALUATORS.register("sts")
@dataclasses.dataclass(frozen=True)
class STS(Evaluator):
    """Spearman and Pearson x100 of cos(u, v) against gold scores (SentEval's STS-B dev metric)."""
    # stsb-dev (= stsbenchmark-dev, SentEval's STS-B dev), stsb-<lang>-dev, sick-trial, STS12..STS16
    # (pooled subsets), an STS-B CSV / SentEval / SICK file, a headed TSV (sentence1, sentence2, score)
    # or bundled/<dataset>/<file>
    data: str = "stsb-dev"
    limit: int = 0              # the first N pairs only (0: all); not for STS12..16

    def metric_names(self) -> tuple[str, ...]:
        return ("spearman", "pearson")

    def __call__(self, encode_fn, head=None) -> dict[str, float]:
        from sentjax.eval.sts import evaluate_sts, evaluate_sts_file
        path, fmt = readers.resolve_sts_data("stsbenchmark-dev" if self.data == "stsb-dev" else self.data)
        if fmt == "senteval":
            r = evaluate_sts_file(encode_fn, path, fmt)  # a SentEval year: correlation of the pooled subsets
        else:
            d = readers.read_sts(path, fmt)
            n = self.limit or len(d.sentences1)
            r = evaluate_sts(encode_fn, d.sentences1[:n], d.sentences2[:n], d.scores[:n])
        return {"spearman": float(r["spearman"]), "pearson": float(r["pearson"])}


# ---------------------------------------------------------------- Matryoshka: STS at each truncation
# A type of its own rather than a field of "sts": the default config's sts_dev block may be switched
# to another type from the command line (--config.evals.sts_dev.type=nli), which needs every sts
# field to exist in that type too.

@EVALUATORS.register("sts_dims")
@dataclasses.dataclass(frozen=True)
class STSDims(STS):
    """:class:`STS`, plus ``spearman_<m>``: the same pairs with each embedding cut to its first m
    coordinates (a Matryoshka model used at size m; cosine re-normalises). One encode at full size."""
    dims: tuple = (384, 256, 128, 64, 32)  # truncated sizes m, each <= the model's embedding size

    def __post_init__(self):
        super().__post_init__()
        if not self.dims or any(not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in self.dims):
            raise ValueError(f"dims must be positive integers (truncated embedding sizes), got {self.dims!r}.")

    def metric_names(self) -> tuple[str, ...]:
        return ("spearman", "pearson") + tuple(f"spearman_{m}" for m in self.dims)

    def __call__(self, encode_fn, head=None) -> dict[str, float]:
        encode_fn = _memoized(encode_fn)
        out = STS.__call__(self, encode_fn)
        for m in self.dims:
            out[f"spearman_{m}"] = STS.__call__(self, _truncated(encode_fn, m))["spearman"]
        return out


def _memoized(encode_fn: EncodeFn) -> EncodeFn:
    cache: dict[tuple, np.ndarray] = {}

    def fn(texts):
        key = tuple(texts)
        if key not in cache:
            cache[key] = np.asarray(encode_fn(list(texts)))
        return cache[key]
    return fn


def _truncated(encode_fn: EncodeFn, m: int) -> EncodeFn:
    def fn(texts):
        e = encode_fn(texts)
        if m > e.shape[1]:
            raise ValueError(f"sts dims: {m} > the model's embedding size {e.shape[1]}; use dims <= {e.shape[1]}.")
        return e[:, :m]
    return fn


@EVALUATORS.register("senteval")
@dataclasses.dataclass(frozen=True)
class SentEval(Evaluator):
    """SentEval STS12-16: Spearman x100 of cosine pooled over each year's subsets ("all", SimCSE's number)."""
    years: tuple[str, ...] = readers.SENTEVAL_YEARS
    root: str = ""              # folder holding STS12-en-test/ ... STS16-en-test/; "": the bundled copy

    def metric_names(self) -> tuple[str, ...]:
        return ("avg",) + tuple(y.lower() for y in self.years)

    def __call__(self, encode_fn, head=None) -> dict[str, float]:
        from sentjax.eval.sts import evaluate_senteval
        r = evaluate_senteval(encode_fn, self.root or None, self.years)
        return {"avg": r["avg"]["spearman_all"], **{y.lower(): r[y.upper()]["spearman"]["all"] for y in self.years}}


@EVALUATORS.register("nli")
@dataclasses.dataclass(frozen=True)
class NLIAccuracy(Evaluator):
    """Accuracy x100 of the objective's softmax classifier head (Sentence-BERT) on labelled NLI pairs."""
    data: str = "snli-dev"      # snli-dev / snli-test (bundled e-SNLI) or an NLI TSV (sentence1, sentence2, gold_label)
    limit: int = 0              # the first N pairs only (0: all)
    concat: tuple[str, ...] = ("u", "v", "|u-v|")   # the head's features: the run's objective.concat

    def metric_names(self) -> tuple[str, ...]:
        return ("accuracy",)

    def __call__(self, encode_fn, head=None) -> dict[str, float]:
        from sentjax.eval.nli_head import nli_head_accuracy
        if head is None:
            raise ConfigError("the 'nli' evaluator scores a classifier head: use it with an objective that "
                              "trains one (objective.name='softmax').")
        split = self.data[len("snli-"):] if self.data in ("snli-dev", "snli-test") else None
        d = readers.read_snli_esnli(split=split) if split else readers.read_nli_tsv(self.data)
        n = self.limit or len(d.premises)
        r = nli_head_accuracy(encode_fn, head, d.premises[:n], d.hypotheses[:n], d.labels[:n], self.concat)
        return {"accuracy": r["accuracy"]}


@EVALUATORS.register("tatoeba")
@dataclasses.dataclass(frozen=True)
class Tatoeba(Evaluator):
    """Tatoeba bitext retrieval accuracy x100 (mean of both directions, LASER protocol) per language."""
    langs: tuple[str, ...] = ("deu", "fra")   # ISO 639-3 codes
    root: str = ""              # a LASER tatoeba/v1 folder; "": the bundled copy

    def metric_names(self) -> tuple[str, ...]:
        return ("mean",) + tuple(self.langs)

    def __call__(self, encode_fn, head=None) -> dict[str, float]:
        from sentjax.eval.retrieval import evaluate_tatoeba
        r = evaluate_tatoeba(encode_fn, list(self.langs), self.root or None)
        return {"mean": r["mean"], **{lang: r[lang]["accuracy"] for lang in self.langs}}


@EVALUATORS.register("retrieval")
@dataclasses.dataclass(frozen=True)
class Retrieval(Evaluator):
    """Dense retrieval x100 (BEIR protocol, metrics by ir-measures): nDCG@10, MRR@10, Recall@k, MAP."""
    # bundled:stsb-retrieval | bundled:nli-retrieval | bundled:tatoeba-deu-eng | beir:<name> | a BEIR folder
    data: str = "bundled:stsb-retrieval"
    split: str = "test"         # the BEIR qrels split (qrels/<split>.tsv); bundled tasks have one
    k_values: tuple[int, ...] = (1, 10, 100)    # recall_at_<k> for each; the ranking depth is the largest
    dot: bool = False           # rank by dot product instead of cosine
    limit: int = 0              # the first N judged queries only (0: all)
    query_prefix: str = ""      # prepended to each query (e.g. e5's "query: ")
    doc_prefix: str = ""        # prepended to each document (e.g. e5's "passage: ")

    def __post_init__(self):
        super().__post_init__()
        k = tuple(self.k_values)
        if not k or any(int(x) < 1 for x in k) or len(set(k)) < len(k) or self.limit < 0:
            raise ValueError(f"k_values must be distinct positive integers and limit >= 0, got {k} and {self.limit}.")

    def metric_names(self) -> tuple[str, ...]:
        from sentjax.eval.retrieval_ir import metric_names
        return metric_names(self.k_values)

    def __call__(self, encode_fn, head=None) -> dict[str, float]:
        from sentjax.eval.retrieval_ir import evaluate_retrieval
        r = evaluate_retrieval(encode_fn, _retrieval_task(self.data, self.split), self.k_values,
                               "dot" if self.dot else "cosine", self.query_prefix, self.doc_prefix, self.limit)
        return {m: r[m] for m in self.metric_names()}


@functools.lru_cache(maxsize=8)
def _retrieval_task(data: str, split: str):
    # read once per process: an evaluator runs every few training steps on the same files
    from sentjax.data.ir import load_task
    return load_task(data, split)


def eval_config(type: str, **fields: Any):
    """``config.evals.<name>``: every field of evaluator ``type`` with its default, ``fields`` applied,
    as a ConfigDict (so each one can be overridden from the command line)."""
    import ml_collections
    return ml_collections.ConfigDict(EVALUATORS.default_config(type, **fields))


def build_evaluators(evals: Mapping[str, Mapping[str, Any]], where: str = "evals") -> dict[str, Evaluator]:
    """``{name: Evaluator}`` of a ``config.evals`` section (errors name ``evals.<name>``)."""
    out = {}
    for name, cfg in evals.items():
        cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        out[name] = EVALUATORS.build(cfg, f"{where}.{name}")
    return out
