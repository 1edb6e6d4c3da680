"""Poolers: token states ``[batch, length, hidden]`` -> sentence embeddings ``[batch, hidden]``.

Modes:
  mean     mask-aware mean over real tokens (Sentence-BERT, all-MiniLM-L6-v2)
  cls      hidden state of the first token
  cls_mlp  SimCSE: dense + tanh over the CLS state. ``mlp_at_inference=False`` reproduces
           unsupervised SimCSE, which trains with the MLP and evaluates the bare CLS state.
  max      mask-aware max over real tokens
  lasttoken  hidden state of the last real token (decoder embedders with causal attention:
           E5-Mistral, Qwen3-Embedding); right or left padding, and per segment of a packed row

``include_prompt=False`` (sentence-transformers' Pooling option of the same name, for instruction /
prompt models) leaves the first ``prompt_length`` tokens of each sentence out of the pooling: the
[CLS] token and the prompt's own tokens, as sentence-transformers counts them (the prompt tokenized
alone, less its trailing special token). Attention is unchanged: the text still attends to the
prompt. Every mode honours it as sentence-transformers does (cls then takes the first token after
the prompt). ``prompt_length``: ``[b]`` for padded rows, ``[b, k]`` per segment for packed rows.
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


def exclude_prompt(mask: jax.Array, prompt_length: jax.Array) -> jax.Array:
    """[b, l] mask, [b] prompt lengths -> the mask without each row's first prompt_length tokens."""
    return mask * (jnp.arange(mask.shape[1])[None, :] >= prompt_length[:, None]).astype(mask.dtype)


def first_pooled(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """[b, l, h], [b, l] -> [b, h]: the state of each row's first pooled token (position 0 when
    none is left, as sentence-transformers' argmax over an all-zero mask gives)."""
    idx = jnp.argmax(mask > 0, axis=1)
    return jnp.take_along_axis(hidden.astype(jnp.float32), idx[:, None, None], axis=1)[:, 0]


def segment_pool(hidden: jax.Array, segment_ids: jax.Array, starts: jax.Array, mode: str,
                 prompt_length: jax.Array | None = None) -> jax.Array:
    """Pools packed rows: [b, l, h] states, [b, l] segment ids (0 = pad, 1..k), [b, k] first-token
    index of each segment -> [b, k, h]. Empty segment slots give zeros (mean/cls/lasttoken) or -1e9 (max).
    ``prompt_length`` [b, k]: tokens left out at the start of each segment (``include_prompt=False``)."""
    k = starts.shape[1]
    onehot = (segment_ids[:, :, None] == jnp.arange(1, k + 1)[None, None, :])  # [b, l, k]
    h = hidden.astype(jnp.float32)
    if prompt_length is not None:
        seg_len = jnp.sum(onehot, axis=1)  # [b, k]
        pos = jnp.arange(segment_ids.shape[1])[None, :, None] - starts[:, None, :]  # [b, l, k]
        onehot = onehot & (pos >= prompt_length[:, None, :])
        # cls: the first token after the prompt; none left -> the segment's first token
        starts = jnp.where(prompt_length < seg_len, starts + prompt_length, starts)
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
    include_prompt: bool = True

    @nn.compact
    def __call__(self, hidden: jax.Array, mask: jax.Array, deterministic: bool = True,
                 segment_ids: jax.Array | None = None, segment_starts: jax.Array | None = None,
                 prompt_length: jax.Array | None = None) -> jax.Array:
        """[b, l, h] -> [b, h]; or, for packed rows (segment_ids given), [b, k, h] (empty slots: ones).
        ``prompt_length`` ([b], or [b, k] packed) is used only when ``include_prompt`` is False."""
        if self.mode not in POOLING_MODES:
            raise ValueError(f"pooling mode {self.mode!r} is unknown; use one of {POOLING_MODES}.")
        if self.include_prompt:
            prompt_length = None
        if segment_ids is not None:
            out = segment_pool(hidden, segment_ids, segment_starts, self.mode, prompt_length)
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
            out = mean_pool(hidden, mask if prompt_length is None else exclude_prompt(mask, prompt_length))
        elif self.mode == "max":
            out = max_pool(hidden, mask if prompt_length is None else exclude_prompt(mask, prompt_length))
        elif self.mode == "lasttoken":
            out = last_token_pool(hidden, mask if prompt_length is None else exclude_prompt(mask, prompt_length))
        else:
            out = (hidden[:, 0].astype(jnp.float32) if prompt_length is None
                   else first_pooled(hidden, exclude_prompt(mask, prompt_length)))
            if self.mode == "cls_mlp":
                dense = nn.Dense(hidden.shape[-1], name="mlp")
                # Always create the parameters so the pytree shape does not depend on the flag.
                projected = jnp.tanh(dense(out))
                if not deterministic or self.mlp_at_inference:
                    out = projected
        if self.normalize:
            out = l2_normalize(out)
        return out
