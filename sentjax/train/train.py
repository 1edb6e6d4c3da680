"""Training: ``sentjax train --config experiments/<name>.py [--config.key=value ...] [--resume]``.

One file in clearly bannered sections (big_vision style): config, distributed + mesh,
data, model + state, step, checkpoint, evaluation + export, loop. The train step is a pure
``(state, batch, rng) -> (state, metrics)`` compiled once with ``jax.jit`` (state donated,
parameters replicated, batch sharded on the mesh's ``data`` axis). Everything a resumed run
needs is in the checkpoint: parameters, optimizer state, step, rng and the data position,
and the data order is a pure function of (seed, step), so ``--resume`` continues exactly.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sentjax.models import build as model_build
from sentjax.models.build import resolve_bundled  # noqa: F401 (re-exported)
from sentjax.models.build import transfer_vocab as _transfer_vocab  # noqa: F401 (re-exported)
from sentjax.parallel import distributed
from sentjax.parallel.distributed import maybe_initialize_distributed  # noqa: F401 (re-exported)
from sentjax.losses import registry
from sentjax.train import config_cli
from sentjax.train import step as step_lib

# ============================================================================ config


def default_config() -> ml_collections.ConfigDict:
    """Every key a run understands (experiment files start from this and change values)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.workdir = "runs/default"
    c.total_steps = 100
    c.batch_size = 64                 # global: examples per step, all processes and devices
    c.accum_steps = 1                 # micro-batches per step (objectives without in-batch negatives)
    c.dtype = "float32"               # compute dtype; "bfloat16" keeps float32 master parameters
    c.log_every = 10
    c.nonfinite_limit = 10            # stop after this many skipped (non-finite) steps
    c.mesh = ml_collections.ConfigDict({"data": -1})   # devices on the data axis (-1: all)
    c.model = ml_collections.ConfigDict({
        "init_from": "",              # model folder / hub id / "minilm"; "" = random init
        "tokenizer": "",              # tokenizer folder for a random init ("minilm": the bundled one)
        "encoder": ml_collections.ConfigDict({"vocab_size": 100, "hidden_size": 32,
                                               "num_hidden_layers": 2, "num_attention_heads": 4,
                                               "intermediate_size": 64, "max_position_embeddings": 64}),
        "pooling": "mean", "normalize": False, "mlp_at_inference": True, "max_length": 64,
        # tokenizer folder whose vocabulary replaces init_from's ("multilingual": the XLM-R one of
        # the multilingual extra); word embeddings are transferred (sentjax.models.vocab_transfer)
        "vocab_from": "",
    })
    # the objective's own fields (sentjax.losses.<name>.Config); --config.objective.name=X resets them
    c.objective = ml_collections.ConfigDict(registry.defaults("infonce"))
    # method: "shard_map" (explicit all-gather of candidates), "pmap", or "jit" (global-batch loss,
    # XLA picks the collectives); gradcache_chunk > 0: GradCache with that many rows per chunk/device.
    c.gradient = ml_collections.ConfigDict({"method": "shard_map", "gradcache_chunk": 0})
    c.optim = ml_collections.ConfigDict({
        "lr": 3e-5, "warmup_steps": -1, "warmup_ratio": 0.1, "weight_decay": 0.01,
        "b1": 0.9, "b2": 0.999, "eps": 1e-6, "clip_norm": 1.0,
    })
    c.data = ml_collections.ConfigDict({"datasets": ("text:bundled/commonvoice_en/jf99.txt",),
                                        "weights": (), "dedup": True})
    c.eval = ml_collections.ConfigDict({"sts_file": "", "every_steps": 50, "batch_size": 64,
                                        "at_start": True})
    c.checkpoint = ml_collections.ConfigDict({"every_steps": 50, "max_to_keep": 2, "async_save": True})
    c.export = ml_collections.ConfigDict({"best_model": True})
    return c


def validate_config(c: ml_collections.ConfigDict) -> None:
    if c.dtype not in ("float32", "bfloat16"):
        raise config_cli.ConfigError(f"config.dtype must be 'float32' or 'bfloat16', got {c.dtype!r}.")
    for k in ("total_steps", "batch_size", "accum_steps", "log_every"):
        if c[k] <= 0:
            raise config_cli.ConfigError(f"config.{k} must be positive, got {c[k]}.")


# ============================================================================ distributed + mesh


