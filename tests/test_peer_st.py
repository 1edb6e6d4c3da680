"""experiments/peer_st.py: the sentence-transformers peer run sees sentjax's batches, and the
smoke comparison runs end to end (both engines, peer.json / peer.md)."""
import json
import math
import os
import sys

import numpy as np
import pytest

from sentjax.testing import minilm_dir

pytest.importorskip("sentence_transformers")
pytest.importorskip("torch")
if minilm_dir() is None:
    pytest.skip("all-MiniLM-L6-v2 (models extra) is not installed", allow_module_level=True)

EXP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
if EXP not in sys.path:
    sys.path.insert(0, EXP)

import peer_st  # noqa: E402
import run  # noqa: E402


def _pipeline(name, workroot, seed=0):
    import importlib

    from sentjax.tokenization import Tokenizer
    from sentjax.train.objectives import make_objective
    from sentjax.train.train import build_pipeline
    mod = importlib.import_module(name)
    cfg = run.build_config(mod, peer_st.main_row(mod), seed, True, str(workroot))
    tok = Tokenizer.from_dir(minilm_dir(), max_length=cfg.model.max_length)
    return cfg, build_pipeline(cfg, tok, dedup=make_objective(cfg.objective).in_batch_negatives), tok


@pytest.mark.parametrize("name,steps", [("simcse_unsup", (0, 1, 2)), ("sbert_nli", (0, 1, 2))])
def test_batch_texts_are_the_pipeline_batch(tmp_path, name, steps):
    """The texts (and NLI labels) the ST loop gets for a step tokenize to exactly the rows of
    ``Pipeline.batch(step)``, in the same order."""
    cfg, pipe, tok = _pipeline(name, tmp_path, seed=3)
    seen_sources = set()
    for step in steps:
        texts = peer_st.batch_texts(pipe, step)
        batch = pipe.batch(step)
        seen_sources.add(texts["source"])
        fields = [f for f in ("anchor", "positive", "negative") if f in batch and isinstance(batch[f], dict)]
        assert fields and set(fields) <= set(texts)
        for f in fields:
            assert len(texts[f]) == cfg.batch_size
            ids, mask = batch[f]["input_ids"], batch[f]["attention_mask"]
            rows = [list(r[m.astype(bool)]) for r, m in zip(ids, mask)]
            assert tok.encode_ids(texts[f]) == [[int(x) for x in r] for r in rows], (name, step, f)
        if "label" in batch:
            np.testing.assert_array_equal(texts["label"], batch["label"])
    if name == "simcse_unsup":
        b = peer_st.batch_texts(pipe, 0)
        assert b["positive"] == b["anchor"]  # dropout-only SimCSE: the positive is the sentence itself
        assert len(set(b["anchor"])) == len(b["anchor"])  # dedup, as sentjax's contrastive batches
    else:
        assert seen_sources == {0, 1}  # NLI-CAD and SICK, round robin


def test_spread_check_and_concat_flags():
    res = {"sentjax": [{"stsb_dev": 80.0}, {"stsb_dev": 82.0}],
           "sentence-transformers": [{"stsb_dev": 79.0}, {"stsb_dev": 80.5}, {"stsb_dev": 83.0}]}
    c = peer_st.spread_check(res, "stsb_dev")
    assert c["inside"] and c["distance"] == 0.0 and c["peer_min"] == 79.0 and c["peer_max"] == 83.0
    # Welch's t-test against the textbook formula (unequal variances, Welch-Satterthwaite df), float64
    from scipy import stats
    a, b = np.array([80.0, 82.0]), np.array([79.0, 80.5, 83.0])
    va, vb = a.var(ddof=1) / 2, b.var(ddof=1) / 3
    t = (a.mean() - b.mean()) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 1 + vb ** 2 / 2)
    assert c["welch_t"] == pytest.approx(t, rel=1e-12)
    assert c["welch_p"] == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9)
    res["sentjax"] = [{"stsb_dev": 85.0}]
    c = peer_st.spread_check(res, "stsb_dev")
    assert not c["inside"] and c["distance"] == pytest.approx(2.0)
    assert peer_st._concat_flags(("u", "v", "|u-v|")) == dict(
        concatenation_sent_rep=True, concatenation_sent_difference=True, concatenation_sent_multiplication=False)
    with pytest.raises(ValueError):
        peer_st._concat_flags(("|u-v|", "u", "v"))


