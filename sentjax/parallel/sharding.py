"""Where parameters and optimizer state live on the mesh: replicated, or FSDP / ZeRO-3 (sharded).

A rule set (big_vision's ``sharding_rules``) is a sequence of ``(regex, spec)``. The first rule
whose regex ``re.search``-matches a parameter's path (``"model/encoder/layer_0/attention/query/kernel"``)
decides its placement; a parameter that no rule matches is replicated. ``spec`` is one of

* ``"replicated"``: a full copy on every device (``P()``);
* ``"fsdp"``: a parameter of at least ``min_size`` elements is split over the ``data`` axis along
  its largest dimension divisible by the axis size (ties: the first such dimension); smaller ones,
  and ones with no divisible dimension, are replicated;
* a ``PartitionSpec`` or a tuple of mesh axis names / None, one per leading dimension.

Presets: ``"replicated"`` = ``((".*", "replicated"),)``; ``"fsdp"`` = ``((".*", "fsdp"),)``.

The optimizer state follows its parameter (``optax.tree_map_params``): AdamW's ``mu`` and ``nu``
of a sharded parameter are sharded the same way; counters and other non-parameter leaves are
replicated. So with FSDP each device stores about 1/N of parameters + optimizer state between steps.
How the train step uses this (all-gather for the forward/backward, gradients scattered to the
shards, AdamW on the shards): :mod:`sentjax.train.step`, docs/fsdp.md.
"""
from __future__ import annotations

import re
from typing import Any, Sequence, Union

import jax
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from sentjax.errors import ConfigError

__all__ = ["PRESETS", "Rule", "resolve_rules", "fsdp_spec", "param_specs", "param_shardings",
           "opt_state_shardings", "host_array", "DEFAULT_MIN_SIZE"]

Spec = Union[str, P, Sequence[Union[str, None]]]
Rule = tuple[str, Spec]

PRESETS: dict[str, tuple[Rule, ...]] = {"replicated": ((".*", "replicated"),), "fsdp": ((".*", "fsdp"),)}
# 2**16 float32 elements = 256 KiB: every BERT / MiniLM weight matrix and embedding table is
# sharded; biases and LayerNorm vectors (a few KiB each) stay replicated, where gathering them
# would cost a collective per tiny tensor for no memory.
DEFAULT_MIN_SIZE = 2 ** 16


def _path(path) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def resolve_rules(param_sharding: str, rules: Sequence[Any] = ()) -> tuple[Rule, ...]:
    """``config.parallel.param_sharding`` ('replicated' | 'fsdp' | 'rules') and ``parallel.rules``
    -> a checked rule set. Raises ConfigError on an unknown preset or a malformed rule."""
    if param_sharding in PRESETS:
        if rules:
            raise ConfigError(f"parallel.rules is set but parallel.param_sharding={param_sharding!r}; set "
                              "--config.parallel.param_sharding=rules to use the rules, or clear parallel.rules.")
        return PRESETS[param_sharding]
    if param_sharding != "rules":
        raise ConfigError(f"parallel.param_sharding={param_sharding!r}: use one of "
                          f"{(*PRESETS, 'rules')} ('rules': the (regex, spec) pairs of parallel.rules).")
    if not rules:
        raise ConfigError("parallel.param_sharding='rules' needs parallel.rules, e.g. "
                          "((r'embeddings', 'fsdp'), (r'kernel$', (None, 'data')), ('.*', 'replicated')).")
    out = []
    for rule in rules:
        if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str)):
            raise ConfigError(f"parallel.rules entry {rule!r} is not a (regex, spec) pair.")
        pattern, spec = rule
        try:
            re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"parallel.rules: bad regex {pattern!r} ({e}).") from None
        if isinstance(spec, str) and spec not in PRESETS:
            raise ConfigError(f"parallel.rules: spec {spec!r} of {pattern!r} must be 'replicated', 'fsdp', "
                              "or a tuple of mesh axis names / None per dimension.")
        if not isinstance(spec, (str, P, tuple, list)):
            raise ConfigError(f"parallel.rules: spec {spec!r} of {pattern!r} is not a string or a tuple.")
        out.append((pattern, spec if isinstance(spec, (str, P)) else tuple(spec)))
    return tuple(out)


def fsdp_spec(shape: Sequence[int], axis_size: int, axis: str = "data",
              min_size: int = DEFAULT_MIN_SIZE) -> P:
    """The default FSDP placement of one array of ``shape`` over an axis of ``axis_size`` devices."""
    if axis_size <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    dims = [d for d in range(len(shape)) if shape[d] % axis_size == 0]
    if not dims:
        return P()
    best = max(dims, key=lambda d: (shape[d], -d))
    return P(*([None] * best + [axis]))


def param_specs(params: Any, rules: Sequence[Rule], axis_size: int, axis: str = "data",
                min_size: int = DEFAULT_MIN_SIZE) -> Any:
    """Pytree of ``PartitionSpec`` for ``params`` (arrays or ShapeDtypeStructs) under ``rules``."""
    compiled = [(re.compile(p), s) for p, s in rules]

    def spec_of(path, x) -> P:
        name = _path(path)
        for pattern, spec in compiled:
            if pattern.search(name):
                break
        else:
            return P()
        if spec == "replicated":
            return P()
        if spec == "fsdp":
            return fsdp_spec(np.shape(x), axis_size, axis, min_size)
        spec = spec if isinstance(spec, P) else P(*spec)
        shape = np.shape(x)
        if len(spec) > len(shape):
            raise ConfigError(f"sharding rule {pattern.pattern!r} gives {spec} to {name} of shape {shape}: "
                              "more entries than dimensions.")
        for d, a in enumerate(spec):
            if a is not None and shape[d] % axis_size:
                raise ConfigError(f"sharding rule {pattern.pattern!r} splits dimension {d} of {name} "
                                  f"(shape {shape}) over {axis_size} devices, which does not divide it; "
                                  "use 'fsdp' (picks a divisible dimension) or another spec.")
        return spec
    return jax.tree_util.tree_map_with_path(spec_of, params)


def param_shardings(params: Any, mesh: jax.sharding.Mesh, rules: Sequence[Rule], axis: str = "data",
                    min_size: int = DEFAULT_MIN_SIZE) -> Any:
    """Pytree of ``NamedSharding`` on ``mesh`` for ``params`` under ``rules``."""
    specs = param_specs(params, rules, mesh.shape[axis], axis, min_size)
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda s: isinstance(s, P))


def opt_state_shardings(tx: optax.GradientTransformation, opt_state: Any, params_sharding: Any,
                        mesh: jax.sharding.Mesh) -> Any:
    """The optimizer state placed like its parameters (mu / nu), other leaves replicated."""
    rep = NamedSharding(mesh, P())
    return optax.tree_map_params(tx, lambda _, s: s, opt_state, params_sharding,
                                 transform_non_params=lambda _: rep,
                                 is_leaf=lambda x: isinstance(x, NamedSharding))


def host_array(x: Any) -> np.ndarray:
    """A device array (replicated or sharded, one or several processes) as one NumPy array."""
    if not isinstance(x, jax.Array):
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
