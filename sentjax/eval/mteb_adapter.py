"""Run a sentjax model in mteb (2.x): the adapter object and a small runner.

mteb 2 calls an encoder through its ``EncoderProtocol`` (``mteb/models/models_protocols.py``):
``encode(inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **encode_kwargs)`` where
``inputs`` is a torch ``DataLoader`` of ``{"text": [...]}`` batches, ``similarity`` /
``similarity_pairwise`` ([n1, dim] x [n2, dim] -> [n1, n2] / [n, dim] x [n, dim] -> [n]) and an
``mteb_model_meta`` property (a ``mteb.models.ModelMeta``); an object with ``encode`` alone is not run.

Prompts follow sentence-transformers, so the adapter and the exported folder loaded by mteb's
``SentenceTransformerEncoderWrapper`` embed the same strings: the folder's
``config_sentence_transformers.json`` ``prompts`` (or ``prompts=``) are looked up by mteb's rule
(task name + "-query"/"-document", task name, task type + prompt type, task type, prompt type);
when none matches, a query takes ``prompts["query"]``, a document the first of ``"document"``,
``"passage"``, ``"corpus"``, and otherwise ``default_prompt_name`` applies. The prompt is
prepended to the text (``prompt + text``).

Usage::

    import mteb, sentjax
    from sentjax.eval.mteb_adapter import MTEBEncoder
    model = MTEBEncoder(sentjax.load("runs/x/best_model"))
    mteb.evaluate(model, mteb.get_tasks(tasks=["STSBenchmark", "SciFact"]), cache=None)

Requires the ``mteb`` extra (``pip install 'sentjax[mteb]'``: mteb, torch, sentence-transformers).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from sentjax.errors import ConfigError

__all__ = ["MTEBEncoder", "resolve_prompt", "get_tasks", "benchmark_tasks", "run_mteb", "main_scores"]

_SIMILARITIES = ("cosine", "dot")
_DOCUMENT_KEYS = ("document", "passage", "corpus")  # sentence-transformers' encode_document fallbacks


def _require_mteb() -> None:
    try:
        import mteb  # noqa: F401
    except ImportError:
        raise ImportError("sentjax's mteb adapter needs the 'mteb' extra: pip install 'sentjax[mteb]' "
                          "(mteb 2.x with torch and sentence-transformers).") from None


def _st_root(folder: str | None) -> str | None:
    """The sentence-transformers folder of a model's weights folder: itself, or the folder above a
    ``0_Transformer``-style module folder (the one holding ``modules.json``)."""
    if not folder:
        return None
    folder = os.path.abspath(folder)
    parent, modules = os.path.dirname(folder), os.path.join(os.path.dirname(folder), "modules.json")
    if not os.path.isfile(os.path.join(folder, "modules.json")) and os.path.isfile(modules) and any(
            m.get("path") == os.path.basename(folder) for m in _read_json(modules)):
        return parent
    return folder


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); fix or delete it.") from None


def _st_config(root: str | None) -> dict:
    """``config_sentence_transformers.json`` of a model folder; ``{}`` if there is none."""
    path = os.path.join(root or "", "config_sentence_transformers.json")
    return _read_json(path) if root and os.path.isfile(path) else {}


def _pooling_includes_prompt(root: str | None) -> bool:
    modules = os.path.join(root or "", "modules.json")
    if not root or not os.path.isfile(modules):
        return True
    for m in _read_json(modules):
        cfg = os.path.join(root, m.get("path", ""), "config.json")
        if m.get("type", "").endswith("Pooling") and os.path.isfile(cfg):
            return bool(_read_json(cfg).get("include_prompt", True))
    return True


def resolve_prompt(prompts: Mapping[str, str], default_prompt_name: str | None, task_metadata: Any,
                   prompt_type: Any) -> str:
    """The prompt string sentence-transformers would prepend under mteb for this task and input type."""
    from mteb.models.abs_encoder import get_prompt_name
    from mteb.types import PromptType
    if not prompts:
        return ""
    name = get_prompt_name(dict(prompts), task_metadata, prompt_type)
    if name is None:
        if prompt_type == PromptType.query and "query" in prompts:
            name = "query"
        elif prompt_type == PromptType.document:
            name = next((k for k in _DOCUMENT_KEYS if k in prompts), None)
    if name is None:
        name = default_prompt_name
    return (prompts.get(name) or "") if name else ""


def _params_digest(params: Any) -> str:
    import jax
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:12]


class MTEBEncoder:
    """A loaded sentjax model (``sentjax.load(DIR)``) as an mteb 2.x encoder.

    Args:
      model: a ``sentjax.SentenceModel`` (anything with ``encode(texts, batch_size=, show_progress=)``,
        ``dim``, ``params``, ``tokenizer.max_length`` and ``source_dir``).
      name: model name in mteb's results (default ``sentjax/<folder name>``).
      revision: revision in mteb's results (default: the first 12 hex digits of a SHA-256 of the
        parameters, so a retrained model never reuses cached results).
      prompts / default_prompt_name / similarity_fn_name: override the folder's
        ``config_sentence_transformers.json`` (the values sentence-transformers would use).
      batch_size: sentences per encoder call when mteb does not pass ``batch_size``.
    """

    def __init__(self, model: Any, *, name: str | None = None, revision: str | None = None,
                 prompts: Mapping[str, str] | None = None, default_prompt_name: str | None = None,
                 similarity_fn_name: str | None = None, batch_size: int = 64) -> None:
        _require_mteb()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        self.model = model
        folder = _st_root(getattr(model, "source_dir", None))
        cfg = _st_config(folder)
        self.prompts: dict[str, str] = dict((cfg.get("prompts") or {}) if prompts is None else prompts)
        self.default_prompt_name = default_prompt_name if default_prompt_name is not None \
            else cfg.get("default_prompt_name")
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise ConfigError(f"default_prompt_name {self.default_prompt_name!r} is not one of the prompts "
                              f"{sorted(self.prompts)}; add it to prompts or unset it.")
        self.similarity_fn_name = similarity_fn_name or cfg.get("similarity_fn_name") or "cosine"
        if self.similarity_fn_name not in _SIMILARITIES:
            raise ConfigError(f"similarity_fn_name {self.similarity_fn_name!r} is not supported by the mteb adapter; "
                              f"use one of {_SIMILARITIES}.")
        if any(self.prompts.values()) and not _pooling_includes_prompt(folder):
            raise ConfigError(f"{folder}: the Pooling module has include_prompt=false (prompt tokens left out of "
                              "the pooling, Instructor-style), which sentjax does not implement; set it to true or "
                              "evaluate the folder with sentence-transformers directly.")
        self.batch_size = batch_size
        base = os.path.basename(os.path.normpath(folder)) if folder else "model"
        self.name = name or f"sentjax/{base}"
        self._revision = revision
        self._meta = None

    @property
    def mteb_model_meta(self) -> Any:
        """mteb's ``ModelMeta`` of the model: name, revision, embedding size, parameters, max tokens."""
        if self._meta is None:
            import jax
            from mteb.models import ModelMeta
            from mteb.models.model_meta import ScoringFunction
            params = getattr(self.model, "params", None)
            n_params = None if params is None else int(sum(np.size(x) for x in jax.tree.leaves(params)))
            revision = self._revision or (None if params is None else _params_digest(params))
            tok = getattr(self.model, "tokenizer", None)
            self._meta = ModelMeta.create_empty(overwrites=dict(
                name=self.name, revision=revision, embed_dim=int(self.model.dim), n_parameters=n_params,
                max_tokens=getattr(tok, "max_length", None), framework=["JAX"], modalities=["text"],
                similarity_fn_name=ScoringFunction(self.similarity_fn_name),
                use_instructions=bool(any(self.prompts.values())), open_weights=True))
        return self._meta

    def encode(self, inputs: Iterable[Mapping[str, Sequence[str]]], *, task_metadata: Any, hf_split: str,
               hf_subset: str, prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
        """Embeds every text of ``inputs`` (batches ``{"text": [...]}``): float32 ``[n, dim]`` in input order."""
        texts: list[str] = []
        for batch in inputs:
            if "text" not in batch:
                raise TypeError(f"mteb task {task_metadata.name!r} passes {sorted(batch)} inputs; sentjax "
                                "models embed text only (batches with a 'text' column).")
            texts.extend(batch["text"])
        precision = kwargs.get("precision", "float32")
        if precision not in ("float32", None):
            raise ConfigError(f"precision={precision!r} is not supported by the sentjax adapter (float32 only).")
        prompt = resolve_prompt(self.prompts, self.default_prompt_name, task_metadata, prompt_type)
        extra = {}
        if hasattr(self.model, "resolve_prompt"):
            # a SentenceModel prepends it itself; prompt="" also stops it adding its default prompt again
            extra["prompt"] = prompt
        elif prompt:
            texts = [prompt + t for t in texts]
        emb = self.model.encode(texts, batch_size=int(kwargs.get("batch_size") or self.batch_size),
                                show_progress=kwargs.get("show_progress_bar"), **extra)
        return np.asarray(emb, np.float32)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> Any:
        """``[n1, dim] x [n2, dim] -> [n1, n2]`` (torch, as mteb expects): cosine or dot product."""
        from mteb.similarity_functions import cos_sim, dot_score
        return (cos_sim if self.similarity_fn_name == "cosine" else dot_score)(embeddings1, embeddings2)

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> Any:
        """``[n, dim] x [n, dim] -> [n]``: the similarity of each row pair."""
        from mteb.similarity_functions import pairwise_cos_sim, pairwise_dot_score
        fn = pairwise_cos_sim if self.similarity_fn_name == "cosine" else pairwise_dot_score
        return fn(embeddings1, embeddings2)


# ----------------------------------------------------------------------------- runner


def get_tasks(names: Sequence[str]) -> list[Any]:
    """mteb tasks by name: public mteb task names (``STSBenchmark``, ``SciFact``: their data is
    downloaded from the Hugging Face hub) and local ones (``local-sts:stsb-en-dev@200``,
    ``local-retrieval:stsb-en-dev``; :mod:`sentjax.eval.mteb_tasks`)."""
    _require_mteb()
    import mteb

    from sentjax.eval import mteb_tasks
    out, public = [], []
    for n in names:
        if n.split(":", 1)[0] in mteb_tasks.LOCAL_PREFIXES:
            out.append(mteb_tasks.local_task(n))
        else:
            public.append(n)
    if public:
        try:
            found = list(mteb.get_tasks(tasks=public))
        except KeyError as e:
            raise ValueError(f"Unknown mteb task(s) {public}: {e}. List them with `mteb available-tasks`, "
                             "or use local-sts:<data> / local-retrieval:<data>.") from None
        missing = sorted(set(public) - {t.metadata.name for t in found})
        if missing:
            raise ValueError(f"Unknown mteb task(s) {missing}; list them with `mteb available-tasks`.")
        out += found
    return out


def benchmark_tasks(name: str) -> list[Any]:
    """The tasks of a public mteb benchmark, e.g. ``"MTEB(eng, v2)"`` (41 tasks; data downloaded when run)."""
    _require_mteb()
    import mteb
    try:
        return list(mteb.get_benchmark(name).tasks)
    except KeyError as e:
        raise ValueError(f"Unknown mteb benchmark {name!r}: {e}. List them with `mteb available-benchmarks`.") from None


def main_scores(result: Any) -> dict[str, dict[str, float]]:
    """``{task: {"main_score": value (0-1), "metric": name, <split>: main score}}`` of an mteb ``ModelResult``."""
    out = {}
    for tr in result.task_results:
        task = tr.task_name
        row: dict[str, Any] = {"main_score": float(tr.get_score())}
        for split, subsets in tr.scores.items():
            for s in subsets:
                row[f"{split}/{s['hf_subset']}"] = float(s["main_score"])
        out[task] = row
    return out


def run_mteb(model: Any, tasks: Sequence[Any], *, output: str | None = None, batch_size: int = 64,
             show_progress: bool = True) -> Any:
    """``mteb.evaluate`` with sentjax's defaults: no global results cache unless ``output`` is given
    (then mteb's ``ResultCache(output)`` layout, ``results/<name>/<revision>/<task>.json``)."""
    _require_mteb()
    import mteb
    cache = mteb.ResultCache(cache_path=output) if output else None
    return mteb.evaluate(model, list(tasks), cache=cache, encode_kwargs={"batch_size": batch_size,
                                                                         "show_progress_bar": show_progress},
                         show_progress_bar=show_progress, overwrite_strategy="only-missing")
