"""Gradient of a training step with exact global in-batch negatives, on 1 or N devices.

:func:`make_grad_fn` builds ``f(params, columns, rng) -> ((loss, metrics), grads)``:

* ``columns``: dict of named columns with the GLOBAL batch in rows: token batches (dicts of
  ``[n, L]`` int arrays, e.g. ``anchor`` / ``positive`` ``[B, L]``, ``negative`` ``[B*k, L]``
  anchor-major) are embedded; plain arrays (``label`` / ``score`` ``[B]``, ``teacher`` ``[B, d]``)
  are passed through. Every column is split over the devices along its rows.
* ``embed_fn(params, tokens, rng | None) -> [n, d]`` (:func:`sentjax.models.sentence_model.embed_fn`
  or a wrapper selecting ``params["model"]``); dropout is on iff ``rng`` is given, with per-row
  keys (:mod:`sentjax.parallel.dropout_keys`), so masks do not depend on the device count.
* ``loss_fn(params, embeddings, axis_name) -> (loss, metrics)`` written once on local shards
  (:func:`sentjax.losses.make_column_loss`); it returns the global mean loss.
* ``grads`` is the gradient of the GLOBAL mean loss with respect to ``params``, replicated:
  equal to the single-device gradient on the concatenated batch.

Backends (how each gets the reduction right; proofs are the equivalence tests):

``"none"``       one device, ``jax.value_and_grad`` of the loss.
``"shard_map"``  ``jax.shard_map`` over ``mesh``; the gradient is taken OUTSIDE the shard_map, so
                 JAX transposes the loss's pmean and the candidates' all_gather exactly, whatever
                 the loss does inside (JAX-NOTES' recommended pattern).
``"pmap"``       ``jax.pmap(axis_name=...)``: gradient inside, then ``pmean`` of the grads (under
                 pmap each device's gradient of the pmean'd loss is N times its share). Forgetting
                 that pmean is the 2021 flax community script's bug.

With ``gradcache_chunk=c`` the embeddings are computed c rows (per device, per column) at a time
by :func:`sentjax.parallel.gradcache.gradcache_local`; its per-device gradient shares are
``psum``-ed under shard_map and ``pmean``-ed under pmap.

Usage in a train step::

    module = SentenceEncoderModule(config, pooling="mean")
    embed = lambda p, tokens, rng: embed_fn(module)(p["model"], tokens, rng)
    grad_fn = make_grad_fn(embed, make_column_loss("infonce", temperature=0.05), mesh=make_mesh(),
                           gradcache_chunk=32)            # or None: no caching
    (loss, metrics), grads = jax.jit(grad_fn)(params, {"anchor": a, "positive": p}, step_rng)
    params, opt_state, skipped = guarded_update(tx, grads, opt_state, params, loss)

Every call also reports ``metrics["nonfinite"]`` (1.0 when the loss or any gradient is not
finite); the train step must then skip the update (:func:`sentjax.parallel.finite.guarded_update`).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from sentjax.parallel.dropout_keys import EmbedFn, column_embedder
from sentjax.parallel.finite import all_finite
from sentjax.parallel.gradcache import LossFn, gradcache_local, split_columns
from sentjax.parallel.packed import split_packed, unpack
from sentjax.parallel.mesh import check_columns, column_rows, split_for_pmap

__all__ = ["make_grad_fn", "embed_columns", "BACKENDS"]

BACKENDS = ("none", "shard_map", "pmap")
GradFn = Callable[[Any, Mapping[str, Any], Any], tuple[tuple[jax.Array, dict], Any]]


def embed_columns(embed_fn: EmbedFn, params: Any, columns: Mapping[str, Any], rng: jax.Array | None,
                  device_index: jax.Array | int = 0) -> dict[str, Any]:
    """Embeds every text column (local rows; global row offset ``device_index * rows``) and passes
    the other columns through unchanged. A packed column (:mod:`sentjax.parallel.packed`) is
    embedded per packed row (dropout keys per packed row) and unpacked to ``[n, d]``.

    Columns of one shape share one trace of the encoder (:func:`column_embedder`).
    """
    text, other = split_columns(columns)
    out = dict(other)
    embed = column_embedder(embed_fn, rng)
    for name, column in text.items():
        tokens, index = split_packed(column)  # packed: embed the rows, then unpack to [n, d]
        out[name] = unpack(embed(params, tokens, name, device_index * column_rows(tokens)), index)
    return out


def _is_varying(x: jax.Array, axis_name: str) -> bool:
    aval = jax.typeof(x)
    mat = getattr(aval, "manual_axis_type", None)
    varying = getattr(mat, "varying", None) if mat is not None else getattr(aval, "vma", frozenset())
    return axis_name in (varying or frozenset())


def _global_metrics(metrics: dict, axis_name: str, force: bool) -> dict:
    """Per-device metrics -> global means (losses already return them reduced; this is a safety net)."""
    return jax.tree.map(lambda m: lax.pmean(m, axis_name) if force or _is_varying(m, axis_name) else m,
                        metrics)


def _with_finite_flag(out):
    (loss, metrics), grads = out
    bad = jnp.logical_not(all_finite(loss, grads)).astype(jnp.float32)
    return (loss, dict(metrics, nonfinite=bad)), grads


def make_grad_fn(embed_fn: EmbedFn, loss_fn: LossFn, *, mesh: jax.sharding.Mesh | None = None,
                 axis_name: str = "data", backend: str = "shard_map",
                 gradcache_chunk: int | None = None) -> GradFn:
    """``f(params, columns, rng) -> ((loss, metrics), grads)`` (see the module doc).

    Args:
      embed_fn: ``(params, tokens, rng | None) -> [n, d]``.
      loss_fn: ``(params, embeddings: dict, axis_name | None) -> (loss, metrics)``.
      mesh: the device mesh (``backend="shard_map"``); must have ``axis_name``.
      axis_name: the data-parallel axis name.
      backend: ``"none"`` (one device), ``"shard_map"`` or ``"pmap"`` (all local devices).
      gradcache_chunk: rows per chunk per device and column for GradCache, or None (no caching).

    ``f`` is pure; jit it (shard_map / none) or call it directly (pmap compiles itself).
    Raises ValueError on columns of different batch sizes, a global batch not divisible by the
    device count, or a chunk that does not divide the per-device batch.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: use one of {BACKENDS}.")
    if backend == "shard_map":
        if mesh is None or axis_name not in mesh.axis_names:
            raise ValueError(f"backend='shard_map' needs a mesh with axis {axis_name!r} (got "
                             f"{None if mesh is None else mesh.axis_names}); build one with "
                             "sentjax.parallel.mesh.make_mesh().")
        n_dev = mesh.shape[axis_name]
    elif backend == "pmap":
        n_dev = jax.local_device_count()
    else:
        n_dev = 1

    def local_loss(params, columns, rng, ax, index):
        return loss_fn(params, embed_columns(embed_fn, params, columns, rng, index), ax)

    if backend == "none":
        def fn(params, columns, rng=None):
            check_columns(columns, 1, gradcache_chunk)
            if gradcache_chunk is None:
                out = jax.value_and_grad(local_loss, has_aux=True)(params, columns, rng, None, 0)
            else:
                out = gradcache_local(embed_fn, loss_fn, params, columns, rng, chunk=gradcache_chunk)
            return _with_finite_flag(out)
        return fn

    if backend == "shard_map":
        def sharded(params, columns, rng, body):
            rng_spec = P() if rng is not None else None
            return jax.shard_map(body, mesh=mesh, in_specs=(P(), P(axis_name), rng_spec),
                                 out_specs=P())(params, dict(columns), rng)

        def fn(params, columns, rng=None):
            check_columns(columns, n_dev, gradcache_chunk)
            if gradcache_chunk is None:
                def global_loss(params):
                    def body(params, columns, rng):
                        loss, metrics = local_loss(params, columns, rng, axis_name, lax.axis_index(axis_name))
                        return loss, _global_metrics(metrics, axis_name, False)
                    return sharded(params, columns, rng, body)
                return _with_finite_flag(jax.value_and_grad(global_loss, has_aux=True)(params))

            def body(params, columns, rng):
                (loss, metrics), grads = gradcache_local(
                    embed_fn, loss_fn, params, columns, rng, chunk=gradcache_chunk, axis_name=axis_name,
                    device_index=lax.axis_index(axis_name),
                    vary=lambda p: jax.tree.map(lambda x: lax.pcast(x, axis_name, to="varying"), p))
                return (loss, _global_metrics(metrics, axis_name, False)), lax.psum(grads, axis_name)
            return _with_finite_flag(sharded(params, columns, rng, body))
        return fn

    def device_step(params, columns, rng):
        index = lax.axis_index(axis_name)
        if gradcache_chunk is None:
            (loss, metrics), grads = jax.value_and_grad(local_loss, has_aux=True)(
                params, columns, rng, axis_name, index)
        else:
            (loss, metrics), grads = gradcache_local(embed_fn, loss_fn, params, columns, rng,
                                                     chunk=gradcache_chunk, axis_name=axis_name,
                                                     device_index=index)
        loss, metrics = lax.pmean((loss, metrics), axis_name)
        return (loss, metrics), lax.pmean(grads, axis_name)

    stepped = jax.pmap(device_step, axis_name=axis_name, in_axes=(None, 0, None), out_axes=None)

    def fn(params, columns, rng=None):
        check_columns(columns, n_dev, gradcache_chunk)
        return _with_finite_flag(stepped(params, split_for_pmap(dict(columns), n_dev), rng))
    return fn