# maybe_initialize_distributed: when and how to call jax.distributed.initialize (the launcher's
# environment, heartbeat / shutdown / initialization timeouts) lives in sentjax.parallel.distributed.


# ============================================================================ data


def build_pipeline(c: ml_collections.ConfigDict, tokenizer, dedup: bool, teacher_tokenizer=None, mesh=None):
    """The data pipeline of config ``c``. With several processes each builds only the rows of the
    global batch that its devices hold under ``batch_sharded(mesh)`` (default mesh: ``c.mesh.data``)."""
    from sentjax.data.pipeline import Pipeline, process_rows
    from sentjax.data.sources import load_source
    sources = [load_source(s) for s in c.data.datasets]
    rows = None
    if jax.process_count() > 1:
        mesh = step_lib.make_data_mesh(c.mesh.data) if mesh is None else mesh
        rows = process_rows(step_lib.batch_sharded(mesh), c.batch_size)
    return Pipeline(sources, tokenizer, c.batch_size, c.seed, weights=tuple(c.data.weights),
                    dedup=dedup and c.data.dedup, teacher_tokenizer=teacher_tokenizer, rows=rows)


def global_batch(local: dict, mesh) -> dict:
    """This process's rows (``Pipeline.rows``) -> global arrays sharded on ``data``."""
    sharding = step_lib.batch_sharded(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)


# ============================================================================ model + state


def build_model(c: ml_collections.ConfigDict):
    """-> SentenceModel (module with the compute dtype, float32 params, tokenizer)."""
    return model_build.build_model(c.model, dtype=c.dtype, seed=c.seed)


def load_teacher(c, model):
    """The frozen teacher of distillation: objective.teacher, else model.init_from (the student's
    starting point, before any vocabulary transfer)."""
    return model_build.load_teacher(c.objective.teacher, c.model, model)


def build_objective_and_grad(c, model, objective, mesh, teacher=None):
    """-> (embed, grad_fn): ``grad_fn(params, batch, rng) -> ((loss, metrics), grads)`` of the
    global mean loss, by ``sentjax.parallel.global_grads.make_grad_fn`` (gradient.method:
    'shard_map' / 'pmap' with explicit collectives, or 'jit' = the loss on the global batch with
    XLA-chosen collectives), optionally through GradCache."""
    from sentjax.models.sentence_model import embed_fn
    from sentjax.parallel.global_grads import make_grad_fn
    from sentjax.train.objectives import GRADIENT_METHODS, select_columns
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
    chunk = c.gradient.gradcache_chunk or None
    if chunk is not None and c.accum_steps > 1:
        raise config_cli.ConfigError("Use either GradCache (gradient.gradcache_chunk) or accum_steps, not both.")
    inner = make_grad_fn(lambda p, tokens, rng: embed(p["model"], tokens, rng), objective.loss_fn,
                         mesh=mesh, backend=GRADIENT_METHODS[method], gradcache_chunk=chunk)
    teacher_fn = None
    if objective.needs_teacher:
        teacher = teacher or load_teacher(c, model)
        t_embed, t_params = embed_fn(teacher.module), teacher.params
        teacher_fn = lambda tokens: jax.lax.stop_gradient(t_embed(t_params, tokens, None))  # noqa: E731

    def grad_fn(params, batch, rng):
        columns = select_columns(objective, batch)
        if teacher_fn is not None:
            # The teacher sees the source text; a student with another vocabulary passes the
            # teacher's tokens of it as ``teacher_anchor``.
            columns["teacher"] = teacher_fn(batch.get("teacher_anchor", batch["anchor"]))
        return inner(params, columns, rng)

    return embed, step_lib.accumulate(grad_fn, c.accum_steps, c.batch_size)


def init_params(c, model, objective) -> dict:
    params = {"model": model.params}
    if objective.init_head is not None:
        params["head"] = objective.init_head(jax.random.fold_in(jax.random.key(c.seed), 7), model.dim)
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)


# ============================================================================ evaluation + export


def read_sts(path: str):
    """Dev pairs for the in-training STS eval: ``stsb-dev`` (bundled SentEval STS-B dev) or any
    file / bundled name ``sentjax.data.sources.read_sts`` reads (STS-B CSV, SentEval STS-B,
    SICK, a headed TSV). Scores are scaled linearly, which Spearman ignores."""
    from sentjax.data.sources import read_sts as read_pairs
    src = read_pairs("stsbenchmark-dev" if path == "stsb-dev" else path)
    return src.columns["anchor"], src.columns["positive"], np.asarray(src.columns["score"], np.float64)


