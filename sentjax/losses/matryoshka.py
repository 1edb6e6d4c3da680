"""Matryoshka: any embedding objective applied at several truncated dimensions, weighted.

Paper: Kusupati et al. 2022, "Matryoshka Representation Learning"; sentence-transformers'
MatryoshkaLoss (Aarsen et al. 2024). For an inner objective ``L`` (``inner``: a config block of
another objective), dimensions ``m_1 .. m_r`` (``dims``) and weights ``w_1 .. w_r`` (``weights``,
default all 1)::

    loss = sum_r w_r * L( {column: e[:, :m_r]} )        e[:, :m] = the first m coordinates

Every embedded column (``anchor``, ``positive``, ``negative``...; the inner objective's columns
with their shapes, ``[b, d]``) is truncated BEFORE the inner loss, which normalises: as
sentence-transformers does, so a model trained here is used by truncating its embeddings and
re-normalising (``SentenceModel.encode(..., truncate_dim=m)``). Pass-through columns (``score``,
``label``) are not truncated. Metrics: the inner's metrics at the first dimension under their own
names, and at every dimension as ``<metric>_dim<m>``, plus ``loss_dim<m>`` (unweighted).

Exact under every engine of :mod:`sentjax.parallel.global_grads`: the wrapper is a function of
the embeddings only, so the engine embeds each column once (GradCache: one cached forward, then
the losses at every dimension on the cached embeddings, one backward) and the inner loss gathers
global negatives at each truncation as usual. Inner objectives with a trainable head (its input
size depends on the dimension) or a teacher are refused, as is nesting Matryoshka.

Config: ``config.objective = {"name": "matryoshka", "dims": (384, 256, 128, 64, 32),
"weights": (), "inner": {"name": "infonce", <infonce's fields>}}``; the inner block is checked
against its own objective's ``Config`` (``--config.objective.inner.temperature=0.1``).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax

from sentjax.losses import registry
from sentjax.losses.registry import ObjectiveSpec

__all__ = ["Config", "OBJECTIVE", "CITATION", "column_loss", "matryoshka_loss"]


def _inner_default() -> dict[str, Any]:
    return registry.defaults("infonce")


def matryoshka_loss(inner_fn, params: Any, embeddings: dict, axis_name: str | None, *,
                    dims: tuple[int, ...], weights: tuple[float, ...], columns: tuple[str, ...]):
    """``sum_r weights[r] * inner_fn(params, {c: e[:, :dims[r]] for c in columns}, axis_name)``.

    ``embeddings``: the engine's dict (embedded columns ``[n, d]`` plus pass-through arrays);
    ``columns``: which of them to truncate. Returns ``(loss, metrics)`` (see the module doc).
    """
    present = [c for c in columns if c in embeddings]
    full = {embeddings[c].shape[-1] for c in present}
    if len(full) != 1:
        raise ValueError(f"matryoshka: the columns {present} have embedding sizes {sorted(full)}; "
                         "they must share one.")
    d = full.pop()
    too_big = [m for m in dims if m > d]
    if too_big:
        raise ValueError(f"matryoshka: objective.dims {list(dims)} has {too_big} > the model's embedding "
                         f"size {d}; use dimensions <= {d}.")
    total, metrics = 0.0, {}
    for r, (m, w) in enumerate(zip(dims, weights)):
        cut = {k: (v[:, :m] if k in present else v) for k, v in embeddings.items()}
        loss, mets = inner_fn(params, cut, axis_name)
        total = total + w * loss
        metrics[f"loss_dim{m}"] = loss
        for name, v in mets.items():
            metrics[f"{name}_dim{m}"] = v
            if r == 0:
                metrics[name] = v
    return total, metrics


# ============================================================================ the objective


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyperparameters of the ``matryoshka`` objective (``config.objective``)."""
    dims: tuple = (384, 256, 128, 64, 32)  # truncated sizes m_r, each <= the model's embedding size
    weights: tuple = ()                   # w_r, one per dim (sentence-transformers: all 1); () = all 1
    inner: dict = dataclasses.field(default_factory=_inner_default)  # the wrapped objective's block

    def __post_init__(self):
        dims = tuple(self.dims)
        if not dims or any(not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in dims):
            raise ValueError(f"objective.dims must be positive integers, got {self.dims!r}.")
        if len(set(dims)) != len(dims):
            raise ValueError(f"objective.dims has a repeated dimension: {self.dims!r}.")
        if self.weights and len(self.weights) != len(dims):
            raise ValueError(f"objective.weights has {len(self.weights)} entries for {len(dims)} dims; give "
                             "one weight per dimension, or () for all 1.")
        if any(not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0) for w in self.weights):
            raise ValueError(f"objective.weights must be finite and >= 0, got {self.weights!r}.")
        _inner_spec(self)


