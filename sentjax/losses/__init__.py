"""Training objectives as pure functions of sentence embeddings.

=========  ====================================================  ==========================
name       function                                              columns (make_column_loss)
=========  ====================================================  ==========================
infonce    :func:`infonce.infonce_loss` (a, p, n=None)           anchor, positive, negative?
softmax    :func:`softmax.softmax_loss` (head, u, v, labels)     anchor, positive, label
cosine     :func:`cosine.cosine_loss` (u, v, scores)             anchor, positive, score
distill    :func:`distill.distill_loss` (s_src, s_tgt, t_src)    anchor, positive?, teacher
cosent     :func:`cosent.cosent_loss` (u, v, scores)             anchor, positive, score
=========  ====================================================  ==========================

Every loss takes an optional ``axis_name``: the inputs are then the local shards of a batch split
over that mesh / pmap axis and the returned loss is the global mean, identical on every device.

``make_column_loss(name, **hparams)`` adapts a loss to the gradient engine of
:mod:`sentjax.parallel.global_grads`: ``loss_fn(params, embeddings, axis_name)`` with
``embeddings`` a dict of the named columns (embedded text columns ``[n, dim]`` plus pass-through
arrays such as ``label`` / ``score`` / ``teacher``) and ``params["head"]`` the softmax head.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from sentjax.losses.cosent import cosent_loss
from sentjax.losses.cosine import cosine_loss
from sentjax.losses.distill import distill_loss
from sentjax.losses.infonce import infonce_loss
from sentjax.losses.softmax import init_softmax_head, softmax_loss

__all__ = ["LOSSES", "IMPLS", "TILED_LOSSES", "get_loss", "make_column_loss", "infonce_loss", "softmax_loss",
           "init_softmax_head", "cosine_loss", "distill_loss", "cosent_loss"]

LOSSES: dict[str, Callable[..., Any]] = {
    "infonce": infonce_loss,
    "softmax": softmax_loss,
    "cosine": cosine_loss,
    "distill": distill_loss,
    "cosent": cosent_loss,
}

IMPLS = ("dense", "tiled")  # make_column_loss(impl=...): the dense loss, or the memory-tiled kernel
TILED_LOSSES = ("infonce",)  # the losses that have a tiled implementation


def get_loss(name: str) -> Callable[..., Any]:
    """The loss function registered under ``name`` (one of ``LOSSES``)."""
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}.")
    return LOSSES[name]


def _need(embeddings: Mapping[str, Any], name: str, loss: str):
    if name not in embeddings:
        raise KeyError(f"the {loss} loss needs a {name!r} column, got columns {sorted(embeddings)}.")
    return embeddings[name]


def make_column_loss(name: str, impl: str = "dense", **hparams: Any) -> Callable[..., Any]:
    """``loss_fn(params, embeddings, axis_name) -> (loss, metrics)`` for the named loss.

    The ``negative`` column holds ``[b * k, dim]`` rows, anchor-major (anchor i's k negatives are
    rows ``i*k .. i*k+k-1``), and is reshaped to ``[b, k, dim]`` here. For ``infonce``,
    ``impl="tiled"`` selects the memory-tiled kernel (``tiled_infonce.py``; takes ``tile_size``).
    """
    fn = get_loss(name)
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r}: use one of {IMPLS}.")
    if impl == "tiled":
        if name not in TILED_LOSSES:
            raise ValueError(f"impl='tiled' exists only for the {'/'.join(TILED_LOSSES)} loss, not {name!r}.")
        from sentjax.losses.tiled_infonce import tiled_infonce_loss
        fn = tiled_infonce_loss

    def loss_fn(params, embeddings, axis_name=None):
        a = _need(embeddings, "anchor", name)
        if name == "infonce":
            n = embeddings.get("negative")
            if n is not None:
                if n.shape[0] % a.shape[0]:
                    raise ValueError(f"the negative column has {n.shape[0]} rows, not a multiple of the "
                                     f"{a.shape[0]} anchors; give k negatives per anchor, anchor-major.")
                n = n.reshape(a.shape[0], n.shape[0] // a.shape[0], a.shape[1])
            return fn(a, _need(embeddings, "positive", name), n, axis_name=axis_name, **hparams)
        if name == "softmax":
            head = params["head"] if isinstance(params, Mapping) and "head" in params else None
            if head is None:
                raise KeyError("the softmax loss needs params['head'] from init_softmax_head(...).")
            return fn(head, a, _need(embeddings, "positive", name), _need(embeddings, "label", name),
                      axis_name=axis_name, **hparams)
        if name in ("cosine", "cosent"):
            return fn(a, _need(embeddings, "positive", name), _need(embeddings, "score", name),
                      axis_name=axis_name, **hparams)
        return fn(a, embeddings.get("positive"), _need(embeddings, "teacher", name), axis_name=axis_name,
                  **hparams)
    return loss_fn
