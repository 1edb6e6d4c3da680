"""GradCache: exact large-batch contrastive gradients in the memory of one chunk (Gao et al. 2021,
"Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup").

For encoder parameters ``theta``, text columns ``x_c`` (rows split into chunks of ``chunk`` rows)
and a loss ``L(theta, {e_c})`` of the embeddings ``e_c = f_theta(x_c)``::

    pass 1   e_c[chunk] = f_theta(x_c[chunk])           no gradient, activations dropped
    loss     L, g_c = dL/de_c, g_theta = dL/dtheta|direct     (e.g. a softmax head)
    pass 2   g_theta += vjp(f_theta(x_c[chunk]))(g_c[chunk])  recompute one chunk at a time (lax.scan)

so dL/dtheta = dL/dtheta|direct + sum_c sum_chunks (de_c/dtheta)^T g_c exactly (chain rule). Dropout
keys are per row (:mod:`sentjax.parallel.dropout_keys`), identical in both passes.

Across devices (``axis_name`` set) the loss is the global mean and its candidates are all-gathered,
so ``g_c`` on device d is the cotangent of the GLOBAL loss with respect to device d's own rows:
under ``jax.shard_map`` (check_vma) the transpose of the loss's ``pmean`` hands each device 1/N
and the gather's transpose (a reduce-scatter) adds up the contributions of every device's anchors.
Device d's pass 2 (taken with respect to a *device-varying* copy of theta, ``lax.pcast``) then
yields only the part of dL/dtheta that flows through its rows, and the full gradient is their
``psum`` -- a sum, not a mean: averaging here would divide the gradient by N.

Under ``jax.pmap`` (no varying-value types) the transpose of ``pmean`` is a ``psum`` of the
per-device cotangents, so every per-device gradient comes out N times its share, and ``pmean``
is the right reduction. Both rules are pinned by the 1-vs-8-device equivalence tests.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from jax import lax

from sentjax.parallel.dropout_keys import EmbedFn, column_embedder
from sentjax.parallel.mesh import column_rows
from sentjax.parallel.packed import split_packed, unpack

__all__ = ["gradcache_local", "split_columns", "CITATION"]

# Model cards of runs trained with GradCache (gradient.gradcache_chunk > 0) cite it.
CITATION = """\
@inproceedings{gao2021gradcache,
  title = "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup",
  author = "Gao, Luyu and Zhang, Yunyi and Han, Jiawei and Callan, Jamie",
  booktitle = "Proceedings of the 6th Workshop on Representation Learning for NLP (RepL4NLP-2021)",
  year = "2021",
  url = "https://arxiv.org/abs/2101.06983",
}
"""

LossFn = Callable[[Any, dict[str, jax.Array], str | None], tuple[jax.Array, dict]]


def split_columns(columns: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(text columns: token-batch dicts to embed, pass-through arrays such as labels / scores)."""
    text = {k: v for k, v in columns.items() if isinstance(v, Mapping)}
    return text, {k: v for k, v in columns.items() if k not in text}


def gradcache_local(embed_fn: EmbedFn, loss_fn: LossFn, params: Any, columns: Mapping[str, Any],
                    rng: jax.Array | None, *, chunk: int, axis_name: str | None = None,
                    device_index: jax.Array | int = 0, vary: Callable[[Any], Any] = lambda p: p
                    ) -> tuple[tuple[jax.Array, dict], Any]:
    """One device's GradCache step on its local columns.

    Returns ``((loss, metrics), grads)`` where ``grads`` is this device's share of the gradient
    of the (global) loss: reduce it across devices as the caller's backend requires (see the
    module doc). ``vary`` maps the parameters to the copy the gradient is taken with respect to
    (``lax.pcast(..., to="varying")`` under shard_map). ``device_index * rows`` is the global
    index of a column's first local row (for the dropout keys).
    """
    text, other = split_columns(columns)
    frozen = lax.stop_gradient(params)
    embed_chunk = column_embedder(embed_fn, rng)  # forwards and VJPs: one encoder trace per chunk shape
    chunked, firsts, embs, unpack_vjps = {}, {}, {}, {}
    for name, column in text.items():
        # packed column: chunks of packed rows; the [rows, k, d] output is unpacked to [n, d]
        tokens, index = split_packed(column)
        n = column_rows(tokens)
        m = n // chunk
        chunked[name] = jax.tree.map(lambda x: x.reshape((m, chunk) + x.shape[1:]), dict(tokens))
        firsts[name] = device_index * n + jnp.arange(m) * chunk
        e = lax.map(lambda xs, name=name: embed_chunk(frozen, xs[0], name, xs[1]),
                    (chunked[name], firsts[name]))
        embs[name], unpack_vjps[name] = jax.vjp(lambda e, index=index: unpack(e, index),
                                                e.reshape((n,) + e.shape[2:]))

    theta = vary(params)
    (loss, metrics), (grads, g_embs) = jax.value_and_grad(
        lambda p, e: loss_fn(p, {**other, **e}, axis_name), argnums=(0, 1), has_aux=True)(theta, embs)

    for name in text:
        def body(acc, xs, name=name):
            tokens, first, g = xs
            _, vjp = jax.vjp(lambda p: embed_chunk(p, tokens, name, first), theta)
            return jax.tree.map(jnp.add, acc, vjp(g)[0]), None
        g = unpack_vjps[name](g_embs[name])[0]  # cotangent of the raw (packed) rows
        g = g.reshape((firsts[name].shape[0], chunk) + g.shape[1:])
        grads, _ = lax.scan(body, grads, (chunked[name], firsts[name], g))
    return (loss, metrics), grads
