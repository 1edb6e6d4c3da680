"""Orbax checkpoints: train state + data position + metadata, atomic, asynchronous and verified.

Each step folder holds three items (``ocp.args.Composite``):
  state  the state dict (params, opt_state, step, rng, data_pos), ``StandardSave``
  data   JSON ``{"step", "seed", "best": {...}, "digest": {...}}``: the step (the data position:
         the data order is a pure function of seed and step), the best evaluation so far (so a
         resumed run does not mistake its first evaluation for a new best) and a SHA-256 digest of
         every state array
  meta   JSON run metadata (the config)

Why a digest: Orbax's array files carry no checksum, so flipped bytes inside an OCDBT file
restore silently as garbage parameters. The digest is computed from the arrays being saved and
committed in the same atomic save, then checked against the restored arrays.

Restore takes the newest checkpoint that is readable, complete and matches its digest. A damaged
one (unreadable, incomplete, failing its digest) is reported in one line, moved aside to
``<directory>.damaged/`` (never deleted) and the next older one is tried, so a requeued job with
the same ``--resume`` command comes back by itself. A checkpoint whose parameter shapes differ
from the model being built is a configuration mistake, not damage: that stops with an error naming
the parameter and both shapes, and nothing is moved.

Orbax writes a save into ``<step>.orbax-checkpoint-tmp`` and renames it when complete, so a
process killed mid-save leaves a temporary folder that is never mistaken for a checkpoint.
Retention: the last ``max_to_keep`` steps plus the best by a dev metric. In a multi-process run
every process must call ``save`` and ``restore``.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import warnings
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

__all__ = ["Checkpointer", "CheckpointMismatchError", "NoUsableCheckpointError", "TornCheckpointWarning",
           "state_digest"]

logger = logging.getLogger(__name__)


class TornCheckpointWarning(UserWarning):
    """An interrupted (incomplete) save was found and skipped."""


class CheckpointMismatchError(ValueError):
    """The checkpoint is intact but was written for a different model / state layout."""


class NoUsableCheckpointError(FileNotFoundError):
    """No checkpoint in the directory could be restored."""


class _Damaged(Exception):
    """A checkpoint that cannot be used (reason in the message)."""


class _QuietOrbaxSaves(logging.Filter):
    """Orbax warns on every save without metrics when a best metric is tracked (evaluations are rarer
    than saves, so on almost every step of every host), warns when a save waited for the previous
    one (routine on a busy machine: the wait is the point of async saves; it goes to this module's
    debug log), and logs the traceback of a failed background write, whose exception reaches the
    caller anyway and is reported there in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "did not provide metrics" in msg:
            return False
        if msg.startswith("Waiting for previous save to complete"):
            logger.debug(msg)
            return False
        return not ("orbax" in record.pathname and record.levelno >= logging.ERROR
                    and (record.exc_info or "raised an exception" in msg or "failed" in msg.lower()))


logging.getLogger("absl").addFilter(_QuietOrbaxSaves())

TMP_MARKER = ".orbax-checkpoint-tmp"


def _incomplete(directory: str) -> list[str]:
    if not os.path.isdir(directory):
        return []
    return sorted(n for n in os.listdir(directory) if TMP_MARKER in n)


def _key(path) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def state_digest(state: Any) -> dict[str, str]:
    """``{leaf path: sha256 hex of its bytes, shape and dtype}`` of a state pytree; a sharded
    (FSDP) leaf is hashed as its whole global value, so the digest does not depend on the mesh."""
    from sentjax.parallel.sharding import host_array
    out = {}
    for path, x in jax.tree_util.tree_leaves_with_path(state):
        a = np.ascontiguousarray(host_array(x))
        h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B") if a.size else b"")
        out[_key(path)] = h.hexdigest()[:32]
    return out


