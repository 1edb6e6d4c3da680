"""Embedding distillation by mean squared error (Reimers & Gurevych 2020, "Making Monolingual
Sentence Embeddings Multilingual using Knowledge Distillation"; sentence-transformers' MSELoss).

With student embeddings of source sentences ``s`` and of their translations ``t`` and the teacher's
embeddings of the sources ``T`` (all ``[batch, dim]``; the teacher is frozen)::

    loss = ( mean_{i,c} (s_ic - T_ic)^2 + mean_{i,c} (t_ic - T_ic)^2 ) / 2

or just the first term when ``student_tgt`` is None. No in-batch interaction: with ``axis_name``
the loss is the ``pmean`` of per-device means.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from sentjax.losses.checks import check_embedding_pair
from sentjax.losses.registry import ObjectiveSpec, need

__all__ = ["Config", "OBJECTIVE", "CITATION", "column_loss", "distill_loss"]


def distill_loss(student_src: jax.Array, student_tgt: jax.Array | None, teacher_src: jax.Array, *,
                 axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """MSE of the student's source (and translation) embeddings to the teacher's source embedding."""
    check_embedding_pair(student_src, teacher_src, ("student_src", "teacher_src"))
    teacher = lax.stop_gradient(teacher_src).astype(jnp.float32)
    terms = [jnp.mean(jnp.square(student_src.astype(jnp.float32) - teacher))]
    if student_tgt is not None:
        check_embedding_pair(student_tgt, teacher_src, ("student_tgt", "teacher_src"))
        terms.append(jnp.mean(jnp.square(student_tgt.astype(jnp.float32) - teacher)))
    loss = sum(terms) / len(terms)
    if axis_name is not None:
        loss = lax.pmean(loss, axis_name)
    return loss, {}


# ============================================================================ the objective


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyperparameters of the ``distill`` objective (``config.objective``)."""
    teacher: str = ""  # frozen teacher: a model folder, hub id or "minilm"; "" = model.init_from


def column_loss():
    """``loss_fn(params, embeddings, axis_name)``: columns ``anchor`` (source) ``[b, d]``, optional
    ``positive`` (its translation) ``[b, d]`` and ``teacher`` ``[b, d]`` (the teacher's source embedding)."""
    def loss_fn(params, embeddings, axis_name=None):
        return distill_loss(need(embeddings, "anchor", "distill"), embeddings.get("positive"),
                            need(embeddings, "teacher", "distill"), axis_name=axis_name)
    return loss_fn


# BibTeX of the paper(s) behind this objective; model cards of runs that train with it cite it.
CITATION = """\
@inproceedings{reimers-2020-multilingual-sentence-bert,
  title = "Making Monolingual Sentence Embeddings Multilingual using Knowledge Distillation",
  author = "Reimers, Nils and Gurevych, Iryna",
  booktitle = "Proceedings of the 2020 Conference on Empirical Methods in Natural Language Processing",
  year = "2020",
  publisher = "Association for Computational Linguistics",
  url = "https://arxiv.org/abs/2004.09813",
}
"""

OBJECTIVE = ObjectiveSpec(
    config=Config,
    loss=lambda hp: column_loss(),
    columns=lambda hp: ("anchor", "positive"),
    in_batch_negatives=False,
    needs_teacher=True,
)