def make_encoder(embed, tokenizer, mesh, batch_size: int):
    """``encode(params, texts) -> np [n, dim]`` with replicated params and bucketed batches."""
    rep = step_lib.replicated(mesh)
    fwd = jax.jit(lambda p, b: embed(p, b, None), out_shardings=rep)

    def encode(params, texts):
        outs = []
        for i in range(0, len(texts), batch_size):
            chunk = list(texts[i:i + batch_size])
            n = len(chunk)
            chunk += [""] * (batch_size - n)  # one compiled shape per length bucket
            tok = tokenizer(chunk)
            tok = {k: jax.make_array_from_callback(v.shape, rep, lambda idx, v=v: v[idx]) for k, v in tok.items()}
            outs.append(step_lib.to_host(fwd(params, tok))[:n])
        return np.concatenate(outs).astype(np.float64)
    return encode


def sts_spearman(encode, params, s1, s2, scores) -> float:
    """Spearman correlation x100 between cos(u, v) and gold scores (SentEval's STS-B dev metric)."""
    try:
        from sentjax.eval.sts import evaluate_sts
        res = evaluate_sts(lambda t: encode(params, t), s1, s2, scores)
        return float(res["spearman"] if isinstance(res, dict) else res)
    except ImportError:
        from scipy.stats import spearmanr
        u, v = encode(params, s1), encode(params, s2)
        cos = np.sum(u * v, -1) / np.maximum(np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1), 1e-12)
        return float(spearmanr(cos, scores).correlation * 100)


def export_model(model, params: dict, path: str) -> str:
    import sentjax
    host = step_lib.to_host(params["model"])
    return sentjax.save(model, path, params=host)


# ============================================================================ loop


class _Stop:
    """SIGTERM (preemption) -> save at the next step boundary and exit."""
    requested = False

    @classmethod
    def install(cls) -> None:
        def handler(signum, frame):
            cls.requested = True
        signal.signal(signal.SIGTERM, handler)


def _stop_everywhere(mesh) -> bool:
    if jax.process_count() == 1:
        return _Stop.requested
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.array([_Stop.requested]))))


class TrainingDivergedError(FloatingPointError):
    """Too many steps had a non-finite loss or gradient (``nonfinite_limit``)."""


def train(c: ml_collections.ConfigDict, resume: bool = False, progress: bool = True) -> dict:
    """Runs (or resumes) training; returns a summary dict (final metrics, best step, paths).

    Process 0 owns the workdir for the whole run (``<workdir>/.lock``), so a second run into the
    same workdir is refused. Pending checkpoint saves are waited for on every exit, errors included:
    an exit with a save in flight would leave a torn checkpoint."""
    from sentjax.train.workdir import WorkdirLock, check_writable
    validate_config(c)
    with contextlib.ExitStack() as cleanup:
        if jax.process_index() == 0:
            check_writable(c.workdir)
            cleanup.enter_context(WorkdirLock(c.workdir, report=lambda m: print(m, file=sys.stderr, flush=True)))
        return _train(c, resume, progress, cleanup)


