"""Training: ``sentjax train --config FILE [--config.key=value ...] [--resume]``.

One file, read top to bottom (big_vision style), in bannered sections: config, mesh, data,
model + state, step, checkpoint, evals, loop, CLI. The train step is a pure
``(state, batch, rng) -> (state, metrics)`` compiled once with ``jax.jit`` (state donated,
parameters replicated or FSDP-sharded by ``config.parallel``, batch sharded on the mesh's ``data`` axis); ``sentjax.train.step`` holds
its pieces. Everything a resumed run needs is in the checkpoint (parameters, optimizer state,
step, rng, the best evaluation so far) and the data order is a pure function of (seed, step), so
``--resume`` continues exactly.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import sys
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sentjax import rng as rng_lib
from sentjax.models import build as model_build
from sentjax.models.build import resolve_bundled  # noqa: F401 (re-exported)
from sentjax.parallel import distributed
from sentjax.parallel.distributed import maybe_initialize_distributed  # noqa: F401 (re-exported)
from sentjax.train import config_cli
from sentjax.train import step as step_lib

# Named, not __name__: run as ``python -m sentjax.train.train`` this module is __main__, outside the
# ``sentjax`` logger that the entry points configure.
logger = logging.getLogger("sentjax.train.train")


# ============================================================================ config
# Every key and its default: sentjax/configs/default.py. Config files and overrides go through
# sentjax.train.config_cli (unknown keys are errors; the config is locked).


def validate_config(c: ml_collections.ConfigDict) -> None:
    if c.dtype not in ("float32", "bfloat16"):
        raise config_cli.ConfigError(f"config.dtype must be 'float32' or 'bfloat16', got {c.dtype!r}.")
    for k in ("total_steps", "batch_size", "accum_steps", "log_every"):
        if c[k] <= 0:
            raise config_cli.ConfigError(f"config.{k} must be positive, got {c[k]}.")
    if c.checkpoint.every_steps <= 0:  # a modulo by it decides when to save: 0 would crash after step 1
        raise config_cli.ConfigError(
            f"config.checkpoint.every_steps must be positive, got {c.checkpoint.every_steps}; to save only "
            f"at the end set it to config.total_steps ({c.total_steps}).")
    from sentjax.data.prompts import column_prompts
    column_prompts(dict(c.data.prompts))  # unknown column names are an error before any work
    check_lora(c)
    from sentjax.data import mixture
    if c.data.sources:  # multi-dataset: entries, weights and sampling checked before any work
        mixture.parse_sources(tuple(c.data.sources), c.data.sampling)
        if tuple(c.data.weights):
            raise config_cli.ConfigError("config.data.weights applies to config.data.datasets; with "
                                         "config.data.sources give each entry its own 'weight'.")
    elif c.data.sampling not in mixture.SAMPLINGS:
        mixture.parse_sources((), c.data.sampling)  # the unknown-sampling error
    check_parallel(c)


# ============================================================================ mesh
# maybe_initialize_distributed (sentjax.parallel.distributed): when and how to call
# jax.distributed.initialize, from the launcher's environment, before anything touches a device.


def make_mesh(c: ml_collections.ConfigDict):
    """1-D ``data`` mesh over ``mesh.data`` devices of all processes; the global batch must split evenly."""
    mesh = step_lib.make_data_mesh(c.mesh.data)
    step_lib.check_global_batch(c.batch_size, mesh, c.accum_steps)
    return mesh


# ============================================================================ data


def build_pipeline(c: ml_collections.ConfigDict, tokenizer, dedup: bool, teacher_tokenizer=None, mesh=None,
                   objective=None):
    """The data pipeline of config ``c``. With several processes each builds only the rows of the
    global batch that its devices hold under ``batch_sharded(mesh)`` (default mesh: ``c.mesh.data``).
    ``config.data.sources`` (several datasets: ``sentjax.data.mixture``) checks each source's columns
    against ``objective`` when given."""
    from sentjax.data.pipeline import Pipeline, process_rows
    from sentjax.data.sources import load_source
    rows = None
    if jax.process_count() > 1:
        mesh = step_lib.make_data_mesh(c.mesh.data) if mesh is None else mesh
        rows = process_rows(step_lib.batch_sharded(mesh), c.batch_size)
    if c.data.sources:
        from sentjax.data.mixture import build_mixture_pipeline
        return build_mixture_pipeline(c.data, tokenizer, c.batch_size, c.seed, dedup=dedup and c.data.dedup,
                                      objective=objective, teacher_tokenizer=teacher_tokenizer, rows=rows,
                                      prompts=dict(c.data.prompts), prompt_lengths=not c.model.include_prompt)
    sources = [load_source(s) for s in c.data.datasets]
    return Pipeline(sources, tokenizer, c.batch_size, c.seed, weights=tuple(c.data.weights),
                    dedup=dedup and c.data.dedup, teacher_tokenizer=teacher_tokenizer, rows=rows,
                    prompts=dict(c.data.prompts), prompt_lengths=not c.model.include_prompt)


def global_batch(local: dict, mesh) -> dict:
    """This process's rows (``Pipeline.rows``) -> global arrays sharded on ``data``."""
    sharding = step_lib.batch_sharded(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)


