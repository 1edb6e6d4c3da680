"""When ``jax.distributed.initialize`` is called, with what, and how a multi-process run fails.

The decision is tested from the environment variables each launcher sets (SLURM, Cloud TPU VM /
GKE, Kubernetes, Open MPI, JAX_COORDINATOR_ADDRESS, --coordinator). The last tests start two real
processes on localhost (gloo, 1 CPU device each), then SIGKILL, SIGSTOP (a frozen host) or crash
(exception) process 1, and check that process 0 exits non-zero within 20 s (with JAX's defaults a
frozen process is noticed after ~100 s, and an exception keeps both alive for ~300 s)."""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import jax
import pytest

from sentjax.parallel import distributed as dist
from sentjax.parallel.distributed import Decision, DistributedSetupError, decide


@pytest.fixture(autouse=True)
def _cli_logging():
    """The decision line is an info log of the ``sentjax`` logger: shown as the CLI shows it."""
    from sentjax import logs
    logs.configure()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUTS = {"heartbeat_timeout_seconds": 10, "shutdown_timeout_seconds": 300, "initialization_timeout": 300}

# srun -N 2 --ntasks-per-node=4 --gres=gpu:4 (task 5 = node 1, local rank 1)
SLURM = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_STEP_NODELIST": "gpu[01-02]",
         "SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
         "SLURM_STEP_NUM_TASKS": "8", "SLURM_STEP_TASKS_PER_NODE": "4(x2)", "SLURM_TASKS_PER_NODE": "4(x2)",
         "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
# the Cloud TPU VM metadata server of worker 2 of a v4-32 (4 hosts), no TPU_* variables set
GCE_TPU = {"agent-worker-number": "2",
           "worker-network-endpoints": "t1v-n-0:w-0:10.0.0.2,t1v-n-1:w-1:10.0.0.3,t1v-n-2:w-2:10.0.0.4,"
                                       "t1v-n-3:w-3:10.0.0.5",
           "accelerator-type": "v4-32", "tpu-env": "ACCELERATOR_TYPE: 'v4-32'\nWORKER_ID: '2'\n"}
GKE_TPU = {"KUBERNETES_SERVICE_HOST": "10.1.0.1", "TPU_WORKER_HOSTNAMES": "w-0.svc,w-1.svc,w-2.svc,w-3.svc",
           "TPU_WORKER_ID": "3", "TPU_ACCELERATOR_TYPE": "v5litepod-16", "TPU_TOPOLOGY": "4x4"}
OMPI4 = {"OMPI_MCA_orte_hnp_uri": "1531576320.0;tcp://10.96.0.1:34911", "OMPI_COMM_WORLD_SIZE": "4",
         "OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_LOCAL_RANK": "0", "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}
K8S_JOB = {"KUBERNETES_SERVICE_HOST": "10.1.0.1", "JOB_COMPLETION_INDEX": "0", "HOSTNAME": "train-0-abcde"}


def _md(d):
    return lambda key: d.get(key)


# ----------------------------------------------------------------------------- SLURM


def test_slurm_multi_task_initializes_from_jax_detection():
    d = decide(SLURM)
    assert d.initialize and d.reason == "SLURM job with 8 tasks"
    assert dict(d.kwargs) == TIMEOUTS          # JAX reads coordinator / count / id from SLURM_*
    assert (d.num_processes, d.process_id) == (8, 5)
    assert d.line() == ("distributed: SLURM job with 8 tasks -> jax.distributed.initialize("
                        "heartbeat_timeout_seconds=10, shutdown_timeout_seconds=300, initialization_timeout=300)")


def test_slurm_single_task_does_not_initialize():
    # JAX would initialize 1 process and restrict it to GPU SLURM_LOCALID: the other GPUs would vanish.
    env = {**SLURM, "SLURM_NTASKS": "1", "SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
           "SLURM_STEP_TASKS_PER_NODE": "1", "SLURM_TASKS_PER_NODE": "1"}
    d = decide(env)
    assert not d.initialize and d.reason == "single-task SLURM job" and not d.kwargs


def test_slurm_one_task_per_node_uses_all_its_gpus():
    env = {**SLURM, "SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "0",
           "SLURM_STEP_TASKS_PER_NODE": "1(x2)"}
    d = decide(env)
    assert d.initialize and d.kwargs["local_device_ids"] == []   # not JAX's [SLURM_LOCALID] = GPU 0 only
    assert "one process per node" in d.reason


def test_slurm_gpus_bound_per_task_use_the_visible_one():
    d = decide({**SLURM, "CUDA_VISIBLE_DEVICES": "0"})   # srun --gpus-per-task=1: task sees 1 GPU
    assert d.initialize and d.kwargs["local_device_ids"] == []
    d = decide({**SLURM, "CUDA_VISIBLE_DEVICES": "0", "JAX_LOCAL_DEVICE_IDS": "0"})  # the user's choice wins
    assert "local_device_ids" not in d.kwargs


def test_slurm_allocation_outside_srun_warns_and_runs_one_process():
    env = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "8", "SLURM_JOB_NODELIST": "gpu[01-02]"}
    d = decide(env)
    assert not d.initialize and d.reason.startswith("warning:") and "srun" in d.reason


