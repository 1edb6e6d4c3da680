"""Pure-functional Flax (linen) BERT-family encoder: BERT, MiniLM, RoBERTa, XLM-R.

Parameters live in an explicit pytree (``params = BertEncoder(cfg).init(...)["params"]``)
whose names mirror Hugging Face's ``BertModel`` so that the checkpoint name map in
``sentjax.models.hf_weights`` is mechanical.

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

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sentjax.models.config import EncoderConfig

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
    config: EncoderConfig
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
    config: EncoderConfig
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
    config: EncoderConfig
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