# ============================================================================ model + state


def build_model(c: ml_collections.ConfigDict):
    """-> SentenceModel (module with the compute dtype, float32 params, tokenizer)."""
    return model_build.build_model(c.model, dtype=c.dtype, seed=c.seed)


def load_teacher(c, model):
    """The frozen teacher of distillation (or GISTEmbed's guide): objective.teacher (objective.guide),
    else model.init_from (the student's starting point, before any vocabulary transfer)."""
    from sentjax.train.objectives import make_objective  # a multi objective's teacher is its term's
    hp = make_objective(c.objective).hparams
    return model_build.load_teacher(getattr(hp, "teacher", "") or getattr(hp, "guide", ""), c.model, model)


def check_teacher_vocabulary(objective, teacher, model) -> None:
    """A teacher that embeds the student's own token columns (``teacher_fields``) must share its
    vocabulary: the pipeline tokenizes only the anchors a second time (``teacher_anchor``)."""
    if not objective.teacher_fields:
        return
    same = (teacher.tokenizer.backend.get_vocab() == model.tokenizer.backend.get_vocab()
            and teacher.tokenizer.pad_token_id == model.tokenizer.pad_token_id)
    if not same:
        field = "guide" if hasattr(objective.hparams, "guide") else "teacher"
        raise config_cli.ConfigError(
            f"objective {objective.name!r}: the frozen {field} reads the student's tokens of "
            f"{list(objective.teacher_fields)}, but its tokenizer has another vocabulary. Choose a "
            f"{field} with the student's tokenizer (objective.{field}, default model.init_from), or "
            "train without model.vocab_from.")


# ---------------------------------------------------------------- LoRA (sentjax/models/lora.py)
# With model.lora.rank > 0 the trained params are {"lora": adapters, "head"?}; the base model rides
# in state["frozen"] (a traced argument of the step, never in the optimizer nor in checkpoints).


def lora_config(c: ml_collections.ConfigDict):
    """``config.model.lora`` -> ``LoRAConfig``, or None when LoRA is off (rank 0)."""
    from sentjax.models.lora import LoRAConfig
    return LoRAConfig.from_mapping(c.model.lora)


def check_lora(c: ml_collections.ConfigDict) -> None:
    """Refuses the combinations LoRA does not support, before any work."""
    if lora_config(c) is None:
        return
    if c.gradient.method == "pmap":
        raise config_cli.ConfigError("model.lora with gradient.method='pmap' is not supported; use "
                                     "'shard_map' (the default) or 'jit'.")
    if c.model.pooling == "cls_mlp":
        raise config_cli.ConfigError("model.lora with pooling='cls_mlp': the pooler's MLP is not a "
                                     "dense projection of the encoder and would stay frozen (random for a "
                                     "new head); use pooling 'mean' / 'cls' / 'lasttoken' with LoRA.")
    if c.parallel.param_sharding != "replicated":
        raise config_cli.ConfigError("model.lora with parallel.param_sharding="
                                     f"{c.parallel.param_sharding!r} is not supported: the adapters are small; "
                                     "keep parameters replicated (parallel.param_sharding='replicated').")
    if c.model.vocab_from:
        raise config_cli.ConfigError("model.lora with model.vocab_from: the transferred word embeddings "
                                     "would stay frozen; train the new vocabulary without LoRA.")


