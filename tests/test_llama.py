"""The decoder family (Llama / Qwen2) equals transformers' LlamaModel / Qwen2Model on tiny random
checkpoints: hidden states under left and right padding, causal and bidirectional attention,
last-token and mean pooling, packed rows, and the HF checkpoint round trip."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sentjax
from sentjax.errors import ConfigError
from sentjax.models import registry
from sentjax.models.hf_weights import hf_to_params, read_tensors
from sentjax.models.llama import DecoderConfig, DecoderEncoder
from sentjax.models.pooling import last_token_pool, mean_pool
from sentjax.models.sentence_model import SentenceEncoderModule
from sentjax.packing import pack_rows, packed_batch

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            rope_theta=500.0, rms_norm_eps=1e-5)


def _hf_model(kind, seed=0, **extra):
    torch.manual_seed(seed)
    if kind == "llama":
        cfg = transformers.LlamaConfig(**TINY, attn_implementation="eager", **extra)
        model = transformers.LlamaModel(cfg)
    else:
        cfg = transformers.Qwen2Config(**TINY, attn_implementation="eager", **extra)
        model = transformers.Qwen2Model(cfg)
    # Random init leaves RMSNorm at one and biases at zero: perturb every tensor.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _load(tmp_path, hf):
    hf.save_pretrained(tmp_path)
    cfg = registry.read_config(tmp_path / "config.json")
    tensors, _ = read_tensors(str(tmp_path))
    enc = DecoderEncoder(cfg)
    abstract = jax.eval_shape(lambda: enc.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
    params = hf_to_params(tensors, abstract["params"], name_map=registry.get_encoder(cfg.model_type).name_map)
    return cfg, enc, params


def _batch(side, seed=1):
    """4 texts of 11, 7, 3, 1 tokens padded to 11 on the given side."""
    rng = np.random.default_rng(seed)
    lengths = [11, 7, 3, 1]
    ids = np.zeros((4, 11), np.int64)
    mask = np.zeros((4, 11), np.int64)
    for r, n in enumerate(lengths):
        sl = slice(0, n) if side == "right" else slice(11 - n, 11)
        ids[r, sl] = rng.integers(3, 99, size=n)
        mask[r, sl] = 1
    return ids, mask


def _hf_states(hf, ids, mask):
    # sentjax numbers real tokens from 0 whatever the padding side (llama.py docstring)
    pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
    with torch.no_grad():
        return hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                  position_ids=torch.tensor(pos)).last_hidden_state.numpy()


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("causal", [True, False])
def test_decoder_matches_hf_left_and_right_padding(tmp_path, kind, causal):
    hf = _hf_model(kind, is_causal=causal) if not causal else _hf_model(kind)
    cfg, enc, params = _load(tmp_path, hf)
    assert cfg.model_type == kind and cfg.is_causal == causal and cfg.num_key_value_heads == 2
    assert cfg.qkv_bias == (kind == "qwen2") and cfg.rope_theta == 500.0
    states = {}
    for side in ("right", "left"):
        ids, mask = _batch(side)
        ours = np.asarray(enc.apply({"params": params}, jnp.asarray(ids, jnp.int32),
                                    jnp.asarray(mask, jnp.int32))["last_hidden_state"])
        ref = _hf_states(hf, ids, mask)
        real = mask.astype(bool)
        np.testing.assert_allclose(ours[real], ref[real], atol=1e-5, rtol=1e-5)
        # pooled: last real token and mean, against float64 NumPy on transformers' states
        h = ref.astype(np.float64)
        last = np.array([np.nonzero(m)[0].max() for m in mask])
        np.testing.assert_allclose(np.asarray(last_token_pool(jnp.asarray(ours), jnp.asarray(mask))),
                                   h[np.arange(4), last], atol=1e-5, rtol=1e-5)
        want_mean = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        np.testing.assert_allclose(np.asarray(mean_pool(jnp.asarray(ours), jnp.asarray(mask))),
                                   want_mean, atol=1e-5, rtol=1e-5)
        states[side] = ours[real]
    # same texts, same positions: the padding side does not change a real token's state
    np.testing.assert_allclose(states["left"], states["right"], atol=1e-5)
    # transformers without position_ids numbers left-padded tokens from the first pad: a constant
    # shift, which RoPE attention (a function of position differences only) does not see
    ids, mask = _batch("left")
    with torch.no_grad():
        shifted = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    np.testing.assert_allclose(shifted[mask > 0], states["left"], atol=1e-5, rtol=1e-5)


def test_right_padding_needs_no_position_ids(tmp_path):
    hf = _hf_model("llama", seed=3)
    cfg, enc, params = _load(tmp_path, hf)
    ids, mask = _batch("right", seed=2)
    ours = np.asarray(enc.apply({"params": params}, jnp.asarray(ids, jnp.int32),
                                jnp.asarray(mask, jnp.int32))["last_hidden_state"])
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    np.testing.assert_allclose(ours[mask > 0], ref[mask > 0], atol=1e-5, rtol=1e-5)


def test_causality_and_bidirectional_mode():
    """Causal: a token's state ignores later tokens. Bidirectional: it does not."""
    ids = jnp.asarray([[5, 6, 7, 8, 9], [5, 6, 7, 40, 41]], jnp.int32)
    for causal in (True, False):
        cfg = DecoderConfig(**{**TINY, "is_causal": causal})
        enc = DecoderEncoder(cfg)
        params = enc.init(jax.random.key(0), ids)["params"]
        h = np.asarray(enc.apply({"params": params}, ids)["last_hidden_state"])
        prefix_equal = np.allclose(h[0, :3], h[1, :3], atol=1e-6)
        assert prefix_equal == causal
        assert not np.allclose(h[0, 3:], h[1, 3:], atol=1e-3)


