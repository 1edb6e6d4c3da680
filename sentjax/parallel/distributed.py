"""When and how to call ``jax.distributed.initialize``, and failing fast when a process dies.

``decide(env, ...)`` is pure: from the environment variables of the launcher (and a few facts the
caller gathers: is this a Cloud TPU VM, what its metadata server says, which optional modules are
installed) it returns a ``Decision``: initialize or not, why (one short line), and the keyword
arguments for ``jax.distributed.initialize``. ``maybe_initialize_distributed`` gathers those facts,
applies the decision and prints the line on process 0. Nothing here touches the XLA backend:
``jax.distributed.initialize`` must run before any JAX computation.

The launchers are checked in the order of JAX's own cluster detection (``jax/_src/clusters``:
Open MPI, SLURM, GKE TPU, GCE TPU, Kubernetes; mpi4py only on request), so the reason printed
names the launcher JAX will read its process count and id from. A launcher that says "one
process" is not initialized: with SLURM or Open MPI JAX would also restrict each process to the
GPU of its local rank (``local_device_ids=[SLURM_LOCALID]``), hiding the other GPUs of a
single-task job.

Failure handling (checked on jax 0.10.2, 2 CPU processes on localhost): a SIGKILLed process is seen
by the others after ``heartbeat_timeout_seconds`` (JAX's default is 100 s; 10 s here). A process
that fails with a Python exception does not die, though: at exit JAX waits at a shutdown barrier for
``shutdown_timeout_seconds`` (300 s) while the others wait in their next collective. So in a
multi-process run ``exit_now_if_multiprocess`` (the train CLI's error path) and the excepthook
installed by ``maybe_initialize_distributed`` leave with ``os._exit``: the process dies at once and
the others abort within the heartbeat timeout.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import logging
import re
import sys
from typing import Any, Callable, Mapping

__all__ = ["Decision", "DistributedSetupError", "decide", "maybe_initialize_distributed", "add_arguments",
           "timeouts_from_args", "exit_now_if_multiprocess", "HEARTBEAT_TIMEOUT_SECONDS",
           "SHUTDOWN_TIMEOUT_SECONDS", "INITIALIZATION_TIMEOUT_SECONDS"]

logger = logging.getLogger(__name__)

# Seconds. JAX's defaults are 100 / 300 / 300 (jax/_src/distributed.py, initialize()).
HEARTBEAT_TIMEOUT_SECONDS = 10       # a process silent this long is dead: the others abort
SHUTDOWN_TIMEOUT_SECONDS = 300       # a finished process waits this long for the others at exit
INITIALIZATION_TIMEOUT_SECONDS = 300  # processes wait this long for all to connect at start


class DistributedSetupError(ValueError):
    """The environment says "several processes" but JAX cannot be told how to connect them."""


@dataclasses.dataclass(frozen=True)
class Decision:
    initialize: bool
    reason: str                                   # one short line, e.g. "SLURM job with 4 tasks"
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # for jax.distributed.initialize
    num_processes: int | None = None              # when the environment says it
    process_id: int | None = None                 # this process's id, when the environment says it

    def line(self) -> str:
        if not self.initialize:
            return f"distributed: {self.reason} -> no jax.distributed.initialize"
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"distributed: {self.reason} -> jax.distributed.initialize({args})"


@dataclasses.dataclass(frozen=True)
class _Launcher:
    name: str                        # reason text, e.g. "SLURM job with 4 tasks"
    num_processes: int | None        # None: JAX finds it (e.g. a Kubernetes Job's parallelism)
    process_id: int | None = None
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    problem: str | None = None       # set: detected but JAX cannot initialize from it
    fatal: bool = False              # with a problem: several processes would run unconnected


def _int(env: Mapping[str, str], key: str) -> int | None:
    try:
        return int(env[key])
    except (KeyError, ValueError):
        return None


def _tasks_per_node(spec: str | None) -> int | None:
    """SLURM's ``2(x3),1`` -> the task count when every node has the same, else None."""
    if not spec:
        return None
    counts = set()
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x\d+\))?\s*", part)
        if not m:
            return None
        counts.add(int(m.group(1)))
    return counts.pop() if len(counts) == 1 else None


def _visible_gpus(env: Mapping[str, str]) -> int | None:
    for key in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):
        if key in env:
            v = env[key].strip()
            return 0 if not v or v == "NoDevFiles" else len([x for x in v.split(",") if x.strip()])
    return None


