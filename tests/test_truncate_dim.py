"""truncate_dim (Matryoshka models used at a smaller size): encode, save / load, the same embeddings
in sentence-transformers, and the STS evaluator's per-dimension Spearman."""
import json
import os

import numpy as np
import pytest

import sentjax
from sentjax.eval.evaluators import EVALUATORS
from sentjax.registry import ConfigError
from sentjax.testing import minilm_dir

MINILM = minilm_dir()
needs_minilm = pytest.mark.skipif(MINILM is None, reason="needs the `models` extra")
SENTENCES = ["A man is playing a guitar.", "", "A woman slices an onion.", "Ein Mann spielt Gitarre.",
             " ".join(["long"] * 300)]


@pytest.fixture(scope="module")
def model():
    return sentjax.load(MINILM)


@needs_minilm
def test_encode_truncates_and_renormalises(model):
    full = model.encode(SENTENCES)
    np.testing.assert_array_equal(model.encode(SENTENCES, truncate_dim=64), full[:, :64])
    unit = model.encode(SENTENCES, truncate_dim=64, normalize=True)
    np.testing.assert_allclose(unit, full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True),
                               rtol=1e-6)
    assert model.encode([], truncate_dim=32).shape == (0, 32)
    for bad in (0, 385, 2.5, True):
        with pytest.raises(ValueError, match=r"truncate_dim must be an integer in \[1, 384\]"):
            model.encode(SENTENCES, truncate_dim=bad)


@needs_minilm
def test_saved_truncate_dim_loads_the_same_here_and_in_sentence_transformers(model, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    m = sentjax.SentenceModel(model.module, model.params, model.tokenizer, model.source_dir, truncate_dim=64)
    out = sentjax.save(m, tmp_path / "m64")
    with open(os.path.join(out, "config_sentence_transformers.json")) as f:
        assert json.load(f)["truncate_dim"] == 64
    ours = m.encode(SENTENCES)
    assert ours.shape == (len(SENTENCES), 64)
    back = sentjax.load(out)
    assert back.truncate_dim == 64
    np.testing.assert_allclose(back.encode(SENTENCES), ours, atol=1e-6)
    assert sentjax.load(out, truncate_dim=32).encode(SENTENCES).shape == (len(SENTENCES), 32)
    ref = st.SentenceTransformer(out, device="cpu")
    assert ref.truncate_dim == 64
    np.testing.assert_allclose(ref.encode(SENTENCES, convert_to_numpy=True), ours, atol=1e-5)
    np.testing.assert_allclose(ref.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=True),
                               m.encode(SENTENCES, normalize=True), atol=1e-5)
    # a folder without truncate_dim keeps every coordinate
    plain = sentjax.save(model, tmp_path / "full")
    with open(os.path.join(plain, "config_sentence_transformers.json")) as f:
        assert "truncate_dim" not in json.load(f)
    assert sentjax.load(plain).truncate_dim is None


def test_sts_evaluator_reports_each_dimension():
    from scipy.stats import spearmanr
    from sentjax.data import readers
    rng = np.random.default_rng(0)
    table = {}

    def encode(texts):  # a fixed random vector per sentence, its first coordinates more informative
        for t in texts:
            table.setdefault(t, rng.standard_normal(16) * np.linspace(3, 0.1, 16))
        return np.stack([table[t] for t in texts])
    ev = EVALUATORS.build({"type": "sts_dims", "data": "stsb-dev", "limit": 64, "dims": (16, 4)})
    assert ev.metric_names() == ("spearman", "pearson", "spearman_16", "spearman_4")
    got = ev(encode)
    d = readers.read_sts(*readers.resolve_sts_data("stsbenchmark-dev"))
    e1, e2 = encode(list(d.sentences1[:64])), encode(list(d.sentences2[:64]))
    for m in (16, 4):
        u, v = e1[:, :m], e2[:, :m]
        cos = np.sum(u * v, 1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
        assert got[f"spearman_{m}"] == pytest.approx(100 * spearmanr(cos, d.scores[:64])[0], abs=1e-6)
    assert got["spearman_16"] == pytest.approx(got["spearman"], abs=1e-9)
    assert got["spearman"] == EVALUATORS.build({"type": "sts", "data": "stsb-dev", "limit": 64})(encode)["spearman"]
    assert got["spearman_4"] != pytest.approx(got["spearman_16"], abs=1e-3)
    with pytest.raises(ConfigError, match="dims must be positive integers"):
        EVALUATORS.build({"type": "sts_dims", "dims": (0,)})
    with pytest.raises(ValueError, match="17 > the model's embedding size 16"):
        EVALUATORS.build({"type": "sts_dims", "limit": 8, "dims": (17,)})(encode)
