"""A torn (interrupted) save and Orbax's leftover warnings. SIGKILL then exact resume, on a real
training in a subprocess, is tests/test_faults.py's job."""
import os
import shutil

import numpy as np
import pytest

from sentjax.train.checkpoint import Checkpointer, TornCheckpointWarning


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