def _device_ids(env: Mapping[str, str], local_rank: int | None, per_node: int | None,
                jax_default: str) -> tuple[dict, str]:
    """``local_device_ids`` for launchers that run several processes per node.

    JAX's SLURM / Open MPI detection gives the i-th process of a node the i-th GPU it sees
    (``local_device_ids=[local rank]``), right for one task per GPU with every GPU visible to every
    task. It is wrong for one task per node (only GPU 0 would be used) and for GPUs the launcher
    already binds per task (``srun --gpus-per-task``: task 3 sees one GPU, numbered 0). Then we pass
    ``local_device_ids=[]``: JAX restricts nothing (``if local_device_ids:`` in
    ``jax/_src/distributed.py``) and skips its own choice (it only fills ``None``), so each process
    uses the devices it sees. ``JAX_LOCAL_DEVICE_IDS`` set by the user wins (JAX reads it)."""
    if env.get("JAX_LOCAL_DEVICE_IDS"):
        return {}, ""
    visible = _visible_gpus(env)
    if per_node == 1:
        return {"local_device_ids": []}, "; one process per node uses all the devices it sees"
    if visible is not None and per_node is not None and visible < per_node:
        return {"local_device_ids": []}, f"; {visible} GPU(s) bound to each task: each uses the ones it sees"
    if jax_default == "all" and local_rank is not None and per_node and per_node > 1:
        # (mpi4py detection shows every GPU to every process: give rank i of a node its i-th GPU, as
        # JAX does for SLURM / Open MPI)
        return {"local_device_ids": [local_rank]}, f"; local rank {local_rank} drives GPU {local_rank}"
    return {}, ""


def _tpu_env_value(key: str, env: Mapping[str, str], tpu_metadata) -> str | None:
    """Like JAX's ``get_tpu_env_value``: the environment, else the ``tpu-env`` metadata attribute."""
    if key in env:
        return env[key]
    text = tpu_metadata("tpu-env") if tpu_metadata else None
    for line in (text or "").splitlines():
        k, sep, v = line.partition(":")
        if sep and k.strip() == key:
            return v.strip().strip("'")
    return None


def _tpu_slices(env, tpu_metadata) -> tuple[int, int]:
    def as_int(v, default):
        try:
            return int(v) if v not in (None, "") else default
        except ValueError:
            return default
    return (as_int(_tpu_env_value("MEGASCALE_NUM_SLICES", env, tpu_metadata), 1),
            as_int(_tpu_env_value("MEGASCALE_SLICE_ID", env, tpu_metadata), 0))


