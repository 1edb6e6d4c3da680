"""GISTEmbed: InfoNCE whose false negatives are masked by a frozen guide model (Solatorio 2024,
"GISTEmbed: Guided In-sample Selection of Training Negatives for Text Embedding Fine-tuning",
arXiv:2402.16829; sentence-transformers' GISTEmbedLoss).

Columns (local to one device when ``axis_name`` is given): the student's ``anchor`` ``a`` and
``positive`` ``p`` ``[b, d]``, optionally ``negative`` ``n`` ``[b * k, d]`` (anchor-major: anchor i's
k negatives are rows ``i*k .. i*k+k-1``), and the frozen guide's embeddings of the same rows,
``teacher:anchor`` / ``teacher:positive`` / ``teacher:negative`` (same shapes; the train step adds
them, computed once per step without gradient). ``s`` is the student's cosine, ``g`` the guide's.

With ``B = n_devices * b`` the global batch, anchor i's candidate blocks are (as GISTEmbedLoss)::

    ap: s(a_i, p_j)  j < B           the positives; j = i is anchor i's positive (the label)
    aa: s(a_i, a_j)  j < B, j != i   the other anchors           (contrast_anchors)
    pp: s(p_i, p_j)  j < B, j != i   the other positives         (contrast_positives)
    an: s(a_i, n_j)  j < B * k       every hard negative

A candidate ``c`` of any block is a false negative, and its logit becomes ``-inf`` (it leaves the
softmax), when the guide rates it above anchor i's positive::

    absolute:  g(x_i, c) > g(a_i, p_i) - margin
    relative:  g(x_i, c) > g(a_i, p_i) - |g(a_i, p_i)| * margin    (= g(a_i, p_i) (1 - margin) for g >= 0)

(``x_i`` is the block's row: ``a_i``, or ``p_i`` for pp.) The positive ``p_i`` itself is never masked.
Then, with temperature T::

    loss = mean_i ( logsumexp_j logits[i, :] - s(a_i, p_i) / T ),   logits = [ap | aa | pp | an] / T

Across devices anchors, positives and negatives of the student and the guide are all-gathered
(``tiled``, so the order is that of the concatenated batch) and the loss is the ``pmean`` of the
per-device means: equal to the one-device loss on the whole batch. (sentence-transformers with
``gather_across_devices`` keeps the aa block per device; here every anchor of the global batch is
a candidate, so N devices give the one-device result.) The guide gets no gradient.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from sentjax.losses.checks import check_embedding_pair, check_negatives, check_temperature, negatives_per_anchor
from sentjax.losses.registry import ObjectiveSpec, need
from sentjax.ops import l2_normalize

__all__ = ["Config", "OBJECTIVE", "CITATION", "MARGIN_STRATEGIES", "column_loss", "gist_loss"]

MARGIN_STRATEGIES = ("absolute", "relative")


def gist_loss(anchors: jax.Array, positives: jax.Array, negatives: jax.Array | None,
              guide_anchors: jax.Array, guide_positives: jax.Array, guide_negatives: jax.Array | None, *,
              temperature: float = 0.01, margin_strategy: str = "absolute", margin: float = 0.0,
              contrast_anchors: bool = True, contrast_positives: bool = True,
              axis_name: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """GISTEmbed loss (module doc). ``anchors`` / ``positives`` ``[b, d]``, ``negatives`` ``[b, k, d]``
    or None; ``guide_*`` the guide's embeddings of the same rows (its own dim ``d_g``).

    Returns ``(loss, {"accuracy", "masked"})``: means over the global batch; ``masked`` is the
    fraction of candidates (positives excluded) the guide removed."""
    check_embedding_pair(anchors, positives)
    check_embedding_pair(guide_anchors, guide_positives, ("guide_anchors", "guide_positives"))
    b, d = anchors.shape
    if guide_anchors.shape[0] != b:
        raise ValueError(f"the guide embedded {guide_anchors.shape[0]} anchors for the student's {b}; "
                         "both must embed the same rows.")
    check_negatives(negatives, b, d)
    if (negatives is None) != (guide_negatives is None):
        raise ValueError("give the hard negatives of both the student and the guide, or of neither.")
    if negatives is not None and guide_negatives is not None:
        check_negatives(guide_negatives, b, guide_anchors.shape[1])
        if guide_negatives.shape[1] != negatives.shape[1]:
            raise ValueError(f"the guide has {guide_negatives.shape[1]} negatives per anchor, the student "
                             f"{negatives.shape[1]}; both must embed the same rows.")
    check_temperature(temperature)
    if margin_strategy not in MARGIN_STRATEGIES:
        raise ValueError(f"margin_strategy={margin_strategy!r}: use one of {MARGIN_STRATEGIES}.")

    def gather(x):
        return x if axis_name is None else lax.all_gather(x, axis_name, tiled=True)

    def unit(x):  # similarities in float32 whatever the input dtype (logits up to 1/T = 100)
        return l2_normalize(jnp.asarray(x).astype(jnp.float32))

    a, p = unit(anchors), unit(positives)
    ga, gp = (lax.stop_gradient(unit(x)) for x in (guide_anchors, guide_positives))
    labels = (0 if axis_name is None else lax.axis_index(axis_name) * b) + jnp.arange(b)
    p_all, gp_all = gather(p), gather(gp)  # [B, d]
    g_pos = jnp.sum(ga * gp, axis=1, keepdims=True)  # [b, 1] the guide's anchor-positive similarity
    threshold = g_pos - (margin if margin_strategy == "absolute" else jnp.abs(g_pos) * margin)
    own = jnp.arange(p_all.shape[0])[None, :] == labels[:, None]  # [b, B]: the row's own positive / self

    # (student similarities, guide similarities, entries that are never candidates) per block
    blocks: list[tuple[jax.Array, jax.Array, jax.Array | None]] = [(a @ p_all.T, ga @ gp_all.T, None)]
    if contrast_anchors:
        blocks.append((a @ gather(a).T, ga @ gather(ga).T, own))
    if contrast_positives:
        blocks.append((p @ p_all.T, gp @ gp_all.T, own))
    if negatives is not None and guide_negatives is not None and negatives.shape[1] > 0:
        k = negatives.shape[1]
        n_all = gather(unit(negatives).reshape(b * k, d))  # [B * k, d], anchor-major
        gn_all = gather(lax.stop_gradient(unit(guide_negatives)).reshape(b * k, guide_negatives.shape[2]))
        blocks.append((a @ n_all.T, ga @ gn_all.T, None))

    inv_t = 1.0 / jnp.asarray(temperature, jnp.float32)
    parts, masked, counted = [], jnp.float32(0), 0
    for i, (sim, guide, self_entry) in enumerate(blocks):
        false_neg = guide > threshold
        if i == 0:
            false_neg = false_neg & ~own  # never mask the positive
        drop = false_neg if self_entry is None else false_neg | self_entry
        parts.append(jnp.where(drop, -jnp.inf, sim * inv_t))
        candidates = ~own if i == 0 or self_entry is not None else jnp.ones_like(false_neg)
        masked += jnp.sum(false_neg & candidates)
        counted += sim.shape[1] - (1 if i == 0 or self_entry is not None else 0)
    logits = jnp.concatenate(parts, axis=1)
    pos = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    loss = jnp.mean(jax.nn.logsumexp(logits, axis=1) - pos)
    accuracy = jnp.mean((jnp.argmax(logits, axis=1) == labels).astype(jnp.float32))
    masked = masked / (b * max(counted, 1))
    if axis_name is not None:
        loss, accuracy, masked = lax.pmean((loss, accuracy, masked), axis_name)
    return loss, {"accuracy": accuracy, "masked": masked}


# ============================================================================ the objective


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyperparameters of the ``gist`` objective (``config.objective``)."""
    temperature: float = 0.01          # T dividing the cosine similarities (sentence-transformers: 0.01)
    margin_strategy: str = "absolute"  # false negative: g(x, c) > g(a, p) - margin, or - |g(a, p)| * margin
    margin: float = 0.0                # 0 + absolute: mask candidates the guide rates above the positive
    contrast_anchors: bool = True      # the other anchors are candidates too (the paper; GISTEmbedLoss)
    contrast_positives: bool = True    # positive-positive pairs too (the paper; GISTEmbedLoss)
    use_hard_negatives: bool = True    # embed the batch's "negative" column when the data has one
    guide: str = ""                    # the frozen guide: model folder, hub id or "minilm"; "" = model.init_from

    def __post_init__(self):
        check_temperature(self.temperature)
        if self.margin_strategy not in MARGIN_STRATEGIES:
            raise ValueError(f"objective.margin_strategy={self.margin_strategy!r}: use one of {MARGIN_STRATEGIES}.")
        if not self.margin >= 0:
            raise ValueError(f"objective.margin must be >= 0 (a negative margin masks candidates the guide "
                             f"rates BELOW the positive), got {self.margin}.")


