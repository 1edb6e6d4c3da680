"""Embedding distillation by mean squared error (Reimers & Gurevych 2020, "Making Monolingual
Sentence Embeddings Multilingual using Knowledge Distillation"; sentence-transformers' MSELoss).

With student embeddings of source sentences ``s`` and of their translations ``t`` and the teacher's
embeddings of the sources ``T`` (all ``[batch, dim]``; the teacher is frozen)::

    loss = ( mean_{i,c} (s_ic - T_ic)^2 + mean_{i,c} (t_ic - T_ic)^2 ) / 2

or just the first term when ``student_tgt`` is None. No in-batch interaction: with ``axis_name``
the loss is the ``pmean`` of per-device means.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from sentjax.losses.infonce import check_embedding_pair

__all__ = ["distill_loss"]


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