def _train(c: ml_collections.ConfigDict, resume: bool, progress: bool, cleanup: contextlib.ExitStack) -> dict:
    from sentjax.train.checkpoint import Checkpointer
    from sentjax.train.objectives import make_objective
    from sentjax.train.optim import make_optimizer
    from sentjax.train.workdir import MetricsLog, atomic_export
    is_main = jax.process_index() == 0
    mesh = step_lib.make_data_mesh(c.mesh.data)
    step_lib.check_global_batch(c.batch_size, mesh, c.accum_steps)
    objective = make_objective(c.objective)
    model = build_model(c)
    teacher = load_teacher(c, model) if objective.needs_teacher else None
    if teacher is not None and teacher.module.normalize != model.module.normalize and is_main:
        # MSE to unit vectors from an unnormalised student (or the reverse) mostly trains the norm.
        print(f"warning: the distillation teacher {'does' if teacher.module.normalize else 'does not'} "
              f"L2-normalise its embeddings but the student {'does' if model.module.normalize else 'does not'}; "
              f"set --config.model.normalize={teacher.module.normalize} to match.", file=sys.stderr, flush=True)
    embed, grad_fn = build_objective_and_grad(c, model, objective, mesh, teacher)
    # The teacher reads the source text with its own tokenizer (the student's vocabulary may differ).
    pipeline = build_pipeline(c, model.tokenizer, dedup=objective.in_batch_negatives,
                              teacher_tokenizer=teacher.tokenizer if teacher is not None else None)
    tx, schedule = make_optimizer(c.optim, c.total_steps)
    train_step = step_lib.jit_train_step(step_lib.make_train_step(grad_fn, tx, schedule), mesh)

    # ------------------------------------------------------------------------ checkpoint + resume
    rep = step_lib.replicated(mesh)
    state = jax.device_put(step_lib.init_state(init_params(c, model, objective), tx, c.seed), rep)
    ckpt_dir = os.path.join(c.workdir, "checkpoints")
    metric = "sts_dev_spearman" if c.eval.sts_file else None
    ckpt = Checkpointer(ckpt_dir, c.checkpoint.max_to_keep, best_metric=metric,
                        async_save=c.checkpoint.async_save)
    cleanup.callback(ckpt.close)
    # best: the evaluation that picked best_model/, persisted in every checkpoint so a resumed run
    # compares against the true best, not against nothing.
    best = {"metric": metric, "step": None, "value": None, "first": None}
    if ckpt.all_steps() and not resume:
        raise config_cli.ConfigError(f"{ckpt_dir} already holds checkpoints (step {ckpt.latest_step()}); "
                                     "pass --resume to continue that run or choose a new --config.workdir.")
    if resume and ckpt.all_steps():
        state, pos = ckpt.restore(state)
        best.update(pos.get("best") or {})
        if is_main:
            print(f"Resumed from step {int(pos['step'])} ({ckpt_dir}).", flush=True)
    start = int(step_lib.to_host(state["step"]))

    encode = sts = None
    if c.eval.sts_file:
        sts = read_sts(c.eval.sts_file)
        encode = make_encoder(embed, model.tokenizer, mesh, c.eval.batch_size)
    logger = MetricsLog(c.workdir, start_step=start) if is_main else None
    if logger is not None:
        cleanup.callback(logger.close)

    def log(step: int, metrics: dict) -> None:
        if logger is not None:
            logger.write(step, metrics)

    summary: dict[str, Any] = {"workdir": c.workdir}
    if best["first"] is not None:
        summary["sts_dev_spearman_start"] = best["first"]

    def export(path: str) -> str:
        return atomic_export(lambda d: export_model(model, state["params"], d), os.path.join(c.workdir, path))

    def evaluate(step: int) -> dict:
        if sts is None:
            return {}
        score = sts_spearman(encode, state["params"]["model"], *sts)
        log(step, {"sts_dev_spearman": score})
        if best["first"] is None:
            best["first"] = score
        summary.setdefault("sts_dev_spearman_start", score)
        summary["sts_dev_spearman"] = score
        if best["value"] is None or score > best["value"]:
            best.update(step=step, value=score)
            if c.export.best_model and is_main:
                export("best_model")
        return {"sts_dev_spearman": score}

    meta = {"config": c.to_json_best_effort()}

    def save(step: int, metrics: dict | None = None) -> None:
        ckpt.save(step, state, {"step": step, "data_pos": step, "seed": c.seed, "best": dict(best)}, meta,
                  metrics=metrics or None)

    if c.eval.at_start and sts is not None and start == 0:
        evaluate(0)
    _Stop.install()
    bar = None
    if is_main and progress:
        from tqdm import tqdm
        bar = tqdm(total=c.total_steps, initial=start, desc="train", dynamic_ncols=True, file=sys.stdout)
    # pairs/s is timed from the end of the first step of this process: that step compiles.
    t0, n0 = None, start
    metrics = {}
    window, window_n = None, 0  # device-side sums of the metrics since the last log line
    skipped = 0  # steps whose update was skipped for a non-finite loss / gradient
    diverged = None
    hang = os.environ.get("SENTJAX_TEST_HANG_AFTER_CHECKPOINT")  # test hook: freeze to be killed
    for s, batch in pipeline.iterate(start, c.total_steps, prefetch=2, transform=lambda b: global_batch(b, mesh)):
        state, m = train_step(state, batch, step_lib.step_rng(state["rng"], s))
        step = s + 1
        if t0 is None:
            jax.block_until_ready(state)
            t0, n0 = time.perf_counter(), step
        window = m if window is None else jax.tree.map(jnp.add, window, m)
        window_n += 1
        if step % c.log_every == 0 or step == c.total_steps:
            # logged metrics are means over the steps since the last log (one batch is noisy)
            metrics = {k: float(v) / window_n for k, v in step_lib.to_host(window).items()}
            n_window, window, window_n = window_n, None, 0
            if "lr" in m:
                metrics["lr"] = float(step_lib.to_host(m["lr"]))  # the current rate, not a mean
            if step > n0:
                metrics["pairs_per_s"] = (step - n0) * c.batch_size / max(time.perf_counter() - t0, 1e-9)
            bad = int(round(metrics.get("nonfinite", 0.0) * n_window))
            log(step, metrics)
            if bad:
                skipped += bad
                print(f"warning: {bad} of the last {n_window} steps (up to step {step}) had a non-finite "
                      f"loss or gradient; their updates were skipped ({skipped} so far).",
                      file=sys.stderr, flush=True)
                if skipped >= c.nonfinite_limit:
                    last = ckpt.latest_step()
                    diverged = (
                        f"training diverged: {skipped} steps had a non-finite loss or gradient (limit "
                        f"nonfinite_limit={c.nonfinite_limit}). Lower optim.lr, keep optim.clip_norm > 0, "
                        "use float32, or check the data for empty texts; the last good checkpoint is "
                        f"step {last} in {ckpt_dir}.")
                    break
            if bar is not None:
                shown = {"loss": f"{metrics['loss']:.4f}"}
                if "pairs_per_s" in metrics:
                    shown["pairs_s"] = f"{metrics['pairs_per_s']:.1f}"
                bar.set_postfix(**shown)
        if bar is not None:
            bar.update(1)
        ev = evaluate(step) if sts is not None and (step % c.eval.every_steps == 0 or step == c.total_steps) else {}
        stop = _stop_everywhere(mesh)
        if step % c.checkpoint.every_steps == 0 or step == c.total_steps or stop or ev:
            save(step, ev)
            if hang:
                ckpt.wait()
                print(f"CHECKPOINT_COMMITTED {step}", flush=True)
                while True:
                    time.sleep(1)
        if stop:
            ckpt.wait()
            if is_main:
                print(f"SIGTERM: saved step {step} to {ckpt_dir}; exiting.", flush=True)
            summary["preempted_at"] = step
            break
    if bar is not None:
        bar.close()
    ckpt.wait()
    if diverged:
        raise TrainingDivergedError(diverged)
    summary.update(final=metrics, best_step=best["step"],
                   best_sts_dev_spearman=-np.inf if best["value"] is None else best["value"], state=state)
    if is_main and "preempted_at" not in summary:
        summary["final_model"] = export("final_model")
        if best["step"] is not None and os.path.isdir(os.path.join(c.workdir, "best_model")):
            summary["best_model"] = os.path.join(c.workdir, "best_model")
        else:
            summary["best_model"] = summary["final_model"]
    return summary