@pytest.mark.parametrize("causal", [True, False])
def test_packed_equals_padded(tmp_path, causal):
    """Packed rows: causal (or bidirectional) attention within each segment and positions
    restarting per segment give the padded (= unpacked) states and lasttoken / mean embeddings."""
    hf = _hf_model("qwen2", seed=4, **({} if causal else {"is_causal": False}))
    cfg, enc, params = _load(tmp_path, hf)
    rng = np.random.default_rng(5)
    texts = [list(rng.integers(3, 99, size=n)) for n in (9, 4, 1, 6, 12, 3, 7)]
    rows = pack_rows([len(t) for t in texts], 16, 4)
    assert any(len(r) > 1 for r in rows)
    packed = {k: jnp.asarray(v) for k, v in packed_batch(texts, rows, 16, 4, len(rows), 0, 0).items()}
    out = np.asarray(enc.apply({"params": params}, packed["input_ids"], packed["attention_mask"],
                               position_ids=packed["position_ids"],
                               segment_ids=packed["segment_ids"])["last_hidden_state"])
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            n = len(texts[i])
            ids = np.zeros((1, 12), np.int64)
            mask = np.zeros((1, 12), np.int64)
            ids[0, :n], mask[0, :n] = texts[i], 1
            ref = _hf_states(hf, ids, mask)[0, :n]
            np.testing.assert_allclose(out[r, start:start + n], ref, atol=1e-5, rtol=1e-5)
            start += n
    for pooling in ("lasttoken", "mean"):
        module = SentenceEncoderModule(cfg, pooling=pooling)
        full = {"encoder": params}
        emb = np.asarray(module.apply({"params": full}, packed))  # [rows, k, dim]
        padded = packed_batch(texts, [[i] for i in range(len(texts))], 12, 1, len(texts), 0, 0)
        padded = {k: jnp.asarray(padded[k]) for k in ("input_ids", "attention_mask")}
        alone = np.asarray(module.apply({"params": full}, padded))
        for r, row in enumerate(rows):
            np.testing.assert_allclose(emb[r, :len(row)], alone[row], atol=1e-5, rtol=1e-5)
            np.testing.assert_array_equal(emb[r, len(row):], 1.0)  # empty slots: a constant (no NaN gradient)


