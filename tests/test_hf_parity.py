"""Our Flax encoders equal Hugging Face PyTorch models on tiny random checkpoints."""
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

import sentjax
from sentjax.models.bert import BertEncoder
from sentjax.models.config import EncoderConfig
from sentjax.models.hf_weights import hf_to_params, read_tensors
from sentjax.models.pooling import mean_pool

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0)


def _hf_model(kind, seed=0, **extra):
    torch.manual_seed(seed)
    if kind == "bert":
        cfg = transformers.BertConfig(**TINY, type_vocab_size=2, **extra)
        model = transformers.BertModel(cfg)
    elif kind == "roberta":
        cfg = transformers.RobertaConfig(**TINY, type_vocab_size=1, pad_token_id=1, **extra)
        model = transformers.RobertaModel(cfg)
    else:
        cfg = transformers.XLMRobertaConfig(**TINY, type_vocab_size=1, pad_token_id=1, **extra)
        model = transformers.XLMRobertaModel(cfg)
    # Random init leaves LayerNorm at identity and biases at zero; perturb them so the
    # comparison exercises every tensor of the name map.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _batch(pad_id, seed=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 99, size=(3, 11)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = pad_id
    types = np.zeros_like(ids)
    return ids, mask, types


@pytest.mark.parametrize("kind", ["bert", "roberta", "xlm-roberta"])
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_encoder_matches_hf(tmp_path, kind, fmt):
    hf = _hf_model(kind)
    hf.save_pretrained(tmp_path)
    if fmt == "bin":  # transformers 5 writes only safetensors; make the legacy pickle by hand
        os.remove(tmp_path / "model.safetensors")
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    assert os.path.isfile(tmp_path / ("model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"))
    cfg = EncoderConfig.from_json_file(tmp_path / "config.json")
    assert cfg.model_type == kind
    tensors, _ = read_tensors(str(tmp_path))
    enc = BertEncoder(cfg)
    ids, mask, types = _batch(cfg.pad_token_id)
    if kind == "bert":
        types[0, 5:] = 1  # exercise token-type embeddings
    import jax
    abstract = jax.eval_shape(lambda: enc.init(jax.random.key(0), jnp.asarray(ids, jnp.int32)))
    params = hf_to_params(tensors, abstract["params"])
    ours = enc.apply({"params": params}, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32),
                     jnp.asarray(types, jnp.int32))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                 token_type_ids=torch.tensor(types))
    np.testing.assert_allclose(np.asarray(ours["last_hidden_state"]),
                               ref.last_hidden_state.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ours["pooler_output"]), ref.pooler_output.numpy(),
                               atol=1e-5, rtol=1e-5)
    # Mask-aware mean pooling against a NumPy float64 reference on HF's states.
    h = ref.last_hidden_state.numpy().astype(np.float64)
    want = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    got = mean_pool(ours["last_hidden_state"], jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-5)


def test_bfloat16_compute_close_to_float32(tmp_path):
    hf = _hf_model("bert")
    hf.save_pretrained(tmp_path)
    cfg = EncoderConfig.from_json_file(tmp_path / "config.json")
    tensors, _ = read_tensors(str(tmp_path))
    import jax
    ids, mask, _ = _batch(0)
    outs = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        enc = BertEncoder(cfg, dtype=dtype)
        abstract = jax.eval_shape(lambda: enc.init(jax.random.key(0), jnp.asarray(ids, jnp.int32)))
        params = hf_to_params(tensors, abstract["params"])
        assert all(p.dtype == np.float32 for p in jax.tree.leaves(params))
        out = enc.apply({"params": params}, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32))
        outs[dtype] = np.asarray(out["last_hidden_state"], np.float32)
    assert outs[jnp.bfloat16].dtype == np.float32
    err = np.abs(outs[jnp.bfloat16] - outs[jnp.float32]).max()
    assert 0 < err < 0.1, err


def test_random_init_and_dropout_is_keyed():
    import jax
    from sentjax.models.sentence_model import SentenceEncoderModule, embed_fn
    cfg = EncoderConfig(**{**TINY, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1})
    module = SentenceEncoderModule(cfg, pooling="mean")
    batch = {"input_ids": jnp.ones((2, 8), jnp.int32), "attention_mask": jnp.ones((2, 8), jnp.int32)}
    params = module.init(jax.random.key(0), batch)["params"]
    f = embed_fn(module)
    det = f(params, batch)
    a, b = f(params, batch, jax.random.key(1)), f(params, batch, jax.random.key(1))
    c = f(params, batch, jax.random.key(2))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
    assert not np.allclose(np.asarray(a), np.asarray(det))


def test_packed_rows_match_separate_rows(tmp_path):
    """Block-diagonal attention (segment_ids) + restarted positions == encoding each text alone."""
    import jax
    hf = _hf_model("bert")
    hf.save_pretrained(tmp_path)
    cfg = EncoderConfig.from_json_file(tmp_path / "config.json")
    tensors, _ = read_tensors(str(tmp_path))
    enc = BertEncoder(cfg)
    abstract = jax.eval_shape(lambda: enc.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
    params = hf_to_params(tensors, abstract["params"])
    a, b = [5, 6, 7, 8], [9, 10, 11]
    packed = jnp.asarray([a + b + [0]], jnp.int32)
    seg = jnp.asarray([[1] * 4 + [2] * 3 + [0]], jnp.int32)
    pos = jnp.asarray([[0, 1, 2, 3, 0, 1, 2, 0]], jnp.int32)
    out = enc.apply({"params": params}, packed, position_ids=pos, segment_ids=seg)["last_hidden_state"]
    for text, sl in ((a, slice(0, 4)), (b, slice(4, 7))):
        alone = enc.apply({"params": params}, jnp.asarray([text], jnp.int32))["last_hidden_state"]
        np.testing.assert_allclose(np.asarray(out[0, sl]), np.asarray(alone[0]), atol=1e-5)


@pytest.mark.parametrize("kind", ["bert", "xlm-roberta"])
@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_packed_encode_matches_hf_pooled(tmp_path, kind, pooling):
    """sentjax.load + packed encode on a tiny HF model equals pooled HF PyTorch outputs."""
    from tokenizers import Tokenizer as HFTok, models, pre_tokenizers, processors
    hf = _hf_model(kind)
    hf.save_pretrained(tmp_path)
    vocab = {w: i for i, w in enumerate(["[PAD]", "<pad>", "[UNK]", "[CLS]", "[SEP]"]
                                        + [f"w{i}" for i in range(90)])}
    tok = HFTok(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 3), ("[SEP]", 4)])
    tok.save(str(tmp_path / "tokenizer.json"))
    pad = 1 if kind != "bert" else 0
    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{j}" for j in rng.integers(0, 90, size=n)) for n in (0, 3, 17, 40, 5, 9, 1)]
    model = sentjax.load(str(tmp_path), pooling=pooling)
    assert model.tokenizer.pad_token_id == pad
    got = model.encode(texts, batch_size=2, packing=True)
    got_padded = model.encode(texts, batch_size=3, packing=False)
    for i, t in enumerate(texts):
        ids = torch.tensor([tok.encode(t).ids])
        with torch.no_grad():
            h = hf(input_ids=ids).last_hidden_state[0].numpy().astype(np.float64)
        want = {"mean": h.mean(0), "cls": h[0], "max": h.max(0)}[pooling]
        np.testing.assert_allclose(got[i], want, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(got_padded[i], want, atol=1e-5, rtol=1e-5)