def column_loss(*, temperature: float = 0.01, margin_strategy: str = "absolute", margin: float = 0.0,
                contrast_anchors: bool = True, contrast_positives: bool = True):
    """``loss_fn(params, embeddings, axis_name)`` over ``anchor`` / ``positive`` ``[b, d]``, optionally
    ``negative`` ``[b * k, d]`` (anchor-major), and the guide's ``teacher:<column>`` of the same rows."""
    def loss_fn(params, embeddings, axis_name=None):
        a = need(embeddings, "anchor", "gist")
        n = negatives_per_anchor(a, embeddings.get("negative"))
        ga = need(embeddings, "teacher:anchor", "gist")
        gn = None if n is None else negatives_per_anchor(ga, need(embeddings, "teacher:negative", "gist"))
        return gist_loss(a, need(embeddings, "positive", "gist"), n, ga,
                         need(embeddings, "teacher:positive", "gist"), gn, temperature=temperature,
                         margin_strategy=margin_strategy, margin=margin, contrast_anchors=contrast_anchors,
                         contrast_positives=contrast_positives, axis_name=axis_name)
    return loss_fn


# BibTeX of the paper(s) behind this objective; model cards of runs that train with it cite it.
CITATION = """\
@misc{solatorio2024gistembed,
  title = "{GISTEmbed}: Guided In-sample Selection of Training Negatives for Text Embedding Fine-tuning",
  author = "Solatorio, Aivin V.",
  year = "2024",
  eprint = "2402.16829",
  archivePrefix = "arXiv",
  url = "https://arxiv.org/abs/2402.16829",
}
"""


def _columns(hp: Config) -> tuple[str, ...]:
    return ("anchor", "positive") + (("negative",) if hp.use_hard_negatives else ())


OBJECTIVE = ObjectiveSpec(
    config=Config,
    loss=lambda hp: column_loss(temperature=hp.temperature, margin_strategy=hp.margin_strategy,
                                margin=hp.margin, contrast_anchors=hp.contrast_anchors,
                                contrast_positives=hp.contrast_positives),
    columns=_columns,
    in_batch_negatives=True,
    teacher_columns=_columns,  # the guide embeds the same rows, once per step (train.objective_grads)
)
