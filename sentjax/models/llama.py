"""The decoder family: Llama and Qwen2 (HF model_type ``llama`` / ``qwen2``) as sentence embedders.

Architecture (Touvron et al. 2023, "LLaMA"; Qwen2 differs only by biases on q/k/v):
  x_0 = embed_tokens[input_ids]
  per layer:  h = x + o_proj(Attn(RoPE(q_proj(n)), RoPE(k_proj(n)), v_proj(n))),  n = RMSNorm(x)
              x = h + down_proj(silu(gate_proj(m)) * up_proj(m)),                 m = RMSNorm(h)
  last_hidden_state = RMSNorm(x_L)
  RMSNorm(x) = w * x / sqrt(mean(x^2) + eps)                       (Zhang & Sennrich 2019)
  RoPE: rotate-half convention, inv_freq_i = rope_theta^(-2i/head_dim)   (Su et al. 2021)
  grouped-query attention: ``num_key_value_heads`` k/v heads, each shared by
  num_attention_heads / num_key_value_heads query heads (Ainslie et al. 2023).

Attention is causal (a token sees itself and earlier tokens) combined with the padding mask, or
bidirectional with ``is_causal=False`` (LLM2Vec, BehnamGhader et al. 2024: the same weights with
the causal mask removed; meant for fine-tuning, it changes every output). Pool with ``lasttoken``
(the last real token, which under causal attention is the only one that saw the whole text) or
``mean``.

Positions: sentjax numbers the real tokens of each sequence 0, 1, ... (``cumsum(mask) - 1``).
transformers' ``LlamaModel`` without explicit ``position_ids`` uses ``arange(length)`` whatever
the mask, which under left padding shifts every position by the number of pads; RoPE attention
depends only on position differences, so both give the same states (``tests/test_llama.py``
checks both). Packed rows restart positions at 0 per sentence and attend (causally, unless
``is_causal=False``) within their own sentence only.

Inputs (``[batch, length]`` int32): input_ids, attention_mask (1 = real token; left or right
padding), optional position_ids, optional segment_ids (packing: 0 = pad, 1..k); token_type_ids
is accepted and ignored (decoders have none). Output: ``{"last_hidden_state": [batch, length,
hidden]}``.

Parameter names mirror HF's ``LlamaModel`` (``embed_tokens/embedding``, ``layers_N/self_attn/
q_proj/kernel``, ``layers_N/mlp/gate_proj/kernel``, ``layers_N/input_layernorm/weight``,
``norm/weight``); causal-LM checkpoints (``model.`` prefix, ``lm_head``) load too.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sentjax.errors import ConfigError
from sentjax.models.hf_weights import NameMap
from sentjax.models.registry import EncoderFamily, register_encoder

MODEL_TYPES = ("llama", "qwen2")
_ARCHITECTURES = {"llama": "LlamaModel", "qwen2": "Qwen2Model"}

# ============================================================================ config


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Hyper-parameters of a Llama / Qwen2 decoder; field names follow HF's ``LlamaConfig``."""

    vocab_size: int = 32000  # rows of embed_tokens
    hidden_size: int = 576  # model width H
    intermediate_size: int = 1536  # SwiGLU width
    num_hidden_layers: int = 30  # decoder blocks
    num_attention_heads: int = 9  # query heads
    num_key_value_heads: int = 3  # k/v heads (GQA); must divide num_attention_heads
    head_dim: int = 0  # per-head width; 0 = hidden_size // num_attention_heads
    hidden_act: str = "silu"  # SwiGLU gate activation (only silu is supported)
    max_position_embeddings: int = 2048  # longest sequence (RoPE has no table; a limit only)
    rms_norm_eps: float = 1e-6  # RMSNorm epsilon
    rope_theta: float = 10000.0  # RoPE base
    attention_bias: bool = False  # biases on q/k/v/o (Llama's option; Qwen2 always has q/k/v ones)
    mlp_bias: bool = False  # biases on the MLP projections
    attention_dropout: float = 0.0  # dropout on attention probabilities (training)
    pad_token_id: int = 0  # id used to pad (any id: padding is masked, never embedded into text)
    bos_token_id: int | None = None  # kept so config.json round-trips
    eos_token_id: int | None = None  # kept so config.json round-trips
    is_causal: bool = True  # False: bidirectional attention (LLM2Vec style)
    model_type: str = "llama"  # one of MODEL_TYPES
    initializer_range: float = 0.02  # std of the normal init when training from scratch

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"model_type {self.model_type!r} is not a decoder family type; "
                              f"use one of {MODEL_TYPES}.")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}; fix config.json.")
        if not self.head_dim and self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}; set head_dim explicitly.")
        if self.model_type == "qwen2" and self.attention_bias:
            raise ConfigError("attention_bias applies to llama; qwen2 always has q/k/v biases "
                              "and no o_proj bias.")
        if not self.head_dim:  # resolved here so that a config equals its config.json round trip
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if self.dim_per_head % 2:
            raise ConfigError(f"RoPE needs an even head_dim, got {self.dim_per_head}.")
        if self.hidden_act != "silu":
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not supported by the decoder "
                              "family; Llama / Qwen2 use 'silu'.")
        if self.rope_theta <= 0:
            raise ConfigError(f"rope_theta must be positive, got {self.rope_theta!r}.")

    @property
    def dim_per_head(self) -> int:
        return self.head_dim

    @property
    def qkv_bias(self) -> bool:
        """Biases on q/k/v: Qwen2 always, Llama with attention_bias."""
        return self.attention_bias or self.model_type == "qwen2"

    @property
    def position_offset(self) -> int:
        """Position id of a sentence's first token."""
        return 0

    @property
    def max_tokens(self) -> int:
        return self.max_position_embeddings

    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any], source: str = "config") -> "DecoderConfig":
        """A Llama / Qwen2 config.json -> config; unsupported variants are refused by name."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(raw).__name__}.")
        model_type = raw.get("model_type", "llama")
        required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size")
        missing = [k for k in required if k not in raw]
        if missing:
            raise ConfigError(f"{source}: missing required key(s) {missing}; a {model_type} "
                              f"config.json needs {list(required)}.")
        rope = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise ConfigError(f"{source}: RoPE scaling {rope_type!r} is not supported; sentjax "
                              "implements the plain (default) rotary embedding.")
        if raw.get("use_sliding_window"):
            raise ConfigError(f"{source}: use_sliding_window=true is not supported; sentjax's "
                              "decoders use full attention (set it to false).")
        if raw.get("pretraining_tp", 1) != 1:
            raise ConfigError(f"{source}: pretraining_tp={raw['pretraining_tp']} is not supported.")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in raw.items() if k in fields and v is not None}
        kwargs["model_type"] = model_type
        kwargs.setdefault("num_key_value_heads", raw["num_attention_heads"])
        theta = rope.get("rope_theta", raw.get("rope_theta"))
        if theta is not None:
            kwargs["rope_theta"] = float(theta)
        for key in ("bos_token_id", "eos_token_id"):  # a list (several EOS ids) keeps the first
            if isinstance(kwargs.get(key), list):
                kwargs[key] = kwargs[key][0] if kwargs[key] else None
        try:
            return cls(**kwargs)
        except (ConfigError, TypeError) as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json written by ``save``: loadable by transformers."""
        d = dataclasses.asdict(self)
        d["rope_parameters"] = {"rope_type": "default", "rope_theta": d.pop("rope_theta")}
        d["architectures"] = [_ARCHITECTURES[self.model_type]]
        d["tie_word_embeddings"] = False
        if self.model_type == "qwen2":
            d.pop("attention_bias")
            d["use_sliding_window"] = False
        return d