def _detect(env: Mapping[str, str], tpu_vm: bool, tpu_metadata, modules: frozenset[str]) -> _Launcher | None:
    """The launcher JAX's ``ClusterEnv.auto_detect_unset_distributed_params`` would pick, if any."""
    # Open MPI <= 4 (mpirun / mpiexec): JAX's OmpiCluster needs OMPI_MCA_orte_hnp_uri.
    if "OMPI_MCA_orte_hnp_uri" in env:
        n, rank = _int(env, "OMPI_COMM_WORLD_SIZE"), _int(env, "OMPI_COMM_WORLD_RANK")
        local = _int(env, "OMPI_COMM_WORLD_LOCAL_RANK")
        kw, note = _device_ids(env, local, _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE"), "local_rank")
        if n is not None and n <= 1:
            return _Launcher("single-process Open MPI job", n, rank)
        return _Launcher(f"Open MPI job with {n} processes{note}", n, rank, kw)
    # SLURM: JAX's SlurmCluster needs all five; it reads SLURM_NTASKS as the process count.
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(k in env for k in slurm):
        n = _int(env, "SLURM_NTASKS")
        if n is not None and n <= 1:
            return _Launcher("single-task SLURM job", n, _int(env, "SLURM_PROCID"))
        per_node = _tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE"))
        kw, note = _device_ids(env, _int(env, "SLURM_LOCALID"), per_node, "local_rank")
        return _Launcher(f"SLURM job with {n} tasks{note}", n, _int(env, "SLURM_PROCID"), kw)
    if (_int(env, "SLURM_NTASKS") or 1) > 1 and "SLURM_JOB_ID" in env:
        return _Launcher(f"SLURM allocation with {env['SLURM_NTASKS']} tasks", 1, problem=(
            f"SLURM allocation with {env['SLURM_NTASKS']} tasks, but this process is not one of the tasks "
            "of an srun step (no SLURM_STEP_NODELIST / SLURM_PROCID / SLURM_LOCALID): running as ONE "
            "process; start it with srun to use the whole allocation"))
    # Other MPIs (Open MPI 5 has no OMPI_MCA_orte_hnp_uri; MPICH / Intel MPI set PMI_SIZE): only
    # JAX's opt-in mpi4py detection can connect them.
    for size_key, rank_key, lrank_key, lsize_key in (
            ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
            ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID", "MPI_LOCALNRANKS")):
        n = _int(env, size_key)
        if n is not None and n > 1:
            name = f"MPI job with {n} processes ({size_key})"
            if "mpi4py" not in modules:
                return _Launcher(name, n, _int(env, rank_key), fatal=True, problem=(
                    f"{name}, but JAX can only find the other processes through mpi4py here: "
                    "pip install mpi4py, or pass --coordinator HOST:PORT --num_processes N --process_id I"))
            kw, note = _device_ids(env, _int(env, lrank_key), _int(env, lsize_key), "all")
            return _Launcher(name + note, n, _int(env, rank_key), {"cluster_detection_method": "mpi4py", **kw})
    # Cloud TPU on GKE: JAX's GkeTpuCluster reads the worker list from the environment.
    hosts = env.get("TPU_PROCESS_ADDRESSES", env.get("TPU_WORKER_HOSTNAMES"))
    if tpu_vm and hosts is not None:
        per_slice = len(hosts.split(","))
        slices, slice_id = _tpu_slices(env, tpu_metadata)
        wid = _int(env, "TPU_WORKER_ID")
        pid = None if wid is None else wid + slice_id * per_slice
        where = f"{slices} slices x {per_slice} hosts" if slices > 1 else f"{per_slice} hosts"
        n = per_slice * slices
        return _Launcher(f"GKE TPU slice with {where}" if n > 1 else "single-host GKE TPU", n, pid)
    # Cloud TPU VM (GCE): JAX's GceTpuCluster asks the metadata server; env vars may be absent.
    if tpu_vm and "TPU_SKIP_MDS_QUERY" not in env and tpu_metadata is not None:
        worker = tpu_metadata("agent-worker-number")
        if worker is not None:
            endpoints = tpu_metadata("worker-network-endpoints")
            slices, slice_id = _tpu_slices(env, tpu_metadata)
            if endpoints is None:   # JAX will ask again; the count is unknown here
                return _Launcher("Cloud TPU VM (worker list not read from the metadata server)", None)
            per_slice = len([e for e in endpoints.split(",") if e.strip()])
            n = per_slice * slices
            pid = int(worker) + slice_id * per_slice if worker.strip().isdigit() else None
            where = f"{slices} slices x {per_slice} hosts" if slices > 1 else f"{per_slice} hosts"
            return _Launcher(f"Cloud TPU pod slice with {where}" if n > 1 else "single-host Cloud TPU VM", n, pid)
    # Kubernetes (non-TPU): JAX's K8sCluster needs the kubernetes package and an indexed Job.
    if "KUBERNETES_SERVICE_HOST" in env and "JOB_COMPLETION_INDEX" in env:
        idx = _int(env, "JOB_COMPLETION_INDEX")
        if "kubernetes" not in modules:
            return _Launcher("Kubernetes indexed Job", 1, idx, problem=(
                f"Kubernetes indexed Job (JOB_COMPLETION_INDEX={idx}), but JAX reads the process count "
                "from the Job only with the kubernetes package (pip install 'jax[k8s]'); running as ONE "
                "process, or pass --coordinator HOST:PORT --num_processes N --process_id I"))
        return _Launcher(f"Kubernetes indexed Job (completion index {idx}; process count = the Job's "
                         "parallelism)", None, idx)
    return None


def decide(env: Mapping[str, str], coordinator: str | None = None, num_processes: int | None = None,
           process_id: int | None = None, *, already_initialized: bool = False, tpu_vm: bool = False,
           tpu_metadata: Callable[[str], str | None] | None = None, modules: frozenset[str] = frozenset(),
           heartbeat_timeout_seconds: int = HEARTBEAT_TIMEOUT_SECONDS,
           shutdown_timeout_seconds: int = SHUTDOWN_TIMEOUT_SECONDS,
           initialization_timeout_seconds: int = INITIALIZATION_TIMEOUT_SECONDS) -> Decision:
    """Whether this process must call ``jax.distributed.initialize``, why, and with what.

    env: the environment variables (``os.environ``). coordinator / num_processes / process_id: the
    CLI flags (``--coordinator host:port --num_processes N --process_id i``). tpu_vm: JAX found
    TPU chips and libtpu (``jax._src.cloud_tpu_init.running_in_cloud_tpu_vm``). tpu_metadata: reads a
    Cloud TPU metadata attribute (None when absent); called only when ``tpu_vm``. modules: the
    optional modules that are installed (``"kubernetes"``, ``"mpi4py"``).
    Raises DistributedSetupError when several processes would run unconnected."""
    if already_initialized:
        return Decision(False, "jax.distributed is already initialized")
    timeouts = {"heartbeat_timeout_seconds": int(heartbeat_timeout_seconds),
                "shutdown_timeout_seconds": int(shutdown_timeout_seconds),
                "initialization_timeout": int(initialization_timeout_seconds)}
    for k, v in (("heartbeat_timeout_seconds", heartbeat_timeout_seconds),
                 ("shutdown_timeout_seconds", shutdown_timeout_seconds),
                 ("initialization_timeout_seconds", initialization_timeout_seconds)):
        if v <= 0:
            raise DistributedSetupError(f"--{k} must be a positive number of seconds, got {v}.")
    launcher = _detect(env, tpu_vm, tpu_metadata, modules)
    usable = launcher is not None and launcher.problem is None
    env_coord = env.get("JAX_COORDINATOR_ADDRESS") or None

    if coordinator or num_processes is not None or process_id is not None:
        addr = coordinator or env_coord
        missing = [flag for flag, v in (("--coordinator", addr), ("--num_processes", num_processes),
                                         ("--process_id", process_id)) if v is None]
        if missing and not usable:
            raise DistributedSetupError(
                f"{' and '.join(missing)} missing: a multi-process run started by hand needs --coordinator "
                "HOST:PORT (or JAX_COORDINATOR_ADDRESS), --num_processes N and --process_id I on every process.")
        if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
            raise DistributedSetupError(f"--process_id must be in [0, {num_processes}), got {process_id}.")
        kw = {k: v for k, v in (("coordinator_address", coordinator), ("num_processes", num_processes),
                                ("process_id", process_id)) if v is not None}
        if coordinator:
            reason = f"--coordinator {coordinator}"
        elif env_coord:
            reason = f"JAX_COORDINATOR_ADDRESS={env_coord}"
        else:
            reason = "coordinator"
        if num_processes is not None:
            reason += f", {num_processes} processes"
        if missing:
            reason += f" ({', '.join(m.lstrip('-') for m in missing)} from the {launcher.name})"
        extra = dict(launcher.kwargs) if usable and missing else {}
        n = num_processes if num_processes is not None else (launcher.num_processes if usable else None)
        pid = process_id if process_id is not None else (launcher.process_id if usable else None)
        return Decision(True, reason, {**kw, **extra, **timeouts}, n, pid)

    if launcher is None:
        if env_coord:
            raise DistributedSetupError(
                f"JAX_COORDINATOR_ADDRESS={env_coord} is set but no launcher says how many processes there "
                "are: pass --num_processes N --process_id I too (or unset it for a single process).")
        return Decision(False, "no multi-process launcher detected (single process)", num_processes=1, process_id=0)
    if launcher.problem is not None:
        if launcher.fatal:
            raise DistributedSetupError(launcher.problem)
        return Decision(False, "warning: " + launcher.problem, num_processes=1, process_id=0)
    if launcher.num_processes is not None and launcher.num_processes <= 1:
        return Decision(False, launcher.name, num_processes=1, process_id=0)
    reason = launcher.name + (f", coordinator from JAX_COORDINATOR_ADDRESS={env_coord}" if env_coord else "")
    return Decision(True, reason, {**launcher.kwargs, **timeouts}, launcher.num_processes, launcher.process_id)


# ---------------------------------------------------------------------------- applying it


def _tpu_facts() -> tuple[bool, Callable[[str], str | None]]:
    """(running on a Cloud TPU VM, metadata reader). ``import jax`` ran ``cloud_tpu_init`` already,
    which sets the flag without starting the backend."""
    try:
        from jax._src import cloud_tpu_init
        tpu_vm = bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))
    except ImportError:
        tpu_vm = False

    def metadata(key: str) -> str | None:
        import urllib.request
        host = os.environ.get("GCE_METADATA_IP", "metadata.google.internal")
        req = urllib.request.Request(f"http://{host}/computeMetadata/v1/instance/attributes/{key}",
                                     headers={"Metadata-Flavor": "Google"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.read().decode() if r.status == 200 else None
        except OSError:
            return None
    return tpu_vm, metadata


def _installed(names=("kubernetes", "mpi4py")) -> frozenset[str]:
    return frozenset(n for n in names if importlib.util.find_spec(n) is not None)


def _on_cpu() -> bool:
    import jax
    return jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS", "") == "cpu"


_state: dict[str, Any] = {"decision": None}


def maybe_initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                                 process_id: int | None = None, *,
                                 heartbeat_timeout_seconds: int = HEARTBEAT_TIMEOUT_SECONDS,
                                 shutdown_timeout_seconds: int = SHUTDOWN_TIMEOUT_SECONDS,
                                 initialization_timeout_seconds: int = INITIALIZATION_TIMEOUT_SECONDS,
                                 env: Mapping[str, str] | None = None, fail_fast: bool = True,
                                 quiet: bool = False) -> Decision:
    """``jax.distributed.initialize`` when launched as several processes (see ``decide``).

    Prints one line (``Decision.line()``) on process 0 before initializing (when the process id is
    not known beforehand, on every process); nothing for a plain single-process run. With
    ``fail_fast`` an uncaught exception in a multi-process run exits at once (see the module doc)."""
    import jax
    env = os.environ if env is None else env
    tpu_vm, metadata = _tpu_facts()
    d = decide(env, coordinator, num_processes, process_id,
               already_initialized=jax.distributed.is_initialized(), tpu_vm=tpu_vm, tpu_metadata=metadata,
               modules=_installed(), heartbeat_timeout_seconds=heartbeat_timeout_seconds,
               shutdown_timeout_seconds=shutdown_timeout_seconds,
               initialization_timeout_seconds=initialization_timeout_seconds)
    if not quiet and d.process_id in (0, None) and (d.initialize or not d.reason.startswith("no multi-process")):
        logger.info(d.line())
    if not d.initialize:
        return d
    if _on_cpu():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**d.kwargs)
    _state["decision"] = d
    if fail_fast:
        _install_excepthook()
    return d


