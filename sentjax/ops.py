"""Row-wise vector helpers shared by the pooler, the losses and the evaluators (no sentjax imports).

Each takes either JAX arrays (traced on device: computed in float32, as the losses need) or NumPy
arrays (on the host: computed at the input's float precision, float64 for the evaluators), and
returns the same kind.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["l2_normalize", "cosine_similarity"]


def l2_normalize(x, eps: float = 1e-12):
    """Row-wise ``x / max(||x||, eps)`` over the last axis (``torch.nn.functional.normalize``).

    JAX input: float32 result. NumPy input: a NumPy result in ``x``'s float dtype (float64 stays
    float64, integers become float64). A zero row stays zero.
    """
    if isinstance(x, jax.Array):
        x = x.astype(jnp.float32)
        return x / jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True)), eps)
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    return x / np.maximum(np.sqrt(np.sum(x * x, axis=-1, keepdims=True)), eps)


def cosine_similarity(u, v, eps: float = 1e-12):
    """Row-wise ``cos(u_i, v_i)``: ``[..., d], [..., d] -> [...]``; a zero row gives 0.

    JAX input (float32, differentiable): ``u.v / (max(|u|, eps) max(|v|, eps))``. NumPy input
    (float64): ``u.v / sqrt(|u|^2 |v|^2)``; for ``u == v`` the denominator is exactly ``u.u``, so
    identical pairs score exactly 1.0 and tie instead of scattering by an ulp (which would give
    arbitrary Spearman ranks).
    """
    if isinstance(u, jax.Array) or isinstance(v, jax.Array):
        u, v = jnp.asarray(u, jnp.float32), jnp.asarray(v, jnp.float32)
        nu = jnp.maximum(jnp.linalg.norm(u, axis=-1), eps)
        nv = jnp.maximum(jnp.linalg.norm(v, axis=-1), eps)
        return jnp.sum(u * v, axis=-1) / (nu * nv)
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    den = np.sqrt(np.einsum("...d,...d->...", u, u) * np.einsum("...d,...d->...", v, v))
    return np.einsum("...d,...d->...", u, v) / np.where(den > 0, den, 1.0)
