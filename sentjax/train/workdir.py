"""The run folder: one writer at a time, metrics that survive a resume, exports that are never torn.

* :class:`WorkdirLock`: ``<workdir>/.lock`` names the owning host and pid; a second run is refused
  while the owner lives. A background thread refreshes the lock's heartbeat, so a lock whose owner
  was killed is recognised as stale: at once on the same host (the pid is gone), after
  ``stale_after`` seconds without a heartbeat from another host (a requeued job on a new node).
* :func:`check_writable`: a read-only or full workdir is reported before anything is computed.
* :class:`MetricsLog`: ``metrics.jsonl`` + TensorBoard; on resume, rows of steps after the restored
  checkpoint (they are about to be redone) are dropped from both, so no step appears twice.
* :func:`atomic_export`: writes a model folder beside its destination and renames it into place,
  so a kill mid-export never leaves half a ``best_model/``.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
from typing import Callable

__all__ = ["WorkdirLock", "WorkdirLockedError", "WorkdirError", "check_writable", "MetricsLog",
           "atomic_export", "as_os_error", "describe_os_error", "read_metrics"]


class WorkdirError(OSError):
    """The workdir cannot be written (read-only, full, no permission)."""


class WorkdirLockedError(RuntimeError):
    """Another live run owns the workdir."""


def describe_os_error(e: OSError, workdir: str) -> str:
    """One line for a failed write into ``workdir`` that says what to do."""
    if e.errno == errno.ENOSPC or e.errno == errno.EDQUOT:
        return (f"the disk holding {workdir} is full ({e.strerror}). Free some space and run the same "
                "command with --resume: the last complete checkpoint is kept.")
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"cannot write to {workdir} ({e.strerror}: {e.filename or workdir}). Choose a writable "
                "--config.workdir (or fix its permissions).")
    return f"writing to {workdir} failed: {e}"


_ERRNO = re.compile(r"os_error_code='?(\d+)|\(os error (\d+)\)|\[Errno (\d+)\]")


def as_os_error(e: BaseException) -> OSError | None:
    """The OSError inside an exception of a library that wraps it in text (Orbax / TensorStore's
    ``[os_error_code='28']``, safetensors' ``(os error 28)``), or None."""
    if isinstance(e, OSError):
        return e
    m = _ERRNO.search(str(e))
    if not m:
        return None
    code = int(next(g for g in m.groups() if g))
    return OSError(code, os.strerror(code))


def check_writable(workdir: str) -> None:
    """Creates ``workdir`` and writes a probe file; raises WorkdirError with a clear message."""
    probe = os.path.join(workdir, f".write_probe.{os.getpid()}")
    try:
        os.makedirs(workdir, exist_ok=True)
        with open(probe, "w", encoding="utf-8") as f:
            f.write("x" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise WorkdirError(e.errno, describe_os_error(e, workdir)) from None
    finally:
        if os.path.exists(probe):
            os.remove(probe)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkdirLock:
    """Exclusive ownership of a workdir by one run (its process 0).

    Args:
      workdir: the run folder.
      heartbeat: seconds between refreshes of the lock file's timestamp.
      stale_after: a lock from another host without a heartbeat for this long is stale.
      report: where the one-line notes go (taking over a stale lock).
    """

    def __init__(self, workdir: str, heartbeat: float = 10.0, stale_after: float = 60.0,
                 report: Callable[[str], None] = print):
        self.path = os.path.join(workdir, ".lock")
        self.heartbeat, self.stale_after, self.report = heartbeat, stale_after, report
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}

    def acquire(self) -> "WorkdirLock":
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.owner, f)
            self._thread = threading.Thread(target=self._beat, name="sentjax-workdir-lock", daemon=True)
            self._thread.start()
            return self
        raise WorkdirLockedError(f"could not take {self.path}")

    def _take_over_if_stale(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                other = json.load(f)
            age = time.time() - os.path.getmtime(self.path)
        except (OSError, ValueError):
            other, age = {}, float("inf")  # unreadable: a kill while it was being written
        host, pid = other.get("host", "?"), int(other.get("pid", -1))
        if host == self.owner["host"]:
            stale = not _pid_alive(pid)
        else:
            stale = age > self.stale_after
        if not stale:
            where = f"pid {pid} on host {host}"
            raise WorkdirLockedError(
                f"{os.path.dirname(self.path)} is in use by another run ({where}, lock {self.path}, "
                f"heartbeat {age:.0f} s ago). Two runs in one workdir would overwrite each other's "
                "checkpoints: wait for it to finish, stop it, or choose another --config.workdir. If that "
                f"run is gone, delete {self.path}.")
        self.report(f"note: taking over the stale lock of a run that is gone (pid {pid} on host {host}).")
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
            try:
                with open(self.path, encoding="utf-8") as f:
                    mine = json.load(f).get("pid") == self.owner["pid"]
                if mine:
                    os.remove(self.path)
            except (OSError, ValueError):
                pass

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _summary_writer_class() -> type:
    """tensorboardX's ``SummaryWriter``, imported without importing torch.

    tensorboardX's writer imports torch, where installed, only to widen a type alias (torch tensors
    as "numpy compatible"); that import costs ~0.9 s of every run's start-up (a tenth of a warm
    start: experiments/bench/results/startup.md). We log Python floats, so torch is hidden
    (``sys.modules["torch"] = None`` makes its import fail) for that one import and restored after:
    a later ``import torch`` works as usual. Nothing else imported there (protobuf, multiprocessing)
    looks for torch. If torch or tensorboardX is already loaded, this is a plain import."""
    if "torch" in sys.modules or "tensorboardX" in sys.modules:
        from tensorboardX import SummaryWriter
        return SummaryWriter
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class MetricsLog:
    """``metrics.jsonl`` and TensorBoard scalars of one run (process 0 only).

    ``start_step``: the step this process starts from (0, or the restored checkpoint's). Rows of
    later steps, and a line torn by a kill, are dropped (TensorBoard: ``purge_step``): those steps
    are about to be redone. At step 0 everything goes, the step-0 evaluation included."""

    def __init__(self, workdir: str, start_step: int = 0):
        import logging

        SummaryWriter = _summary_writer_class()
        # A non-finite loss is logged as is (and reported by the loop); tensorboardX would add a
        # warning per scalar.
        logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)
        self.path = os.path.join(workdir, "metrics.jsonl")
        keep_until = start_step if start_step > 0 else -1
        if os.path.exists(self.path):
            self._truncate(keep_until)
        self.writer = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=keep_until + 1)
        self.file = open(self.path, "a", encoding="utf-8")

    def _truncate(self, step: int) -> None:
        keep = []
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line torn by a kill
                if int(row.get("step", 0)) <= step:
                    keep.append(json.dumps(row) + "\n")
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(keep)
        os.replace(tmp, self.path)

    def write(self, step: int, metrics: dict) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        self.file.write(json.dumps({"step": step, **metrics}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.writer.close()
        self.file.close()


def read_metrics(workdir: str) -> list[dict]:
    """The rows ``{"step", <metric>: value, ...}`` of ``<workdir>/metrics.jsonl`` in order (a line torn
    by a kill is skipped); [] when the file does not exist."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "step" in row:
                rows.append(row)
    return rows


def atomic_export(save: Callable[[str], object], path: str) -> str:
    """Runs ``save(tmp_dir)`` then swaps ``tmp_dir`` into ``path``; returns ``path``."""
    path = os.path.abspath(path)
    tmp, old = f"{path}.tmp-{os.getpid()}", f"{path}.old-{os.getpid()}"
    for p in (tmp, old):
        shutil.rmtree(p, ignore_errors=True)
    try:
        save(tmp)
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        os_error = as_os_error(e)
        if os_error is None:
            raise
        raise os_error from None
    if os.path.exists(path):
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path
