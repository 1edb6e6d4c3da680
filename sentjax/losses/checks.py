"""Input checks shared by the losses: a clear error, naming the argument and the fix, before any math."""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["check_embedding_pair", "check_negatives", "check_temperature"]


def check_embedding_pair(u: jax.Array, v: jax.Array, names: tuple[str, str] = ("anchors", "positives")
                         ) -> None:
    """Raises a clear error unless ``u`` and ``v`` are floating ``[batch, dim]`` arrays of one shape."""
    for name, x in zip(names, (u, v)):
        if getattr(x, "ndim", None) != 2:
            raise ValueError(f"{name} must be a [batch, dim] array, got shape {getattr(x, 'shape', None)}; "
                             "pass one embedding per row.")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"{name} must be floating point (float32 or bfloat16), got {x.dtype}.")
    if u.shape != v.shape:
        raise ValueError(f"{names[0]} {u.shape} and {names[1]} {v.shape} must have the same [batch, dim] "
                         f"shape (row i of {names[1]} belongs to row i of {names[0]}); check that both "
                         "columns come from the same batch.")
    if u.shape[0] == 0:
        raise ValueError(f"the batch is empty: {names[0]} has 0 rows.")


def check_negatives(negatives: jax.Array | None, b: int, d: int) -> None:
    """Raises a clear error unless ``negatives`` is None or a floating ``[b, k, d]`` array."""
    if negatives is None:
        return
    if getattr(negatives, "ndim", None) != 3 or negatives.shape[0] != b or negatives.shape[2] != d:
        raise ValueError(f"negatives must be [batch, k, dim] = [{b}, k, {d}], got "
                         f"{getattr(negatives, 'shape', None)}; for one hard negative per anchor use "
                         "negatives[:, None, :], and keep the k negatives of an anchor together.")
    if not jnp.issubdtype(negatives.dtype, jnp.floating):
        raise TypeError(f"negatives must be floating point, got {negatives.dtype}.")


def check_temperature(temperature) -> None:
    """Raises unless a concrete temperature is > 0 (a traced, learnable one is not checked)."""
    try:
        t = float(temperature)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return
    if not t > 0:
        raise ValueError(f"temperature must be > 0 (logits are divided by it), got {temperature}; "
                         "typical values are 0.01-0.1 (default 0.05).")


def negatives_per_anchor(anchors: jax.Array, negatives: jax.Array | None) -> jax.Array | None:
    """The ``negative`` column ``[b * k, d]`` (k per anchor, anchor-major) as ``[b, k, d]``; None stays None."""
    if negatives is None:
        return None
    b = anchors.shape[0]
    if negatives.shape[0] % b:
        raise ValueError(f"the negative column has {negatives.shape[0]} rows, not a multiple of the "
                         f"{b} anchors; give k negatives per anchor, anchor-major.")
    return negatives.reshape(b, negatives.shape[0] // b, anchors.shape[1])