def _stderr(msg: str) -> None:
    if jax.process_index() == 0:
        logger.warning(msg)


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` for the train state.

    Args:
      directory: checkpoint root (local path or gs://...).
      max_to_keep: how many of the latest steps to keep.
      best_metric: metric name (e.g. "sts_dev_spearman") whose best step is kept too.
      best_mode: "max" or "min".
      async_save: write in a background thread (wait with ``wait()``).
      report: where the one-line reports of damaged checkpoints go (default: stderr of process 0).
    """

    def __init__(self, directory: str, max_to_keep: int = 2, best_metric: str | None = None,
                 best_mode: str = "max", async_save: bool = True,
                 report: Callable[[str], None] = _stderr):
        self.directory = os.path.abspath(directory) if "://" not in directory else directory
        self._report = report
        self._options = dict(max_to_keep=max_to_keep, best_metric=best_metric, best_mode=best_mode,
                             async_save=async_save)
        torn = _incomplete(self.directory) if jax.process_index() == 0 else []
        with _quiet_orbax():  # it warns about damaged step folders that restore() reports itself
            self.manager = self._open()
        if torn:
            latest = self.manager.latest_step()
            warnings.warn(f"{self.directory}: incomplete checkpoint(s) {torn} from an interrupted save "
                          f"were skipped; the last complete checkpoint is step {latest}.",
                          TornCheckpointWarning, stacklevel=2)

    def _open(self) -> ocp.CheckpointManager:
        o = self._options
        metric = o["best_metric"]
        policies: list[Any] = [ocm.LatestN(n=o["max_to_keep"])]
        if metric:
            policies.append(ocm.BestN(get_metric_fn=lambda m: m[metric], reverse=o["best_mode"] == "min",
                                      n=1, keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocm.AnyPreservationPolicy(policies),
            enable_async_checkpointing=o["async_save"], create=True,
            best_fn=(lambda m: m[metric]) if metric else None, best_mode=o["best_mode"])
        handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler(),
                    "meta": ocp.JsonCheckpointHandler()}
        return ocp.CheckpointManager(self.directory, options=options, item_names=tuple(handlers),
                                     item_handlers=handlers)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: dict, data: dict, meta: dict | None = None,
             metrics: dict | None = None, force: bool = True) -> bool:
        """Starts an (async) save of ``state`` and the JSON ``data`` position at ``step``; the
        digest of ``state`` is added to ``data`` so it commits atomically with the arrays."""
        data = dict(data, digest={"algorithm": "sha256", "leaves": state_digest(state)})
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  data=ocp.args.JsonSave(data),
                                  meta=ocp.args.JsonSave(meta or {}))
        with _os_errors():  # a failed background save surfaces here, at the next save
            return self.manager.save(step, args=args, metrics=metrics, force=force)

    # ------------------------------------------------------------------------------ restore

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[dict, dict]:
        """Restores (state, data) of ``step``, by default the newest usable one.

        ``abstract_state``: a state pytree (or ShapeDtypeStructs with shardings) giving shapes,
        dtypes and target shardings. Damaged checkpoints are reported, moved aside and skipped
        (only when ``step`` is None). Raises ``CheckpointMismatchError`` when the checkpoint was
        written for other shapes, ``NoUsableCheckpointError`` when nothing can be restored.
        """
        steps = sorted(self.all_steps(), reverse=True) if step is None else [step]
        if not steps:
            raise NoUsableCheckpointError(f"No complete checkpoint in {self.directory} to resume from; "
                                          "drop --resume to start a new run.")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        problems = []
        for i, s in enumerate(steps):
            try:
                ok, why = True, ""
                try:
                    with _quiet_orbax():
                        out = self._restore_verified(s, abstract)
                except _Damaged as e:
                    ok, why = False, str(e)
                    _probe_noise.damaged_seen = True
                if not _agree(ok):
                    why = why or "unusable on another process"
                    raise _Damaged(why)
                return out
            except _Damaged as e:
                problems.append(f"step {s}: {e}")
                if step is not None:
                    raise NoUsableCheckpointError(f"Checkpoint {self._step_dir(s)} is unusable: {e}.") from None
                moved = self._move_aside(s)
                nxt = f"trying step {steps[i + 1]}" if i + 1 < len(steps) else "no older checkpoint is left"
                self._report(f"checkpoint {self._step_dir(s)} is unusable ({e}); {moved}; {nxt}.")
        raise NoUsableCheckpointError(
            f"No usable checkpoint in {self.directory}: " + "; ".join(problems) + ". The damaged folders "
            f"are in {self.directory}.damaged/. Start a new run (drop --resume, or a new --config.workdir).")

    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _restore_verified(self, step: int, abstract: Any) -> tuple[dict, dict]:
        folder = self._step_dir(step)
        if os.path.isdir(folder) and not os.listdir(folder):
            raise _Damaged("the step folder is empty")
        # Checked before Orbax opens the folder: it fails on these with TensorStore messages and
        # leaves reads in flight whose callbacks print tracebacks.
        for needed in ("state/_METADATA", "state/manifest.ocdbt", "data/metadata"):
            if "://" not in folder and not os.path.isfile(os.path.join(folder, needed)):
                raise _Damaged(f"{needed} is missing")
        try:
            md = self.manager.item_metadata(step)
            tree = md["state"]
        except Exception as e:  # noqa: BLE001 - any failure to read the metadata means damage
            raise _Damaged(f"its array index cannot be read: a file under state/ is missing or corrupt "
                           f"({type(e).__name__})") from None
        if tree is None:
            raise _Damaged("state/_METADATA is missing or unreadable")
        self._check_layout(step, tree, abstract)
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
            state, data = out["state"], dict(out["data"] or {})
        except Exception as e:  # noqa: BLE001 - Orbax / TensorStore raise many types on bad files
            raise _Damaged(f"its array files cannot be read: one is missing, truncated or corrupt "
                           f"({type(e).__name__})") from None
        digest = data.pop("digest", None)
        if digest is None:
            self._report(f"checkpoint {folder} has no digest (written by an older sentjax); "
                         "its values are not verified.")
        else:
            got = state_digest(state)
            bad = [k for k, v in digest["leaves"].items() if got.get(k) != v]
            if bad or set(got) != set(digest["leaves"]):
                bad = bad or sorted(set(got) ^ set(digest["leaves"]))
                raise _Damaged(f"{len(bad)} array(s) fail their checksum, e.g. {bad[0]}")
        return state, data

    def _check_layout(self, step: int, tree: Any, abstract: Any) -> None:
        saved = {_key(p): m for p, m in jax.tree_util.tree_leaves_with_path(tree)}
        want = {_key(p): a for p, a in jax.tree_util.tree_leaves_with_path(abstract)}
        fix = ("The checkpoints in this workdir were written for a different model. Start a new "
               "--config.workdir, or start from the old run's exported model with "
               "--config.model.init_from=<old workdir>/final_model (or best_model).")
        if not saved:
            raise _Damaged("state/_METADATA lists no arrays")
        missing, extra = sorted(set(want) - set(saved)), sorted(set(saved) - set(want))
        if missing or extra:
            what = [f"missing in the checkpoint: {missing[:3]}"] if missing else []
            what += [f"not in this model: {extra[:3]}"] if extra else []
            raise CheckpointMismatchError(f"Checkpoint step {step} in {self.directory} does not match the "
                                          f"state of this config ({'; '.join(what)}). {fix}")
        for k, a in sorted(want.items(), key=lambda kv: not kv[0].startswith("params/")):  # name a parameter
            shape = tuple(getattr(saved[k], "shape", ()) or ())
            if shape != tuple(a.shape):
                raise CheckpointMismatchError(
                    f"Checkpoint step {step} in {self.directory}: parameter {k} has shape {shape} there but "
                    f"{tuple(a.shape)} in this config. {fix}")

    def _move_aside(self, step: int) -> str:
        src = self._step_dir(step)
        if jax.process_index() == 0 and os.path.exists(src):
            root = self.directory + ".damaged"
            os.makedirs(root, exist_ok=True)
            dst, n = os.path.join(root, str(step)), 1
            while os.path.exists(dst):
                dst, n = os.path.join(root, f"{step}.{n}"), n + 1
            try:
                shutil.move(src, dst)
                what = f"moved to {dst}"
            except OSError as e:
                what = f"could not move it aside ({e}); left in place"
        else:
            what = "moved aside by process 0"
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"sentjax_checkpoint_moved_{step}")
        with _quiet_orbax():
            self.manager = self._open()
        return what

    def wait(self) -> None:
        with _os_errors():
            self.manager.wait_until_finished()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.manager.close()


@contextlib.contextmanager
def _os_errors():
    """Orbax reports a full or read-only disk as ValueError("RESOURCE_EXHAUSTED ...
    [os_error_code='28']"); re-raise it as the OSError it is, so callers can say what to do."""
    from sentjax.train.workdir import as_os_error
    try:
        yield
    except Exception as e:  # noqa: BLE001
        os_error = as_os_error(e)
        if os_error is None:
            raise
        quiet_leftover_orbax_errors()
        raise os_error from None


def quiet_leftover_orbax_errors() -> None:
    """After a failed save has been reported, the other array writes of that save fail the same way
    and surface later (at exit) as futures whose exception "was never retrieved"; drop them."""
    _probe_noise.damaged_seen = True


@contextlib.contextmanager
def _quiet_orbax():
    """Orbax logs warnings of its own while a damaged checkpoint is probed; the one-line report
    of ``restore`` says it all."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


class _probe_noise:
    """Probing a damaged checkpoint leaves Orbax / TensorStore reads in flight after restore() has
    given up on it. When they finish they print "Event loop is closed" tracebacks (through
    sys.excepthook or sys.unraisablehook, from TensorStore's threads), and Orbax's failed reads are
    reported again when their coroutines are collected (sys.unraisablehook) or as futures whose
    exception "was never retrieved" (the asyncio logger). restore() has already reported the damage
    in one line; these carry no information and are dropped."""
    damaged_seen = False

    @staticmethod
    def closed_loop(value) -> bool:
        return isinstance(value, RuntimeError) and "Event loop is closed" in str(value)

    @classmethod
    def from_orbax(cls, value) -> bool:
        """An error raised in Orbax code after a damaged checkpoint (or a failed save) was seen."""
        tb = getattr(value, "__traceback__", None)
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        return cls.damaged_seen and tb is not None and f"{os.sep}orbax{os.sep}" in tb.tb_frame.f_code.co_filename

    @classmethod
    def leftover_os_error(cls, value) -> bool:
        """Another write of a save whose OS error (full / read-only disk) was already reported.
        TensorStore sets these on bare futures, so their traceback has no Orbax frame to go by."""
        from sentjax.train.workdir import as_os_error
        return cls.damaged_seen and value is not None and as_os_error(value) is not None

    @classmethod
    def unraisable(cls, u) -> bool:
        return cls.closed_loop(u.exc_value) or cls.from_orbax(u.exc_value) or cls.leftover_os_error(u.exc_value)


class _QuietProbeFutures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not ("never retrieved" in record.getMessage()
                    and (_probe_noise.closed_loop(exc) or _probe_noise.from_orbax(exc)
                         or _probe_noise.leftover_os_error(exc)))


logging.getLogger("asyncio").addFilter(_QuietProbeFutures())


def _drop_closed_loop_errors(hook):
    def filtered(kind, value, tb):
        if not _probe_noise.closed_loop(value):
            hook(kind, value, tb)
    return filtered


def _drop_probe_unraisable(hook):
    def filtered(unraisable):
        if not _probe_noise.unraisable(unraisable):
            hook(unraisable)
    return filtered


sys.excepthook = _drop_closed_loop_errors(sys.excepthook)
sys.unraisablehook = _drop_probe_unraisable(sys.unraisablehook)


def _agree(ok: bool) -> bool:
    """All processes restored the same step successfully (each checks its own arrays)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils
    return bool(np.all(multihost_utils.process_allgather(np.array([ok]))))
