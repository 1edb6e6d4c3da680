"""Packed text columns in the gradient engine: embed packed rows, then unpack to the padded layout.

A packed column (``sentjax.packing.pack_column``) is a token dict of ``[rows, L]`` arrays (several
sentences per row, block-diagonal attention) plus ``unpack_index`` ``[n]``. The encoder returns
``[rows, k, dim]`` (one embedding per segment slot); ``unpack`` gathers

    e[i] = out.reshape(rows * k, dim)[unpack_index[i]]        i = 0 .. n-1

so the loss sees ``[n, dim]`` in the original example order, exactly the padded layout's
embeddings. The gather's transpose (a scatter-add into the slots) routes each example's
cotangent back to its own segment, so gradients are those of the padded step too.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax

INDEX_KEY = "unpack_index"

__all__ = ["INDEX_KEY", "is_packed", "split_packed", "unpack"]


def is_packed(tokens: Any) -> bool:
    return isinstance(tokens, Mapping) and INDEX_KEY in tokens


def split_packed(tokens: Mapping[str, Any]) -> tuple[dict, jax.Array | None]:
    """(the token arrays the encoder reads, ``unpack_index`` or None for a padded column)."""
    rest = {k: v for k, v in tokens.items() if k != INDEX_KEY}
    return rest, tokens.get(INDEX_KEY)


def unpack(out: jax.Array, index: jax.Array | None) -> jax.Array:
    """``[rows, k, dim]`` encoder output -> ``[n, dim]`` example embeddings (identity if unpacked)."""
    if index is None:
        return out
    return out.reshape((-1,) + out.shape[2:])[index]
