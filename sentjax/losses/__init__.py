"""Training objectives: one module each, found by name through :mod:`sentjax.losses.registry`.

=========  ====================================================  ==========================
name       loss function                                         columns
=========  ====================================================  ==========================
infonce    :func:`infonce.infonce_loss` (a, p, n=None)           anchor, positive, negative?
softmax    :func:`softmax.softmax_loss` (head, u, v, labels)     anchor, positive, label
cosine     :func:`cosine.cosine_loss` (u, v, scores)             anchor, positive, score
distill    :func:`distill.distill_loss` (s_src, s_tgt, t_src)    anchor, positive?, teacher
cosent     :func:`cosent.cosent_loss` (u, v, scores)             anchor, positive, score
sigmoid    :func:`sigmoid.sigmoid_loss` (a, p, n=None)           anchor, positive, negative?
=========  ====================================================  ==========================

Also ``multipos`` (:func:`multipos.multipos_loss` (a, p [b, k, d], n=None); columns anchor, positive,
positive_1, ..., negative?: k positives per anchor) and ``matryoshka`` (a wrapper applying an inner
objective at several truncated dimensions; the inner objective's columns).

``gist`` (:func:`gist.gist_loss`: InfoNCE with a frozen guide's false negatives masked) takes the
guide's embeddings as ``teacher:anchor`` / ``teacher:positive`` / ``teacher:negative?``: an
objective's ``teacher_columns`` are embedded by the frozen teacher in the train step (also
``margin_mse`` / ``listwise_kl`` with ``scores='teacher'``).

Every loss takes an optional ``axis_name``: the inputs are then the local shards of a batch split
over that mesh / pmap axis and the returned loss is the global mean, identical on every device.
Each module also holds its ``Config`` (hyperparameters) and ``OBJECTIVE`` (how the trainer builds
it); ``column_loss(**kwargs)`` adapts the loss to the gradient engine of
:mod:`sentjax.parallel.global_grads`: ``loss_fn(params, embeddings, axis_name)`` with
``embeddings`` a dict of the named columns (embedded text columns ``[n, dim]`` plus pass-through
arrays such as ``label`` / ``score`` / ``teacher``) and ``params["head"]`` the objective's own
parameters (the softmax classifier, SigLIP's t' and b, InfoNCE's learned temperature).
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from sentjax.losses import registry
from sentjax.losses.cosent import cosent_loss
from sentjax.losses.cosine import cosine_loss
from sentjax.losses.distill import distill_loss
from sentjax.losses.infonce import IMPLS, infonce_loss
from sentjax.losses.softmax import init_softmax_head, softmax_loss

__all__ = ["IMPLS", "TILED_LOSSES", "registry", "get_loss", "make_column_loss", "infonce_loss", "softmax_loss",
           "init_softmax_head", "cosine_loss", "distill_loss", "cosent_loss"]

# the objectives whose Config offers impl="tiled" (a kernel that never builds the B x B logits)
TILED_LOSSES = tuple(n for n in registry.names()
                     if "impl" in {f.name for f in dataclasses.fields(registry.get(n).config)})


def get_loss(name: str) -> Callable[..., Any]:
    """The loss function of objective ``name`` (``<name>_loss`` of its module)."""
    if name not in registry.names():
        raise KeyError(f"unknown loss {name!r}; choose one of {list(registry.names())}.")
    return getattr(importlib.import_module(f"sentjax.losses.{name}"), f"{name}_loss")


def make_column_loss(name: str, impl: str = "dense", **kwargs: Any) -> Callable[..., Any]:
    """``loss_fn(params, embeddings, axis_name) -> (loss, metrics)``: ``column_loss(**kwargs)`` of
    objective ``name``, whose keyword arguments are its loss function's; ``impl="tiled"`` selects
    the memory-tiled kernel of the objectives in ``TILED_LOSSES``."""
    get_loss(name)
    module = importlib.import_module(f"sentjax.losses.{name}")
    if name in TILED_LOSSES:
        return module.column_loss(impl=impl, **kwargs)
    if impl == "tiled":
        raise ValueError(f"impl='tiled' exists only for the {list(TILED_LOSSES)} losses, not {name!r}.")
    if impl != "dense":
        raise ValueError(f"impl={impl!r}: use 'dense' or 'tiled'.")
    return module.column_loss(**kwargs)
