"""Data for several positives per anchor (JSONL reader, NLI premises with k entailments) and the
trainer end to end: Matryoshka over multipos on 8 devices with GradCache == 1 device."""
import json

import jax
import numpy as np
import pytest

from sentjax.data import readers
from sentjax.data.pipeline import Pipeline
from sentjax.data.sources import DataError, load_source
from sentjax.train import step as step_lib
from sentjax.train.train import train
from tiny import tiny_config, _sentence


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_jsonl_reader_and_errors(tmp_path):
    rows = [{"anchor": f"a{i}", "positives": [f"p{i}", f"q{i}", f"r{i}"], "negative": f"n{i}"} for i in range(3)]
    src = load_source("multipos:" + write_jsonl(tmp_path / "ok.jsonl", rows))
    assert src.kind == "multipos" and len(src) == 3
    assert src.text_fields == ("anchor", "positive", "positive_1", "positive_2", "negative")
    assert src.columns["positive_2"] == ["r0", "r1", "r2"] and src.columns["negative"][1] == "n1"
    bad = {
        "ragged.jsonl": (rows[:1] + [{"anchor": "x", "positives": ["y"], "negative": "z"}], "line 2: 1 positives, but line 1 has 3"),
        "neg.jsonl": (rows[:1] + [{"anchor": "x", "positives": ["y", "z", "w"]}], "line 2: give a string \"negative\""),
        "shape.jsonl": ([{"anchor": "x", "positives": "y"}], "line 1: expected"),
    }
    for name, (content, msg) in bad.items():
        with pytest.raises(DataError, match=msg):
            load_source("multipos:" + write_jsonl(tmp_path / name, content))
    (tmp_path / "broken.jsonl").write_text('{"anchor": \n')
    with pytest.raises(DataError, match="line 1: not valid JSON"):
        load_source(f"multipos:{tmp_path / 'broken.jsonl'}")


def test_nli_premises_with_k_entailments(tmp_path):
    tsv = tmp_path / "nli.tsv"
    tsv.write_text("sentence1\tsentence2\tgold_label\n"
                   "P1\tE1\tentailment\nP1\tC1\tcontradiction\nP1\tE2\tentailment\nP1\tE3\tentailment\n"
                   "P2\tE4\tentailment\nP2\tN1\tneutral\nP3\tE5\tentailment\nP3\tE6\tentailment\n")
    mp = readers.nli_multipos(readers.read_nli_tsv(tsv), 2)
    assert mp.anchors == ["P1", "P3"] and mp.positives == [["E1", "E2"], ["E5", "E6"]]
    src = load_source(f"nli-multipos:2:{tsv}")
    assert src.columns == {"anchor": ["P1", "P3"], "positive": ["E1", "E5"], "positive_1": ["E2", "E6"]}
    for spec, msg in ((f"nli-multipos:{tsv}", "must look like 'nli-multipos:K:FILE"),
                      (f"nli-multipos:4:{tsv}", "no premise has 4 entailment hypotheses")):
        with pytest.raises(DataError, match=msg):
            load_source(spec)
    # the bundled NLI data feed it: SNLI dev + test and NLI-CAD premises with two entailments
    assert len(load_source("nli-multipos:2:snli-dev,snli-test")) > 400


@pytest.fixture(scope="module")
def kpos_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    seen, rows = set(), []
    while len(rows) < 64:
        texts = [_sentence(rng) for _ in range(3)]
        if len(set(texts) | seen) == len(seen) + 3:
            seen |= set(texts)
            rows.append({"anchor": texts[0], "positives": texts[1:]})
    return write_jsonl(tmp_path_factory.mktemp("kpos") / "kpos.jsonl", rows)


def test_pipeline_batches_every_positive_column(tok, kpos_file):
    pipe = Pipeline([load_source(f"multipos:{kpos_file}")], tok, batch_size=8, seed=0, dedup=True)
    batch = pipe.batch(0)
    assert {"anchor", "positive", "positive_1"} <= set(batch)
    assert batch["positive_1"]["input_ids"].shape == batch["anchor"]["input_ids"].shape


@pytest.mark.slow
def test_trainer_matryoshka_multipos_8_devices_gradcache_equals_1_device(tmp_path, kpos_file):
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake) devices; see tests/conftest.py")
    objective = {"objective.name": "matryoshka", "objective.dims": (32, 8), "objective.weights": (1.0, 0.5)}

    def final(name, **over):
        c = tiny_config(str(tmp_path / name), **{"total_steps": 2, "data.datasets": (f"multipos:{kpos_file}",),
                                                 **objective, **over})
        c.unlock()
        c.objective.inner = {"name": "multipos", "positives": 2, "temperature": 0.05, "form": "mean_log_prob",
                             "use_hard_negatives": True}
        c.lock()
        s = train(c, progress=False)
        assert np.isfinite(s["final"]["loss"]) and "loss_dim8" in s["final"]
        return jax.tree.map(np.asarray, step_lib.to_host(s["state"]["params"]))
    one = final("one", **{"mesh.data": 1, "gradient.method": "jit"})
    eight = final("eight", **{"mesh.data": 8, "gradient.method": "shard_map", "gradient.gradcache_chunk": 1})
    for a, b in zip(jax.tree.leaves(eight), jax.tree.leaves(one)):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=0)
