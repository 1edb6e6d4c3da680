"""The MPNet family (HF model_type ``mpnet``; sentence-transformers/all-mpnet-base-v2): config from
config.json, the pure-functional Flax (linen) encoder and the Hugging Face tensor-name map;
registered in ``sentjax.models.registry``.

MPNet (Song et al., 2020, "MPNet: Masked and Permuted Pre-training for Language Understanding")
is a BERT-style post-LayerNorm encoder with two differences that matter here:
  - no token-type embeddings: the embeddings are LayerNorm(word[id] + position[p]) with RoBERTa
    positions (real tokens count from padding_idx + 1 = 2; Hugging Face hard-codes padding_idx 1);
  - every layer adds a learned relative-position bias to the attention logits, shared by all
    layers: ``scores[b, h, q, k] = q.k / sqrt(d) + W[bucket(k - q), h]`` with ``W`` the
    ``[num_buckets, heads]`` table ``encoder.relative_attention_bias`` and ``bucket`` T5's
    log-spaced bidirectional bucketing (32 buckets, max distance 128; see ``relative_buckets``).

Hugging Face computes the relative positions from the token index of the padded row. With right
padding that equals the distance between the real tokens' positions, so sentjax uses the index in a
padded row (exactly HF) and the per-sentence ``position_ids`` in a packed row (``segment_ids``
given): each packed sentence restarts its positions and attends only to itself, so its bias is the
one it has alone (``tests/test_mpnet.py`` pins packed == padded == HF).

Parameter tree (names mirror ``MPNetModel``, so the name map is mechanical):
  embeddings/{word_embeddings,position_embeddings}/embedding, embeddings/LayerNorm/{scale,bias}
  layer_N/attention/attn/{q,k,v,o}/{kernel,bias}, layer_N/attention/LayerNorm/{scale,bias}
  layer_N/intermediate/dense, layer_N/output/{dense,LayerNorm}
  relative_attention_bias/embedding   <-> encoder.relative_attention_bias.weight  [buckets, heads]
  pooler/dense (when the checkpoint has MPNet's tanh pooler)

Inputs (all ``[batch, length]`` int32): ``input_ids``; ``attention_mask`` (1 = real token);
``token_type_ids`` accepted and ignored (MPNet has none; sentjax's batches always carry zeros);
``position_ids`` (optional; default RoBERTa-style from the pad id); ``segment_ids`` (packing:
0 = pad, 1..k; block-diagonal attention, ``attention_mask`` ignored).
Output: ``{"last_hidden_state": [batch, length, hidden]}`` (+ ``"pooler_output"`` ``[batch, hidden]``).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sentjax.errors import ConfigError
from sentjax.models.bert import (BertIntermediate, BertPooler, BertSelfOutput, _ACTIVATIONS,
                                 padding_offset_positions)
from sentjax.models.hf_weights import NameMap, strip_base_prefix
from sentjax.models.registry import EncoderFamily, register_encoder

# Hugging Face's MPNet fixes these (MPNetEmbeddings.padding_idx, MPNetEncoder.compute_position_bias's
# defaults) whatever config.json says; a checkpoint that disagrees would not run there either.
PADDING_IDX = 1
BUCKETS = 32
MAX_DISTANCE = 128

# ============================================================================ config


@dataclasses.dataclass(frozen=True)
class MPNetConfig:
    """Hyper-parameters of an MPNet encoder; field names follow Hugging Face's ``MPNetConfig``."""

    vocab_size: int = 30527  # rows of the word-embedding matrix
    hidden_size: int = 768  # model width H
    num_hidden_layers: int = 12  # transformer blocks
    num_attention_heads: int = 12  # heads per block; must divide hidden_size
    intermediate_size: int = 3072  # feed-forward width
    hidden_act: str = "gelu"  # "gelu" is the exact erf GELU
    hidden_dropout_prob: float = 0.1  # dropout on embeddings and residual branches
    attention_probs_dropout_prob: float = 0.1  # dropout on attention probabilities
    max_position_embeddings: int = 514  # rows of the position table (2 are below the first token)
    relative_attention_num_buckets: int = 32  # rows of the relative-bias table (HF uses 32 of them)
    layer_norm_eps: float = 1e-5  # LayerNorm epsilon
    pad_token_id: int = PADDING_IDX  # id of <pad>; HF's MPNet only supports 1
    model_type: str = "mpnet"  # the HF model_type
    initializer_range: float = 0.02  # std of the normal init for training from scratch
    add_pooling_layer: bool = True  # whether the checkpoint has the tanh pooler

    def __post_init__(self) -> None:
        if self.model_type != "mpnet":
            raise ConfigError(f"MPNetConfig is for model_type 'mpnet', got {self.model_type!r}.")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "relative_attention_num_buckets"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}; fix config.json.")
        if self.hidden_act not in _ACTIVATIONS:
            raise ConfigError(
                f"hidden_act {self.hidden_act!r} is not supported; use one of {_ACTIVATIONS}.")
        if self.pad_token_id != PADDING_IDX:
            raise ConfigError(
                f"MPNet pad_token_id must be {PADDING_IDX} (Hugging Face's MPNet numbers positions "
                f"from padding_idx {PADDING_IDX} whatever the config says), got {self.pad_token_id}; "
                "use an MPNet tokenizer, whose <pad> is 1.")
        if self.relative_attention_num_buckets < BUCKETS:
            raise ConfigError(
                f"relative_attention_num_buckets {self.relative_attention_num_buckets} < {BUCKETS}: "
                f"MPNet buckets relative positions into {BUCKETS} (as Hugging Face does), so the "
                f"table needs at least {BUCKETS} rows.")
        if self.max_position_embeddings <= self.position_offset:
            raise ConfigError(f"max_position_embeddings must exceed {self.position_offset}, got "
                              f"{self.max_position_embeddings}.")

    @property
    def position_offset(self) -> int:
        """Position id of a sentence's first token (padding_idx + 1)."""
        return PADDING_IDX + 1

    @property
    def max_tokens(self) -> int:
        """Longest sequence the position table allows."""
        return self.max_position_embeddings - self.position_offset

    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any], source: str = "config") -> "MPNetConfig":
        """Builds a config from a Hugging Face config dict, ignoring keys MPNet does not use."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(raw).__name__}.")
        required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size")
        missing = [k for k in required if k not in raw]
        if missing:
            raise ConfigError(f"{source}: missing required key(s) {missing}; an MPNet config.json "
                              f"needs {list(required)}.")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in raw.items() if k in fields}
        try:
            return cls(**kwargs)
        except (ConfigError, TypeError) as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json written by ``save``: loadable by transformers as ``MPNetModel``."""
        d = dataclasses.asdict(self)
        d.pop("add_pooling_layer")
        d.update(architectures=["MPNetModel"], bos_token_id=0, eos_token_id=2)
        return d