def model_view(c: ml_collections.ConfigDict, state: dict) -> dict:
    """``{"model": encoder params, "head"?}`` of a state: with LoRA the base with the adapters merged
    in (``W + alpha/r A B``), for evaluation and export."""
    if "frozen" not in state:
        return state["params"]
    merged = _jit_merge(lora_config(c))(state["frozen"], state["params"]["lora"])
    return {"model": merged, **{k: v for k, v in state["params"].items() if k != "lora"}}


@functools.lru_cache(maxsize=4)
def _jit_merge(lcfg):
    """One compiled merge per LoRA config (evaluations reuse it)."""
    from sentjax.models.lora import merge
    return jax.jit(functools.partial(merge, cfg=lcfg))


def init_params(c, model, objective) -> dict:
    lcfg = lora_config(c)
    if lcfg is None:
        params = {"model": model.params}
    else:
        from sentjax.models.lora import init_adapters
        params = {"lora": init_adapters(model.params, lcfg, jax.random.fold_in(rng_lib.key(c.seed), 11))}
    head = None if objective.init_head is None else \
        objective.init_head(jax.random.fold_in(rng_lib.key(c.seed), 7), model.dim)
    if head is not None:  # None: these hyperparameters train nothing besides the encoder
        params["head"] = head
    if objective.token_level:  # the MLM head: the checkpoint's (cls.predictions / lm_head) or fresh
        from sentjax.models.mlm_head import load_mlm_head
        params["mlm_head"], loaded = load_mlm_head(model.module.config, model.source_dir,
                                                   jax.random.fold_in(rng_lib.key(c.seed), 11))
        logger.info(f"MLM head: {'loaded from ' + str(model.source_dir) if loaded else 'initialised'}.")
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)


# ============================================================================ step


def build_objective_and_grad(c, model, objective, mesh, teacher=None):
    """-> (embed, grad_fn): ``grad_fn(params, batch, rng) -> ((loss, metrics), grads)`` of the
    global mean loss, by ``sentjax.parallel.global_grads.make_grad_fn`` (gradient.method:
    'shard_map' / 'pmap' with explicit collectives, or 'jit' = the loss on the global batch with
    XLA-chosen collectives), optionally through GradCache, over ``accum_steps`` micro-batches."""
    from sentjax.models.sentence_model import embed_fn
    from sentjax.parallel.global_grads import make_grad_fn
    from sentjax.train.objectives import GRADIENT_METHODS
    embed = embed_fn(model.module)
    method = c.gradient.method
    if method not in GRADIENT_METHODS:
        raise config_cli.ConfigError(f"gradient.method={method!r}: use one of {tuple(GRADIENT_METHODS)}.")
    if method == "pmap" and (jax.process_count() > 1 or mesh.devices.size != jax.local_device_count()):
        raise config_cli.ConfigError("gradient.method='pmap' uses every local device of one process; "
                                     "use 'shard_map' for multi-process runs or a sub-mesh.")
    if c.accum_steps > 1 and objective.in_batch_negatives:
        raise config_cli.ConfigError(
            f"accum_steps={c.accum_steps} with objective {c.objective.name!r}: gradient accumulation "
            "splits the batch, so each micro-batch sees only its own in-batch negatives (it does NOT "
            "add negatives). For a larger contrastive batch in the same memory use GradCache "
            "(--config.gradient.gradcache_chunk=N) and keep accum_steps=1.")
    from sentjax.train.packing import check_packing
    check_packing(c, objective)
    chunk = c.gradient.gradcache_chunk or None
    if chunk is not None and c.accum_steps > 1:
        raise config_cli.ConfigError("Use either GradCache (gradient.gradcache_chunk) or accum_steps, not both.")
    settings = None
    if objective.token_level:
        from sentjax.train import mlm as mlm_lib
        mlm_lib.check_mlm_config(c, objective)
        settings = mlm_lib.mlm_settings(objective, model)
    teacher_embed = None
    if objective.needs_teacher:
        teacher = teacher or load_teacher(c, model)
        teacher_embed = functools.partial(_frozen_embed, embed_fn(teacher.module), teacher.params)

    def grads_of(embed_params):
        column_grads = make_grad_fn(embed_params, objective.loss_fn, mesh=mesh,
                                    backend=GRADIENT_METHODS[method], gradcache_chunk=chunk)
        grad_fn = functools.partial(objective_grads, column_grads, objective, teacher_embed)
        grad_fn = step_lib.accumulate(grad_fn, c.accum_steps, c.batch_size)
        if settings is not None:  # mask the mlm column of the global batch from the step's key
            grad_fn = functools.partial(_with_mlm_column, grad_fn, settings)
        return grad_fn
    lcfg = lora_config(c)
    if lcfg is None:
        if objective.token_level:
            return embed, grads_of(functools.partial(mlm_lib.embed_with_mlm, embed, model.module))
        return embed, grads_of(functools.partial(_embed_params, embed))
    if objective.token_level:
        raise config_cli.ConfigError("model.lora with an mlm objective is not supported (the MLM head "
                                     "reads the encoder's own parameters); train MLM without LoRA.")
    # LoRA: a GradFn of {"lora", "head"?} per (traced) frozen base; make_train_step(frozen=True)
    from sentjax.models.lora import lora_embed_fn
    lora_embed = lora_embed_fn(model.module, lcfg)
    return embed, lambda frozen: grads_of(functools.partial(_embed_lora, lora_embed, frozen))


