"""Masked / translation language modelling (MLM / TLM) as an auxiliary sentence-encoder objective
(Devlin et al. 2019, "BERT"; Conneau & Lample 2019, "Cross-lingual Language Model Pretraining"
for TLM; used next to a contrastive loss by LaBSE, Feng et al. 2022).

Masking (:func:`mask_tokens`): each non-special, non-pad token is selected with probability
``mask_rate`` (15%); a selected token becomes ``[MASK]`` with probability 0.8, a uniformly random
vocabulary id with 0.1, and stays itself with 0.1. Its label is the original id (-100 elsewhere).
Row ``r`` of step ``s`` draws from ``fold_in(fold_in(fold_in(key(seed), s), crc32("mlm")), r)``:
the masks are a pure function of (seed, step, example), whatever the device count.

Loss over the GLOBAL batch, ``M`` the set of masked tokens of every device's rows::

    L = (1 / |M|) * sum_{(i,t) in M} -log softmax(W h_it + b)[y_it]

Not the mean of per-device means: the encoder step (``sentjax.models.mlm_head.mlm_rows``) returns
one row ``[sum of token CE, masked count]`` per example (the column ``mlm``, ``[batch, 2]``), and
the loss is ``psum(sum) / psum(count)`` over ``axis_name``. Those per-row sums pass through the
gradient engine like embeddings, so the objective is exact on 1 or N devices, with or without
GradCache (the cotangent of a row's sum is ``1/|M|``).

Sources: ``"mlm"`` masks the ``anchor`` column (monolingual text); ``"tlm"`` masks the pair
``anchor`` + ``positive`` (a sentence and its translation) concatenated as the family's tokenizer
joins a pair (:func:`concat_pair`): ``[CLS] a [SEP] b [SEP]`` with token types 0 / 1 for BERT,
``<s> a </s></s> b </s>`` with a single token type for RoBERTa / XLM-R.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from sentjax.losses.registry import ObjectiveSpec, need

__all__ = ["Config", "OBJECTIVE", "CITATION", "column_loss", "mlm_loss", "mask_tokens", "concat_pair",
           "IGNORE"]

IGNORE = -100  # label of an unmasked token (HF's ignore_index)


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyperparameters of the ``mlm`` objective (``config.objective`` or a ``multi`` term)."""
    source: str = "mlm"      # "mlm": mask the anchor text; "tlm": mask anchor + positive concatenated
    mask_rate: float = 0.15  # share of the (non-special, non-pad) tokens that are predicted

    def __post_init__(self):
        if self.source not in ("mlm", "tlm"):
            raise ValueError(f"objective.source={self.source!r}: use 'mlm' (anchor text) or 'tlm' "
                             "(anchor + positive translation pair).")
        if not 0.0 < float(self.mask_rate) < 1.0:
            raise ValueError(f"objective.mask_rate must be in (0, 1), got {self.mask_rate!r}.")


def mask_tokens(key: jax.Array, input_ids: jax.Array, maskable: jax.Array, *, mask_id: int,
                vocab_size: int, mask_rate: float = 0.15) -> tuple[jax.Array, jax.Array]:
    """BERT's 80/10/10 masking of one example: ``input_ids``, ``maskable`` ``[L]`` -> (ids, labels) ``[L]``.

    ``maskable`` is False on special and pad tokens, which are never selected."""
    k_sel, k_how, k_rand = jax.random.split(key, 3)
    selected = jax.random.bernoulli(k_sel, mask_rate, input_ids.shape) & maskable
    how = jax.random.uniform(k_how, input_ids.shape)
    random_ids = jax.random.randint(k_rand, input_ids.shape, 0, vocab_size, input_ids.dtype)
    ids = jnp.where(selected & (how < 0.8), mask_id, input_ids)
    ids = jnp.where(selected & (how >= 0.8) & (how < 0.9), random_ids, ids)
    return ids, jnp.where(selected, input_ids, IGNORE)


