"""The BERT family: BERT, MiniLM, RoBERTa, XLM-R, CamemBERT (HF model_type bert / roberta /
xlm-roberta / camembert). Config from config.json, the pure-functional Flax (linen) encoder, and
the Hugging Face tensor-name map; registered in ``sentjax.models.registry``.

The architectures differ only in a handful of config fields (position-id offset, vocabulary,
token-type vocabulary), so one config dataclass and one Flax module serve all of them.
Parameters live in an explicit pytree (``params = BertEncoder(cfg).init(...)["params"]``) whose
names mirror Hugging Face's ``BertModel``, so the name map is mechanical:
  embeddings.word_embeddings.weight           <-> embeddings/word_embeddings/embedding
  embeddings.LayerNorm.{weight,bias}          <-> embeddings/LayerNorm/{scale,bias}
  encoder.layer.N.attention.self.query.weight <-> layer_N/attention/self/query/kernel  (transposed)
  pooler.dense.{weight,bias}                  <-> pooler/dense/{kernel,bias}

Inputs (all ``[batch, length]`` int32):
  input_ids       token ids
  attention_mask  1 for real tokens, 0 for padding (keys that may be attended to)
  token_type_ids  segment ids of BERT's sentence-pair input (zeros when absent)
  position_ids    optional explicit positions (sequence packing restarts them per sentence)
  segment_ids     optional packing ids: 0 = padding, 1..k = the k-th sentence in the row;
                  when given, a token attends only to keys of its own sentence
                  (block-diagonal attention) and ``attention_mask`` is ignored.
Output: last hidden states ``[batch, length, hidden]`` and, if the config has one,
BERT's tanh pooler output ``[batch, hidden]``.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from sentjax.errors import ConfigError
from sentjax.models.hf_weights import NameMap, strip_base_prefix
from sentjax.models.registry import EncoderFamily, read_config_json, register_encoder

MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert")
_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")
_ARCHITECTURES = {"bert": "BertModel", "roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel",
                  "camembert": "CamembertModel"}

# ============================================================================ config


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Hyper-parameters of a BERT-family encoder.

    Field names follow Hugging Face's ``BertConfig`` so that a config.json maps 1:1.
    """

    vocab_size: int = 30522  # rows of the word-embedding matrix
    hidden_size: int = 384  # model width H
    num_hidden_layers: int = 6  # transformer blocks
    num_attention_heads: int = 12  # heads per block; must divide hidden_size
    intermediate_size: int = 1536  # feed-forward width
    hidden_act: str = "gelu"  # "gelu" is the exact erf GELU, "gelu_new" the tanh one
    hidden_dropout_prob: float = 0.1  # dropout on embeddings and residual branches
    attention_probs_dropout_prob: float = 0.1  # dropout on attention probabilities
    max_position_embeddings: int = 512  # rows of the position-embedding matrix
    type_vocab_size: int = 2  # token-type (segment) vocabulary; 1 for RoBERTa
    layer_norm_eps: float = 1e-12  # LayerNorm epsilon (1e-5 for RoBERTa/XLM-R)
    pad_token_id: int = 0  # id of [PAD] / <pad>
    model_type: str = "bert"  # one of MODEL_TYPES
    initializer_range: float = 0.02  # std of the truncated-normal init for training from scratch
    add_pooling_layer: bool = True  # whether the checkpoint has BERT's tanh pooler

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(
                f"model_type {self.model_type!r} is not supported; sentjax encodes "
                f"{', '.join(MODEL_TYPES)}.")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}; fix config.json.")
        if self.hidden_act not in _ACTIVATIONS:
            raise ConfigError(
                f"hidden_act {self.hidden_act!r} is not supported; use one of {_ACTIVATIONS}.")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")

    @property
    def uses_padding_offset_positions(self) -> bool:
        """RoBERTa-style models number positions from pad_token_id + 1."""
        return self.model_type != "bert"

    @property
    def position_offset(self) -> int:
        """Position id of a sentence's first token."""
        return self.pad_token_id + 1 if self.uses_padding_offset_positions else 0

    @property
    def max_tokens(self) -> int:
        """Longest sequence the position table allows (RoBERTa loses pad_token_id + 1 rows)."""
        return self.max_position_embeddings - self.position_offset

    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any], source: str = "config") -> "EncoderConfig":
        """Builds a config from a Hugging Face config dict, ignoring keys we do not use."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(raw).__name__}.")
        model_type = raw.get("model_type", "bert")
        if model_type not in MODEL_TYPES:
            raise ConfigError(
                f"{source}: model_type {model_type!r} is not supported; sentjax encodes "
                f"{', '.join(MODEL_TYPES)}.")
        required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size")
        missing = [k for k in required if k not in raw]
        if missing:
            raise ConfigError(
                f"{source}: missing required key(s) {missing}; a BERT-family config.json needs "
                f"{list(required)}.")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in raw.items() if k in fields}
        kwargs["model_type"] = model_type
        if "layer_norm_eps" not in raw and model_type != "bert":
            kwargs["layer_norm_eps"] = 1e-5
        if "pad_token_id" not in raw and model_type != "bert":
            kwargs["pad_token_id"] = 1
        try:
            return cls(**kwargs)
        except (ConfigError, TypeError) as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "EncoderConfig":
        """Reads ``config.json``; a missing or malformed file raises an error naming it."""
        return cls.from_hf_dict(read_config_json(path), source=os.fspath(path))

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json written by ``save``: loadable by transformers."""
        d = dataclasses.asdict(self)
        d["architectures"] = [_ARCHITECTURES[self.model_type]]
        d.pop("add_pooling_layer")
        d["position_embedding_type"] = "absolute"
        return d


