"""InfoNCE with several positives per anchor ("1 to k positive examples"), global negatives.

Papers: Khosla et al. 2020, "Supervised Contrastive Learning" (SupCon; its Eq. 2 ``L_out`` and
Eq. 3 ``L_in`` are the two forms below); van den Oord et al. 2018 (InfoNCE, the k = 1 case);
Miech et al. 2020 (MIL-NCE, the ``L_in`` form for several matching clips).

Expected columns (local to one device when ``axis_name`` is given, else the whole batch)::

    anchor [b, d]; positive, positive_1, ..., positive_{k-1} [b, d] (row i of each is one of
    anchor i's k positives); optionally negative [b * m, d] (anchor-major hard negatives)

The loss function itself takes ``anchors [b, d]``, ``positives [b, k, d]``, ``negatives [b, m, d]
| None``. All embeddings are L2-normalised, ``s(x, y) = cos(x, y)``. With ``B = n * b`` anchors of
the global batch (device-major) the candidates are ``c`` = [the B*k positives, anchor-major, then
the B*m hard negatives, anchor-major]; ``P(i)`` are the k positions of anchor i's own positives::

    logits[i, j] = s(a_i, c_j) / T
    lse_i        = logsumexp_j logits[i, j]          (every positive and negative of the batch)
    mean_log_prob (default, SupCon L_out):  loss_i = lse_i - (1/k) sum_{p in P(i)} logits[i, p]
    log_sum_prob  (SupCon L_in, MIL-NCE):   loss_i = lse_i - logsumexp_{p in P(i)} logits[i, p]
    loss         = mean_i loss_i;   accuracy = mean_i [argmax_j logits[i, j] in P(i)]

So every other anchor's positives (on every device) and all hard negatives are negatives of
anchor i; its own other positives stay in its denominator (as in SupCon). With k = 1 both forms
are :func:`sentjax.losses.infonce.infonce_loss` exactly.

Default ``mean_log_prob``: it asks each of the k positives to be likely (an equal 1/k pull on
each), while ``log_sum_prob`` is satisfied once the easiest positive dominates (its gradient on
positive p is weighted by p's share of the positives' probability), so a hard positive gets little
signal; Khosla et al. (Table 2) found L_out clearly better. ``log_sum_prob`` suits noisy positive
sets where some "positives" are wrong (MIL-NCE's use). By Jensen, ``log_sum_prob <= mean_log_prob -
log k``, with equality when an anchor's k positives score alike. ``mean_log_prob`` is at least ``log k``
(its own positives share the probability mass), ``log_sum_prob`` at least 0: compare losses across k
with that in mind.

Across devices the positives and negatives are all-gathered (``lax.all_gather(..., tiled=True)``;
the transpose is a reduce-scatter, so every candidate gets the gradient from every device's
anchors) and the per-device means are ``pmean``-ed: the global mean over all B anchors, not
divided by the device count.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from sentjax.losses.checks import check_negatives, check_temperature, negatives_per_anchor
from sentjax.losses.registry import ObjectiveSpec, need
from sentjax.ops import l2_normalize

__all__ = ["Config", "OBJECTIVE", "CITATION", "FORMS", "column_loss", "multipos_loss", "positive_columns"]

FORMS = ("mean_log_prob", "log_sum_prob")


def positive_columns(k: int) -> tuple[str, ...]:
    """The batch columns of k positives: ``positive`` (so k = 1 is any pairs data), ``positive_1``, ..."""
    return ("positive",) + tuple(f"positive_{j}" for j in range(1, k))


def multipos_loss(anchors: jax.Array, positives: jax.Array, negatives: jax.Array | None = None, *,
                  temperature: float = 0.05, form: str = "mean_log_prob", axis_name: str | None = None
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """InfoNCE with k positives per anchor and global in-batch negatives; see the module doc.

    Args:
      anchors: ``[b, d]`` (local shard when ``axis_name`` is given).
      positives: ``[b, k, d]``: anchor i's k positives.
      negatives: ``[b, m, d]`` hard negatives of each anchor, or None.
      temperature: T > 0 dividing the cosine similarities.
      form: ``"mean_log_prob"`` (SupCon L_out, default) or ``"log_sum_prob"`` (L_in).
      axis_name: mesh / pmap axis the batch is split over, or None for one device.

    Returns:
      ``(loss, {"accuracy": ...})``: float32 scalars, means over the global batch.
    """
    if form not in FORMS:
        raise ValueError(f"form={form!r}: use one of {FORMS}.")
    if getattr(anchors, "ndim", None) != 2:
        raise ValueError(f"anchors must be a [batch, dim] array, got shape {getattr(anchors, 'shape', None)}.")
    b, d = anchors.shape
    if getattr(positives, "ndim", None) != 3 or positives.shape[0] != b or positives.shape[2] != d:
        raise ValueError(f"positives must be [batch, k, dim] = [{b}, k, {d}], got "
                         f"{getattr(positives, 'shape', None)}; row i holds anchor i's k positives.")
    if b == 0 or positives.shape[1] == 0:
        raise ValueError(f"need at least one anchor and one positive per anchor, got positives {positives.shape}.")
    for name, x in (("anchors", anchors), ("positives", positives)):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"{name} must be floating point (float32 or bfloat16), got {x.dtype}.")
    check_negatives(negatives, b, d)
    check_temperature(temperature)

    def gather(x):
        return x if axis_name is None else lax.all_gather(x, axis_name, tiled=True)

    k = positives.shape[1]
    offset = 0 if axis_name is None else lax.axis_index(axis_name) * b
    labels = offset + jnp.arange(b)  # global index of each local anchor
    a = l2_normalize(jnp.asarray(anchors))
    inv_t = 1.0 / jnp.asarray(temperature, jnp.float32)
    cands = gather(l2_normalize(jnp.asarray(positives)).reshape(b * k, d))  # [B*k, d], anchor-major
    logits = (a @ cands.T) * inv_t  # [b, B*k]
    own = labels[:, None] * k + jnp.arange(k)[None, :]  # [b, k]: columns of anchor i's positives
    pos = jnp.take_along_axis(logits, own, axis=1)  # [b, k]
    if negatives is not None and negatives.shape[1] > 0:
        m = negatives.shape[1]
        n_all = gather(l2_normalize(jnp.asarray(negatives)).reshape(b * m, d))
        logits = jnp.concatenate([logits, (a @ n_all.T) * inv_t], axis=1)
    lse = jax.nn.logsumexp(logits, axis=1)
    numer = jnp.mean(pos, axis=1) if form == "mean_log_prob" else jax.nn.logsumexp(pos, axis=1)
    loss = jnp.mean(lse - numer)
    best = jnp.argmax(logits, axis=1)
    hit = (best < cands.shape[0]) & (best // k == labels)  # any own positive; hard negatives sit past B*k
    accuracy = jnp.mean(hit.astype(jnp.float32))
    if axis_name is not None:
        loss, accuracy = lax.pmean((loss, accuracy), axis_name)
    return loss, {"accuracy": accuracy}


# ============================================================================ the objective


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyperparameters of the ``multipos`` objective (``config.objective``)."""
    positives: int = 2                 # k: columns positive, positive_1, ..., positive_{k-1}
    temperature: float = 0.05          # T: cosine similarities are divided by it
    form: str = "mean_log_prob"        # "mean_log_prob" (SupCon L_out) or "log_sum_prob" (L_in, MIL-NCE)
    use_hard_negatives: bool = True    # embed the batch's "negative" column when the data has one

    def __post_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"objective.form={self.form!r}: use one of {FORMS}.")
        if not isinstance(self.positives, int) or self.positives < 1:
            raise ValueError(f"objective.positives must be an integer >= 1, got {self.positives!r}.")
        check_temperature(self.temperature)


