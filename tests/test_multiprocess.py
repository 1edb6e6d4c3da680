"""Two processes on localhost (jax.distributed, gloo CPU collectives, 4 fake devices each) train
the tiny config and end with the parameters of one process with 8 devices (within 1e-5). Both
processes take part in the checkpoint save (step 3), are SIGKILLed, and both restore from it."""
import os
import signal
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from sentjax.train import step as step_lib
from sentjax.train.train import train
from tiny import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(cfg, port, *extra, hang=False):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
               JAX_DEFAULT_MATMUL_PRECISION="highest", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]))  # tests/tiny.py
    # hang: freeze after the first committed checkpoint (tests/hang_after_checkpoint.py), to be killed
    main = [os.path.join(REPO, "tests", "hang_after_checkpoint.py")] if hang else ["-m", "sentjax.train.train"]
    return [subprocess.Popen(
        [sys.executable, *main, "--config", cfg, "--no_progress",
         "--coordinator", f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", str(i), *extra],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True) for i in range(2)]


def _kill(procs):
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        if p.stdout:
            p.stdout.close()


def test_two_processes_match_one_process_with_eight_devices(tmp_path):
    ws, workdir = tmp_path / "ws", tmp_path / "mp"
    cfg = tmp_path / "cfg.py"
    cfg.write_text(textwrap.dedent(f"""
        from tiny import tiny_config
        def get_config():
            return tiny_config({str(ws)!r}, workdir={str(workdir)!r}, total_steps=6)
    """))
    procs = []
    try:
        # Phase 1: both processes save step 3 together, then freeze and are killed.
        procs = _launch(str(cfg), _free_port(), hang=True)
        for i, p in enumerate(procs):
            lines = []
            for line in p.stdout:
                lines.append(line)
                if line.startswith("CHECKPOINT_COMMITTED"):
                    break
            assert lines and lines[-1].split() == ["CHECKPOINT_COMMITTED", "3"], f"process {i}:\n" + "".join(lines)
        _kill(procs)
        # Phase 2: both processes restore step 3 and finish.
        procs = _launch(str(cfg), _free_port(), "--resume")
        outs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
        for i, (p, out) in enumerate(zip(procs, outs)):
            assert p.returncode == 0, f"process {i}:\n{out}"
        assert "Resumed from step 3" in outs[0]
    finally:
        _kill(procs)

    ref = train(tiny_config(str(tmp_path / "ref"), **{"mesh.data": 8, "total_steps": 6}), progress=False)
    ref_state = jax.tree.map(np.asarray, step_lib.to_host(ref["state"]))
    # restore onto this process's 8 devices (the checkpoint names the 2 x 4 devices of the run)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, ref["state"])
    with ocp.StandardCheckpointer() as ck:
        got = ck.restore(os.path.join(workdir, "checkpoints", "6", "state"), abstract)
    got = jax.tree.map(np.asarray, step_lib.to_host(got))
    assert int(got["step"]) == 6
    la, lb = jax.tree.leaves(ref_state["params"]), jax.tree.leaves(got["params"])
    assert len(la) == len(lb) > 10
    for a, b in zip(la, lb):
        np.testing.assert_allclose(np.asarray(b), a, atol=1e-5, rtol=0)