def _with_mlm_column(grad_fn, settings, params, batch, rng):
    from sentjax.train.mlm import add_mlm_column
    return grad_fn(params, add_mlm_column(batch, rng, settings), rng)


def build_param_sharding(c, params: dict, mesh):
    """``config.parallel``: None (replicated parameters) or the NamedShardings of ``params`` under
    the FSDP preset or the configured rules (sentjax.parallel.sharding, docs/fsdp.md)."""
    from sentjax.parallel.sharding import param_shardings
    check_parallel(c)
    if c.parallel.param_sharding == "replicated":
        return None
    from sentjax.parallel.sharding import resolve_rules
    rules = resolve_rules(c.parallel.param_sharding, tuple(c.parallel.rules))
    return param_shardings(params, mesh, rules, min_size=c.parallel.fsdp_min_size)


def check_parallel(c: ml_collections.ConfigDict) -> None:
    """Refuses parameter-sharding settings that cannot run (ConfigError), before any work."""
    from sentjax.parallel.sharding import resolve_rules
    p = c.parallel
    resolve_rules(p.param_sharding, tuple(p.rules))
    if p.param_sharding == "replicated":
        return
    if c.gradient.method == "pmap":
        raise config_cli.ConfigError(
            f"parallel.param_sharding={p.param_sharding!r} with gradient.method='pmap': pmap keeps a full "
            "replica of the parameters on every device; use gradient.method='shard_map' or 'jit' for FSDP.")
    if jax.process_count() > 1:
        raise config_cli.ConfigError(
            f"parallel.param_sharding={p.param_sharding!r} is single-process for now (exports and "
            "evaluations gather the parameters on process 0 only); use 'replicated' for multi-process runs.")
    if p.fsdp_min_size < 0:
        raise config_cli.ConfigError(f"parallel.fsdp_min_size must be >= 0, got {p.fsdp_min_size}.")


def _embed_params(embed, params, tokens, rng):
    return embed(params["model"], tokens, rng)  # params = {"model", "head"?}; the encoder uses "model"


def _embed_lora(lora_embed, frozen, params, tokens, rng):
    return lora_embed(frozen, params["lora"], tokens, rng)  # params = {"lora", "head"?}


def _frozen_embed(embed, params, tokens):
    return jax.lax.stop_gradient(embed(params, tokens, None))


