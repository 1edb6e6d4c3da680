"""Exact resume after SIGKILL (subprocess), and a torn (interrupted) save."""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from sentjax.train.checkpoint import Checkpointer, TornCheckpointWarning

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_config(tmp_path, workdir):
    # one config file and workspace per run: the runs overlap in time
    path = tmp_path / f"cfg_{workdir.name}.py"
    path.write_text(textwrap.dedent(f"""
        from tiny import tiny_config
        def get_config():
            return tiny_config({str(tmp_path / f'ws_{workdir.name}')!r}, workdir={str(workdir)!r},
                               total_steps=6)
    """))
    return str(path)


def _cmd(cfg, *extra, hang=False):
    # hang: freeze after the first committed checkpoint (tests/hang_after_checkpoint.py), to be killed
    main = [os.path.join(REPO, "tests", "hang_after_checkpoint.py")] if hang else ["-m", "sentjax.train.train"]
    return [sys.executable, *main, "--config", cfg, "--no_progress", *extra]


def _env(**kw):
    # 2 devices: the data axis is really split (the 1-vs-8-device agreement is test_train_step's
    # job), at a fraction of the 8-device compile and step time.
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_DEFAULT_MATMUL_PRECISION="highest",
               PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]))  # tests/tiny.py
    env.update(kw)
    return env


def _state(workdir, step):
    return ocp.PyTreeCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state"))


def test_sigkill_then_resume_is_bitwise_exact(tmp_path, capsys):
    wa, wb = tmp_path / "a", tmp_path / "b"
    ref = subprocess.Popen(_cmd(_write_config(tmp_path, wa)), env=_env(), cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cfg_b = _write_config(tmp_path, wb)
    # Run B stops after its step-3 checkpoint is committed; then it is SIGKILLed.
    b = subprocess.Popen(_cmd(cfg_b, hang=True), env=_env(), cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in b.stdout:
        lines.append(line)
        if line.startswith("CHECKPOINT_COMMITTED"):
            break
    assert lines and lines[-1].split() == ["CHECKPOINT_COMMITTED", "3"], "".join(lines)
    b.send_signal(signal.SIGKILL)
    b.wait()
    out = subprocess.run(_cmd(cfg_b, "--resume"), env=_env(), cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Resumed from step 3" in out.stderr  # a log line (stdout holds only the summary)
    ref_out = ref.communicate()[0]
    assert ref.returncode == 0, ref_out
    sa, sb = _state(wa, 6), _state(wb, 6)
    assert int(sb["step"]) == 6 and int(sb["data_pos"]) == 6
    la, lb = jax.tree.leaves(sa), jax.tree.leaves(sb)
    assert len(la) == len(lb) > 10
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # params + optimizer state, bitwise
    # Starting again in a used workdir without --resume fails loudly (in-process: it stops before
    # compiling anything, so a subprocess would only add start-up time).
    from sentjax.train.train import main
    assert main(["--config", cfg_b, "--no_progress"]) == 2
    assert "pass --resume" in capsys.readouterr().err


def test_torn_checkpoint_falls_back_with_warning(tmp_path):
    d = str(tmp_path / "ck")
    state = {"params": {"w": np.arange(4.0, dtype=np.float32)}, "step": np.asarray(3, np.int32)}
    ck = Checkpointer(d, max_to_keep=3)
    ck.save(3, state, {"step": 3, "data_pos": 3})
    ck.close()
    # What a process killed during an async save leaves: Orbax's unfinalised temporary folder
    # with part of the items written (the rename to "6" never happened). The name is Orbax's own
    # (tests/test_faults.py kills a real save and sees it on disk).
    from orbax.checkpoint._src.path.atomicity_types import TMP_DIR_SUFFIX
    torn = os.path.join(d, "6" + TMP_DIR_SUFFIX)
    shutil.copytree(os.path.join(d, "3"), torn)
    shutil.rmtree(os.path.join(torn, "data"))
    for root, _, files in os.walk(os.path.join(torn, "state")):
        for f in files[: len(files) // 2]:
            open(os.path.join(root, f), "wb").close()
    with pytest.warns(TornCheckpointWarning, match="interrupted save.*step 3"):
        ck2 = Checkpointer(d, max_to_keep=3)
    assert ck2.latest_step() == 3
    restored, pos = ck2.restore(state)
    np.testing.assert_array_equal(restored["params"]["w"], state["params"]["w"])
    assert pos == {"step": 3, "data_pos": 3}
    ck2.close()


def test_resume_without_checkpoint_is_clear(tmp_path):
    ck = Checkpointer(str(tmp_path / "empty"), max_to_keep=1)
    with pytest.raises(FileNotFoundError, match="drop --resume"):
        ck.restore({"x": np.zeros(2)})
    ck.close()


def test_orbax_routine_warnings_are_dropped_and_others_kept():
    """Orbax's 'Waiting for previous save' (routine under load) must not reach the user's stderr;
    other absl warnings still do."""
    import logging
    import sentjax.train.checkpoint  # noqa: F401  (installs the filter)
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())
    absl = logging.getLogger("absl")
    h = Keep(level=logging.DEBUG)
    absl.addHandler(h)
    try:
        absl.warning("Waiting for previous save to complete took 1.208707 seconds. If this number is high, "
                     "consider checkpointing less frequently.")
        absl.warning("something else")
    finally:
        absl.removeHandler(h)
    assert seen == ["something else"]
