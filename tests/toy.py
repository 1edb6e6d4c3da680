"""The toy encoder of the objective tests: fast to compile, with dropout, so that GradCache, device
splits and multi-term objectives are checked on the same small function everywhere.

``toy_embed(params, tokens, rng)``: masked mean of token embeddings -> tanh(dense), dropout p = 0.2 on
the pooled vector; params ``{"emb": [V, D], "w": [D, D]}``, tokens ``[n, L]`` -> ``[n, D]``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def toy_embed(params, tokens, rng):
    e = params["emb"][tokens["input_ids"]]
    m = tokens["attention_mask"][..., None].astype(jnp.float32)
    h = jnp.sum(e * m, 1) / jnp.maximum(jnp.sum(m, 1), 1.0)
    if rng is not None:
        h = jnp.where(jax.random.bernoulli(rng, 0.8, h.shape), h / 0.8, 0.0)
    return jnp.tanh(h @ params["w"])


def toy_model_embed(params, tokens, rng):
    """``toy_embed`` of ``params["model"]`` (the train step's ``{"model", "head"}`` layout)."""
    return toy_embed(params["model"], tokens, rng)


def toy_params(key: jax.Array, vocab: int, dim: int) -> dict:
    k1, k2 = jax.random.split(key)
    return {"emb": jax.random.normal(k1, (vocab, dim)), "w": jax.random.normal(k2, (dim, dim)) / 3}


def random_tokens(rng: np.random.Generator, n: int, length: int, vocab: int) -> dict:
    """``n`` rows of 2..length real tokens (ids 1..vocab-1), right-padded with 0: ``[n, length]``."""
    mask = (np.arange(length)[None] < rng.integers(2, length + 1, n)[:, None]).astype(np.int32)
    return {"input_ids": jnp.asarray(rng.integers(1, vocab, (n, length)) * mask, jnp.int32),
            "attention_mask": jnp.asarray(mask)}
