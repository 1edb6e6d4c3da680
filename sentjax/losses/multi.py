"""Several objectives in one step: a weighted sum of registered objectives (e.g. contrastive +
distillation, or contrastive + an MLM / TLM auxiliary loss; LaBSE, Feng et al. 2022, "Language-agnostic
BERT Sentence Embedding", builds its encoder from MLM / TLM and a translation ranking loss).

With terms ``k = 1..K``, weights ``w_k`` and each term's own global mean loss ``L_k``::

    L = sum_k w_k * L_k(params, {column: [batch, dim]})

Design: ``multi`` is itself one registered objective, so the trainer, the gradient engine
(``sentjax.parallel.global_grads.make_grad_fn``: one device, shard_map, pmap, GradCache) and the
checkpoints see a single ``loss_fn(params, embeddings, axis_name)``; each term is a normal
objective block plus a ``weight`` (and an optional ``key`` naming it in the logs)::

    config.objective = {"name": "multi", "terms": (
        {"name": "infonce", "weight": 1.0, "temperature": 0.05},
        {"name": "mlm", "weight": 0.1, "source": "tlm"})}

Every term is built by :func:`sentjax.losses.registry.build` (its keys checked against its own
``Config``). The text columns embedded are the union of the terms' columns, each embedded ONCE per
step and shared by every term that reads it. Since each ``L_k`` is exact under the engine (its
global mean across devices), so is the sum, and ``dL/dtheta = sum_k w_k dL_k/dtheta`` (linearity;
pinned by tests/test_multi_objective.py). Each term's loss is reported as ``loss_<key>`` and its
metrics as ``<metric>_<key>`` (metrics.jsonl / TensorBoard); ``loss`` is the weighted sum.

Heads: a term with a trainable head keeps it under ``params["head"][<key>]``. Refused (ConfigError):
no terms, a nested ``multi``, two terms with the same key, a negative or non-finite weight,
terms needing different distillation teachers, and terms with a frozen guide or in-step teacher scores
(``gist``, ``margin_mse`` / ``listwise_kl`` with ``scores="teacher"``).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from sentjax.losses import registry
from sentjax.losses.registry import ObjectiveSpec

__all__ = ["Config", "OBJECTIVE", "CITATION", "column_loss", "build_terms", "Term"]


def _default_terms() -> tuple:
    return ({"name": "infonce", "weight": 1.0},)


@dataclasses.dataclass(frozen=True)
class Term:
    """One built term: its log key, weight and objective."""
    key: str
    weight: float
    objective: registry.Objective


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyperparameters of the ``multi`` objective (``config.objective``)."""
    # objective blocks {name, weight (default 1), key (log name; default the name), <its fields>}
    terms: tuple = dataclasses.field(default_factory=_default_terms)

    def __post_init__(self):
        build_terms(self.terms)

    @property
    def teacher(self) -> str:
        """The distillation teacher of the terms that need one ("" = model.init_from)."""
        teachers = {getattr(t.objective.hparams, "teacher", "") for t in build_terms(self.terms)
                    if t.objective.needs_teacher}
        return next(iter(teachers), "")