# ============================================================================ relative buckets


@functools.lru_cache(maxsize=None)
def _bucket_table(num_buckets: int = BUCKETS, max_distance: int = MAX_DISTANCE) -> np.ndarray:
    """Bucket of every relative position r = key - query in [-max_distance, max_distance].

    T5 / HF ``MPNetEncoder.relative_position_bucket``: n = -r; half the buckets for n < 0 (keys
    after the query); |n| < num_buckets/4 exactly, larger distances log-spaced up to max_distance,
    beyond which the last bucket. Computed once on the host with HF's float32 formula, so the
    buckets do not depend on the accelerator's log; |r| >= max_distance all share a bucket, so
    callers clip r to the table.
    """
    r = np.arange(-max_distance, max_distance + 1)
    n = -r
    half = num_buckets // 2
    ret = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    exact = half // 2
    with np.errstate(divide="ignore"):
        scaled = (np.log(n.astype(np.float32) / np.float32(exact)) / np.float32(math.log(max_distance / exact))
                  * np.float32(half - exact))
    large = exact + np.where(n < exact, 0, scaled).astype(np.int64)
    large = np.minimum(large, half - 1)
    return (ret + np.where(n < exact, n, large)).astype(np.int32)


def relative_buckets(relative_position: jax.Array) -> jax.Array:
    """Integer ``key_pos - query_pos`` (any shape) -> its bucket in [0, 32)."""
    table = jnp.asarray(_bucket_table())
    r = jnp.clip(relative_position, -MAX_DISTANCE, MAX_DISTANCE)
    return table[r + MAX_DISTANCE]


