"""Retrieval evaluation: the metrics on a 5-document example computed by hand and against the
libraries themselves (ir-measures, pytrec-eval), BEIR / TREC readers, the bundled tasks, BEIR by
name from a local URL, the ``retrieval`` evaluator in a short training run, and the CLI."""
import hashlib
import json
import math
import os
import zipfile

import numpy as np
import pytest

from sentjax.data import ir
from sentjax.data.readers import DataFormatError
from sentjax.eval.retrieval_ir import evaluate_retrieval, ir_metrics, metric_names

# 5 documents, 3 queries; ranking best first
QRELS = {"q1": {"d1": 1, "d3": 2}, "q2": {"d4": 1}, "q3": {"d5": 1, "d2": 0}}
RANKING = {"q1": ["d2", "d1", "d5", "d3", "d4"], "q2": ["d4", "d5", "d1", "d2", "d3"],
           "q3": ["d1", "d2", "d3", "d4", "d5"]}


def test_metrics_by_hand_on_five_documents():
    L = lambda r: math.log2(r + 1)  # noqa: E731
    # q1: d1 (rel 1) at rank 2, d3 (rel 2) at rank 4; ideal order d3, d1. q2: hit at 1. q3: hit at 5.
    ndcg = [(1 / L(2) + 2 / L(4)) / (2 / L(1) + 1 / L(2)), 1.0, (1 / L(5)) / 1.0]
    rr = [1 / 2, 1.0, 1 / 5]
    recall = {1: [0, 1, 0], 2: [1 / 2, 1, 0], 5: [1, 1, 1]}
    ap = [(1 / 2 + 2 / 4) / 2, 1.0, 1 / 5]
    got = ir_metrics(QRELS, RANKING, k_values=(1, 2, 5))
    assert tuple(got) == metric_names((1, 2, 5))
    want = {"ndcg_at_10": np.mean(ndcg), "mrr_at_10": np.mean(rr), "recall_at_1": np.mean(recall[1]),
            "recall_at_2": np.mean(recall[2]), "recall_at_5": np.mean(recall[5]), "map": np.mean(ap)}
    for k, v in want.items():
        assert got[k] == pytest.approx(100 * v, abs=1e-9), k
    # RR is cut at 10: a first hit at rank 11 scores 0, at rank 10 scores 1/10
    docs = [f"x{i}" for i in range(12)]
    assert ir_metrics({"q": {"x10": 1}}, {"q": docs}, (1,))["mrr_at_10"] == 0.0
    assert ir_metrics({"q": {"x9": 1}}, {"q": docs}, (1,))["mrr_at_10"] == pytest.approx(10.0)
    # a judged query the run lacks scores 0 and still counts in the mean
    assert ir_metrics({"a": {"x0": 1}, "b": {"x0": 1}}, {"a": docs}, (1,))["recall_at_1"] == pytest.approx(50.0)


def test_metrics_equal_the_libraries_on_random_rankings():
    import ir_measures
    import pytrec_eval
    from ir_measures import AP, R, RR, nDCG
    rng = np.random.default_rng(0)
    qrels = {f"q{i}": {f"d{j}": int(rng.integers(1, 4)) for j in rng.choice(40, rng.integers(1, 5), replace=False)}
             for i in range(30)}
    ranking = {q: [f"d{j}" for j in rng.permutation(40)[:20]] for q in qrels}
    got = ir_metrics(qrels, ranking, (1, 10, 20))
    run = {q: {d: float(20 - i) for i, d in enumerate(docs)} for q, docs in ranking.items()}
    ref = ir_measures.calc_aggregate([nDCG @ 10, RR @ 10, R @ 1, R @ 10, R @ 20, AP], qrels, run)
    for name, m in (("ndcg_at_10", nDCG @ 10), ("mrr_at_10", RR @ 10), ("recall_at_1", R @ 1),
                    ("recall_at_10", R @ 10), ("recall_at_20", R @ 20), ("map", AP)):
        assert got[name] == pytest.approx(100 * ref[m], abs=1e-9), name
    pe = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "map", "recall.1,10"}).evaluate(run)
    for name, key in (("ndcg_at_10", "ndcg_cut_10"), ("map", "map"), ("recall_at_10", "recall_10")):
        assert got[name] == pytest.approx(100 * np.mean([pe[q][key] for q in qrels]), abs=1e-9), name


