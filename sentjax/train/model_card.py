"""The model card of a run's exports (``final_model/``, ``best_model/``): what the run was, from its
config, data pipeline, objective and ``metrics.jsonl`` (``sentjax.models.card`` renders it).

The evaluation table is read back from ``metrics.jsonl`` rather than kept in memory, so a resumed
run's card still covers the evaluations made before the interruption (the log drops redone steps
on resume, so no step is counted twice).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax
import ml_collections

from sentjax.models.card import DataRow, EvalRow, TrainingCard
from sentjax.train.workdir import read_metrics

__all__ = ["eval_rows", "base_model", "training_card"]

_MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


def eval_rows(history: Sequence[dict], metrics: Sequence[str], until: int | None = None) -> list[EvalRow]:
    """First, final and best value of each of ``metrics`` over ``history`` (rows with ``step``),
    up to step ``until``; metrics never logged are left out. Ties for the best keep the earliest
    step, as ``best_model/`` does (it is replaced only on a strict improvement)."""
    out = []
    for m in metrics:
        points = [(int(r["step"]), float(r[m])) for r in history
                  if m in r and (until is None or int(r["step"]) <= until)]
        if not points:
            continue
        best = max(points, key=lambda p: (p[1], -p[0]))
        out.append(EvalRow(m, points[0][1], points[0][0], points[-1][1], points[-1][0], best[1], best[0]))
    return out


def base_model(m: ml_collections.ConfigDict) -> tuple[str, str]:
    """(what the run started from, its hub id or "") from the config's ``model`` block."""
    init = m.init_from
    if not init:
        return (f"random initialisation (`config.model.encoder`), tokenizer `{m.tokenizer}`", "")
    if init == "minilm":
        text, hub_id = f"{_MINILM_ID} (the bundled copy of the `models` extra)", _MINILM_ID
    elif not os.path.exists(init) and init.count("/") == 1 and not init.startswith((".", "/", "~")):
        text, hub_id = init, init
    else:
        text, hub_id = f"`{init}`", ""
    if m.vocab_from:
        text += f", moved to the vocabulary of `{m.vocab_from}` (sentjax.models.vocab_transfer)"
    return text, hub_id


def _devices(mesh) -> str:
    d = mesh.devices.flat[0]
    kind = d.device_kind if d.device_kind.lower() == d.platform else f"{d.device_kind} ({d.platform})"
    procs = jax.process_count()
    return f"{mesh.devices.size} x {kind}, {procs} process{'es' if procs > 1 else ''}"


def _hyperparameters(c: ml_collections.ConfigDict, mesh, step: int) -> list[tuple[str, Any]]:
    from sentjax.train.optim import warmup_steps_of
    n, o = mesh.devices.size, c.optim
    return [
        ("batch size (global)", c.batch_size),
        ("batch size per device", c.batch_size // n),
        ("gradient accumulation steps", c.accum_steps),
        ("GradCache chunk (rows per device)", c.gradient.gradcache_chunk or "off"),
        ("gradient method", c.gradient.method),
        ("training steps", f"{step} of {c.total_steps}"),
        ("examples seen", step * c.batch_size),
        ("devices", _devices(mesh)),
        ("compute dtype", c.dtype),
        ("maximum sequence length (training)", c.model.max_length),
        ("optimizer", "AdamW, linear warm-up then linear decay, no decay on biases / LayerNorm"),
        ("peak learning rate", o.lr),
        ("warm-up steps", warmup_steps_of(o, c.total_steps)),
        ("weight decay", o.weight_decay),
        ("Adam b1, b2, eps", (o.b1, o.b2, o.eps)),
        ("gradient clipping (global norm)", o.clip_norm if o.clip_norm > 0 else "off"),
        ("seed", c.seed),
    ]


def training_card(c: ml_collections.ConfigDict, objective, sources: Sequence, mesh, step: int,
                  metrics: Sequence[str], best: dict, which: str) -> TrainingCard:
    """The :class:`TrainingCard` of an export at ``step``.

    Args:
      c: the run config.
      objective: the built objective (``sentjax.losses.registry.Objective``).
      sources: the pipeline's ``Source`` objects, in ``c.data.datasets`` order.
      mesh: the training mesh.
      step: the step whose parameters are exported.
      metrics: every metric the run's evaluators log (``<name>_<metric>``).
      best: the trainer's best-evaluation record (``{"metric", "step", "value"}``).
      which: "final_model" or "best_model".
    """
    from sentjax.losses import registry
    from sentjax.parallel import gradcache
    text, hub_id = base_model(c.model)
    weights = list(c.data.weights)
    specs = list(c.data.datasets)
    if c.data.sources:  # several datasets (sentjax.data.mixture): the entries' specs and weights
        from sentjax.data import mixture
        entries = mixture.parse_sources(tuple(c.data.sources), c.data.sampling)
        specs, weights = [e.spec for e in entries], list(mixture.mixture_weights(entries, sources, c.data.sampling))
    data = [DataRow(spec, s.kind, len(s), weights[i] / sum(weights) if weights else None)
            for i, (spec, s) in enumerate(zip(specs, sources))]
    when = (f"after step {step} of {c.total_steps}" if step else
            f"at step 0 of {c.total_steps} (before training)")
    checkpoint = f"`{which}/`: the parameters {when}"
    if which == "best_model":
        checkpoint += f", the highest {best['metric']} ({best['value']:.4g})"
    teacher = []
    if objective.needs_teacher:  # the frozen teacher: objective.teacher, else model.init_from
        path = getattr(objective.hparams, "teacher", "") or getattr(objective.hparams, "guide", "")
        teacher = [("guide (frozen)" if hasattr(objective.hparams, "guide") else "teacher (frozen)",
                    path or c.model.init_from)]
    citations = [registry.citation(objective.name)]
    if objective.name == "multi":  # a weighted sum cites each term's paper(s)
        from sentjax.losses.multi import build_terms
        citations += [registry.citation(t.objective.name) for t in build_terms(objective.hparams.terms)]
    if c.gradient.gradcache_chunk:
        citations.append(gradcache.CITATION)
    return TrainingCard(
        base_model=text, base_model_id=hub_id, checkpoint=checkpoint, datasets=data,
        objective=objective.name, objective_hparams=dataclasses.asdict(objective.hparams),
        hyperparameters=_hyperparameters(c, mesh, step) + teacher,
        evaluation=eval_rows(read_metrics(c.workdir), metrics, until=step),
        best_metric=best["metric"] or "", citations=[x for x in citations if x])