def objective_grads(column_grads, objective, teacher_embed, params, batch, rng):
    """The objective's gradient on a batch: its columns (plus the frozen teacher's embeddings of
    the source text, for distillation) -> ``column_grads`` (``make_grad_fn``)."""
    from sentjax.train.objectives import select_columns
    columns = select_columns(objective, batch)
    if objective.name == "mlm":  # alone, MLM reads only its masked column: embed nothing else
        columns = {"mlm": columns["mlm"]}
    if teacher_embed is not None and objective.teacher_fields:
        # teacher:<column>: the teacher's embeddings of the student's rows, computed once here (not
        # in GradCache's per-chunk recompute) and split over the devices like the student's columns
        for name in objective.teacher_fields:
            if name in columns:
                columns[f"teacher:{name}"] = teacher_embed(columns[name])
    elif teacher_embed is not None:
        # A student with another vocabulary passes the teacher's tokens of the source as ``teacher_anchor``.
        columns["teacher"] = teacher_embed(batch.get("teacher_anchor", batch["anchor"]))
    return column_grads(params, columns, rng)


# ============================================================================ checkpoint


def restore(ckpt, state: dict, resume: bool, best: dict) -> dict:
    """With ``--resume``: the state of the newest usable checkpoint (``best`` updated from it);
    without: ``state``, and a workdir that already holds checkpoints is refused."""
    if not ckpt.all_steps():
        return state
    if not resume:
        raise config_cli.ConfigError(f"{ckpt.directory} already holds checkpoints (step {ckpt.latest_step()}); "
                                     "pass --resume to continue that run or choose a new --config.workdir.")
    frozen = state.get("frozen")  # LoRA's base is not in checkpoints: it comes from model.init_from
    state, data = ckpt.restore({k: v for k, v in state.items() if k != "frozen"})
    if frozen is not None:
        state = {**state, "frozen": frozen}
    if (data.get("best") or {}).get("metric") == best["metric"]:
        best.update(data["best"])
    if jax.process_index() == 0:
        logger.info(f"Resumed from step {int(data['step'])} ({ckpt.directory}).")
    return state


def save_checkpoint(ckpt, c, state: dict, step: int, best: dict, evaluated: dict) -> None:
    """Starts an (async) save of ``state`` at ``step`` with the best evaluation so far (JSON)."""
    metric = best["metric"]
    state = {k: v for k, v in state.items() if k != "frozen"}  # LoRA: adapters + optimizer state only
    ckpt.save(step, state, {"step": step, "seed": c.seed, "best": dict(best)},
              {"config": c.to_json_best_effort()},
              metrics={metric: evaluated[metric]} if metric in evaluated else None)


# ============================================================================ evals


class Evals:
    """``config.evals`` during training (``sentjax.eval.evaluators``): which evaluators are due at a
    step and their metrics, ``<name>_<metric>``. ``best`` tracks ``config.best_metric``
    (``{"metric", "step", "value", "first"}``); it goes into every checkpoint, so a resumed run
    compares against the true best instead of against nothing."""

    def __init__(self, c: ml_collections.ConfigDict, embed, tokenizer, mesh):
        from sentjax.eval.evaluators import build_evaluators
        self.total = c.total_steps
        self.evaluators = {n: e for n, e in build_evaluators(c.evals).items() if e.every_steps > 0}
        produced = [f"{n}_{m}" for n, e in self.evaluators.items() for m in e.metric_names()]
        metric = c.best_metric if self.evaluators else ""
        if metric and metric not in produced:
            raise config_cli.ConfigError(f"best_metric={metric!r} is not a metric of the evaluators that run "
                                         f"(evals.*.every_steps > 0): {produced}; set --config.best_metric to "
                                         "one of them, or '' for none.")
        self.metrics = produced  # every <name>_<metric> logged (the model card's evaluation table)
        self.best = {"metric": metric or None, "step": None, "value": None, "first": None}
        # a run trained with prompts is evaluated as it will be used: texts under the anchor's (query) prompt
        prompt = c.data.prompts.get("anchor", "")
        plen = tokenizer.prompt_length(prompt) if prompt and not c.model.include_prompt else None
        self.encoders = {b: step_lib.make_encoder(embed, tokenizer, mesh, b, prompt, plen)
                         for b in {e.batch_size for e in self.evaluators.values()}}

    def due(self, step: int) -> list[str]:
        return [n for n, e in self.evaluators.items()
                if (e.at_start if step == 0 else step % e.every_steps == 0 or step == self.total)]

    def run(self, names: list[str], step: int, params: dict) -> tuple[dict, bool]:
        """-> (``{<name>_<metric>: value}``, whether ``best_metric`` improved)."""
        if not names:
            return {}, False
        head = step_lib.to_host(params["head"]) if "head" in params else None
        out = {}
        for name in names:
            ev, encode = self.evaluators[name], self.encoders[self.evaluators[name].batch_size]
            values = ev(lambda texts: encode(params["model"], texts), head)
            out.update({f"{name}_{k}": float(v) for k, v in values.items()})
        best, value = self.best, out.get(self.best["metric"])
        if value is None:
            return out, False
        if best["first"] is None:
            best["first"] = value
        if best["value"] is None or value > best["value"]:
            best.update(step=step, value=value)
            return out, True
        return out, False


