"""Hugging Face checkpoint <-> sentjax parameter pytree, through a family's explicit name map.

Each encoder family (``sentjax.models.registry``) gives a ``NameMap``: its Flax parameter path
<-> HF tensor name in both directions, the prefixes that task-specific HF classes put in front of
the base model's names (``bert.``), the task heads and buffers a checkpoint holds that are not
encoder parameters. Linear weights are stored ``[out, in]`` in PyTorch and ``[in, out]`` in Flax,
so the map also says which tensors are transposed. This module is the family-independent part:
reading the weights file, matching tensors to the parameters the model expects, and naming every
missing, unexpected or mis-shaped tensor when they do not match.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Any, Callable, Mapping

import jax
import numpy as np

log = logging.getLogger(__name__)

Path = tuple[str, ...]


class CheckpointError(ValueError):
    """A checkpoint that does not match the model built from config.json."""


@dataclasses.dataclass(frozen=True)
class NameMap:
    """Flax parameter path <-> HF tensor name of one encoder family.

    ``to_hf(path) -> (name, transposed)`` and ``from_hf(name) -> (path, transposed)`` are inverses
    on the family's parameters; ``from_hf`` maps any name mechanically (a name that is no
    parameter of the model comes back as a path the model does not have: "unexpected").
    """
    to_hf: Callable[[Path], tuple[str, bool]]
    from_hf: Callable[[str], tuple[Path, bool]]
    base_prefixes: tuple[str, ...] = ()  # stripped when every encoder tensor has one ("bert.")
    head_prefixes: tuple[str, ...] = ()  # task heads, skipped on load ("cls.", "classifier.")
    ignored: str = ""                    # regex of buffers that are not parameters

    def skipped(self, name: str) -> bool:
        """A head or a buffer: in the checkpoint, not an encoder parameter."""
        return name.startswith(self.head_prefixes) or bool(self.ignored and re.fullmatch(self.ignored, name))


def _default_name_map() -> NameMap:
    from sentjax.models.registry import get_encoder
    return get_encoder("bert").name_map


def _flatten(tree: Mapping[str, Any], prefix: Path = ()) -> dict[Path, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _unflatten(flat: Mapping[Path, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, v in flat.items():
        node = tree
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = v
    return tree


def strip_base_prefix(tensors: Mapping[str, np.ndarray], name_map: NameMap | None = None
                      ) -> dict[str, np.ndarray]:
    """Removes a ``bert.``-style prefix when every encoder tensor carries it."""
    name_map = name_map or _default_name_map()
    names = [n for n in tensors if not n.startswith(name_map.head_prefixes)]
    for prefix in name_map.base_prefixes:
        if names and all(n.startswith(prefix) for n in names):
            return {(n[len(prefix):] if n.startswith(prefix) else n): v for n, v in tensors.items()}
    return dict(tensors)


def read_tensors(folder: str) -> tuple[dict[str, np.ndarray], str]:
    """Reads model.safetensors (or pytorch_model.bin when torch is installed)."""
    st_path = os.path.join(folder, "model.safetensors")
    bin_path = os.path.join(folder, "pytorch_model.bin")
    if os.path.isfile(st_path):
        from safetensors.numpy import load_file
        try:
            return load_file(st_path), st_path
        except Exception as e:  # safetensors raises SafetensorError / OSError on bad files
            raise CheckpointError(
                f"{st_path} is not a readable safetensors file ({e}); it may be truncated: "
                "re-download or re-export it.") from None
    if os.path.isfile(bin_path):
        try:
            import torch
        except ImportError:
            raise CheckpointError(
                f"{bin_path} is a PyTorch pickle and torch is not installed: "
                "`pip install 'sentjax[torch]'`, or convert it to model.safetensors.") from None
        state = torch.load(bin_path, map_location="cpu", weights_only=True)
        return {k: v.float().numpy() if v.is_floating_point() else v.numpy()
                for k, v in state.items()}, bin_path
    raise FileNotFoundError(
        f"No weights in {folder}: expected model.safetensors (or pytorch_model.bin).")


def _listed(title: str, names: list[str]) -> str:
    return (f"{title}:\n  " + "\n  ".join(names[:20])
            + (f"\n  ... and {len(names) - 20} more" if len(names) > 20 else ""))


def hf_to_params(tensors: Mapping[str, np.ndarray], abstract_params: Mapping[str, Any],
                 source: str = "checkpoint", name_map: NameMap | None = None) -> dict[str, Any]:
    """Maps HF tensors onto the encoder pytree whose shapes ``abstract_params`` gives.

    ``name_map``: the family's (``get_encoder(model_type).name_map``); default BERT's.
    Raises CheckpointError naming every missing, unexpected or mis-shaped tensor.
    """
    name_map = name_map or _default_name_map()
    tensors = strip_base_prefix(tensors, name_map)
    by_path: dict[Path, list[str]] = {}
    for n in tensors:
        if not name_map.skipped(n):
            by_path.setdefault(tuple(name_map.from_hf(n)[0]), []).append(n)
    out, missing, misshaped, used = {}, [], [], set()
    for path, ref in _flatten(abstract_params).items():
        name, transpose = name_map.to_hf(path)
        candidates = by_path.get(path, [])
        # the canonical name first; then an alias (e.g. TF-era LayerNorm.gamma / .beta)
        found = name if name in candidates else (candidates[0] if candidates else None)
        if found is None:
            missing.append(name)
            continue
        used.add(found)
        arr = np.asarray(tensors[found])
        if transpose:
            arr = arr.T
        if arr.shape != tuple(ref.shape):
            shown = arr.T.shape if transpose else arr.shape
            want = tuple(ref.shape)[::-1] if transpose else tuple(ref.shape)
            misshaped.append(f"{found}: checkpoint {tuple(shown)}, model expects {want}")
            continue
        out[path] = np.asarray(arr, dtype=np.float32)
    unexpected = sorted(n for n in tensors if n not in used and not name_map.skipped(n))
    heads = sorted(n for n in tensors if n.startswith(name_map.head_prefixes))
    if heads:
        log.info("%s: ignoring %d task-head tensors (%s, ...)", source, len(heads), heads[0])
    problems = []
    if misshaped:
        problems.append("mis-shaped tensors (config.json does not match the weights):\n  "
                        + "\n  ".join(misshaped))
    if missing:
        problems.append(_listed("missing tensors", missing))
    if unexpected:
        problems.append(_listed("unexpected tensors", unexpected))
    if problems:
        raise CheckpointError(
            f"{source} does not match the model described by config.json: "
            + "; ".join(problems)
            + "\nFix: use the config.json that was saved with these weights, or re-export the model.")
    return _unflatten(out)


def params_to_hf(params: Mapping[str, Any], name_map: NameMap | None = None) -> dict[str, np.ndarray]:
    """Encoder pytree -> HF base-model tensor dict (contiguous float32, ``[out, in]`` linears).
    ``name_map``: the family's; default BERT's."""
    name_map = name_map or _default_name_map()
    out = {}
    for path, v in _flatten(params).items():
        name, transpose = name_map.to_hf(path)
        arr = np.asarray(jax.device_get(v), dtype=np.float32)
        out[name] = np.ascontiguousarray(arr.T if transpose else arr)
    return out