# ============================================================================ CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``sentjax train --config FILE [--config.k=v ...] [--resume] [--workdir DIR]
    [--coordinator HOST:PORT --num_processes N --process_id I] [--heartbeat_timeout_seconds S]
    [--shutdown_timeout_seconds S] [--initialization_timeout_seconds S]``."""
    import argparse
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(main.__doc__.strip().replace("``", ""))
        print("  Overrides: any key of the config, e.g. --config.batch_size=128 --config.optim.lr=1e-4;\n"
              "  an unknown key is an error listing the valid ones. See docs/training.md.")
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
        summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    except TrainingDivergedError as e:
        # exit_now_if_multiprocess: skip the shutdown barrier, so the other processes stop now
        print(f"error: {e}", file=sys.stderr)
        return distributed.exit_now_if_multiprocess(3)
    except (config_cli.ConfigError, ValueError, FileNotFoundError, WorkdirLockedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return distributed.exit_now_if_multiprocess(2)
    except OSError as e:  # read-only or full workdir, also when raised by a checkpoint save
        print(f"error: {describe_os_error(e, cfg.workdir)}", file=sys.stderr)
        return distributed.exit_now_if_multiprocess(2)
    if jax.process_index() == 0:
        shown = {k: v for k, v in summary.items() if k != "state"}
        print(json.dumps(shown, default=float, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