def export_model(model, params: dict, path: str, card=None) -> str:
    """``sentjax.save`` of the trained parameters, with the run's model card (``TrainingCard``)."""
    import sentjax
    host = step_lib.to_host(params["model"])
    return sentjax.save(model, path, params=host, card=card)


# ============================================================================ loop


class _Stop:
    """SIGTERM (preemption) -> save at the next step boundary and exit, all processes together."""
    requested = False

    @classmethod
    def install(cls) -> None:
        signal.signal(signal.SIGTERM, lambda signum, frame: setattr(cls, "requested", True))

    @classmethod
    def everywhere(cls) -> bool:
        if jax.process_count() == 1:
            return cls.requested
        from jax.experimental import multihost_utils
        return bool(np.any(multihost_utils.process_allgather(np.array([cls.requested]))))


class TrainingDivergedError(FloatingPointError):
    """Too many steps had a non-finite loss or gradient (``nonfinite_limit``)."""


def train(c: ml_collections.ConfigDict, resume: bool = False, progress: bool = True) -> dict:
    """Runs (or resumes) training; returns a summary dict (final metrics, evaluations, best step,
    paths, the final ``state``).

    Process 0 owns the workdir for the whole run (``<workdir>/.lock``), so a second run into the
    same workdir is refused. Pending checkpoint saves are waited for on every exit, errors included:
    an exit with a save in flight would leave a torn checkpoint."""
    from sentjax import compile_cache
    from sentjax.train.workdir import WorkdirLock, check_writable
    from sentjax.memory import trim_after_compile
    validate_config(c)
    compile_cache.enable(c.compile_cache)
    trim_after_compile()
    with contextlib.ExitStack() as cleanup:
        if jax.process_index() == 0:
            check_writable(c.workdir)
            cleanup.enter_context(WorkdirLock(c.workdir, report=logger.info))
        return _train(c, resume, progress, cleanup)