# ---------------------------------------------------------------------------- failing fast


def _multiprocess() -> bool:
    import jax
    if _state["decision"] is None or not jax.distributed.is_initialized():
        return False
    try:
        return jax.process_count() > 1
    except Exception:  # noqa: BLE001 - the backend itself failed: still several processes
        return True


def exit_now_if_multiprocess(code: int) -> int:
    """Returns ``code`` in a single-process run. In a multi-process run, prints one line and leaves
    with ``os._exit(code)``, skipping JAX's shutdown barrier (which would keep this process alive, and
    the others stuck in their next collective, for ``shutdown_timeout_seconds``); the others see
    this process gone and abort within ``heartbeat_timeout_seconds``."""
    if not _multiprocess():
        return code
    import jax
    hb = _state["decision"].kwargs.get("heartbeat_timeout_seconds")
    try:
        who = f"process {jax.process_index()} of {jax.process_count()}"
    except Exception:  # noqa: BLE001
        who = "this process"
    sys.stdout.flush()
    print(f"distributed: exiting {who} now (status {code}) after the error above, without JAX's shutdown "
          f"barrier; the other processes stop within ~{hb} s (heartbeat timeout).", file=sys.stderr, flush=True)
    os._exit(code)


def _install_excepthook() -> None:
    previous = sys.excepthook
    if getattr(previous, "_sentjax_fail_fast", False):
        return

    def hook(kind, value, tb):
        previous(kind, value, tb)
        exit_now_if_multiprocess(130 if issubclass(kind, KeyboardInterrupt) else 1)

    hook._sentjax_fail_fast = True
    sys.excepthook = hook


