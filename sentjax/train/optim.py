"""Optimizer: AdamW with linear warm-up then linear decay, global-norm clipping.

Schedule (BERT, Sentence-BERT, SimCSE all use it; SimCSE sets warm-up to 0):
  lr(t) = peak * t / W                          for t < W
  lr(t) = peak * max(0, (T - t) / (T - W))      for W <= t <= T
with W warm-up steps and T total steps. Weight decay follows Hugging Face's convention:
no decay on biases and LayerNorm parameters (Devlin et al., 2019; Loshchilov & Hutter, 2019).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import ml_collections
import optax

from sentjax.errors import ConfigError


def linear_warmup_decay(peak_lr: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
    """The schedule above; ``warmup_steps`` may be 0."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}.")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}.")
    decay = optax.linear_schedule(peak_lr, 0.0, max(1, total_steps - warmup_steps))
    if warmup_steps == 0:
        return decay
    warm = optax.linear_schedule(0.0, peak_lr, warmup_steps)
    return optax.join_schedules([warm, decay], [warmup_steps])


def decay_mask(params: Any) -> Any:
    """True for parameters that get weight decay: kernels/embeddings, not biases, LayerNorm or
    scalars (a learnable log-temperature or logit bias; open_clip excludes its logit_scale too)."""
    def keep(path, x):
        names = [str(getattr(p, "key", p)) for p in path]
        if getattr(x, "ndim", 1) == 0:
            return False
        return not (names[-1] == "bias" or any("layernorm" in n.lower() or "ln" == n.lower()
                                                 for n in names) or names[-1] == "scale")
    return jax.tree_util.tree_map_with_path(keep, params)


def project_head(clip: Callable[[Any], Any]) -> optax.GradientTransformation:
    """The last link of the optimizer chain when the objective clips its head: the update of
    ``params["head"]`` becomes ``clip(head + update) - head``, so the stored parameter stays in range
    (open_clip clamps its logit scale in place after each step; clipping only in the forward pass
    would leave a parameter past the limit with no gradient, stuck there). Other updates pass as they are."""
    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("project_head needs the params in tx.update(updates, state, params).")
        if "head" not in params:  # these hyperparameters train no head (e.g. a fixed temperature)
            return updates, state
        head = jax.tree.map(lambda p, u: p + u, params["head"], updates["head"])
        new = jax.tree.map(lambda c, p: c - p, clip(head), params["head"])
        return {**updates, "head": new}, state
    return optax.GradientTransformation(init_fn, update_fn)


def warmup_steps_of(opt: ml_collections.ConfigDict, total_steps: int) -> int:
    """``opt.warmup_steps`` if >= 0, else ``round(opt.warmup_ratio * total_steps)``."""
    if opt.warmup_steps >= 0:
        return int(opt.warmup_steps)
    return int(round(opt.warmup_ratio * total_steps))


def make_optimizer(opt: ml_collections.ConfigDict, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW(+clipping) from ``config.optim``: lr, warmup_steps/warmup_ratio, weight_decay, b1, b2,
    eps, clip_norm (<= 0 disables clipping). Returns (transformation, schedule)."""
    sched = linear_warmup_decay(opt.lr, warmup_steps_of(opt, total_steps), total_steps)
    parts = []
    if opt.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(opt.clip_norm))
    parts.append(optax.adamw(sched, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                             weight_decay=opt.weight_decay, mask=decay_mask))
    mult = opt.get("head_lr_mult", 1.0)
    if not mult > 0:
        raise ConfigError(f"optim.head_lr_mult must be > 0, got {mult}.")
    if mult != 1.0:
        parts.append(scale_head(mult))
    return optax.chain(*parts), sched


def scale_head(mult: float) -> optax.GradientTransformation:
    """Multiplies the updates of ``params["head"]`` by ``mult`` (after AdamW: its lr times ``mult``)."""
    def update_fn(updates, state, params=None):
        del params
        if "head" not in updates:
            return updates, state
        return {**updates, "head": jax.tree.map(lambda u: u * mult, updates["head"])}, state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)