def _train(c: ml_collections.ConfigDict, resume: bool, progress: bool, cleanup: contextlib.ExitStack) -> dict:
    from sentjax.train.checkpoint import Checkpointer
    from sentjax.train.objectives import make_objective
    from sentjax.train.optim import make_optimizer, project_head
    from sentjax.train.progress import StepLog
    from sentjax.train.workdir import atomic_export
    is_main = jax.process_index() == 0
    mesh = make_mesh(c)
    objective = make_objective(c.objective)
    model = build_model(c)
    from sentjax.data.prompts import column_prompts, exported_prompts
    run_prompts = exported_prompts(column_prompts(dict(c.data.prompts)))
    if run_prompts:  # exported with the prompts it was trained under; plain encode() = the anchors'
        model = dataclasses.replace(model, prompts=run_prompts,
                                    default_prompt_name="query" if "query" in run_prompts else None)
    teacher = load_teacher(c, model) if objective.needs_teacher else None
    if teacher is not None and teacher.module.normalize != model.module.normalize and is_main:
        # MSE to unit vectors from an unnormalised student (or the reverse) mostly trains the norm.
        logger.warning(f"the distillation teacher {'does' if teacher.module.normalize else 'does not'} "
                       f"L2-normalise its embeddings but the student {'does' if model.module.normalize else 'does not'}; "
                       f"set --config.model.normalize={teacher.module.normalize} to match.")
    if teacher is not None:
        check_teacher_vocabulary(objective, teacher, model)
    embed, grad_fn = build_objective_and_grad(c, model, objective, mesh, teacher)
    # The teacher reads the source text with its own tokenizer (the student's vocabulary may differ);
    # one that embeds the student's columns (teacher_fields) reads the student's tokens.
    own_tokens = teacher is not None and not objective.teacher_fields
    pipeline = build_pipeline(c, model.tokenizer, dedup=objective.in_batch_negatives,
                              teacher_tokenizer=teacher.tokenizer if own_tokens else None,
                              objective=objective)
    params = init_params(c, model, objective)
    tx, schedule = make_optimizer(c.optim, c.total_steps)
    if objective.clip_head is not None and "head" in params:  # InfoNCE's learned 1/T <= 100 (CLIP)
        import optax
        tx = optax.chain(tx, project_head(objective.clip_head))
    lora = "lora" in params
    state = step_lib.init_state(params, tx, c.seed)
    if lora:  # the frozen base rides replicated (LoRA with FSDP is refused in check_lora)
        state["frozen"] = model.params
    param_sharding = build_param_sharding(c, params, mesh)  # None: replicated
    shardings = step_lib.state_sharding(state, mesh, tx, param_sharding)
    train_step = step_lib.jit_train_step(
        step_lib.make_train_step(grad_fn, tx, schedule, frozen=lora, param_sharding=param_sharding), mesh, shardings)
    state = jax.device_put(state, shardings)
    evals = Evals(c, embed, model.tokenizer, mesh)
    best = evals.best
    # retention: the last checkpoint.max_to_keep steps plus the best by best_metric
    ckpt = Checkpointer(os.path.join(c.workdir, "checkpoints"), c.checkpoint.max_to_keep,
                        best_metric=best["metric"], async_save=c.checkpoint.async_save)
    cleanup.callback(ckpt.close)
    state = restore(ckpt, state, resume, best)
    start = int(step_lib.to_host(state["step"]))
    log = StepLog(c.workdir, start, c.total_steps, c.batch_size, c.log_every, progress,
                  source_names=pipeline.source_names if c.data.sources else None)
    cleanup.callback(log.close)
    summary: dict[str, Any] = {"workdir": c.workdir}

    def export(name: str, step: int) -> str:
        from sentjax.train.model_card import training_card
        card = training_card(c, objective, getattr(pipeline, "parts", pipeline.sources), mesh, step,
                             evals.metrics, best, name)
        return atomic_export(lambda d: export_model(model, model_view(c, state), d, card),
                             os.path.join(c.workdir, name))

    def evaluate(step: int) -> dict:
        due = evals.due(step)
        evaluated, improved = evals.run(due, step, model_view(c, state) if due else state["params"])
        log.write(step, evaluated)
        summary.update(evaluated)
        if improved and c.export.best_model and is_main:
            export("best_model", step)
        return evaluated

    if start == 0:
        evaluate(0)
    _Stop.install()
    from sentjax.train.packing import make_packer
    pack = make_packer(c, objective, model.module.config, model.tokenizer.pad_token_id, mesh.devices.size)
    batches = pipeline.iterate(start, c.total_steps, prefetch=2, transform=lambda b: global_batch(pack(b), mesh))
    cleanup.callback(batches.close)
    for s, batch in batches:
        state, m = train_step(state, batch, step_lib.step_rng(state["rng"], s))
        step = s + 1
        log.step(step, m, pipeline.draws(s) if c.data.sources else None)
        if log.skipped >= c.nonfinite_limit:
            last = ckpt.latest_step()
            ckpt.wait()
            raise TrainingDivergedError(
                f"training diverged: {log.skipped} steps had a non-finite loss or gradient (limit "
                f"nonfinite_limit={c.nonfinite_limit}). Lower optim.lr, keep optim.clip_norm > 0, use "
                f"float32, or check the data for empty texts; the last good checkpoint is step {last} "
                f"in {ckpt.directory}.")
        evaluated = evaluate(step)
        stop = _Stop.everywhere()
        if step % c.checkpoint.every_steps == 0 or step == c.total_steps or stop or evaluated:
            save_checkpoint(ckpt, c, state, step, best, evaluated)
        if stop:
            ckpt.wait()
            if is_main:
                logger.info(f"SIGTERM: saved step {step} to {ckpt.directory}; exiting.")
            summary["preempted_at"] = step
            break
    log.close()
    ckpt.wait()
    if best["first"] is not None:
        summary[f"{best['metric']}_start"] = best["first"]
    summary.update(final=log.latest, best_metric=best["metric"], best_step=best["step"],
                   best_value=best["value"], state=state)
    if is_main and "preempted_at" not in summary:
        summary["final_model"] = export("final_model", int(step_lib.to_host(state["step"])))
        has_best = best["step"] is not None and os.path.isdir(os.path.join(c.workdir, "best_model"))
        summary["best_model"] = os.path.join(c.workdir, "best_model") if has_best else summary["final_model"]
    return summary


