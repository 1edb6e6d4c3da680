"""Hugging Face checkpoint <-> sentjax parameter pytree, through an explicit name map.

HF names (``BertModel`` without a ``bert.``/``roberta.`` prefix) map to Flax paths:
  embeddings.word_embeddings.weight          -> embeddings/word_embeddings/embedding
  embeddings.LayerNorm.{weight,bias}         -> embeddings/LayerNorm/{scale,bias}
  encoder.layer.N.attention.self.query.weight-> layer_N/attention/self/query/kernel  (transposed)
  pooler.dense.{weight,bias}                 -> pooler/dense/{kernel,bias}
Linear weights are stored ``[out, in]`` in PyTorch and ``[in, out]`` in Flax.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Mapping

import jax
import numpy as np

log = logging.getLogger(__name__)

# Prefixes that task-specific HF classes put in front of the base model's names.
_BASE_PREFIXES = ("bert.", "roberta.", "model.", "xlm_roberta.", "camembert.", "encoder_model.")
# Buffers and heads that belong to the checkpoint but not to an encoder.
_IGNORED = re.compile(r"^(embeddings\.position_ids|embeddings\.token_type_ids)$")
_HEAD_PREFIXES = ("cls.", "lm_head.", "classifier.", "qa_outputs.", "pre_classifier.")


class CheckpointError(ValueError):
    """A checkpoint that does not match the model built from config.json."""


def flax_path_to_hf(path: tuple[str, ...]) -> tuple[str, bool]:
    """Flax encoder param path -> (HF tensor name, whether the tensor is transposed)."""
    parts: list[str] = []
    for p in path[:-1]:
        m = re.fullmatch(r"layer_(\d+)", p)
        if m:
            parts += ["encoder", "layer", m.group(1)]
        else:
            parts.append(p)
    leaf = path[-1]
    if leaf == "kernel":
        return ".".join(parts + ["weight"]), True
    if leaf in ("embedding", "scale"):
        return ".".join(parts + ["weight"]), False
    return ".".join(parts + [leaf]), False


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, v in flat.items():
        node = tree
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = v
    return tree


def strip_base_prefix(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Removes a ``bert.``-style prefix when every encoder tensor carries it."""
    names = [n for n in tensors if not n.startswith(_HEAD_PREFIXES)]
    for prefix in _BASE_PREFIXES:
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


def has_pooler(tensors: Mapping[str, np.ndarray]) -> bool:
    return any(n.startswith("pooler.") for n in strip_base_prefix(tensors))


def hf_to_params(tensors: Mapping[str, np.ndarray], abstract_params: Mapping[str, Any],
                 source: str = "checkpoint") -> dict[str, Any]:
    """Maps HF tensors onto the encoder pytree whose shapes ``abstract_params`` gives.

    Raises CheckpointError naming every missing, unexpected or mis-shaped tensor.
    """
    tensors = strip_base_prefix(tensors)
    flat = _flatten(abstract_params)
    out, missing, misshaped, used = {}, [], [], set()
    for path, ref in flat.items():
        name, transpose = flax_path_to_hf(path)
        candidates = [name]
        if name.endswith("LayerNorm.weight"):
            candidates.append(name[:-len("weight")] + "gamma")
        if name.endswith("LayerNorm.bias"):
            candidates.append(name[:-len("bias")] + "beta")
        found = next((c for c in candidates if c in tensors), None)
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
    unexpected = sorted(n for n in tensors if n not in used and not _IGNORED.match(n)
                        and not n.startswith(_HEAD_PREFIXES))
    heads = sorted(n for n in tensors if n.startswith(_HEAD_PREFIXES))
    if heads:
        log.info("%s: ignoring %d task-head tensors (%s, ...)", source, len(heads), heads[0])
    problems = []
    if misshaped:
        problems.append("mis-shaped tensors (config.json does not match the weights):\n  "
                        + "\n  ".join(misshaped))
    if missing:
        problems.append("missing tensors:\n  " + "\n  ".join(missing[:20])
                        + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""))
    if unexpected:
        problems.append("unexpected tensors:\n  " + "\n  ".join(unexpected[:20])
                        + (f"\n  ... and {len(unexpected) - 20} more" if len(unexpected) > 20 else ""))
    if problems:
        raise CheckpointError(
            f"{source} does not match the model described by config.json: "
            + "; ".join(problems)
            + "\nFix: use the config.json that was saved with these weights, or re-export the model.")
    return _unflatten(out)


def params_to_hf(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Encoder pytree -> HF ``BertModel`` tensor dict (contiguous float32, ``[out, in]`` linears)."""
    out = {}
    for path, v in _flatten(params).items():
        name, transpose = flax_path_to_hf(path)
        arr = np.asarray(jax.device_get(v), dtype=np.float32)
        out[name] = np.ascontiguousarray(arr.T if transpose else arr)
    return out