# ============================================================================ Flax module

Dtype = Any


class RMSNorm(nn.Module):
    """w * x / sqrt(mean(x^2) + eps), statistics in float32 (as HF does)."""
    eps: float
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        w = self.param("weight", nn.initializers.ones, (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (w * x32.astype(self.dtype)).astype(self.dtype)


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding, rotate-half layout: x [b, heads, l, d], positions [b, l]."""
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    freqs = positions.astype(jnp.float32)[:, None, :, None] * inv_freq  # [b, 1, l, d/2]
    cos, sin = jnp.cos(freqs), jnp.sin(freqs)
    x1, x2 = x[..., : d // 2].astype(jnp.float32), x[..., d // 2:].astype(jnp.float32)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


class DecoderAttention(nn.Module):
    config: DecoderConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, positions, bias, deterministic: bool):
        cfg = self.config
        heads, kv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.dim_per_head
        init = nn.initializers.normal(cfg.initializer_range)
        qkv_bias = cfg.qkv_bias
        b, length, _ = x.shape

        def proj(n, name):  # [b, l, H] -> [b, n, l, d]
            y = nn.Dense(n * d, use_bias=qkv_bias, dtype=self.dtype, kernel_init=init, name=name)(x)
            return y.reshape(b, length, n, d).transpose(0, 2, 1, 3)

        q = rope(proj(heads, "q_proj"), positions, cfg.rope_theta)
        k = rope(proj(kv, "k_proj"), positions, cfg.rope_theta)
        v = proj(kv, "v_proj")
        # Query head h reads k/v head h // (heads / kv), as HF's repeat_kv.
        k, v = jnp.repeat(k, heads // kv, axis=1), jnp.repeat(v, heads // kv, axis=1)
        scores = (q @ k.swapaxes(-1, -2)) / jnp.sqrt(d).astype(self.dtype)
        # Softmax in float32 whatever the compute dtype: bf16 logits lose the tail.
        probs = jax.nn.softmax(scores.astype(jnp.float32) + bias, axis=-1)
        probs = nn.Dropout(cfg.attention_dropout)(probs, deterministic=deterministic)
        out = (probs.astype(self.dtype) @ v).transpose(0, 2, 1, 3).reshape(b, length, heads * d)
        return nn.Dense(cfg.hidden_size, use_bias=cfg.attention_bias, dtype=self.dtype,
                        kernel_init=init, name="o_proj")(out)


class SwiGLU(nn.Module):
    config: DecoderConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        init = nn.initializers.normal(cfg.initializer_range)
        dense = lambda n, name: nn.Dense(n, use_bias=cfg.mlp_bias, dtype=self.dtype,  # noqa: E731
                                         kernel_init=init, name=name)
        h = jax.nn.silu(dense(cfg.intermediate_size, "gate_proj")(x)) * dense(
            cfg.intermediate_size, "up_proj")(x)
        return dense(cfg.hidden_size, "down_proj")(h)


class DecoderLayer(nn.Module):
    config: DecoderConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, positions, bias, deterministic: bool):
        cfg = self.config
        n = RMSNorm(cfg.rms_norm_eps, self.dtype, name="input_layernorm")(x)
        x = x + DecoderAttention(cfg, self.dtype, name="self_attn")(n, positions, bias, deterministic)
        m = RMSNorm(cfg.rms_norm_eps, self.dtype, name="post_attention_layernorm")(x)
        return x + SwiGLU(cfg, self.dtype, name="mlp")(m)


def attention_bias(attention_mask: jax.Array, segment_ids: jax.Array | None,
                   causal: bool) -> jax.Array:
    """[b, 1, q, k] additive bias: 0 where query q may read key k, a large negative elsewhere.

    Causality is by index (key index <= query index): under left padding the pads come first
    and are masked as keys, so real tokens still see exactly their own prefix."""
    length = attention_mask.shape[1]
    if segment_ids is not None:
        allowed = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, None, :] > 0)
    else:
        allowed = jnp.broadcast_to((attention_mask > 0)[:, None, :], attention_mask.shape + (length,))
    if causal:
        idx = jnp.arange(length)
        allowed = allowed & (idx[None, :, None] >= idx[None, None, :])
    # A large finite negative (not -inf) keeps fully-masked (padding) rows finite.
    return jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min)[:, None].astype(jnp.float32)


def default_positions(attention_mask: jax.Array) -> jax.Array:
    """Real tokens numbered 0, 1, ... whatever the padding side; pads get 0."""
    return jnp.maximum(jnp.cumsum(attention_mask > 0, axis=1) - 1, 0).astype(jnp.int32)


class DecoderEncoder(nn.Module):
    """Token embeddings + decoder stack + final RMSNorm.

    Attributes:
      config: architecture hyper-parameters.
      dtype: compute dtype (float32 or bfloat16); parameters are always float32.
    """
    config: DecoderConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                 token_type_ids: jax.Array | None = None, position_ids: jax.Array | None = None,
                 segment_ids: jax.Array | None = None, deterministic: bool = True
                 ) -> dict[str, jax.Array]:
        cfg = self.config
        if attention_mask is None:
            attention_mask = (jnp.ones_like(input_ids) if segment_ids is None
                              else (segment_ids > 0).astype(jnp.int32))
        if position_ids is None:
            if segment_ids is not None:
                raise ValueError("packed rows (segment_ids) need position_ids restarting per "
                                 "sentence; build them with sentjax.packing.packed_batch.")
            position_ids = default_positions(attention_mask)
        bias = attention_bias(attention_mask, segment_ids, cfg.is_causal)
        x = nn.Embed(cfg.vocab_size, cfg.hidden_size,
                     embedding_init=nn.initializers.normal(cfg.initializer_range),
                     name="embed_tokens")(input_ids).astype(self.dtype)
        for i in range(cfg.num_hidden_layers):
            x = DecoderLayer(cfg, self.dtype, name=f"layers_{i}")(x, position_ids, bias, deterministic)
        return {"last_hidden_state": RMSNorm(cfg.rms_norm_eps, self.dtype, name="norm")(x)}


# ============================================================================ HF name map

_BASE_PREFIXES = ("model.",)  # LlamaForCausalLM & co. nest the base model under model.
_HEAD_PREFIXES = ("lm_head.", "score.")
_BUFFERS = r"(layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq"


def param_to_hf(path: tuple[str, ...]) -> tuple[str, bool]:
    """Flax param path -> (HF tensor name, whether transposed)."""
    parts: list[str] = []
    for p in path[:-1]:
        m = re.fullmatch(r"layers_(\d+)", p)
        parts += ["layers", m.group(1)] if m else [p]
    leaf = path[-1]
    if leaf == "kernel":
        return ".".join(parts + ["weight"]), True
    if leaf == "embedding":
        return ".".join(parts + ["weight"]), False
    return ".".join(parts + [leaf]), False  # RMSNorm "weight", Dense "bias"


def hf_to_param(name: str) -> tuple[tuple[str, ...], bool]:
    """HF tensor name (``model.`` stripped) -> (Flax param path, whether transposed)."""
    *mods, leaf = name.split(".")
    if len(mods) >= 2 and mods[0] == "layers" and mods[1].isdigit():
        mods = [f"layers_{mods[1]}"] + mods[2:]
    if leaf != "weight" or mods[-1:] in (["input_layernorm"], ["post_attention_layernorm"], ["norm"]):
        return (*mods, leaf), False
    if mods == ["embed_tokens"]:
        return (*mods, "embedding"), False
    return (*mods, "kernel"), True


NAME_MAP = NameMap(to_hf=param_to_hf, from_hf=hf_to_param, base_prefixes=_BASE_PREFIXES,
                   head_prefixes=_HEAD_PREFIXES, ignored=_BUFFERS)

FAMILY = register_encoder(EncoderFamily(
    name="llama", model_types=MODEL_TYPES, config_cls=DecoderConfig, module=DecoderEncoder,
    name_map=NAME_MAP, word_embeddings=("embed_tokens", "embedding")))
