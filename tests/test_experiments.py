"""Smoke versions of every experiment config (a few steps of a tiny encoder), so the configs cannot
rot, plus the runner's helpers and the NLI-head evaluation against a float64 reference."""
import json
import math
import os
import sys

import numpy as np
import pytest

from sentjax.testing import minilm_dir

EXP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
sys.path.insert(0, EXP)
import run  # noqa: E402  (experiments/run.py)

needs_tok = pytest.mark.skipif(minilm_dir() is None, reason="smoke runs use MiniLM's tokenizer (models extra)")


def _smoke(tmp_path, name, rows):
    res = run.run(name, seeds=(0,), rows=rows, smoke=True, out=str(tmp_path / "out"),
                  workroot=str(tmp_path / "runs"), results_md=str(tmp_path / "RESULTS.md"))
    saved = json.load(open(tmp_path / "out" / "results.json"))
    for row in rows:
        r = saved["results"][row][0]
        assert math.isfinite(r["stsb_dev"]) and math.isfinite(r["final_loss"]), r
        assert r["steps"] == 3 and r["batch"] == 8
    assert (tmp_path / "out" / "loss.png").stat().st_size > 1000
    assert not (tmp_path / "RESULTS.md").exists()  # smoke runs never touch RESULTS.md
    return res, saved


@needs_tok
@pytest.mark.slow
def test_smoke_simcse_unsup_with_augmentation_keeps_earlier_rows(tmp_path):
    """A --rows run adds its rows to the earlier results.json: the other rows keep their numbers,
    loss curve (from results.json, else from the row's metrics.jsonl) and command, in the experiment's
    row order; rows no longer in ROWS are dropped."""
    (tmp_path / "out").mkdir()
    old_run = tmp_path / "runs" / "Crop 20%" / "seed3"
    old_run.mkdir(parents=True)
    (old_run / "metrics.jsonl").write_text('{"step": 1, "loss": 0.75}\n{"step": 2, "eval_sts": 1.0}\n')
    earlier = {"results": {"Crop 10%": [{"stsb_dev": 12.5, "final_loss": 0.25, "seed": 3}],
                           "Crop 20%": [{"stsb_dev": 13.5, "seed": 3}],
                           "a row that was renamed": [{"stsb_dev": 1.0}]},
               "curves": {"Crop 10%": [[1, 0.5], [2, 0.25]]}, "seeds": [3],
               "rows": ["Crop 10%", "a row that was renamed"]}
    (tmp_path / "out" / "results.json").write_text(json.dumps(earlier))
    rows = ["Word deletion 10%"]
    res, saved = _smoke(tmp_path, "simcse_unsup", rows)
    assert list(saved["results"]) == ["Crop 10%", "Crop 20%", "Word deletion 10%"]
    assert saved["curves"]["Crop 20%"] == [[1, 0.75]] and old_run.is_dir()  # other rows' run folders stay
    assert saved["results"]["Crop 10%"] == earlier["results"]["Crop 10%"]
    assert saved["curves"]["Crop 10%"] == [[1, 0.5], [2, 0.25]] and saved["curves"]["Word deletion 10%"]
    old_cmd = "python experiments/run.py simcse_unsup --seeds 3 --rows 'Crop 10%;a row that was renamed'"
    assert saved["row_commands"] == {"Crop 10%": old_cmd, "Crop 20%": old_cmd, "Word deletion 10%":
                                     "python experiments/run.py simcse_unsup --seeds 0 --rows 'Word deletion 10%'"}
    assert "| Word deletion 10% |" in res["section"] and "| Crop 10% | 12.50 |" in res["section"]
    assert f'Rows from an earlier command `{old_cmd}`: "Crop 10%", "Crop 20%".' in res["section"]
    table = (tmp_path / "out" / "table.md").read_text()
    (tmp_path / "out" / "loss.png").unlink()
    (tmp_path / "out" / "table.md").unlink()
    png = run.replot(str(tmp_path / "out"), "simcse_unsup", str(tmp_path / "runs"))
    assert png == str(tmp_path / "out" / "loss.png") and os.path.getsize(png) > 1000
    assert (tmp_path / "out" / "table.md").read_text() == table  # same results -> same section