# ----------------------------------------------------------------------------- Cloud TPU


def test_tpu_vm_pod_slice_from_the_metadata_server():
    d = decide({}, tpu_vm=True, tpu_metadata=_md(GCE_TPU))
    assert d.initialize and d.reason == "Cloud TPU pod slice with 4 hosts" and dict(d.kwargs) == TIMEOUTS
    assert (d.num_processes, d.process_id) == (4, 2)


def test_tpu_vm_single_host_does_not_initialize():
    md = {"agent-worker-number": "0", "worker-network-endpoints": "t1v-n-0:w-0:10.0.0.2",
          "accelerator-type": "v4-8"}
    d = decide({}, tpu_vm=True, tpu_metadata=_md(md))
    assert not d.initialize and d.reason == "single-host Cloud TPU VM"


def test_tpu_multislice_counts_every_slice():
    env = {"MEGASCALE_NUM_SLICES": "2", "MEGASCALE_SLICE_ID": "1", "MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.2"}
    d = decide(env, tpu_vm=True, tpu_metadata=_md(GCE_TPU))
    assert d.initialize and (d.num_processes, d.process_id) == (8, 6)
    assert d.reason == "Cloud TPU pod slice with 2 slices x 4 hosts"
    one_host_slices = {**GCE_TPU, "worker-network-endpoints": "10.0.0.2"}
    assert decide(env, tpu_vm=True, tpu_metadata=_md(one_host_slices)).initialize   # 2 x v4-8


def test_gke_tpu_from_environment():
    d = decide(GKE_TPU, tpu_vm=True, modules=frozenset({"kubernetes"}))
    assert d.initialize and d.reason == "GKE TPU slice with 4 hosts" and (d.num_processes, d.process_id) == (4, 3)
    single = {**GKE_TPU, "TPU_WORKER_HOSTNAMES": "localhost", "TPU_WORKER_ID": "0"}
    assert not decide(single, tpu_vm=True).initialize


def test_tpu_variables_without_a_tpu_are_ignored_like_jax_does():
    # JAX's TPU detection needs TPU chips + libtpu (running_in_cloud_tpu_vm); the old rule initialized here.
    assert not decide({"TPU_WORKER_HOSTNAMES": "a,b", "TPU_WORKER_ID": "0"}, tpu_vm=False).initialize


# ----------------------------------------------------------------------------- Kubernetes, MPI


def test_kubernetes_indexed_job():
    d = decide(K8S_JOB, modules=frozenset({"kubernetes"}))
    assert d.initialize and d.reason.startswith("Kubernetes indexed Job") and d.num_processes is None
    d = decide(K8S_JOB)   # no kubernetes package: JAX cannot read the Job
    assert not d.initialize and d.reason.startswith("warning:") and "jax[k8s]" in d.reason
    assert not decide({"KUBERNETES_SERVICE_HOST": "10.1.0.1"}, modules=frozenset({"kubernetes"})).initialize


def test_open_mpi():
    d = decide(OMPI4)
    assert d.initialize and d.reason == "Open MPI job with 4 processes" and dict(d.kwargs) == TIMEOUTS
    assert not decide({**OMPI4, "OMPI_COMM_WORLD_SIZE": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "1"}).initialize
    # JAX's order: Open MPI before SLURM (mpirun inside an allocation)
    assert decide({**SLURM, **OMPI4}).reason == "Open MPI job with 4 processes"


def test_mpi_without_jax_detection_needs_mpi4py():
    ompi5 = {k: v for k, v in OMPI4.items() if k != "OMPI_MCA_orte_hnp_uri"}   # Open MPI 5 (PRRTE)
    with pytest.raises(DistributedSetupError, match="mpi4py"):
        decide(ompi5)                                  # 4 unconnected copies would train: refuse
    d = decide(ompi5, modules=frozenset({"mpi4py"}))
    assert d.initialize and d.kwargs["cluster_detection_method"] == "mpi4py"
    assert d.kwargs["local_device_ids"] == [0]         # mpi4py detection would show every GPU to every rank
    mpich = {"PMI_SIZE": "2", "PMI_RANK": "1"}
    assert decide(mpich, modules=frozenset({"mpi4py"})).initialize


