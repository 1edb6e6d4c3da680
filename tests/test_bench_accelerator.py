"""The accelerator benchmark (experiments/bench/accelerator.py) runs end to end on the CPU with
tiny sizes, so the one prepared GPU run does not die on a typo; its FLOP count is pinned."""
import pytest
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "experiments", "bench")


@pytest.mark.slow
def test_tiny_run_measures_every_row(tmp_path):
    out = tmp_path / "accelerator.md"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONPATH=REPO)
    r = subprocess.run([sys.executable, os.path.join(BENCH, "accelerator.py"), "--tiny", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| case")
            and not line.startswith("| B ")]
    # 2 dtypes x 2 batches x {padded, packed} + 2 dtypes x 2 batches + 1 tiled size
    assert len(rows) == 8 + 4 + 1, text
    assert not any("failed" in line or "skipped" in line for line in rows), text
    assert "| bfloat16 batch 16 packed |" in text and "| 2^8 |" in text


def test_flops_are_those_of_the_bert_formula():
    sys.path.insert(0, BENCH)
    import accelerator
    import common
    p = accelerator.FULL
    # One 10-token sentence through all-MiniLM-L6-v2: 6 x (2*10*(4*384^2 + 2*384*1536) + 4*10^2*384)
    assert accelerator.forward_flops([10], p) == 6 * (2 * 10 * (4 * 384 ** 2 + 2 * 384 * 1536) + 4 * 100 * 384)
    assert accelerator.forward_flops([10, 20], p) == (common.bert_flops_per_sentence(10)
                                                    + common.bert_flops_per_sentence(20))
