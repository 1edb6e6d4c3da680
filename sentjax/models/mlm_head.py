"""The masked-language-model head of the BERT family, for the ``mlm`` objective
(:mod:`sentjax.losses.mlm`).

As ``BertForMaskedLM`` / ``XLMRobertaForMaskedLM``: ``logits = LN(act(h W1 + b1)) E^T + b`` over the
encoder's last hidden states ``h`` ``[batch, length, hidden]``, with ``E`` the encoder's word
embeddings (tied decoder) and ``act`` the config's ``hidden_act``. Parameters
``params["mlm_head"] = {"dense": {kernel, bias}, "LayerNorm": {scale, bias}, "bias"}`` (trained and
checkpointed, not exported) come from the checkpoint when it has them::

  BERT      cls.predictions.transform.dense.*   cls.predictions.transform.LayerNorm.*   cls.predictions.bias
  RoBERTa   lm_head.dense.*                     lm_head.layer_norm.*                    lm_head.bias

else they are initialised (normal(0.02) kernel, zero biases, unit LayerNorm), as HF initialises them.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sentjax.errors import ConfigError
from sentjax.models.bert import MODEL_TYPES, EncoderConfig, _activation
from sentjax.models.registry import get_encoder

__all__ = ["MLMHead", "init_mlm_head", "mlm_head_from_tensors", "load_mlm_head", "mlm_logits", "mlm_rows",
           "check_mlm_model"]

_PREFIXES = {"cls.predictions.": ("transform.dense.", "transform.LayerNorm.", "bias"),
             "lm_head.": ("dense.", "layer_norm.", "bias")}


class MLMHead(nn.Module):
    """Dense + activation + LayerNorm + the tied decoder (word embeddings) + a vocabulary bias."""
    config: EncoderConfig

    @nn.compact
    def __call__(self, hidden: jax.Array, word_embeddings: jax.Array) -> jax.Array:
        cfg = self.config
        h = nn.Dense(cfg.hidden_size, kernel_init=nn.initializers.normal(0.02), name="dense")(
            hidden.astype(jnp.float32))
        h = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="LayerNorm")(_activation(cfg.hidden_act)(h))
        bias = self.param("bias", nn.initializers.zeros, (cfg.vocab_size,))
        return h @ word_embeddings.T + bias


def check_mlm_model(config: Any) -> None:
    """Refuses encoder families without this MLM head (ConfigError)."""
    if getattr(config, "model_type", None) not in MODEL_TYPES:
        raise ConfigError(f"the mlm objective supports the BERT family {list(MODEL_TYPES)}, not model_type "
                          f"{getattr(config, 'model_type', None)!r}; drop the mlm term for this model.")


def init_mlm_head(config: EncoderConfig, rng: jax.Array) -> dict:
    """Freshly initialised head parameters."""
    h = jnp.zeros((1, 1, config.hidden_size))
    return MLMHead(config).init(rng, h, jnp.zeros((config.vocab_size, config.hidden_size)))["params"]


def mlm_head_from_tensors(tensors: Mapping[str, np.ndarray], config: EncoderConfig) -> dict | None:
    """The head from a checkpoint's HF tensors (BERT or RoBERTa names), or None if it has none."""
    for prefix, (dense, norm, bias) in _PREFIXES.items():
        names = [prefix + dense + "weight", prefix + dense + "bias", prefix + bias]
        if all(n in tensors for n in names):
            g = tensors.get(prefix + norm + "weight", tensors.get(prefix + norm + "gamma"))
            b = tensors.get(prefix + norm + "bias", tensors.get(prefix + norm + "beta"))
            if g is None or b is None:
                return None
            head = {"dense": {"kernel": np.asarray(tensors[names[0]]).T, "bias": tensors[names[1]]},
                    "LayerNorm": {"scale": g, "bias": b}, "bias": tensors[names[2]]}
            head = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), head)
            if head["bias"].shape != (config.vocab_size,):
                raise ConfigError(f"the checkpoint's MLM bias has {head['bias'].shape[0]} entries but the "
                                  f"vocabulary has {config.vocab_size}; the head does not fit this model.")
            return head
    return None


def load_mlm_head(config: EncoderConfig, folder: str | None, rng: jax.Array) -> tuple[dict, bool]:
    """(head, loaded): the checkpoint's MLM head from ``folder`` when present, else a fresh one."""
    if folder and any(os.path.isfile(os.path.join(folder, f)) for f in ("model.safetensors", "pytorch_model.bin")):
        from sentjax.models.hf_weights import read_tensors
        head = mlm_head_from_tensors(read_tensors(folder)[0], config)
        if head is not None:
            return head, True
    return init_mlm_head(config, rng), False


def _encoder_states(module, model_params: dict, tokens: Mapping[str, jax.Array], rng) -> jax.Array:
    enc = get_encoder(module.config.model_type).module(module.config, module.dtype)
    kw = {k: tokens[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in tokens}
    rngs = None if rng is None else {"dropout": rng}
    return enc.apply({"params": model_params["encoder"]}, **kw, deterministic=rng is None,
                     rngs=rngs)["last_hidden_state"]


def mlm_logits(module, model_params: dict, head_params: dict, tokens: Mapping[str, jax.Array],
               rng=None) -> jax.Array:
    """``[batch, length, vocab]`` logits of ``module``'s encoder (a ``SentenceEncoderModule``)."""
    h = _encoder_states(module, model_params, tokens, rng)
    words = model_params["encoder"]["embeddings"]["word_embeddings"]["embedding"]
    logits: jax.Array = MLMHead(module.config).apply({"params": head_params}, h, words)  # type: ignore[assignment]
    return logits


def mlm_rows(module, model_params: dict, head_params: dict, tokens: Mapping[str, jax.Array],
             rng=None, chunk: int = 32) -> jax.Array:
    """``[batch, 2]``: per example, the summed cross-entropy of its masked tokens
    (``tokens["mlm_labels"]`` != -100) and their count (the ``mlm`` column of the loss).

    The ``[batch, chunk, vocab]`` logits are built ``chunk`` positions at a time and rebuilt in the
    backward pass (``jax.checkpoint``), so the full ``[batch, length, vocab]`` tensor (8 GB for
    XLM-R's 250k vocabulary at 64 x 128 tokens) never exists; lengths not divisible by ``chunk``
    are done in one piece."""
    h = _encoder_states(module, model_params, tokens, rng)
    words = model_params["encoder"]["embeddings"]["word_embeddings"]["embedding"]
    labels = tokens["mlm_labels"]
    head = MLMHead(module.config)

    @jax.checkpoint
    def part(head_params, words, h, labels):
        logits = head.apply({"params": head_params}, h, words).astype(jnp.float32)
        masked = labels >= 0
        logp = jax.nn.log_softmax(logits, -1)
        ce = -jnp.take_along_axis(logp, jnp.maximum(labels, 0)[..., None], -1)[..., 0]
        return jnp.stack([jnp.sum(jnp.where(masked, ce, 0.0), -1), jnp.sum(masked, -1).astype(jnp.float32)], -1)

    n, length = labels.shape
    if length <= chunk or length % chunk:
        return part(head_params, words, h, labels)
    hs = jnp.swapaxes(h.reshape(n, length // chunk, chunk, h.shape[-1]), 0, 1)
    ls = jnp.swapaxes(labels.reshape(n, length // chunk, chunk), 0, 1)
    return jnp.sum(jax.lax.map(lambda xs: part(head_params, words, *xs), (hs, ls)), 0)
