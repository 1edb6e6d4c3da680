"""LoRA: low-rank adapters on chosen dense projections of a frozen encoder (Hu et al. 2021,
"LoRA: Low-Rank Adaptation of Large Language Models", https://arxiv.org/abs/2106.09685).

For a targeted ``nn.Dense`` with kernel ``W [in, out]`` (bias ``b``) and input ``x [..., in]``::

    h = x W + b + (alpha / r) * dropout(x) A B          A [in, r], B [r, out]

``A`` starts from U(-1/sqrt(in), 1/sqrt(in)) (peft's kaiming-uniform with a=sqrt(5)), ``B`` from
zeros, so before the first update the model is exactly the base model. Only ``A`` and ``B`` are
trained; the base parameters stay outside the optimizer. ``dropout`` acts on the adapter's input
only, from an explicit key (``fold_in(fold_in(rng, LORA_STREAM), crc32(path))`` per projection),
so the base model's own dropout masks are those it has without adapters. Merged:
``W' = W + (alpha / r) A B`` (:func:`merge`), a plain model of the same family.

Targets are module names (``query``, ``value`` for BERT / XLM-R, ``q``, ``v`` for MPNet, ``q_proj``,
``v_proj`` for Llama / Qwen2) or '/'-joined path suffixes (``attention/self/query``), matched against
the ``nn.Dense`` parameter paths of any registered family (a dict holding a 2-D ``kernel``).

The adapters are a pytree mirroring the base parameter tree down to each targeted projection:
``{"encoder": {"layer_0": {... {"query": {"lora_a": [in, r], "lora_b": [r, out]}}}}}``.
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sentjax.errors import ConfigError

__all__ = ["LoRAConfig", "dense_paths", "target_paths", "init_adapters", "lora_embed_fn", "merge",
           "count_params", "CITATION"]

# Separates the adapters' dropout stream from the base model's (which keeps its own ``rng``).
LORA_STREAM = 0x4C6F5241

CITATION = """\
@inproceedings{hu2022lora,
  title = {{LoRA}: Low-Rank Adaptation of Large Language Models},
  author = {Hu, Edward J. and Shen, Yelong and Wallis, Phillip and Allen-Zhu, Zeyuan and Li, Yuanzhi and Wang, Shean and Wang, Lu and Chen, Weizhu},
  booktitle = {International Conference on Learning Representations},
  year = {2022},
  url = {https://arxiv.org/abs/2106.09685},
}
"""


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    rank: int                        # r > 0
    alpha: float = 16.0              # scaling = alpha / r
    dropout: float = 0.0             # dropout on the adapter's input, in [0, 1)
    targets: tuple[str, ...] = ()    # module names / path suffixes of the adapted nn.Dense layers

    def __post_init__(self):
        if not isinstance(self.rank, int) or self.rank <= 0:
            raise ConfigError(f"model.lora.rank must be a positive integer, got {self.rank!r}.")
        if not self.alpha > 0:
            raise ConfigError(f"model.lora.alpha must be > 0, got {self.alpha!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.lora.dropout must be in [0, 1), got {self.dropout!r}.")
        if not self.targets or isinstance(self.targets, str):
            raise ConfigError("model.lora.targets must name the projections to adapt, e.g. "
                              "('query', 'value') for BERT, ('q', 'v') for MPNet, ('q_proj', 'v_proj') "
                              f"for Llama; got {self.targets!r}.")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> "LoRAConfig | None":
        """``config.model.lora`` -> LoRAConfig, or None when ``rank`` is 0 (LoRA off)."""
        m = dict(m)
        unknown = sorted(set(m) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"model.lora has no key(s) {unknown}; valid: rank, alpha, dropout, targets.")
        if not m.get("rank"):
            return None
        return cls(rank=int(m["rank"]), alpha=float(m.get("alpha", 16.0)),
                   dropout=float(m.get("dropout", 0.0)), targets=tuple(m.get("targets", ())))


def dense_paths(params: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """Paths of every dict holding a 2-D ``kernel`` (an ``nn.Dense``), in tree order."""
    out: list[tuple[str, ...]] = []

    def walk(node, path):
        if not isinstance(node, Mapping):
            return
        k = node.get("kernel")
        if k is not None and not isinstance(k, Mapping) and len(k.shape) == 2:
            out.append(path)
        for name in sorted(node):
            walk(node[name], path + (name,))
    walk(params, ())
    return out


def _matches(path: tuple[str, ...], target: str) -> bool:
    parts = tuple(target.strip("/").split("/"))
    return len(parts) <= len(path) and path[len(path) - len(parts):] == parts


def target_paths(params: Mapping[str, Any], targets: Sequence[str]) -> list[tuple[str, ...]]:
    """The dense projections the targets name; ConfigError for a target that matches none."""
    dense = dense_paths(params)
    chosen = [p for p in dense if any(_matches(p, t) for t in targets)]
    for t in targets:
        if not any(_matches(p, t) for p in dense):
            names = sorted({p[-1] for p in dense})
            raise ConfigError(f"model.lora.targets: {t!r} names no dense projection of this model; "
                              f"its projections are {names} (or a '/'-joined path suffix such as "
                              f"{'/'.join(dense[0][-2:])!r}).")
    return chosen


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for k in path:
        tree = tree[k]
    return tree


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def init_adapters(params: Mapping[str, Any], cfg: LoRAConfig, rng: jax.Array) -> dict:
    """Adapters for every targeted projection of ``params``: A uniform, B zero (float32)."""
    adapters: dict = {}
    for i, path in enumerate(target_paths(params, cfg.targets)):
        d_in, d_out = _get(params, path)["kernel"].shape
        bound = 1.0 / float(d_in) ** 0.5
        a = jax.random.uniform(jax.random.fold_in(rng, i), (d_in, cfg.rank), jnp.float32, -bound, bound)
        _set(adapters, path, {"lora_a": a, "lora_b": jnp.zeros((cfg.rank, d_out), jnp.float32)})
    return adapters


def adapter_paths(adapters: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """Paths of the adapted projections in an adapter tree."""
    out: list[tuple[str, ...]] = []

    def walk(node, path):
        if "lora_a" in node:
            out.append(path)
            return
        for name in sorted(node):
            walk(node[name], path + (name,))
    walk(adapters, ())
    return out


def merge(params: Mapping[str, Any], adapters: Mapping[str, Any], cfg: LoRAConfig) -> dict:
    """The base parameters with every adapter folded in: ``W + (alpha / r) A B`` (float32)."""
    merged = jax.tree.map(lambda x: x, dict(params))  # fresh dicts; leaves shared
    for path in adapter_paths(adapters):
        ad = _get(adapters, path)
        dense = dict(_get(merged, path))
        delta = jnp.matmul(ad["lora_a"], ad["lora_b"], precision=jax.lax.Precision.HIGHEST)
        dense["kernel"] = dense["kernel"] + cfg.scaling * delta
        _set(merged, path, dense)
    return merged


def count_params(tree: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))


def lora_embed_fn(module: nn.Module, cfg: LoRAConfig):
    """``f(base, adapters, batch, rng=None) -> [batch, dim]``: ``module`` with the adapters added
    to its targeted ``nn.Dense`` calls (a Flax method interceptor, so every registered family works
    unchanged). Dropout (the base model's and the adapters') is on iff ``rng`` is given."""
    def f(base, adapters, batch, rng=None):
        paths = {p: _get(adapters, p) for p in adapter_paths(adapters)}
        lora_key = None if rng is None or cfg.dropout == 0 else jax.random.fold_in(rng, LORA_STREAM)

        def interceptor(next_fun, args, kwargs, context):
            mod = context.module
            out = next_fun(*args, **kwargs)
            if context.method_name != "__call__" or not isinstance(mod, nn.Dense):
                return out
            ad = paths.get(tuple(mod.path))
            if ad is None:
                return out
            x = args[0]
            if lora_key is not None:
                k = jax.random.fold_in(lora_key, zlib.crc32("/".join(mod.path).encode()) & 0x7FFFFFFF)
                keep = jax.random.bernoulli(k, 1.0 - cfg.dropout, x.shape)
                x = jnp.where(keep, x / (1.0 - cfg.dropout), 0.0)
            dt = out.dtype
            low = jnp.matmul(x.astype(dt), ad["lora_a"].astype(dt))
            return out + (cfg.scaling * jnp.matmul(low, ad["lora_b"].astype(dt))).astype(dt)

        with nn.intercept_methods(interceptor):
            if rng is None:
                return module.apply({"params": base}, batch, deterministic=True)
            return module.apply({"params": base}, batch, deterministic=False, rngs={"dropout": rng})
    return f