# ============================================================================ Flax module


Dtype = Any


def _activation(name: str):
    if name == "gelu":
        return functools.partial(jax.nn.gelu, approximate=False)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return functools.partial(jax.nn.gelu, approximate=True)
    if name == "relu":
        return jax.nn.relu
    return jax.nn.silu


def padding_offset_positions(input_ids: jax.Array, pad_token_id: int) -> jax.Array:
    """RoBERTa position ids: non-pad tokens count from pad_token_id + 1, pads get pad_token_id."""
    mask = (input_ids != pad_token_id).astype(jnp.int32)
    return jnp.cumsum(mask, axis=1) * mask + pad_token_id


class BertEmbeddings(nn.Module):
    config: EncoderConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids, token_type_ids, position_ids, deterministic: bool):
        cfg = self.config
        init = nn.initializers.normal(cfg.initializer_range)
        words = nn.Embed(cfg.vocab_size, cfg.hidden_size, embedding_init=init,
                         name="word_embeddings")(input_ids)
        positions = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, embedding_init=init,
                             name="position_embeddings")(position_ids)
        types = nn.Embed(cfg.type_vocab_size, cfg.hidden_size, embedding_init=init,
                         name="token_type_embeddings")(token_type_ids)
        x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="LayerNorm")(words + positions + types)
        x = nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)
        return x.astype(self.dtype)


class BertSelfAttention(nn.Module):
    config: EncoderConfig
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

        # Heads-first layout: XLA:CPU runs these batched matmuls ~4x faster than the
        # equivalent "bqhd,bkhd->bhqk" einsum (experiments/bench/results/encode.md).
        q = heads_first(dense(name="query")(x))
        k = heads_first(dense(name="key")(x))
        v = heads_first(dense(name="value")(x))
        scores = (q @ k.swapaxes(-1, -2)) / jnp.sqrt(head_dim).astype(self.dtype)
        # Softmax in float32 whatever the compute dtype: bf16 logits lose the tail.
        probs = jax.nn.softmax(scores.astype(jnp.float32) + bias, axis=-1)
        probs = nn.Dropout(cfg.attention_probs_dropout_prob)(probs, deterministic=deterministic)
        out = (probs.astype(self.dtype) @ v).transpose(0, 2, 1, 3)
        return out.reshape(b, length, cfg.hidden_size)


class BertSelfOutput(nn.Module):
    """Projection + dropout + residual + LayerNorm (HF's ``BertSelfOutput`` / ``BertOutput``)."""
    config: Any  # any family's config with BERT's block fields (mpnet.py reuses this)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h, residual, deterministic: bool):
        cfg = self.config
        h = nn.Dense(cfg.hidden_size, dtype=self.dtype,
                     kernel_init=nn.initializers.normal(cfg.initializer_range), name="dense")(h)
        h = nn.Dropout(cfg.hidden_dropout_prob)(h, deterministic=deterministic)
        # LayerNorm statistics in float32 (parameters are float32 anyway).
        out = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=jnp.float32, name="LayerNorm")(
            h.astype(jnp.float32) + residual.astype(jnp.float32))
        return out.astype(self.dtype)


class BertAttention(nn.Module):
    config: EncoderConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, bias, deterministic: bool):
        h = BertSelfAttention(self.config, self.dtype, name="self")(x, bias, deterministic)
        return BertSelfOutput(self.config, self.dtype, name="output")(h, x, deterministic)


class BertIntermediate(nn.Module):
    config: Any  # any family's config with BERT's block fields (mpnet.py reuses this)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        h = nn.Dense(cfg.intermediate_size, dtype=self.dtype,
                     kernel_init=nn.initializers.normal(cfg.initializer_range), name="dense")(x)
        return _activation(cfg.hidden_act)(h)


