"""The Matryoshka recipe (experiments/matryoshka.py, run by ``run.py matryoshka``; ``recipes.py
matryoshka`` forwards there) runs end to end on a tiny encoder, so it cannot rot; smoke runs never
touch RESULTS.md. (multipos is the run.py module experiments/multipos.py, smoke-tested in test_experiments.py.)"""
import math
import os
import sys

import pytest

from sentjax.testing import minilm_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(minilm_dir() is None, reason="smoke runs use MiniLM's tokenizer (models extra)")
@pytest.mark.slow
def test_matryoshka_recipe_smoke(tmp_path):
    sys.path.insert(0, os.path.join(REPO, "experiments"))
    try:
        import recipes
    finally:
        sys.path.pop(0)
    before = open(recipes.RESULTS_MD, encoding="utf-8").read()
    res = recipes.matryoshka(str(tmp_path), smoke=True, with_infonce=True)
    rows = res["results"]
    assert set(rows) == {"InfoNCE", "Matryoshka(InfoNCE)"}
    for runs in rows.values():
        (r,) = runs
        # full size (32 wide) and each smoke truncation, from the module's extra_eval hook
        for k in ("stsb_dev", "stsb_dev_16", "stsb_dev_8"):
            assert math.isfinite(r[k]), k
        assert r["final_loss"] > 0
    # the Matryoshka row sums 3 InfoNCE losses (dims 32, 16, 8), the plain row has one
    assert rows["Matryoshka(InfoNCE)"][0]["final_loss"] > rows["InfoNCE"][0]["final_loss"]
    assert "| Matryoshka(InfoNCE) |" in res["section"] and "STS-B dev 16" in res["section"]
    assert open(recipes.RESULTS_MD, encoding="utf-8").read() == before
