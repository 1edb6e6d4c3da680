"""Poolers: token states ``[batch, length, hidden]`` -> sentence embeddings ``[batch, hidden]``.

Modes:
  mean     mask-aware mean over real tokens (Sentence-BERT, all-MiniLM-L6-v2)
  cls      hidden state of the first token
  cls_mlp  SimCSE: dense + tanh over the CLS state. ``mlp_at_inference=False`` reproduces
           unsupervised SimCSE, which trains with the MLP and evaluates the bare CLS state.
  max      mask-aware max over real tokens
  lasttoken  hidden state of the last real token (decoder embedders with causal attention:
           E5-Mistral, Qwen3-Embedding); right or left padding, and per segment of a packed row
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sentjax.ops import l2_normalize

POOLING_MODES = ("mean", "cls", "cls_mlp", "max", "lasttoken")


def mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """[b, l, h], [b, l] -> [b, h]; an all-padding row gives zeros, not NaN."""
    m = mask.astype(jnp.float32)[..., None]
    summed = jnp.sum(hidden.astype(jnp.float32) * m, axis=1)
    return summed / jnp.maximum(jnp.sum(m, axis=1), 1e-9)


def max_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """[b, l, h], [b, l] -> [b, h]; padding is excluded (sentence-transformers sets it to -1e9)."""
    h = jnp.where(mask[..., None] > 0, hidden.astype(jnp.float32), -1e9)
    return jnp.max(h, axis=1)


def last_token_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """[b, l, h], [b, l] -> [b, h]: the state at the highest index whose mask is set, so left and
    right padding give the same result; an all-padding row gives zeros."""
    idx = jnp.arange(mask.shape[1])
    last = jnp.max(jnp.where(mask > 0, idx[None, :], -1), axis=1)  # [b]
    out = jnp.take_along_axis(hidden.astype(jnp.float32), jnp.maximum(last, 0)[:, None, None], axis=1)[:, 0]
    return jnp.where((last >= 0)[:, None], out, 0.0)


def segment_pool(hidden: jax.Array, segment_ids: jax.Array, starts: jax.Array, mode: str) -> jax.Array:
    """Pools packed rows: [b, l, h] states, [b, l] segment ids (0 = pad, 1..k), [b, k] first-token
    index of each segment -> [b, k, h]. Empty segment slots give zeros (mean/cls/lasttoken) or
    -1e9 (max)."""
    k = starts.shape[1]
    onehot = (segment_ids[:, :, None] == jnp.arange(1, k + 1)[None, None, :])  # [b, l, k]
    h = hidden.astype(jnp.float32)
    if mode == "mean":
        m = onehot.astype(jnp.float32)
        summed = jnp.einsum("blk,blh->bkh", m, h)
        return summed / jnp.maximum(jnp.sum(m, axis=1), 1e-9)[..., None]
    if mode == "max":
        return jnp.max(jnp.where(onehot[..., None], h[:, :, None, :], -1e9), axis=1)
    if mode == "lasttoken":
        idx = jnp.arange(segment_ids.shape[1])[None, :, None]
        last = jnp.max(jnp.where(onehot, idx, -1), axis=1)  # [b, k]
        out = jnp.take_along_axis(h, jnp.maximum(last, 0)[:, :, None], axis=1)
        return jnp.where((last >= 0)[..., None], out, 0.0)
    return jnp.take_along_axis(h, starts[:, :, None], axis=1)  # cls / cls_mlp


class Pooler(nn.Module):
    """Pools token states into one vector per sentence.

    Attributes:
      mode: one of POOLING_MODES.
      normalize: L2-normalise the output.
      mlp_at_inference: for cls_mlp, whether the MLP is applied when deterministic=True.
    """
    mode: str = "mean"
    normalize: bool = False
    mlp_at_inference: bool = True

    @nn.compact
    def __call__(self, hidden: jax.Array, mask: jax.Array, deterministic: bool = True,
                 segment_ids: jax.Array | None = None, segment_starts: jax.Array | None = None
                 ) -> jax.Array:
        """[b, l, h] -> [b, h]; or, for packed rows (segment_ids given), [b, k, h] (empty slots: ones)."""
        if self.mode not in POOLING_MODES:
            raise ValueError(f"pooling mode {self.mode!r} is unknown; use one of {POOLING_MODES}.")
        if segment_ids is not None:
            out = segment_pool(hidden, segment_ids, segment_starts, self.mode)
            # Empty slots (no sentence) are never read, but a zero row's L2 normalisation has a NaN
            # gradient (0 * inf) that would poison the training step: give them a constant instead.
            k = segment_starts.shape[1]
            used = jnp.any(segment_ids[:, :, None] == jnp.arange(1, k + 1)[None, None, :], axis=1)
            out = jnp.where(used[..., None], out, 1.0)
            if self.mode == "cls_mlp":
                projected = jnp.tanh(nn.Dense(hidden.shape[-1], name="mlp")(out))
                if not deterministic or self.mlp_at_inference:
                    out = projected
        elif self.mode == "mean":
            out = mean_pool(hidden, mask)
        elif self.mode == "max":
            out = max_pool(hidden, mask)
        elif self.mode == "lasttoken":
            out = last_token_pool(hidden, mask)
        else:
            out = hidden[:, 0].astype(jnp.float32)
            if self.mode == "cls_mlp":
                dense = nn.Dense(hidden.shape[-1], name="mlp")
                # Always create the parameters so the pytree shape does not depend on the flag.
                projected = jnp.tanh(dense(out))
                if not deterministic or self.mlp_at_inference:
                    out = projected
        if self.normalize:
            out = l2_normalize(out)
        return out