# ============================================================================ Flax module

Dtype = Any


class MPNetEmbeddings(nn.Module):
    config: MPNetConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids, position_ids, deterministic: bool):
        cfg = self.config
        init = nn.initializers.normal(cfg.initializer_range)
        words = nn.Embed(cfg.vocab_size, cfg.hidden_size, embedding_init=init,
                         name="word_embeddings")(input_ids)
        positions = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, embedding_init=init,
                             name="position_embeddings")(position_ids)
        x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="LayerNorm")(words + positions)
        x = nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)
        return x.astype(self.dtype)


class MPNetSelfAttention(nn.Module):
    """q, k, v, scaled dot product + (relative + mask) bias, softmax, then the ``o`` projection."""
    config: MPNetConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, bias, deterministic: bool):
        cfg = self.config
        heads = cfg.num_attention_heads
        head_dim = cfg.hidden_size // heads
        dense = functools.partial(nn.Dense, cfg.hidden_size, dtype=self.dtype,
                                  kernel_init=nn.initializers.normal(cfg.initializer_range))
        b, length, _ = x.shape

        def heads_first(t):  # [b, l, H] -> [b, heads, l, head_dim]
            return t.reshape(b, length, heads, head_dim).transpose(0, 2, 1, 3)

        # Heads-first batched matmuls, as in bert.py (faster on XLA:CPU than the einsum).
        q = heads_first(dense(name="q")(x))
        k = heads_first(dense(name="k")(x))
        v = heads_first(dense(name="v")(x))
        scores = (q @ k.swapaxes(-1, -2)) / jnp.sqrt(head_dim).astype(self.dtype)
        # Softmax in float32 whatever the compute dtype: bf16 logits lose the tail.
        probs = jax.nn.softmax(scores.astype(jnp.float32) + bias, axis=-1)
        probs = nn.Dropout(cfg.attention_probs_dropout_prob)(probs, deterministic=deterministic)
        out = (probs.astype(self.dtype) @ v).transpose(0, 2, 1, 3).reshape(b, length, cfg.hidden_size)
        return dense(name="o")(out)


class MPNetAttention(nn.Module):
    """LayerNorm(dropout(attn(x)) + x): HF's MPNetAttention (the ``o`` projection sits in ``attn``)."""
    config: MPNetConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, bias, deterministic: bool):
        cfg = self.config
        h = MPNetSelfAttention(cfg, self.dtype, name="attn")(x, bias, deterministic)
        h = nn.Dropout(cfg.hidden_dropout_prob)(h, deterministic=deterministic)
        out = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=jnp.float32, name="LayerNorm")(
            h.astype(jnp.float32) + x.astype(jnp.float32))
        return out.astype(self.dtype)


class MPNetLayer(nn.Module):
    config: MPNetConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, bias, deterministic: bool):
        a = MPNetAttention(self.config, self.dtype, name="attention")(x, bias, deterministic)
        # The feed-forward half is BERT's, name for name (intermediate/dense, output/{dense,LayerNorm}).
        h = BertIntermediate(self.config, self.dtype, name="intermediate")(a)
        return BertSelfOutput(self.config, self.dtype, name="output")(h, a, deterministic)