def column_loss(*, positives: int = 2, temperature: float = 0.05, form: str = "mean_log_prob"):
    """``loss_fn(params, embeddings, axis_name)`` over ``anchor`` and the k positive columns
    ``[b, d]`` (:func:`positive_columns`), optionally ``negative`` ``[b * m, d]`` anchor-major."""
    cols = positive_columns(positives)

    def loss_fn(params, embeddings, axis_name=None):
        a = need(embeddings, "anchor", "multipos")
        p = jnp.stack([need(embeddings, c, "multipos") for c in cols], axis=1)
        n = negatives_per_anchor(a, embeddings.get("negative"))
        return multipos_loss(a, p, n, temperature=temperature, form=form, axis_name=axis_name)
    return loss_fn


OBJECTIVE = ObjectiveSpec(
    config=Config,
    loss=lambda hp: column_loss(positives=hp.positives, temperature=hp.temperature, form=hp.form),
    columns=lambda hp: ("anchor",) + positive_columns(hp.positives)
    + (("negative",) if hp.use_hard_negatives else ()),
    in_batch_negatives=True,
)


# BibTeX of the paper(s) behind this objective; model cards of runs that train with it cite it.
CITATION = """\
@inproceedings{khosla2020supcon,
  title = "Supervised Contrastive Learning",
  author = "Khosla, Prannay and Teterwak, Piotr and Wang, Chen and Sarna, Aaron and Tian, Yonglong and Isola, Phillip and Maschinot, Aaron and Liu, Ce and Krishnan, Dilip",
  booktitle = "Advances in Neural Information Processing Systems",
  year = "2020",
  url = "https://arxiv.org/abs/2004.11362",
}
"""
