"""Encoder + pooler as one Flax module: token batch -> sentence embeddings ``[batch, dim]``.

``SentenceEncoderModule(config, pooling=...)`` composes the encoder of whichever registered family
``config.model_type`` names (``sentjax.models.registry``) with a ``Pooler``.
Parameter tree: ``{"encoder": <the family's encoder params>, "pooler": <Pooler params, cls_mlp
only>}``. A *token batch* is a dict of ``[batch, length]`` int32 arrays with keys ``input_ids``,
``attention_mask`` and optionally ``token_type_ids`` / ``position_ids``.

A *packed* batch (see ``sentjax.packing``) holds several sentences per row: it adds
``segment_ids`` ``[rows, length]`` (0 = pad, 1..k) and ``segment_starts`` ``[rows, k]`` and
the module then returns ``[rows, k, dim]``, one embedding per segment slot.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from sentjax.models.pooling import Pooler
from sentjax.models.registry import get_encoder

_TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "segment_ids")


class SentenceEncoderModule(nn.Module):
    """A registered encoder followed by a pooler.

    Attributes:
      config: encoder architecture, the config of any registered family (its ``model_type``
        picks the Flax module).
      pooling: pooler mode (see ``sentjax.models.pooling.POOLING_MODES``).
      normalize: L2-normalise embeddings.
      mlp_at_inference: keep SimCSE's MLP when deterministic (cls_mlp only).
      dtype: compute dtype; parameters stay float32.
      include_prompt: pool the prompt's tokens too; False leaves the first ``prompt_length`` tokens
        (batch key ``prompt_length``: ``[batch]``, or ``[rows, k]`` packed) out of the pooling.
    """
    config: Any
    pooling: str = "mean"
    normalize: bool = False
    mlp_at_inference: bool = True
    dtype: Any = jnp.float32
    include_prompt: bool = True

    @nn.compact
    def __call__(self, batch: Mapping[str, jax.Array], deterministic: bool = True) -> jax.Array:
        tokens = {k: batch[k] for k in _TOKEN_KEYS if k in batch and batch[k] is not None}
        encoder = get_encoder(self.config.model_type).module(self.config, self.dtype, name="encoder")
        out = encoder(**tokens, deterministic=deterministic)
        mask = tokens.get("attention_mask")
        if mask is None:
            mask = jnp.ones_like(tokens["input_ids"])
        return Pooler(self.pooling, self.normalize, self.mlp_at_inference, self.include_prompt,
                      name="pooler")(
            out["last_hidden_state"], mask, deterministic, tokens.get("segment_ids"),
            batch.get("segment_starts"), batch.get("prompt_length"))


def init_batch() -> dict[str, jax.Array]:
    """The smallest token batch, for ``module.init`` (parameter shapes do not depend on it)."""
    return {"input_ids": jnp.zeros((1, 8), jnp.int32), "attention_mask": jnp.ones((1, 8), jnp.int32)}


def init_params(module: SentenceEncoderModule, rng: jax.Array) -> dict:
    """Freshly initialised parameters ``{"encoder": ..., "pooler": ...}``."""
    return module.init(rng, init_batch())["params"]


def abstract_params(module: SentenceEncoderModule) -> dict:
    """The parameter tree as ``jax.ShapeDtypeStruct`` leaves (nothing is computed)."""
    return jax.eval_shape(lambda: init_params(module, jax.random.key(0)))


def embed_fn(module: SentenceEncoderModule):
    """Returns ``f(params, batch, rng=None) -> [batch, dim]``; dropout is on iff rng is given."""
    def f(params, batch, rng=None):
        if rng is None:
            return module.apply({"params": params}, batch, deterministic=True)
        return module.apply({"params": params}, batch, deterministic=False, rngs={"dropout": rng})
    return f