@pytest.mark.slow
def test_peer_smoke_end_to_end(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    # --threads 1: two torch threads on a machine whose 2 cores are shared run many times slower
    assert peer_st.main(["simcse_unsup", "--seeds", "0", "--smoke", "--out", str(out), "--workroot", str(work),
                         "--threads", "1"]) == 0
    data = json.loads((out / "peer.json").read_text())
    assert data["smoke"] and data["seeds"] == [0]
    for engine in ("sentjax", "sentence-transformers"):
        (r,) = data["results"][engine]
        assert math.isfinite(r["stsb_dev"]), engine
        assert r["losses"] and all(math.isfinite(x) for x in r["losses"]), engine
        assert len(r["losses"]) == 3, engine  # one loss per step (smoke: log_every 1)
    ic = data["results"]["sentence-transformers"][0]["initial_check"]
    assert ic["same_token_ids"] is True
    # ST starts from the export of sentjax's tiny random encoder, SimCSE's MLP head copied: same start, same loss
    assert ic["max_abs_embedding_diff"] < 1e-5
    assert ic["loss_st"] == pytest.approx(ic["loss_sentjax"], rel=1e-5, abs=1e-6), ic
    assert "stsb_dev" in data["spread_check"]
    md = (out / "peer.md").read_text()
    assert "| sentjax |" in md and "| sentence-transformers |" in md
    assert "peer_st.py simcse_unsup --seeds 0 --smoke" in md
    md = (out / "peer.md").read_text()
    (out / "peer.md").unlink()
    assert peer_st.main(["simcse_unsup", "--report", "--out", str(out)]) == 0  # no training: same section
    assert (out / "peer.md").read_text() == md


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gist", "margin_mse", "matryoshka", "sbert_nli"])
def test_new_peer_smoke_and_loss_equality(tmp_path, monkeypatch, name):
    """The issue-16 peers (GISTEmbedLoss, MarginMSELoss, MatryoshkaLoss(MNRL)) and SoftmaxLoss end to end in
    smoke mode.
    The ST student loads the export of sentjax's seeded random encoder, so the untrained embeddings agree
    to float rounding, and on the first 8 rows of batch 0 (fresh models, dropout off) sentjax's objective
    and the ST loss module give the same loss: init, columns (anchor, positive, negative in that order),
    labels (teacher margins) and the loss rules (GIST's masking, Matryoshka's sum over truncations) match."""
    import recipes_distill
    monkeypatch.setattr(recipes_distill, "TRIPLETS_USED", 64)  # teacher scores for 64 triplets, not 1,667
    out, work = tmp_path / "out", tmp_path / "work"
    assert peer_st.main([name, "--seeds", "0", "--smoke", "--out", str(out), "--workroot", str(work),
                         "--threads", "1"]) == 0
    data = json.loads((out / "peer.json").read_text())
    assert data["smoke"] and data["row"] == peer_st.peer_of(name)[1]
    for engine in ("sentjax", "sentence-transformers"):
        (r,) = data["results"][engine]
        assert math.isfinite(r["stsb_dev"]), engine
        assert len(r["losses"]) == 3 and all(math.isfinite(x) for x in r["losses"]), engine
        if name == "matryoshka":  # STS-B dev at each smoke truncation, both engines
            assert math.isfinite(r["stsb_dev_16"]) and math.isfinite(r["stsb_dev_8"]), engine
    ic = data["results"]["sentence-transformers"][0]["initial_check"]
    assert ic["same_token_ids"] is True
    assert ic["max_abs_embedding_diff"] < 1e-5
    assert ic["loss_sentjax"] > 0 and math.isfinite(ic["loss_st"])
    assert ic["loss_st"] == pytest.approx(ic["loss_sentjax"], rel=1e-5, abs=1e-6), ic
    md = (out / "peer.md").read_text()
    assert f"peer_st.py {name} --seeds 0 --smoke" in md and "loss on the first 8 rows" in md


def test_peer_table_and_default_folders():
    """Every peer names an existing row; two peers of one module get separate output folders."""
    outs = set()
    for name in peer_st.EXPERIMENTS:
        mod, row = peer_st.peer_of(name)
        assert row in mod.ROWS
        outs.add(peer_st.default_out(name))
    assert len(outs) == len(peer_st.EXPERIMENTS)
    mod, _ = peer_st.peer_of("matryoshka")
    assert {"stsb_dev_256", "stsb_dev_32"} <= set(peer_st.metrics_of(mod))


def test_side_runs_leave_results_md_alone(tmp_path):
    """Only a run into the default folder rewrites experiments/RESULTS.md; ``--out DIR`` (a timing or
    trial run) writes its peer.md alone, unless a RESULTS.md is named explicitly."""
    default = os.path.join(peer_st.HERE, "RESULTS.md")
    assert peer_st.results_md_for(None, None) == default
    assert peer_st.results_md_for(str(tmp_path), None) == ""
    assert peer_st.results_md_for(str(tmp_path), str(tmp_path / "R.md")) == str(tmp_path / "R.md")
    assert peer_st.results_md_for(None, "") == ""