# ----------------------------------------------------------------------------- explicit


def test_explicit_coordinator():
    d = decide({}, "10.0.0.1:1234", 2, 1)
    assert d.initialize and d.reason == "--coordinator 10.0.0.1:1234, 2 processes"
    assert dict(d.kwargs) == {"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1,
                              **TIMEOUTS}
    with pytest.raises(DistributedSetupError, match="--num_processes and --process_id missing"):
        decide({}, "10.0.0.1:1234")
    with pytest.raises(DistributedSetupError, match="--process_id must be in"):
        decide({}, "10.0.0.1:1234", 2, 2)
    # inside SLURM, the count and id may come from the launcher
    d = decide(SLURM, "gpu01:5555")
    assert d.initialize and "num_processes" not in d.kwargs and "from the SLURM job" in d.reason


def test_jax_coordinator_address():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}
    with pytest.raises(DistributedSetupError, match="--num_processes N --process_id I"):
        decide(env)
    d = decide(env, num_processes=4, process_id=0)
    assert d.initialize and "coordinator_address" not in d.kwargs   # JAX reads the variable itself
    assert d.reason == "JAX_COORDINATOR_ADDRESS=10.0.0.1:1234, 4 processes"
    d = decide({**SLURM, **env})
    assert d.initialize and d.reason == "SLURM job with 8 tasks, coordinator from JAX_COORDINATOR_ADDRESS=10.0.0.1:1234"


def test_nothing_set_and_already_initialized():
    d = decide({})
    assert d == Decision(False, "no multi-process launcher detected (single process)", {}, 1, 0)
    d = decide(SLURM, "10.0.0.1:1234", 2, 0, already_initialized=True)
    assert not d.initialize and d.reason == "jax.distributed is already initialized"


def test_timeouts_reach_the_kwargs():
    d = decide(SLURM, heartbeat_timeout_seconds=30, shutdown_timeout_seconds=60, initialization_timeout_seconds=900)
    assert (d.kwargs["heartbeat_timeout_seconds"], d.kwargs["shutdown_timeout_seconds"],
            d.kwargs["initialization_timeout"]) == (30, 60, 900)
    with pytest.raises(DistributedSetupError, match="--heartbeat_timeout_seconds must be a positive"):
        decide(SLURM, heartbeat_timeout_seconds=0)


# ----------------------------------------------------------------------------- applying it


@pytest.fixture
def fake_jax(monkeypatch):
    """Records jax.distributed.initialize calls instead of starting a coordinator."""
    calls = []
    state = {"initialized": False}

    def initialize(**kw):
        calls.append(kw)
        state["initialized"] = True
    monkeypatch.setattr(jax.distributed, "initialize", initialize)
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: state["initialized"])
    monkeypatch.setattr(dist, "_tpu_facts", lambda: (False, lambda key: None))
    monkeypatch.setitem(dist._state, "decision", None)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)   # restored after the test
    return calls