@needs_tok
@pytest.mark.slow
def test_smoke_simcse_unsup_every_row_builds(tmp_path):
    import simcse_unsup
    from sentjax.data.pipeline import load_source
    for row in simcse_unsup.ROWS:
        if row == "Synonym replacement":
            continue  # needs the WordNet database (tested in test_augment.py when present)
        cfg = run.build_config(simcse_unsup, row, 0, True, str(tmp_path))
        for spec in cfg.data.datasets:
            assert load_source(spec).kind == "text"
    cfg = run.build_config(simcse_unsup, "Delete one word w/o dropout", 0, True, str(tmp_path))
    assert cfg.model.encoder.hidden_dropout_prob == 0.0


@needs_tok
@pytest.mark.slow
def test_smoke_sbert_nli_head_and_sts_stage(tmp_path):
    import sbert_nli
    rows = [sbert_nli.MAIN, "(u, v, |u-v|) then STS-B cosine"]
    _, saved = _smoke(tmp_path, "sbert_nli", rows)
    acc = saved["results"][sbert_nli.MAIN][0]["snli_dev_acc"]
    assert 0.0 <= acc <= 100.0
    assert "snli_dev_acc" not in saved["results"][rows[1]][0]  # the cosine stage has no head


@needs_tok
@pytest.mark.slow
def test_smoke_simcse_sup_gradcache_row(tmp_path):
    import simcse_sup
    cfg = run.build_config(simcse_sup, "batch 256 (GradCache, chunk 64), 4 steps", 0, True, str(tmp_path))
    assert cfg.gradient.gradcache_chunk == 1 and cfg.objective.use_hard_negatives
    _smoke(tmp_path, "simcse_sup", ["batch 256 (GradCache, chunk 64), 4 steps"])


@needs_tok
@pytest.mark.slow
def test_smoke_infonce_ablation_rows(tmp_path):
    import infonce_ablation
    temps = {run.build_config(infonce_ablation, r, 0, True, str(tmp_path)).objective.temperature
             for r in infonce_ablation.ROWS}
    assert temps == {0.01, 0.05, 0.1, 0.5, 1.0}
    _smoke(tmp_path, "infonce_ablation", ["T = 1.0, batch 64"])


def test_nli_head_logits_match_float64_reference():
    from sentjax.eval.nli_head import head_logits
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    for concat in [("u", "v"), ("|u-v|",), ("u", "v", "|u-v|"), ("u", "v", "|u-v|", "u*v")]:
        parts = {"u": u, "v": v, "|u-v|": np.abs(u - v), "u*v": u * v}
        k = rng.normal(size=(4 * len(concat), 3))
        b = rng.normal(size=3)
        ref = sum(parts[c] @ k[4 * i: 4 * (i + 1)] for i, c in enumerate(concat)) + b
        np.testing.assert_allclose(head_logits({"kernel": k, "bias": b}, u, v, concat), ref, rtol=1e-12)
    with pytest.raises(ValueError, match="concat"):
        head_logits({"kernel": np.zeros((12, 3)), "bias": np.zeros(3)}, u, v, ("u", "v"))


def test_table_and_results_md_section(tmp_path):
    table = run.make_table({"(u, v, |u-v|)": [{"stsb_dev": 80.0}, {"stsb_dev": 82.0}],
                            "base": [{"stsb_dev": 79.0, "sickr_trial": 70.0}]}, list(run.METRIC_NAMES))
    lines = table.splitlines()
    assert lines[0] == "| row | STS-B dev | SICK-R trial |"
    assert lines[2] == f"| (u, v, \\|u-v\\|) | 81.00 ± {np.std([80, 82], ddof=1):.2f} | – |"
    md = tmp_path / "R.md"
    run.update_results_md(str(md), "a", "## A\nfirst")
    run.update_results_md(str(md), "b", "## B")
    run.update_results_md(str(md), "a", "## A\nsecond")
    text = md.read_text()
    assert "second" in text and "first" not in text and text.index("## A") < text.index("## B")


def test_set_key_errors():
    from sentjax.configs.default import get_config as default_config
    c = default_config()
    run.set_key(c, "optim.lr", 1e-3)
    assert c.optim.lr == 1e-3
    with pytest.raises(KeyError, match="no section"):
        run.set_key(c, "optimm.lr", 1.0)