def concat_pair(a: dict, b: dict, *, style: str, sep_id: int, type_vocab_size: int) -> dict:
    """Joins two token batches row by row as the tokenizer joins a pair (``[n, La] + [n, Lb] ->
    [n, La + Lb]``, right-padded with 0 / mask 0).

    style "bert": ``b`` loses its leading ``[CLS]``; its tokens get token type 1 (when the model has
    two). style "roberta": ``b``'s leading ``<s>`` becomes ``</s>`` (``sep_id``); one token type.
    """
    if style not in ("bert", "roberta"):
        raise ValueError(f"style={style!r}: use 'bert' or 'roberta'.")
    la = jnp.sum(a["attention_mask"], -1).astype(jnp.int32)
    lb = jnp.sum(b["attention_mask"], -1).astype(jnp.int32)
    drop = 1 if style == "bert" else 0
    b_ids = b["input_ids"] if drop else b["input_ids"].at[:, 0].set(sep_id)
    width = a["input_ids"].shape[1] + b["input_ids"].shape[1]
    j = jnp.arange(width)[None, :]
    k = jnp.clip(j - la[:, None] + drop, 0, b_ids.shape[1] - 1)
    in_a = j < la[:, None]
    valid = j < (la + lb - drop)[:, None]
    a_ids = jnp.pad(a["input_ids"], ((0, 0), (0, width - a["input_ids"].shape[1])))
    ids = jnp.where(in_a, a_ids, jnp.take_along_axis(b_ids, k, 1))
    types = jnp.where(in_a | (type_vocab_size < 2), 0, 1)
    mask = valid.astype(a["attention_mask"].dtype)
    return {"input_ids": jnp.where(valid, ids, 0).astype(a["input_ids"].dtype), "attention_mask": mask,
            "token_type_ids": (types * mask).astype(a["input_ids"].dtype)}


def mlm_loss(rows: jax.Array, *, axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``rows`` ``[batch, 2]`` = (sum of the masked tokens' cross-entropy, masked count) per example
    -> the mean cross-entropy over every masked token of the global batch."""
    if rows.ndim != 2 or rows.shape[-1] != 2:
        raise ValueError(f"the mlm column must be [batch, 2] (CE sum, masked count) per example, got "
                         f"{rows.shape}; it is produced by sentjax.models.mlm_head.mlm_rows.")
    total, count = jnp.sum(rows[:, 0]), lax.stop_gradient(jnp.sum(rows[:, 1]))
    if axis_name is not None:
        total, count = lax.psum(total, axis_name), lax.psum(count, axis_name)
    return total / jnp.maximum(count, 1.0), {"masked_tokens": count}


def column_loss():
    """``loss_fn(params, embeddings, axis_name)``: column ``mlm`` ``[b, 2]`` (:func:`mlm_loss`)."""
    def loss_fn(params, embeddings, axis_name=None):
        return mlm_loss(need(embeddings, "mlm", "mlm"), axis_name=axis_name)
    return loss_fn


# BibTeX of the paper(s) behind this objective; model cards of runs that train with it cite it.
CITATION = """\
@inproceedings{devlin2019bert,
  title = "{BERT}: Pre-training of Deep Bidirectional Transformers for Language Understanding",
  author = "Devlin, Jacob and Chang, Ming-Wei and Lee, Kenton and Toutanova, Kristina",
  booktitle = "Proceedings of NAACL-HLT 2019",
  year = "2019",
  url = "https://arxiv.org/abs/1810.04805",
}
@inproceedings{conneau2019xlm,
  title = "Cross-lingual Language Model Pretraining",
  author = "Conneau, Alexis and Lample, Guillaume",
  booktitle = "Advances in Neural Information Processing Systems",
  year = "2019",
  url = "https://arxiv.org/abs/1901.07291",
}
"""

OBJECTIVE = ObjectiveSpec(
    config=Config,
    loss=lambda hp: column_loss(),
    # "mlm" is built by the trainer from anchor (and positive for TLM) before the step
    columns=lambda hp: ("anchor", "mlm") if hp.source == "mlm" else ("anchor", "positive", "mlm"),
    in_batch_negatives=False,
    token_level=True,
)