def build_terms(terms: Any) -> tuple[Term, ...]:
    """Builds and checks the term blocks (ValueError naming the problem)."""
    if isinstance(terms, dict) or not hasattr(terms, "__iter__") or not len(terms):
        raise ValueError("objective.terms must be a non-empty list of objective blocks "
                         "[{name, weight, <its fields>}, ...].")
    built: list[Term] = []
    for i, block in enumerate(terms):
        if not hasattr(block, "items"):
            raise ValueError(f"objective.terms[{i}] must be an objective block {{name, weight, ...}}, got {block!r}.")
        fields = dict(block.to_dict() if hasattr(block, "to_dict") else block)
        weight = fields.pop("weight", 1.0)
        key = fields.pop("key", None) or fields.get("name")
        if fields.get("name") == "multi":
            raise ValueError("objective.terms cannot contain 'multi'; list every term in one terms list.")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"objective.terms[{i}].weight must be a finite number >= 0, got {weight!r}.")
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"objective.terms[{i}].key must be an identifier (it names the term's "
                             f"metrics), got {key!r}.")
        if key in {t.key for t in built}:
            raise ValueError(f"objective.terms has two terms named {key!r}; give one a distinct 'key'.")
        term = registry.build(fields)
        if term.teacher_fields:  # its teacher:<column> inputs and guide path are not routed through multi
            raise ValueError(f"objective.terms[{i}] ({fields.get('name')!r} with a frozen guide / in-step teacher "
                             "scores) cannot be a term of 'multi'; train it as the objective itself.")
        built.append(Term(key, float(weight), term))
    teachers = {getattr(t.objective.hparams, "teacher", "") for t in built if t.objective.needs_teacher}
    if len(teachers) > 1:
        raise ValueError(f"objective.terms need different teachers {sorted(teachers)}; one frozen teacher "
                         "per run is supported.")
    return tuple(built)


def _term_params(params: Any, key: str) -> Any:
    """The params a term sees: the model, and its own head as ``head``."""
    if not isinstance(params, dict):
        return params
    out = {k: v for k, v in params.items() if k != "head"}
    heads = params.get("head")
    if isinstance(heads, dict) and key in heads:
        out["head"] = heads[key]
    return out


def column_loss(terms: tuple):
    """``loss_fn(params, embeddings, axis_name)``: the weighted sum of the terms' column losses."""
    built = build_terms(terms)

    def loss_fn(params, embeddings, axis_name=None):
        total, metrics = 0.0, {}
        for t in built:
            loss, mets = t.objective.loss_fn(_term_params(params, t.key), embeddings, axis_name)
            total = total + t.weight * loss
            metrics[f"loss_{t.key}"] = loss
            for name, v in mets.items():
                metrics[f"{name}_{t.key}"] = v
        return total, metrics
    return loss_fn


def _columns(hp: Config) -> tuple[str, ...]:
    cols: list[str] = []
    for t in build_terms(hp.terms):
        cols += [c for c in t.objective.fields if c not in cols]
    # the trainer requires the first column in every batch: anchor when any term reads it
    return tuple(sorted(cols, key=lambda c: c != "anchor"))


def _init_head(hp: Config, rng, dim: int):
    import jax
    heads = {}
    for i, t in enumerate(build_terms(hp.terms)):
        if t.objective.init_head is not None:
            head = t.objective.init_head(jax.random.fold_in(rng, i), dim)
            if head is not None:
                heads[t.key] = head
    return heads or None


def _clip_head(hp: Config, heads):
    out = dict(heads)
    for t in build_terms(hp.terms):
        if t.objective.clip_head is not None and t.key in out:
            out[t.key] = t.objective.clip_head(out[t.key])
    return out


OBJECTIVE = ObjectiveSpec(
    config=Config,
    loss=lambda hp: column_loss(hp.terms),
    columns=_columns,
    in_batch_negatives=lambda hp: any(t.objective.in_batch_negatives for t in build_terms(hp.terms)),
    init_head=_init_head,
    needs_teacher=lambda hp: any(t.objective.needs_teacher for t in build_terms(hp.terms)),
    clip_head=_clip_head,
    token_level=lambda hp: any(t.objective.token_level for t in build_terms(hp.terms)),
)

# BibTeX quoted by model cards of runs that train with it (each term's own paper is cited too).
CITATION = """\
@inproceedings{feng-etal-2022-language,
  title = "Language-agnostic {BERT} Sentence Embedding",
  author = "Feng, Fangxiaoyu and Yang, Yinfei and Cer, Daniel and Arivazhagan, Naveen and Wang, Wei",
  booktitle = "Proceedings of the 60th Annual Meeting of the Association for Computational Linguistics",
  year = "2022",
  url = "https://arxiv.org/abs/2007.01852",
}
"""
