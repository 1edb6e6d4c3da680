"""experiments/mining.py: the three negative files share their (anchor, positive) rows, the mined
negatives obey the mining rule, and the experiment runs end to end on a tiny encoder (smoke)."""
import json
import math
import os
import sys

import pytest

from sentjax.data import readers
from sentjax.testing import minilm_dir

EXP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
sys.path.insert(0, EXP)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(minilm_dir() is None, reason="mines with all-MiniLM-L6-v2 (models extra)")]


def test_negative_files_and_smoke_run(tmp_path):
    import mining
    import run
    paths = mining.write_negatives(str(tmp_path / "neg"), limit=64)
    cols = ("sent0", "sent1", "hard_neg")
    mined, rand, contra = (readers.read_headed_tsv(paths[k], cols, k) for k in ("mined", "random", "contradiction"))
    assert mined[0] == rand[0] == contra[0] and mined[1] == rand[1] == contra[1]  # same rows, same order
    assert len(mined[0]) > 32
    assert all(n not in (a, p) for a, p, n in zip(*rand))
    assert mined[2] != contra[2] and mined[2] != rand[2]
    _, _, _, _, _, _, pos_score, neg_score, rank = readers.read_headed_tsv(
        paths["mined"], ("sent0", "sent1", "hard_neg", "qid", "pos_id", "neg_id", "pos_score", "neg_score", "rank"),
        "mined")
    assert all(10 <= int(r) < 50 for r in rank)
    assert all(float(n) <= float(p) - 0.05 + 1e-6 for p, n in zip(pos_score, neg_score))

    run.run("mining", seeds=(0,), smoke=True, out=str(tmp_path / "out"), workroot=str(tmp_path / "runs"),
            results_md=str(tmp_path / "RESULTS.md"))
    saved = json.load(open(tmp_path / "out" / "results.json"))
    for row in mining.ROWS:
        r = saved["results"][row][0]
        assert math.isfinite(r["stsb_dev"]) and 0 <= r["stsb_retrieval_ndcg10"] <= 100, r
    assert not (tmp_path / "RESULTS.md").exists()