def test_last_token_pool_padding_sides_and_segments():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(3, 6, 4)).astype(np.float32)
    right = np.array([[1, 1, 1, 0, 0, 0], [1] * 6, [0] * 6])
    left = np.array([[0, 0, 0, 1, 1, 1], [1] * 6, [0] * 6])
    np.testing.assert_array_equal(np.asarray(last_token_pool(jnp.asarray(h), jnp.asarray(right))),
                                  np.stack([h[0, 2], h[1, 5], np.zeros(4, np.float32)]))
    np.testing.assert_array_equal(np.asarray(last_token_pool(jnp.asarray(h), jnp.asarray(left))),
                                  np.stack([h[0, 5], h[1, 5], np.zeros(4, np.float32)]))
    from sentjax.models.pooling import segment_pool
    seg = jnp.asarray([[1, 1, 2, 2, 2, 0], [1, 2, 3, 3, 3, 3], [0] * 6])
    starts = jnp.asarray([[0, 2, 0], [0, 1, 2], [0, 0, 0]])
    got = np.asarray(segment_pool(jnp.asarray(h), seg, starts, "lasttoken"))
    want = np.stack([np.stack([h[0, 1], h[0, 4], np.zeros(4)]), np.stack([h[1, 0], h[1, 1], h[1, 5]]),
                     np.zeros((3, 4))])
    np.testing.assert_array_equal(got, want.astype(np.float32))


def test_save_load_round_trip_through_transformers(tmp_path, tok):
    """sentjax.save writes a folder transformers loads with equal outputs; sentjax.load reads
    it back (lasttoken pooling kept in 1_Pooling)."""
    cfg = DecoderConfig(**{**TINY, "vocab_size": tok.backend.get_vocab_size(), "model_type": "qwen2"})
    model = sentjax.init_model(cfg, tok, jax.random.key(7), pooling="lasttoken")
    # perturb so that norms / biases are not at their init values
    model.params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape),
                                model.params)
    path = sentjax.save(model, tmp_path / "m")
    texts = ["the cat sat", "a dog", "the cat sat on the mat with a dog"]
    hf = transformers.AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    assert type(hf).__name__ == "Qwen2Model"
    batch = tok(texts)
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
                 attention_mask=torch.tensor(batch["attention_mask"], dtype=torch.long)).last_hidden_state.numpy()
    mask = batch["attention_mask"]
    last = mask.sum(1) - 1
    want = ref[np.arange(len(texts)), last]
    back = sentjax.load(path)
    assert back.module.pooling == "lasttoken" and back.config == model.config
    for packing in (True, False):
        np.testing.assert_allclose(back.encode(texts, packing=packing), want, atol=1e-5, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 back.params, model.params)
    # sentence-transformers reads the same folder; its Pooling module does the lasttoken step. Fed
    # sentjax's token ids: ST's AutoTokenizer picks a Qwen2 tokenizer class for this WordPiece file.
    st = pytest.importorskip("sentence_transformers").SentenceTransformer(path, device="cpu")
    with torch.no_grad():
        got = st({"input_ids": torch.tensor(batch["input_ids"], dtype=torch.long),
                  "attention_mask": torch.tensor(mask, dtype=torch.long)})["sentence_embedding"]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5, rtol=1e-5)


def test_causal_lm_checkpoint_loads(tmp_path):
    """A LlamaForCausalLM folder (model. prefix, lm_head) loads as the encoder of its base model;
    here with one k/v head (multi-query) and head_dim 32 != hidden / heads."""
    torch.manual_seed(0)
    lm = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **{**TINY, "num_key_value_heads": 1}, head_dim=32, attention_bias=True, mlp_bias=True,
        attn_implementation="eager")).eval()
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(0.05 * torch.randn_like(p))
    lm.save_pretrained(tmp_path)
    cfg, enc, params = _load(tmp_path, lm)
    assert (cfg.head_dim, cfg.num_key_value_heads, cfg.attention_bias, cfg.mlp_bias) == (32, 1, True, True)
    ids, mask = _batch("right")
    ours = np.asarray(enc.apply({"params": params}, jnp.asarray(ids, jnp.int32),
                                jnp.asarray(mask, jnp.int32))["last_hidden_state"])
    with torch.no_grad():
        ref = lm.model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    np.testing.assert_allclose(ours[mask > 0], ref[mask > 0], atol=1e-5, rtol=1e-5)


