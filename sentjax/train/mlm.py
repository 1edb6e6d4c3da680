"""Trainer wiring of the ``mlm`` objective (:mod:`sentjax.losses.mlm`), alone or as a ``multi`` term.

Before the gradient engine sees a batch, :func:`add_mlm_column` builds the ``mlm`` token column
from ``anchor`` (MLM) or ``anchor`` + ``positive`` (TLM, :func:`sentjax.losses.mlm.concat_pair`)
and masks it with per-example keys (``row_keys(step_rng, "mlm_mask", 0, B)``: a pure function of
(seed, step, example)); it carries ``mlm_labels``. The engine's embed function sends that column
to :func:`sentjax.models.mlm_head.mlm_rows` (per-example CE sum and masked count) instead of the
pooler, so the column flows through shard_map / pmap / GradCache like an embedding.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from sentjax.errors import ConfigError
from sentjax.losses import mlm as mlm_loss
from sentjax.parallel.dropout_keys import row_keys

__all__ = ["MLMSettings", "mlm_settings", "mlm_terms", "add_mlm_column", "check_mlm_config", "embed_with_mlm"]


@dataclasses.dataclass(frozen=True)
class MLMSettings:
    """What masking needs from the model and tokenizer."""
    source: str
    mask_rate: float
    mask_id: int
    special_ids: tuple[int, ...]
    vocab_size: int
    style: str
    sep_id: int
    type_vocab_size: int
    max_tokens: int


def mlm_terms(objective) -> list:
    """The ``mlm`` hyperparameters of an objective (itself, or the terms of a ``multi``)."""
    if objective.name == "mlm":
        return [objective.hparams]
    if objective.name == "multi":
        from sentjax.losses.multi import build_terms
        return [t.objective.hparams for t in build_terms(objective.hparams.terms) if t.objective.name == "mlm"]
    return []


def check_mlm_config(c, objective) -> None:
    """Refuses what the MLM objective cannot do exactly (ConfigError naming the fix)."""
    terms = mlm_terms(objective)
    if len(terms) > 1:
        raise ConfigError("objective.terms has more than one mlm term; one masked column per step is supported.")
    if c.accum_steps > 1:
        raise ConfigError(f"accum_steps={c.accum_steps} with an mlm objective: the loss is the mean over the "
                          "masked tokens of the whole batch, which a mean of micro-batch means is not; use "
                          "GradCache (--config.gradient.gradcache_chunk=N) and keep accum_steps=1.")
    if c.data.packing:
        raise ConfigError("data.packing with an mlm objective is not supported (the masked column needs "
                          "token-level outputs of padded rows); set --config.data.packing=false.")


def mlm_settings(objective, model) -> MLMSettings:
    """Masking settings from the built objective, the model's config and its tokenizer."""
    from sentjax.models.mlm_head import check_mlm_model
    cfg = model.module.config
    check_mlm_model(cfg)
    hp = mlm_terms(objective)[0]
    backend = model.tokenizer.backend
    ids = {t: backend.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "<s>", "</s>", "<pad>", "<mask>")}
    mask_id = ids["[MASK]"] if ids["[MASK]"] is not None else ids["<mask>"]
    if mask_id is None:
        raise ConfigError("the mlm objective needs a mask token ([MASK] or <mask>) in the tokenizer.")
    style = "bert" if cfg.model_type == "bert" else "roberta"
    sep_id = ids["[SEP]"] if style == "bert" else ids["</s>"]
    if sep_id is None:
        raise ConfigError(f"the mlm objective needs the tokenizer's separator ({'[SEP]' if style == 'bert' else '</s>'}).")
    special = sorted({i for i in ids.values() if i is not None} | {int(model.tokenizer.pad_token_id)})
    return MLMSettings(hp.source, float(hp.mask_rate), int(mask_id), tuple(special), int(cfg.vocab_size), style,
                       int(sep_id), int(cfg.type_vocab_size), int(cfg.max_tokens))


def add_mlm_column(batch: dict, rng: jax.Array, s: MLMSettings) -> dict:
    """``batch`` plus the masked ``mlm`` token column (with ``mlm_labels``) of this step."""
    a = batch["anchor"]
    if s.source == "tlm":
        if "positive" not in batch:
            raise KeyError(f"the tlm objective needs a 'positive' column (translation pairs), got {sorted(batch)}.")
        tokens = mlm_loss.concat_pair(a, batch["positive"], style=s.style, sep_id=s.sep_id,
                                      type_vocab_size=s.type_vocab_size)
    else:
        tokens = {k: a[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in a}
    width = tokens["input_ids"].shape[1]
    if width > s.max_tokens:
        raise ValueError(f"the {s.source} column has {width} tokens but the model's position table holds "
                         f"{s.max_tokens}; lower --config.model.max_length to {s.max_tokens // 2} or less.")
    ids = tokens["input_ids"]
    maskable = (tokens["attention_mask"] > 0) & ~jnp.isin(ids, jnp.asarray(s.special_ids, ids.dtype))
    keys = row_keys(rng, "mlm_mask", 0, ids.shape[0])
    masked, labels = jax.vmap(lambda k, x, m: mlm_loss.mask_tokens(
        k, x, m, mask_id=s.mask_id, vocab_size=s.vocab_size, mask_rate=s.mask_rate))(keys, ids, maskable)
    return {**batch, "mlm": {**tokens, "input_ids": masked, "mlm_labels": labels}}


def embed_with_mlm(embed: Callable, module, params: dict, tokens: dict, rng) -> Any:
    """The engine's embed function: an ``mlm`` token column -> ``[n, 2]`` rows, others -> embeddings."""
    if "mlm_labels" in tokens:
        from sentjax.models.mlm_head import mlm_rows
        return mlm_rows(module, params["model"], params["mlm_head"], tokens, rng)
    return embed(params["model"], tokens, rng)