def _inner(hp: Config) -> registry.Objective:
    return registry.build(dict(hp.inner))


def _inner_spec(hp: Config) -> registry.Objective:
    """The built inner objective; refuses the inner objectives that cannot be truncated exactly."""
    if not isinstance(hp.inner, dict) and not hasattr(hp.inner, "items"):
        raise ValueError(f"objective.inner must be an objective block {{name, <its fields>}}, got {hp.inner!r}.")
    name = dict(hp.inner).get("name")
    if name == "matryoshka":
        raise ValueError("objective.inner cannot itself be 'matryoshka'; list every dimension in dims.")
    inner = _inner(hp)
    # An inner objective's head is refused whether its shape follows the embedding size (softmax's
    # classifier) or not (a learned temperature / SigLIP's t and b): one head shared by every
    # truncation is a different objective from the papers', and nobody has pinned it with a test.
    init_head = inner.init_head
    if init_head is not None and jax.eval_shape(lambda rng: init_head(rng, 8), jax.random.key(0)) is not None:
        raise ValueError(f"objective.inner={name!r} has a trainable head (params['head']), which "
                         "Matryoshka does not support; use an embedding-level objective without them "
                         "(infonce with learn_temperature=False, multipos, cosine, cosent).")
    if inner.needs_teacher:
        raise ValueError(f"objective.inner={name!r} needs a teacher of the full size; Matryoshka "
                         "distillation is not supported.")
    return inner


def column_loss(*, dims: tuple[int, ...], weights: tuple[float, ...] = (), inner: dict | None = None):
    """``loss_fn(params, embeddings, axis_name)``: the inner objective's columns, truncated."""
    hp = Config(tuple(dims), tuple(weights), dict(inner) if inner is not None else _inner_default())
    obj = _inner_spec(hp)
    w = tuple(float(x) for x in hp.weights) or (1.0,) * len(hp.dims)

    def loss_fn(params, embeddings, axis_name=None):
        return matryoshka_loss(obj.loss_fn, params, embeddings, axis_name, dims=tuple(hp.dims), weights=w,
                               columns=obj.fields)
    return loss_fn


OBJECTIVE = ObjectiveSpec(
    config=Config,
    loss=lambda hp: column_loss(dims=hp.dims, weights=hp.weights, inner=hp.inner),
    columns=lambda hp: _inner(hp).fields,
    # conservative: whether the inner couples the batch is its own business; refusing gradient
    # accumulation costs nothing here (GradCache is the exact large-batch path)
    in_batch_negatives=True,
)


# BibTeX of the paper(s) behind this objective; model cards of runs that train with it cite it.
CITATION = """\
@inproceedings{kusupati2022matryoshka,
  title = "Matryoshka Representation Learning",
  author = "Kusupati, Aditya and Bhatt, Gantavya and Rege, Aniket and Wallingford, Matthew and Sinha, Aditya and Ramanujan, Vivek and Howard-Snyder, William and Chen, Kaifeng and Kakade, Sham and Jain, Prateek and Farhadi, Ali",
  booktitle = "Advances in Neural Information Processing Systems",
  year = "2022",
  url = "https://arxiv.org/abs/2205.13147",
}
"""
