"""What a run config builds under ``model``: the model to train, the teacher of distillation, and
the vocabulary transfer of a multilingual student. Each takes the config values it needs (the run
config's ``model`` sub-dict, a ``ConfigDict`` or a plain dict) and raises ConfigError naming the key
at fault.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from sentjax import rng as rng_lib
from sentjax.errors import ConfigError
from sentjax.models import registry
from sentjax.models.api import SentenceModel, init_model, load
from sentjax.models.bundled import resolve_bundled
from sentjax.models.sentence_model import init_params
from sentjax.tokenization import Tokenizer

__all__ = ["build_model", "load_teacher", "transfer_vocab", "resolve_bundled"]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_model(m: Mapping[str, Any], *, dtype: str = "float32", seed: int = 0) -> SentenceModel:
    """The model a run trains, from the run config's ``model`` sub-dict: loaded from
    ``m["init_from"]`` (with ``m["vocab_from"]``'s vocabulary when set), else randomly initialised
    (from ``seed``) with the architecture ``m["encoder"]`` and the tokenizer ``m["tokenizer"]``.
    ``dtype``: the compute dtype, "float32" or "bfloat16" (parameters stay float32)."""
    compute = _DTYPES.get(dtype, jnp.float32)
    pooling = dict(pooling=m["pooling"], normalize=m["normalize"], mlp_at_inference=m["mlp_at_inference"],
                   include_prompt=m.get("include_prompt", True))
    if m["init_from"]:
        model = load(resolve_bundled(m["init_from"], "model.init_from"), max_length=m["max_length"],
                     dtype=compute)
        if any(getattr(model.module, k) != v for k, v in pooling.items()):
            model = dataclasses.replace(model, module=model.module.clone(**pooling))
            if m["pooling"] == "cls_mlp" and "pooler" not in model.params:
                # SimCSE's MLP is new on top of a pretrained encoder: initialise it from the seed.
                fresh = init_params(model.module, rng_lib.key(seed))
                model.params = dict(model.params, pooler=fresh["pooler"])
        if m["vocab_from"]:
            model = transfer_vocab(model, m["vocab_from"], m["max_length"])
        return model
    if m["vocab_from"]:
        raise ConfigError("model.vocab_from transfers a pretrained model's embeddings; set "
                          "model.init_from too (a random init takes model.tokenizer).")
    if not m["tokenizer"]:
        raise ConfigError("A random init needs a tokenizer folder: --config.model.tokenizer=DIR.")
    tok = Tokenizer.from_dir(resolve_bundled(m["tokenizer"], "model.tokenizer"), max_length=m["max_length"])
    config = registry.config_from_dict(dict(m["encoder"]), source="model.encoder")
    return init_model(config, tok, rng_lib.key(seed), dtype=compute, **pooling)


def transfer_vocab(model: SentenceModel, vocab_from: str, max_length: int) -> SentenceModel:
    """``model`` under the vocabulary of the tokenizer folder ``vocab_from`` (``"multilingual"``:
    the bundled XLM-R one); see ``sentjax.models.vocab_transfer``."""
    from sentjax.models.vocab_transfer import transfer_vocabulary
    return transfer_vocabulary(model, resolve_bundled(vocab_from, "model.vocab_from"), max_length)[0]


def load_teacher(teacher: str, m: Mapping[str, Any], student: SentenceModel | None = None) -> SentenceModel:
    """The frozen teacher of distillation: the model folder ``teacher``, else the student's starting
    point ``m["init_from"]`` (before any vocabulary transfer), else the folder the student came from."""
    path = teacher or m["init_from"] or (student.source_dir if student is not None else None)
    if path:
        path = resolve_bundled(path, "objective.teacher" if teacher else "model.init_from")
    if not path:
        raise ConfigError("this objective needs a frozen teacher model: set objective.teacher (gist: "
                          "objective.guide) or model.init_from to a model folder (or 'minilm').")
    return load(path, max_length=m["max_length"])
