"""mypy over sentjax/ with the ``[mypy]`` configuration of setup.cfg (docs/conventions.md: why mypy).

The cache lives in the repo's ``.pytest_cache`` (ignored by git), so a warm run takes seconds; a cold
one about 12 s of CPU.
"""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mypy_passes():
    out = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", os.path.join(REPO, ".pytest_cache", "mypy")],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"mypy found type errors (config: setup.cfg [mypy]):\n{out.stdout}{out.stderr}"
    assert "Success: no issues found" in out.stdout, out.stdout
