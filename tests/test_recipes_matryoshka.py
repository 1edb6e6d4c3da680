"""experiments/recipes.py matryoshka runs end to end on a tiny encoder, so it cannot rot; smoke runs never
touch RESULTS.md. (multipos is the run.py module experiments/multipos.py, smoke-tested in test_experiments.py.)"""
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
    assert set(res["rows"]) == {"InfoNCE, truncated", "Matryoshka(InfoNCE)"}
    for r in res["rows"].values():
        assert {"spearman_32", "spearman_16", "spearman_8"} <= set(r) and r["loss"] > 0
    assert "| Matryoshka(InfoNCE) |" in res["table"]
    assert open(recipes.RESULTS_MD, encoding="utf-8").read() == before