@needs_tok
@pytest.mark.slow
def test_smoke_distill_student_with_new_vocabulary(tmp_path):
    """Tiny teacher -> tiny student under the XLM-R vocabulary (multilingual extra); the teacher
    reads its own tokens of the source (``teacher_anchor``)."""
    import distill
    from sentjax.testing import multilingual_tokenizer_dir
    _, saved = _smoke(tmp_path, "distill", [distill.MAIN])
    r = saved["results"][distill.MAIN][0]
    assert math.isfinite(r["sts_de"]) and 0.0 <= r["tatoeba_deu"] <= 100.0
    if multilingual_tokenizer_dir() is not None:
        cfg = json.load(open(tmp_path / "runs" / distill.MAIN / "seed0" / "final_model" / "config.json"))
        assert cfg["vocab_size"] == 250002


@needs_tok
@pytest.mark.slow
def test_smoke_sigmoid_ablation_learned_scalars_reach_the_table(tmp_path):
    import sigmoid_ablation
    names = {run.build_config(sigmoid_ablation, r, 0, True, str(tmp_path)).objective.name
             for r in sigmoid_ablation.ROWS}
    assert names == {"infonce", "sigmoid"}
    row = next(r for r in sigmoid_ablation.ROWS if r.startswith("sigmoid") and "x200" in r)
    res, saved = _smoke(tmp_path, "sigmoid_ablation", [row])
    r = saved["results"][row][0]
    # 3 smoke steps at lr 3e-5 x 200: t = exp(t') has left its start of 10, b its start of -10
    assert r["logit_scale"] != pytest.approx(10.0, abs=1e-3) and r["logit_bias"] != pytest.approx(-10.0, abs=1e-3)
    assert "1/T or t (last step)" in res["section"]


@needs_tok
@pytest.mark.slow
def test_smoke_mlm_aux_rows_differ_only_in_the_mlm_term(tmp_path):
    """The two rows train the same config except the objective (same data, steps, seed), the MLM row's
    objective is InfoNCE (the plain row's block) + 0.1 MLM on the anchors, and its loss terms reach the table."""
    import mlm_aux
    plain = run.build_config(mlm_aux, mlm_aux.MAIN, 0, True, str(tmp_path / "a")).to_dict()
    multi = run.build_config(mlm_aux, mlm_aux.WITH_MLM, 0, True, str(tmp_path / "a")).to_dict()
    obj_plain, obj_multi = plain.pop("objective"), multi.pop("objective")
    plain.pop("workdir"), multi.pop("workdir")
    assert plain == multi
    infonce, mlm = obj_multi["terms"]
    from sentjax.losses import registry
    term = {k: v for k, v in infonce.items() if k != "weight"}
    assert {**registry.defaults("infonce"), **term} == obj_plain and infonce["weight"] == 1.0
    assert (mlm["name"], mlm["weight"], mlm["source"]) == ("mlm", mlm_aux.MLM_WEIGHT, "mlm")
    res, saved = _smoke(tmp_path, "mlm_aux", list(mlm_aux.ROWS))
    r0, r1 = saved["results"][mlm_aux.MAIN][0], saved["results"][mlm_aux.WITH_MLM][0]
    assert "mlm_first" not in r0 and math.isfinite(r0["infonce_last"])
    # a fresh head over MiniLM's 30,522 words: the masked-token cross-entropy starts near ln(30522) = 10.3
    assert 5.0 < r1["mlm_first"] < 15.0 and math.isfinite(r1["mlm_last"])
    assert r1["final_loss"] > r1["infonce_last"]  # the total includes 0.1 x MLM
    assert "| MLM CE, first 5 steps |" in res["section"]


@needs_tok
@pytest.mark.slow
def test_smoke_multipos_rows(tmp_path):
    """k = 1 / k = 2 in both forms on the nli-multipos data, the same batches in every row."""
    import multipos
    cfgs = {r: run.build_config(multipos, r, 0, True, str(tmp_path / "a")) for r in multipos.ROWS}
    assert {(c.objective.positives, c.objective.form) for c in cfgs.values()} == {
        (1, "mean_log_prob"), (2, "mean_log_prob"), (2, "log_sum_prob")}
    assert {c.data.datasets for c in cfgs.values()} == {(multipos.MULTIPOS_DATA,)}
    assert not any(c.objective.use_hard_negatives for c in cfgs.values())
    _smoke(tmp_path, "multipos", list(multipos.ROWS))
