"""load / encode / save on the real all-MiniLM-L6-v2 against sentence-transformers, and bad input."""
import json
import os
import shutil

import numpy as np
import pytest

import sentjax
from sentjax.models.config import ConfigError
from sentjax.models.hf_weights import CheckpointError
from sentjax.testing import minilm_dir

MINILM = minilm_dir()
needs_minilm = pytest.mark.skipif(MINILM is None, reason="needs the `models` extra")

SENTENCES = [
    "A man is playing a guitar.",
    "",
    "Wow!!! Really?! (yes) -- #hashtags, @mentions & 100% punctuation...",
    "Ein Mann spielt Gitarre auf der Straße.",
    "这是一个中文句子。",
    "Le chat est sur la table, n'est-ce pas ?",
    " ".join(["a very long sentence that keeps going"] * 80),  # > 256 tokens: truncated
    "short",
    "Émigré naïve café — accents and dashes.",
]


@pytest.fixture(scope="module")
def model():
    return sentjax.load(MINILM)


@pytest.fixture(scope="module")
def st_model():
    st = pytest.importorskip("sentence_transformers")
    return st.SentenceTransformer(MINILM, device="cpu")


@needs_minilm
def test_encode_matches_sentence_transformers(model, st_model):
    ours = model.encode(SENTENCES, batch_size=4)
    ref = st_model.encode(SENTENCES, batch_size=4, convert_to_numpy=True)
    assert ours.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert len(model.tokenizer.encode_ids([SENTENCES[6]])[0]) == 256


@needs_minilm
def test_encode_order_and_batch_size_invariance(model):
    a = model.encode(SENTENCES, batch_size=64)
    b = model.encode(SENTENCES[::-1], batch_size=3)[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert model.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="list of texts"):
        model.encode("a single string")


@needs_minilm
def test_save_round_trip(model, st_model, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    out = sentjax.save(model, tmp_path / "exported")
    for f in ("config.json", "model.safetensors", "tokenizer.json", "modules.json",
              "1_Pooling/config.json", "config_sentence_transformers.json"):
        assert os.path.isfile(os.path.join(out, f)), f
    ours = model.encode(SENTENCES)
    reloaded = sentjax.load(out).encode(SENTENCES)
    np.testing.assert_allclose(reloaded, ours, atol=1e-6)
    via_st = st.SentenceTransformer(out, device="cpu").encode(SENTENCES, convert_to_numpy=True)
    np.testing.assert_allclose(via_st, ours, atol=1e-5)


@needs_minilm
def test_cls_mlp_round_trip(model, tmp_path):
    """SimCSE's MLP is exported as a 2_Dense module and loads back equal."""
    import jax
    import jax.numpy as jnp
    from sentjax.models.sentence_model import SentenceEncoderModule
    module = SentenceEncoderModule(model.config, pooling="cls_mlp", mlp_at_inference=True)
    key = jax.random.key(0)
    mlp = {"mlp": {"kernel": 0.05 * jax.random.normal(key, (384, 384)), "bias": jnp.full((384,), 0.1)}}
    m = sentjax.SentenceModel(module, {"encoder": model.params["encoder"], "pooler": mlp},
                              model.tokenizer, model.source_dir)
    out = sentjax.save(m, tmp_path / "simcse")
    assert os.path.isfile(os.path.join(out, "2_Dense", "model.safetensors"))
    back = sentjax.load(out)
    assert back.module.pooling == "cls_mlp"
    np.testing.assert_allclose(back.encode(SENTENCES[:4]), m.encode(SENTENCES[:4]), atol=1e-6)
    st = pytest.importorskip("sentence_transformers")
    via_st = st.SentenceTransformer(out, device="cpu").encode(SENTENCES[:4], convert_to_numpy=True)
    np.testing.assert_allclose(via_st, m.encode(SENTENCES[:4]), atol=1e-5)


# ----------------------------------------------------------------------------- bad input


def test_missing_folder_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sentjax.load(str(tmp_path / "nope"))


def test_hub_id_offline_says_pass_local_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(sentjax.ModelLoadError, match="local folder"):
        sentjax.load("sentence-transformers/definitely-not-cached-model")


@needs_minilm
def test_malformed_config(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(MINILM, folder)
    (folder / "config.json").write_text("{ not json")
    with pytest.raises(ConfigError, match="config.json is not valid JSON"):
        sentjax.load(str(folder))
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 384}))
    with pytest.raises(ConfigError, match="missing required key"):
        sentjax.load(str(folder))
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ConfigError, match="not supported"):
        sentjax.load(str(folder))


@needs_minilm
def test_mis_shaped_and_missing_tensor_named(tmp_path):
    from safetensors.numpy import load_file, save_file
    folder = tmp_path / "m"
    shutil.copytree(MINILM, folder)
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["encoder.layer.3.attention.self.key.weight"] = np.zeros((384, 100), np.float32)
    del tensors["encoder.layer.5.output.dense.bias"]
    tensors["encoder.layer.9.extra.weight"] = np.zeros((3,), np.float32)
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError) as e:
        sentjax.load(str(folder))
    msg = str(e.value)
    assert "encoder.layer.3.attention.self.key.weight: checkpoint (384, 100), model expects (384, 384)" in msg
    assert "encoder.layer.5.output.dense.bias" in msg and "missing" in msg
    assert "encoder.layer.9.extra.weight" in msg and "unexpected" in msg


@needs_minilm
def test_truncated_weights_file(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(MINILM, folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        sentjax.load(str(folder))


def test_missing_weights_and_tokenizer(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "bert", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
         "num_attention_heads": 2, "intermediate_size": 16}))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        sentjax.load(str(tmp_path))


@needs_minilm
def test_packed_and_padded_encode_agree(model):
    packed = model.encode(SENTENCES * 3, packing=True)
    padded = model.encode(SENTENCES * 3, packing=False)
    np.testing.assert_allclose(packed, padded, atol=1e-5)