def _bow(texts):
    """A deterministic bag-of-words encoder (no model): shared words -> similar vectors."""
    out = np.zeros((len(texts), 64))
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % 64] += 1.0
    return out + 1e-3


def test_ties_keep_the_corpus_order_not_the_librarys_docid_order():
    # d "b" and "a" are the same text, so their cosines tie exactly: the first in the corpus ranks first
    for first, second in (("a", "b"), ("b", "a")):
        task = ir.RetrievalTask({"q": "red ball"}, {first: "red ball", second: "red ball", "c": "fish"},
                                {"q": {second: 1}})
        r = evaluate_retrieval(_bow, task, k_values=(1, 3))
        assert [d for d, _ in r["run"]["q"]] == [first, second, "c"]
        assert r["mrr_at_10"] == pytest.approx(50.0) and r["recall_at_1"] == 0.0


def _write_beir(folder, qrels_lines, corpus=None):
    os.makedirs(os.path.join(folder, "qrels"), exist_ok=True)
    corpus = corpus or [{"_id": "d1", "title": "Cats", "text": "the cat sleeps"},
                        {"_id": "d2", "title": "", "text": "a dog runs in the park"},
                        {"_id": "d3", "text": "the man reads a book"}]
    with open(os.path.join(folder, "corpus.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in corpus)
    with open(os.path.join(folder, "queries.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in [{"_id": "1", "text": "cat sleeps"},
                                                    {"_id": "2", "text": "dog park"},
                                                    {"_id": "3", "text": "unjudged"}])
    with open(os.path.join(folder, "qrels", "test.tsv"), "w") as f:
        f.write("\n".join(qrels_lines) + "\n")
    return str(folder)


def test_beir_and_trec_readers(tmp_path):
    folder = _write_beir(tmp_path / "toy", ["query-id\tcorpus-id\tscore", "1\td1\t1", "2\td2\t2", "2\td3\t0"])
    t = ir.read_beir(folder)
    assert t.corpus == {"d1": "Cats the cat sleeps", "d2": "a dog runs in the park", "d3": "the man reads a book"}
    assert t.qrels == {"1": {"d1": 1}, "2": {"d2": 2, "d3": 0}} and set(t.queries) == {"1", "2", "3"}
    trec = tmp_path / "qrels.trec"
    trec.write_text("1 0 d1 1\n2 0 d2 2\n2 0 d3 0\n")
    assert ir.read_qrels(trec) == t.qrels
    r = evaluate_retrieval(_bow, t, k_values=(1, 3))
    assert r["n_queries"] == 2 and r["recall_at_1"] == 100.0  # the word overlap finds both
    with pytest.raises(FileNotFoundError, match="splits here: .*test"):
        ir.read_beir(folder, split="dev")
    bad = tmp_path / "bad.tsv"
    bad.write_text("query-id\tcorpus-id\tscore\n1\td1\n")
    with pytest.raises(DataFormatError, match="line 2: 2 columns"):
        ir.read_qrels(bad)
    with pytest.raises(DataFormatError, match="not in the queries file"):
        ir.RetrievalTask({"1": "x"}, {"d1": "y"}, {"9": {"d1": 1}})
    with pytest.warns(UserWarning, match="1 relevant document id.*'zz'.*never retrieved"):
        ir.RetrievalTask({"1": "x"}, {"d1": "y"}, {"1": {"d1": 1, "zz": 1}})
    with pytest.raises(DataFormatError, match="none of the relevant document ids"):
        ir.RetrievalTask({"1": "x"}, {"d1": "y"}, {"1": {"zz": 1}})
    (tmp_path / "c.jsonl").write_text('{"_id": "d1", "text": "x"}\n{"_id": "d1", "text": "y"}\n')
    with pytest.raises(DataFormatError, match="occurs twice"):
        ir.read_corpus(tmp_path / "c.jsonl")


def test_bundled_tasks():
    sts = ir.load_task("bundled:stsb-retrieval")
    assert (len(sts.queries), len(sts.corpus)) == (262, 1467)
    assert all(len(r) >= 1 and all(d in sts.corpus for d in r) for r in sts.qrels.values())
    de = ir.load_task("bundled:tatoeba-deu-eng")
    en = ir.load_task("bundled:tatoeba-eng-deu")
    from sentjax.data.readers import read_tatoeba
    p = read_tatoeba("deu")
    qid = next(q for q, t in de.queries.items() if t == p.src[5])
    assert [de.corpus[d] for d in de.qrels[qid]] == [p.tgt[5]]  # the query's translation is its relevant document
    assert len(de.queries) == len(en.corpus) and len(de.corpus) == len(en.queries)
    assert set(de.queries.values()) == set(en.corpus.values())
    assert "bundled:tatoeba-fra-eng" in ir.bundled_task_names()
    with pytest.raises(FileNotFoundError, match="unknown bundled retrieval task"):
        ir.load_task("bundled:tatoeba-deu-fra")


def test_beir_by_name_downloads_once_from_the_url(tmp_path, monkeypatch):
    src = _write_beir(tmp_path / "src" / "toy", ["query-id\tcorpus-id\tscore", "1\td1\t1"])
    with zipfile.ZipFile(tmp_path / "toy.zip", "w") as z:
        for root, _, files in os.walk(src):
            for f in files:
                p = os.path.join(root, f)
                z.write(p, os.path.relpath(p, tmp_path / "src"))
    monkeypatch.setenv("SENTJAX_BEIR_URL", (tmp_path.as_uri()))
    monkeypatch.setenv("SENTJAX_BEIR_CACHE", str(tmp_path / "cache"))
    t = ir.load_task("beir:toy")
    assert t.qrels == {"1": {"d1": 1}} and len(t.corpus) == 3
    os.remove(tmp_path / "toy.zip")  # the second load reads the cache
    assert ir.load_task("beir:toy").corpus == t.corpus
    with pytest.raises(FileNotFoundError, match="could not download BEIR dataset 'nope'"):
        ir.load_task("beir:nope")


@pytest.mark.slow
def test_the_evaluator_logs_its_metrics_during_training(tmp_path):
    from sentjax.train.train import train
    from tiny import make_tiny_workspace, tiny_config
    ws = make_tiny_workspace(str(tmp_path / "ws"))
    sents = open(ws.sentences).read().split("\n")[:40]
    folder = _write_beir(tmp_path / "beir", ["query-id\tcorpus-id\tscore"] + [f"{i}\td{i}\t1" for i in range(3)],
                         corpus=[{"_id": f"d{i}", "text": s} for i, s in enumerate(sents)])
    with open(os.path.join(folder, "queries.jsonl"), "w") as f:
        f.writelines(json.dumps({"_id": str(i), "text": s}) + "\n" for i, s in enumerate(sents[:3]))
    from sentjax.eval.evaluators import eval_config
    c = tiny_config(str(tmp_path / "ws"), total_steps=2)
    with c.unlocked():  # config.evals.ir = {type: "retrieval", ...}, as an experiment file writes it
        c.evals.ir = eval_config("retrieval", data=folder, every_steps=2, k_values=(1, 5))
        c.best_metric = "ir_ndcg_at_10"
    s = train(c, progress=False)
    rows = [json.loads(line) for line in open(os.path.join(c.workdir, "metrics.jsonl"))]
    logged = [r for r in rows if "ir_ndcg_at_10" in r]
    assert [r["step"] for r in logged] == [0, 2]
    for r in logged:
        assert {f"ir_{m}" for m in metric_names((1, 5))} <= set(r)
        assert 0 <= r["ir_recall_at_1"] <= r["ir_recall_at_5"] <= 100
    assert s["best_metric"] == "ir_ndcg_at_10"


def test_evaluator_config_is_checked():
    from sentjax.eval.evaluators import EVALUATORS
    from sentjax.registry import ConfigError
    for bad in ({"k_values": (10, 10)}, {"k_values": (0,)}, {"k_values": ()}, {"limit": -1}):
        with pytest.raises(ConfigError, match="k_values must be distinct positive integers"):
            EVALUATORS.build({"type": "retrieval", **bad})
    ev = EVALUATORS.build({"type": "retrieval", "k_values": [5, 1]})
    assert ev.metric_names() == ("ndcg_at_10", "mrr_at_10", "recall_at_5", "recall_at_1", "map")


def test_cli(tmp_path, capsys, monkeypatch):
    from sentjax import cli
    folder = _write_beir(tmp_path / "toy", ["query-id\tcorpus-id\tscore", "1\td1\t1", "2\td2\t1"])
    monkeypatch.setattr(cli, "load_encoder", lambda model, batch_size: _bow)
    run = tmp_path / "run.trec"
    args = ["eval", "retrieval", "--model", "x", "--queries", f"{folder}/queries.jsonl", "--corpus",
            f"{folder}/corpus.jsonl", "--qrels", f"{folder}/qrels/test.tsv", "--k", "1,3", "--json",
            "--run-out", str(run)]
    assert cli.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["recall_at_1"] == 100.0 and out["n_queries"] == 2
    lines = run.read_text().split("\n")
    assert lines[0].split()[:4] == ["1", "Q0", "d1", "1"] and len(lines) == 2 * 3 + 1
    assert cli.main(["eval", "retrieval", "--model", "x", "--data", folder, "--dot"]) == 0
    assert "ndcg_at_10" in capsys.readouterr().out
    assert cli.main(["eval", "retrieval", "--model", "x", "--queries", "q.jsonl"]) == 2
    assert "all three" in capsys.readouterr().err
    assert cli.main(["eval", "retrieval", "--model", "x", "--data", str(tmp_path / "none")]) == 2
    assert "not a BEIR folder" in capsys.readouterr().err


def test_recall_at_1_equals_the_tatoeba_evaluator_on_the_bundled_task():
    """Recall@1 of bundled:tatoeba-deu-eng / -eng-deu = the existing float64 NumPy bitext accuracy
    (sentjax.eval.retrieval) for the same embeddings: a translation shares a random vector with its source."""
    from sentjax.data.readers import read_tatoeba
    from sentjax.eval.retrieval import bitext_retrieval
    p = read_tatoeba("deu")
    rng = np.random.default_rng(0)
    base = rng.normal(size=(len(p), 16))
    table = {t: base[i] + 0.6 * rng.normal(size=16) for i, t in enumerate(p.src)}
    table |= {t: base[i] + 0.6 * rng.normal(size=16) for i, t in enumerate(p.tgt)}
    enc = lambda texts: np.stack([table[t] for t in texts])  # noqa: E731
    ref = bitext_retrieval(enc(p.src), enc(p.tgt))
    assert 20 < ref["src2tgt"] < 90  # neither trivial nor hopeless
    got = [evaluate_retrieval(enc, ir.load_task(f"bundled:tatoeba-{d}"), (1,))["recall_at_1"]
           for d in ("deu-eng", "eng-deu")]
    assert got == pytest.approx([ref["src2tgt"], ref["tgt2src"]], abs=1e-9)