def test_bfloat16_compute_close_to_float32():
    cfg = DecoderConfig(**TINY)
    ids, mask = (jnp.asarray(a, jnp.int32) for a in _batch("left"))
    params = DecoderEncoder(cfg).init(jax.random.key(0), ids)["params"]
    out = {dt: np.asarray(DecoderEncoder(cfg, dtype=dt).apply({"params": params}, ids, mask)["last_hidden_state"],
                          np.float32) for dt in (jnp.float32, jnp.bfloat16)}
    real = np.asarray(mask) > 0
    err = np.abs(out[jnp.bfloat16][real] - out[jnp.float32][real]).max()
    assert 0 < err < 0.1 * np.abs(out[jnp.float32][real]).max(), err


@pytest.mark.parametrize("change, match", [
    (dict(num_key_value_heads=3), "not a multiple of num_key_value_heads"),
    (dict(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}), "RoPE scaling 'llama3'"),
    (dict(rope_scaling={"type": "linear", "factor": 2.0}), "RoPE scaling 'linear'"),
    (dict(model_type="qwen2", use_sliding_window=True), "use_sliding_window"),
    (dict(hidden_act="gelu"), "hidden_act 'gelu'"),
    (dict(model_type="qwen2", attention_bias=True), "qwen2 always has q/k/v biases"),
])
def test_unsupported_variants_are_refused(change, match):
    raw = {**TINY, "model_type": "llama", **change}
    with pytest.raises(ConfigError, match=match):
        registry.config_from_hf(raw, source="m/config.json")


def test_hf_config_keys_read():
    raw = transformers.LlamaConfig(**TINY, head_dim=32, eos_token_id=[2, 3]).to_dict()
    cfg = registry.config_from_hf(raw)
    assert (cfg.head_dim, cfg.rope_theta, cfg.eos_token_id, cfg.pad_token_id) == (32, 500.0, 2, 0)
    old_style = {k: v for k, v in raw.items() if k != "rope_parameters"} | {"rope_theta": 123.0}
    assert registry.config_from_hf(old_style).rope_theta == 123.0


def test_packed_gradient_equals_padded_gradient():
    """Training on packed rows: the parameter gradient of a loss on lasttoken embeddings equals the
    padded batch's (no gradient leaks across segments, none reaches padding)."""
    cfg = DecoderConfig(**{**TINY, "model_type": "qwen2", "num_hidden_layers": 1})
    module = SentenceEncoderModule(cfg, pooling="lasttoken")
    rng = np.random.default_rng(0)
    texts = [list(rng.integers(3, 99, size=n)) for n in (5, 3, 8, 2)]
    rows = [[2, 3], [0, 1]]
    packed = {k: jnp.asarray(v) for k, v in packed_batch(texts, rows, 10, 2, 2, 0, 0).items()}
    padded = packed_batch(texts, [[i] for i in range(4)], 8, 1, 4, 0, 0)
    padded = {k: jnp.asarray(padded[k]) for k in ("input_ids", "attention_mask")}
    params = module.init(jax.random.key(0), padded)["params"]
    target = jnp.asarray(rng.normal(size=(4, cfg.hidden_size)), jnp.float32)
    order = np.array([i for row in rows for i in row])

    def loss_packed(p):
        emb = module.apply({"params": p}, packed).reshape(4, -1)  # rows x 2 slots, all filled
        return jnp.sum((emb - target[order]) ** 2)

    def loss_padded(p):
        return jnp.sum((module.apply({"params": p}, padded) - target) ** 2)

    (lp, gp), (ld, gd) = jax.value_and_grad(loss_packed)(params), jax.value_and_grad(loss_padded)(params)
    np.testing.assert_allclose(float(lp), float(ld), rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-4), gp, gd)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(gd)) > 1e-3