class MPNetEncoder(nn.Module):
    """Embeddings + relative-position bias + transformer stack (+ optional pooler).

    Attributes:
      config: architecture hyper-parameters.
      dtype: compute dtype (float32 or bfloat16); parameters are always float32.
    """
    config: MPNetConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                 token_type_ids: jax.Array | None = None, position_ids: jax.Array | None = None,
                 segment_ids: jax.Array | None = None, deterministic: bool = True
                 ) -> dict[str, jax.Array]:
        del token_type_ids  # MPNet has no token types
        cfg = self.config
        length = input_ids.shape[1]
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if position_ids is None:
            position_ids = padding_offset_positions(input_ids, PADDING_IDX)
        if segment_ids is not None:
            allowed = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, None, :] > 0)
            allowed = allowed[:, None, :, :]  # [b, 1, q, k]
            # Per-sentence positions: each packed sentence sees the distances it has alone.
            relative = position_ids[:, None, :] - position_ids[:, :, None]  # [b, q, k]
        else:
            allowed = (attention_mask > 0)[:, None, None, :]  # [b, 1, 1, k]
            # HF: the token index of the row, whatever position_ids says.
            index = jnp.arange(length)
            relative = (index[None, :] - index[:, None])[None]  # [1, q, k]
        table = nn.Embed(cfg.relative_attention_num_buckets, cfg.num_attention_heads,
                         embedding_init=nn.initializers.normal(cfg.initializer_range),
                         name="relative_attention_bias")
        rel_bias = table(relative_buckets(relative)).transpose(0, 3, 1, 2)  # [b|1, heads, q, k]
        # The relative bias and the mask enter every layer's logits the same way: add them once.
        # A large finite negative (not -inf) keeps fully-masked rows finite, as in HF.
        bias = rel_bias.astype(jnp.float32) + jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min)

        x = MPNetEmbeddings(cfg, self.dtype, name="embeddings")(input_ids, position_ids, deterministic)
        for i in range(cfg.num_hidden_layers):
            x = MPNetLayer(cfg, self.dtype, name=f"layer_{i}")(x, bias, deterministic)
        out = {"last_hidden_state": x}
        if cfg.add_pooling_layer:
            out["pooler_output"] = BertPooler(cfg, self.dtype, name="pooler")(x)
        return out


# ============================================================================ HF name map

_BASE_PREFIXES = ("mpnet.",)  # MPNetForMaskedLM / ...ForSequenceClassification put the model there
_HEAD_PREFIXES = ("lm_head.", "classifier.", "qa_outputs.")
_BUFFERS = r"embeddings\.position_ids"
_REL_PATH = ("relative_attention_bias", "embedding")
_REL_NAME = "encoder.relative_attention_bias.weight"


def param_to_hf(path: tuple[str, ...]) -> tuple[str, bool]:
    """Flax encoder param path -> (HF tensor name, whether the tensor is transposed)."""
    if tuple(path) == _REL_PATH:
        return _REL_NAME, False
    parts: list[str] = []
    for p in path[:-1]:
        m = re.fullmatch(r"layer_(\d+)", p)
        parts += ["encoder", "layer", m.group(1)] if m else [p]
    leaf = path[-1]
    if leaf == "kernel":
        return ".".join(parts + ["weight"]), True
    if leaf in ("embedding", "scale"):
        return ".".join(parts + ["weight"]), False
    return ".".join(parts + [leaf]), False


def hf_to_param(name: str) -> tuple[tuple[str, ...], bool]:
    """HF tensor name (``mpnet.`` prefix stripped) -> (Flax param path, whether transposed)."""
    if name == _REL_NAME:
        return _REL_PATH, False
    *mods, leaf = name.split(".")
    if len(mods) >= 3 and mods[:2] == ["encoder", "layer"] and mods[2].isdigit():
        mods = [f"layer_{mods[2]}"] + mods[3:]
    if leaf != "weight":
        return (*mods, leaf), False
    if mods[-1:] == ["LayerNorm"]:
        return (*mods, "scale"), False
    if mods and mods[-1].endswith("_embeddings"):
        return (*mods, "embedding"), False
    return (*mods, "kernel"), True


NAME_MAP = NameMap(to_hf=param_to_hf, from_hf=hf_to_param, base_prefixes=_BASE_PREFIXES,
                   head_prefixes=_HEAD_PREFIXES, ignored=_BUFFERS)


def config_for_weights(config: MPNetConfig, tensors: Mapping[str, Any]) -> MPNetConfig:
    """The config with ``add_pooling_layer`` set by whether the checkpoint has the pooler."""
    has_pooler = any(n.startswith("pooler.") for n in strip_base_prefix(tensors, NAME_MAP))
    return dataclasses.replace(config, add_pooling_layer=has_pooler)


FAMILY = register_encoder(EncoderFamily(
    name="mpnet", model_types=("mpnet",), config_cls=MPNetConfig, module=MPNetEncoder,
    name_map=NAME_MAP, word_embeddings=("embeddings", "word_embeddings", "embedding"),
    config_for_weights=config_for_weights))
