"""The MPNet family equals Hugging Face's PyTorch MPNetModel on a tiny random checkpoint: the
relative-position buckets, the encoder with padding, packed == padded encoding (the relative bias
restarts with each packed sentence), and the export round trip through sentence-transformers.

The real all-mpnet-base-v2 check (400 MB, not in CI) is ``experiments/check_mpnet.py``.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sentjax
from sentjax.errors import ConfigError
from sentjax.models import registry
from sentjax.models.hf_weights import hf_to_params, read_tensors
from sentjax.models.mpnet import MPNetConfig, MPNetEncoder, relative_buckets
from sentjax.packing import pack_rows

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# max_position_embeddings 200: texts up to 190 tokens reach the saturated (>= 128) buckets.
TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=200, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0)
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # MPNet's ids 0..3
WORDS = [f"w{i}" for i in range(90)]


def _hf_mpnet(seed=0, pooler=True):
    torch.manual_seed(seed)
    model = transformers.MPNetModel(transformers.MPNetConfig(**TINY), add_pooling_layer=pooler)
    # Random init leaves LayerNorm at identity, biases at zero and the <pad> rows at zero:
    # perturb every tensor so the comparison exercises all of the name map.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _write_tokenizer(path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
                   "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>", "pad_token": "<pad>",
                   "unk_token": "<unk>", "model_max_length": 512}, f)
    return tok


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(folder of a tiny random MPNetModel + tokenizer, the torch model, the tokenizer)."""
    path = str(tmp_path_factory.mktemp("mpnet"))
    hf = _hf_mpnet()
    hf.save_pretrained(path)
    return path, hf, _write_tokenizer(path)


def _texts(seed=0, lengths=(0, 3, 17, 40, 5, 9, 1, 150, 12, 30)):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=n)) for n in lengths]


def test_relative_buckets_match_hf():
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder as HFEncoder
    r = np.arange(-700, 701)
    want = HFEncoder.relative_position_bucket(torch.tensor(r)).numpy()
    got = np.asarray(jax.jit(relative_buckets)(jnp.asarray(r, jnp.int32)))
    np.testing.assert_array_equal(got, want)
    assert set(np.unique(got)) == set(range(32)) - {16}  # every bucket HF reaches, reached


def test_encoder_matches_hf_with_padding(tiny):
    path, hf, _ = tiny
    cfg = registry.read_config(os.path.join(path, "config.json"))
    assert isinstance(cfg, MPNetConfig) and cfg.position_offset == 2 and cfg.max_tokens == 198
    tensors, _ = read_tensors(path)
    family = registry.get_encoder("mpnet")
    cfg = family.config_for_weights(cfg, tensors)
    assert cfg.add_pooling_layer
    enc = MPNetEncoder(cfg)
    rng = np.random.default_rng(1)
    ids = rng.integers(4, 99, size=(3, 150)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 70:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 1
    abstract = jax.eval_shape(lambda: enc.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
    params = hf_to_params(tensors, abstract["params"], name_map=family.name_map)
    ours = jax.jit(lambda p, i, m: enc.apply({"params": p}, i, m))(
        params, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    np.testing.assert_allclose(np.asarray(ours["last_hidden_state"]), ref.last_hidden_state.numpy(),
                               atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ours["pooler_output"]), ref.pooler_output.numpy(),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_packed_and_padded_encode_match_hf(tiny, pooling):
    """Packed rows (block-diagonal attention, relative bias from per-sentence positions) ==
    padded rows == each sentence alone through HF."""
    path, hf, tok = tiny
    texts = _texts()
    model = sentjax.load(path, pooling=pooling)
    assert model.tokenizer.pad_token_id == 1
    ids = model.tokenizer.encode_ids(texts)
    rows = pack_rows([len(x) for x in ids], 160, 16)
    assert max(len(r) for r in rows) >= 3  # several sentences really share a row
    packed = model.encode(texts, batch_size=4, packing=True)
    padded = model.encode(texts, batch_size=3, packing=False)
    for i, t in enumerate(texts):
        with torch.no_grad():
            h = hf(input_ids=torch.tensor([tok.encode(t).ids])).last_hidden_state[0].numpy()
        want = h.astype(np.float64).mean(0) if pooling == "mean" else h[0]
        np.testing.assert_allclose(packed[i], want, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(padded[i], want, atol=1e-5, rtol=1e-5)


def test_export_round_trip_through_sentence_transformers(tiny, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    path, _, _ = tiny
    texts = _texts(seed=2)
    model = sentjax.load(path, normalize=True)
    ours = model.encode(texts)
    out = sentjax.save(model, tmp_path / "export")
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["model_type"] == "mpnet"
    peer = st.SentenceTransformer(out, device="cpu")
    assert type(peer[0].auto_model).__name__ == "MPNetModel"
    np.testing.assert_allclose(peer.encode(texts, convert_to_numpy=True), ours, atol=1e-5)
    back = sentjax.load(out)
    assert back.config == model.config and back.module.normalize
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, back.params),
                 jax.tree.map(np.asarray, model.params))
    np.testing.assert_allclose(back.encode(texts), ours, atol=1e-6)


def test_checkpoint_without_pooler_and_bfloat16(tmp_path):
    hf = _hf_mpnet(seed=3, pooler=False)
    hf.save_pretrained(tmp_path)
    _write_tokenizer(str(tmp_path))
    texts = _texts(seed=3, lengths=(4, 20))
    f32 = sentjax.load(str(tmp_path))
    assert not f32.config.add_pooling_layer and "pooler" not in f32.params["encoder"]
    bf16 = sentjax.load(str(tmp_path), dtype=jnp.bfloat16)
    a, b = f32.encode(texts), bf16.encode(texts)
    assert b.dtype == np.float32 and 0 < np.abs(a - b).max() < 0.1


def test_config_refuses_what_hf_mpnet_cannot_run():
    with pytest.raises(ConfigError, match="pad_token_id must be 1"):
        MPNetConfig(**TINY, pad_token_id=0)
    with pytest.raises(ConfigError, match="relative_attention_num_buckets 16 < 32"):
        registry.config_from_hf(dict(TINY, model_type="mpnet", relative_attention_num_buckets=16),
                                source="x/config.json")
    with pytest.raises(ConfigError, match="not divisible"):
        MPNetConfig(**dict(TINY, num_attention_heads=5))
    with pytest.raises(ConfigError, match=r"x/config.json: missing required key.*hidden_size"):
        registry.config_from_hf({"model_type": "mpnet", "vocab_size": 9}, source="x/config.json")


@pytest.mark.skipif(not os.environ.get("SENTJAX_MPNET_DIR"),
                    reason="opt-in: set SENTJAX_MPNET_DIR to an all-mpnet-base-v2 folder (438 MB, not in CI)")
def test_real_all_mpnet_base_v2_matches_sentence_transformers(tmp_path):
    """The real checkpoint, on the first 50 STS-B dev pairs (the full run: experiments/check_mpnet.py)."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments"))
    import check_mpnet
    rc = check_mpnet.main(["--model", os.environ["SENTJAX_MPNET_DIR"], "--limit", "50",
                           "--out", str(tmp_path), "--results-md", ""])
    with open(tmp_path / "check.json") as f:
        r = json.load(f)
    assert r["max_abs_diff_packed"] <= 1e-5 and r["max_abs_diff_padded"] <= 1e-5, r
    assert r["export_st_max_abs_diff"] <= 1e-5 and r["export_reload_params_equal"], r
    assert abs(r["spearman_sentjax"] - r["spearman_st"]) < 1e-2 and r["spearman_st"] > 80, r
    assert rc == 0