def test_maybe_initialize_passes_the_timeouts_and_prints_one_line(fake_jax, capsys):
    env = {**SLURM, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    d = dist.maybe_initialize_distributed(env=env, heartbeat_timeout_seconds=7)
    assert fake_jax == [{"heartbeat_timeout_seconds": 7, "shutdown_timeout_seconds": 300, "initialization_timeout": 300}]
    err = capsys.readouterr().err.splitlines()
    assert err == [d.line()] and "SLURM job with 8 tasks -> jax.distributed.initialize(" in err[0]
    # a second call does not initialize twice
    d2 = dist.maybe_initialize_distributed(env=env)
    assert len(fake_jax) == 1 and d2.reason == "jax.distributed is already initialized"


def test_maybe_initialize_prints_only_on_process_0(fake_jax, capsys):
    dist.maybe_initialize_distributed(env=SLURM)                  # process 5: initializes, prints nothing
    assert len(fake_jax) == 1 and capsys.readouterr().err == ""


def test_maybe_initialize_single_process_is_silent(fake_jax, capsys):
    d = dist.maybe_initialize_distributed(env={})
    assert not d.initialize and fake_jax == [] and capsys.readouterr().err == ""
    assert dist.exit_now_if_multiprocess(2) == 2   # single process: just the status
    d = dist.maybe_initialize_distributed(env={**SLURM, "SLURM_NTASKS": "1"})   # a launcher: one line
    assert fake_jax == [] and capsys.readouterr().err == "distributed: single-task SLURM job -> no jax.distributed.initialize\n"


def test_train_cli_passes_the_flags(monkeypatch):
    from sentjax.train import train as train_mod
    seen = {}

    def fake(coordinator, num_processes, process_id, **timeouts):
        seen.update(coordinator=coordinator, num_processes=num_processes, process_id=process_id, **timeouts)
        raise DistributedSetupError("stop here")
    monkeypatch.setattr(train_mod, "maybe_initialize_distributed", fake)
    argv = ["--config", os.path.join(REPO, "experiments", "simcse_unsup.py"), "--coordinator", "h:1",
            "--num_processes", "2", "--process_id", "1", "--heartbeat_timeout_seconds", "5"]
    assert train_mod.main(argv) == 2
    assert seen == {"coordinator": "h:1", "num_processes": 2, "process_id": 1, "heartbeat_timeout_seconds": 5,
                    "shutdown_timeout_seconds": 300, "initialization_timeout_seconds": 300}


# ----------------------------------------------------------------------------- real processes

WORKER = textwrap.dedent("""
    import sys, time
    from sentjax.parallel.distributed import maybe_initialize_distributed
    port, pid, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    maybe_initialize_distributed(f"127.0.0.1:{port}", 2, pid)   # the defaults: heartbeat 10 s
    import jax.numpy as jnp
    from jax.experimental import multihost_utils
    multihost_utils.process_allgather(jnp.ones(1))
    print("READY", flush=True)
    if mode == "raise" and pid == 1:
        time.sleep(1)
        raise RuntimeError("simulated failure in process 1")
    while True:
        multihost_utils.process_allgather(jnp.ones(1))
        time.sleep(0.05)
""")
SURVIVOR_LIMIT = 20  # seconds from the failure to the survivor's exit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(mode):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
               PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    port = _free_port()
    return [subprocess.Popen([sys.executable, "-c", WORKER, str(port), str(i), mode], env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True) for i in range(2)]


class _Reader:
    """Collects a process's output in a thread, so that waiting for a line has a deadline."""

    def __init__(self, proc):
        self.lines, self.proc = [], proc
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, prefix: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(line.startswith(prefix) for line in self.lines):
            assert self.proc.poll() is None or self.thread.is_alive(), f"exited early:\n{self.text()}"
            assert time.monotonic() < deadline, f"no {prefix!r} after {timeout} s:\n{self.text()}"
            time.sleep(0.05)

    def finish(self, timeout: float) -> float:
        """Seconds until the process exited (pytest.fail past the timeout)."""
        t0 = time.monotonic()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running after {timeout} s:\n{self.text()[-3000:]}")
        took = time.monotonic() - t0
        self.thread.join(timeout=10)
        return took


def _kill_all(procs):
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)


@pytest.mark.parametrize("mode", ["sigkill", "sigstop", "raise"])
def test_survivor_exits_within_seconds_when_a_process_dies(mode):
    procs = _start(mode)
    try:
        readers = [_Reader(p) for p in procs]
        for r in readers:
            r.wait_for("READY", timeout=120)
        t0 = time.monotonic()
        if mode == "sigkill":   # the survivor's next collective fails at once (connection reset)
            os.killpg(procs[1].pid, signal.SIGKILL)
        elif mode == "sigstop":  # a frozen or unreachable host: only the heartbeat timeout (10 s) sees it
            os.killpg(procs[1].pid, signal.SIGSTOP)
        else:   # process 1 raises; without the fail-fast exit it would wait ~300 s at JAX's shutdown barrier
            readers[1].finish(SURVIVOR_LIMIT)
            out1 = readers[1].text()
            assert procs[1].returncode == 1, out1
            assert "RuntimeError: simulated failure in process 1" in out1
            assert "distributed: exiting process 1 of 2 now (status 1) after the error above" in out1
        readers[0].finish(SURVIVOR_LIMIT)
        took, out0 = time.monotonic() - t0, readers[0].text()
        assert procs[0].returncode != 0, out0
        assert took < SURVIVOR_LIMIT, out0
        # what the user sees on the survivor: JAX's own fatal line, or ours after a failed collective
        assert ("Terminating process because the JAX distributed service detected fatal errors" in out0
                or "distributed: exiting process 0 of 2 now" in out0), out0[-3000:]
        print(f"{mode}: survivor exited with {procs[0].returncode} after {took:.1f} s")
    finally:
        _kill_all(procs)