# ---------------------------------------------------------------------------- CLI


def add_arguments(parser) -> None:
    """The multi-process flags of ``sentjax train`` (argparse)."""
    g = parser.add_argument_group("multi-process (usually detected from SLURM / TPU / MPI; see docs/cluster.md)")
    g.add_argument("--coordinator", default=None,
                   help="host:port of process 0, for processes started by hand (or JAX_COORDINATOR_ADDRESS)")
    g.add_argument("--num_processes", type=int, default=None)
    g.add_argument("--process_id", type=int, default=None)
    g.add_argument("--heartbeat_timeout_seconds", type=int, default=HEARTBEAT_TIMEOUT_SECONDS,
                   help="a process silent this long is dead and the others abort "
                        f"(default {HEARTBEAT_TIMEOUT_SECONDS}; JAX's own is 100)")
    g.add_argument("--shutdown_timeout_seconds", type=int, default=SHUTDOWN_TIMEOUT_SECONDS,
                   help="at the end a process waits this long for the others to finish "
                        f"(default {SHUTDOWN_TIMEOUT_SECONDS})")
    g.add_argument("--initialization_timeout_seconds", type=int, default=INITIALIZATION_TIMEOUT_SECONDS,
                   help="at the start processes wait this long for all to connect "
                        f"(default {INITIALIZATION_TIMEOUT_SECONDS})")


def timeouts_from_args(args) -> dict:
    return {k: getattr(args, k) for k in ("heartbeat_timeout_seconds", "shutdown_timeout_seconds",
                                          "initialization_timeout_seconds")}