# ============================================================================ CLI


def main(argv: Sequence[str] | None = None, *, on_start: Callable | None = None,
         on_summary: Callable | None = None) -> int:
    """``sentjax train --config FILE [--config.k=v ...] [--resume] [--workdir DIR]
    [--coordinator HOST:PORT --num_processes N --process_id I] [--heartbeat_timeout_seconds S]
    [--shutdown_timeout_seconds S] [--initialization_timeout_seconds S]``."""
    import argparse

    from sentjax import logs
    logs.configure()  # keeps the level of ``sentjax --log-level``; info for python -m sentjax.train.train
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(main.__doc__.strip().replace("``", ""))
        print("  Overrides: any key of the config, e.g. --config.batch_size=128 --config.optim.lr=1e-4;\n"
              "  an unknown key is an error listing the valid ones. See docs/train.md.\n\n"
              "Example:\n  sentjax train --config experiments/simcse_unsup.py --config.batch_size=128 "
              "--workdir runs/x\n  sentjax train --config experiments/simcse_unsup.py --workdir runs/x --resume")
        return 0 if argv else 2
    try:
        cfg, rest = config_cli.parse_config_args(argv)
    except config_cli.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    p = argparse.ArgumentParser(prog="sentjax train")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--workdir", default=None, help="same as --config.workdir")
    p.add_argument("--no_progress", action="store_true")
    distributed.add_arguments(p)  # --coordinator, --num_processes, --process_id, timeouts
    args = p.parse_args(rest)
    if args.workdir:
        cfg.workdir = args.workdir
    from sentjax.train.workdir import WorkdirLockedError, describe_os_error
    try:
        maybe_initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                     **distributed.timeouts_from_args(args))
        if on_start is not None:
            on_start(cfg)
        summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    except TrainingDivergedError as e:
        # exit_now_if_multiprocess: skip the shutdown barrier, so the other processes stop now
        print(f"error: {e}", file=sys.stderr)
        return distributed.exit_now_if_multiprocess(3)
    except (config_cli.ConfigError, ValueError, FileNotFoundError, WorkdirLockedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return distributed.exit_now_if_multiprocess(2)
    except OSError as e:  # read-only or full workdir, also when raised by a checkpoint save
        if "sentjax.train.checkpoint" in sys.modules:
            sys.modules["sentjax.train.checkpoint"].quiet_leftover_orbax_errors()
        print(f"error: {describe_os_error(e, cfg.workdir)}", file=sys.stderr)
        return distributed.exit_now_if_multiprocess(2)
    if jax.process_index() == 0:
        if on_summary is not None:
            on_summary(cfg, summary)
        else:
            print(json.dumps({k: v for k, v in summary.items() if k != "state"}, default=float, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