class BertLayer(nn.Module):
    config: EncoderConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, bias, deterministic: bool):
        a = BertAttention(self.config, self.dtype, name="attention")(x, bias, deterministic)
        h = BertIntermediate(self.config, self.dtype, name="intermediate")(a)
        return BertSelfOutput(self.config, self.dtype, name="output")(h, a, deterministic)


class BertPooler(nn.Module):
    """BERT's pooler: tanh(dense(h_CLS)); kept so checkpoints round-trip."""
    config: Any  # any family's config with BERT's block fields (mpnet.py reuses this)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden):
        cfg = self.config
        h = nn.Dense(cfg.hidden_size, dtype=self.dtype,
                     kernel_init=nn.initializers.normal(cfg.initializer_range), name="dense")(
                         hidden[:, 0])
        return jnp.tanh(h)


class BertEncoder(nn.Module):
    """Embeddings + transformer stack (+ optional pooler).

    Attributes:
      config: architecture hyper-parameters.
      dtype: compute dtype (float32 or bfloat16); parameters are always float32.
    """
    config: EncoderConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                 token_type_ids: jax.Array | None = None, position_ids: jax.Array | None = None,
                 segment_ids: jax.Array | None = None, deterministic: bool = True
                 ) -> dict[str, jax.Array]:
        cfg = self.config
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if position_ids is None:
            if cfg.uses_padding_offset_positions:
                position_ids = padding_offset_positions(input_ids, cfg.pad_token_id)
            else:
                position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        if segment_ids is not None:
            allowed = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (
                segment_ids[:, None, :] > 0)
            allowed = allowed[:, None, :, :]  # [b, 1, q, k]
        else:
            allowed = (attention_mask > 0)[:, None, None, :]  # [b, 1, 1, k]
        # A large finite negative (not -inf) keeps fully-masked rows finite, as in HF.
        bias = jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)

        x = BertEmbeddings(cfg, self.dtype, name="embeddings")(
            input_ids, token_type_ids, position_ids, deterministic)
        for i in range(cfg.num_hidden_layers):
            x = BertLayer(cfg, self.dtype, name=f"layer_{i}")(x, bias, deterministic)
        out = {"last_hidden_state": x}
        if cfg.add_pooling_layer:
            out["pooler_output"] = BertPooler(cfg, self.dtype, name="pooler")(x)
        return out


# ============================================================================ HF name map

# Prefixes that task-specific HF classes put in front of the base model's names.
_BASE_PREFIXES = ("bert.", "roberta.", "model.", "xlm_roberta.", "camembert.", "encoder_model.")
# Task heads and buffers that belong to the checkpoint but not to an encoder.
_HEAD_PREFIXES = ("cls.", "lm_head.", "classifier.", "qa_outputs.", "pre_classifier.")
_BUFFERS = r"embeddings\.position_ids|embeddings\.token_type_ids"


def param_to_hf(path: tuple[str, ...]) -> tuple[str, bool]:
    """Flax encoder param path -> (HF tensor name, whether the tensor is transposed)."""
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
    """HF tensor name (base-model prefix stripped) -> (Flax param path, whether transposed).

    Also reads the TF-era LayerNorm names ``gamma`` / ``beta``."""
    *mods, leaf = name.split(".")
    if len(mods) >= 3 and mods[:2] == ["encoder", "layer"] and mods[2].isdigit():
        mods = [f"layer_{mods[2]}"] + mods[3:]
    leaf = {"gamma": "weight", "beta": "bias"}.get(leaf, leaf) if mods[-1:] == ["LayerNorm"] else leaf
    if leaf != "weight":
        return (*mods, leaf), False
    if mods[-1:] == ["LayerNorm"]:
        return (*mods, "scale"), False
    if mods and mods[-1].endswith("_embeddings"):
        return (*mods, "embedding"), False
    return (*mods, "kernel"), True


NAME_MAP = NameMap(to_hf=param_to_hf, from_hf=hf_to_param, base_prefixes=_BASE_PREFIXES,
                   head_prefixes=_HEAD_PREFIXES, ignored=_BUFFERS)


def config_for_weights(config: EncoderConfig, tensors: Mapping[str, Any]) -> EncoderConfig:
    """The config with ``add_pooling_layer`` set by whether the checkpoint has BERT's pooler."""
    has_pooler = any(n.startswith("pooler.") for n in strip_base_prefix(tensors, NAME_MAP))
    return dataclasses.replace(config, add_pooling_layer=has_pooler)


FAMILY = register_encoder(EncoderFamily(
    name="bert", model_types=MODEL_TYPES, config_cls=EncoderConfig, module=BertEncoder,
    name_map=NAME_MAP, word_embeddings=("embeddings", "word_embeddings", "embedding"),
    config_for_weights=config_for_weights))
