"""Encoder families, looked up by Hugging Face ``model_type`` (``config.json``'s ``"model_type"``).

A family is one module ``sentjax/models/<family>.py``, listed in ``FAMILY_MODULES``, that registers
an ``EncoderFamily`` when imported::

    FAMILY = register_encoder(EncoderFamily(name="bert", model_types=("bert", "roberta", ...), ...))

It provides:
  config_cls   frozen dataclass of the architecture, with
               ``config_cls.from_hf_dict(raw, source)`` (a config.json dict; HF keys the family
               does not use are ignored) and ``config.to_hf_dict()`` (the config.json ``save``
               writes), and these fields / properties, which the rest of sentjax reads:
               ``model_type``, ``hidden_size``, ``vocab_size``, ``pad_token_id``,
               ``max_tokens`` (longest sequence) and ``position_offset`` (position id of a
               sentence's first token; sequence packing restarts positions there).
  module       the Flax module, ``module(config, dtype)``, called as ``(input_ids,
               attention_mask=None, token_type_ids=None, position_ids=None, segment_ids=None,
               deterministic=True) -> {"last_hidden_state": [batch, length, hidden], ...}``
               (``segment_ids``: block-diagonal attention of packed rows).
  name_map     ``sentjax.models.hf_weights.NameMap``: Flax parameter path <-> HF tensor name.
  word_embeddings  the parameter path of the ``[vocab, hidden]`` matrix (vocabulary transfer).
  config_for_weights  ``(config, tensors) -> config``: settings that only the checkpoint shows
               (BERT: whether it has the tanh pooler).

``SentenceEncoderModule`` (``sentjax.models.sentence_model``) composes whichever family the config
names with a pooler; ``sentjax.load`` / ``sentjax.save`` read and write any registered family.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
from typing import Any, Callable, Mapping

from sentjax.errors import ConfigError

__all__ = ["ConfigError", "EncoderFamily", "FAMILY_MODULES", "register_encoder", "get_encoder",
           "families", "supported_model_types", "config_from_hf", "config_from_dict",
           "read_config_json", "read_config"]

# Modules under sentjax/models/ that define encoder families (imported on the first lookup).
FAMILY_MODULES = ("bert", "llama", "mpnet")


@dataclasses.dataclass(frozen=True)
class EncoderFamily:
    """One architecture family: its config, its Flax module and its checkpoint name map."""
    name: str                         # module name under sentjax/models/
    model_types: tuple[str, ...]      # HF model_type values this family reads
    config_cls: type                  # frozen dataclass (see the module docstring)
    module: Callable[..., Any]        # Flax module class: module(config, dtype)
    name_map: Any                     # sentjax.models.hf_weights.NameMap
    word_embeddings: tuple[str, ...]  # parameter path of the [vocab, hidden] word embeddings
    config_for_weights: Callable[[Any, Mapping[str, Any]], Any] = lambda config, tensors: config

    def config_from_hf(self, raw: Mapping[str, Any], source: str = "config") -> Any:
        """A config.json dict -> the family's config (HF keys it does not use are ignored)."""
        return self.config_cls.from_hf_dict(dict(raw), source=source)

    def config_from_dict(self, values: Mapping[str, Any], source: str = "model.encoder") -> Any:
        """sentjax's own config (e.g. the run config's ``model.encoder``) -> the family's config.
        Strict: a key that is not a field is an error listing the valid ones."""
        valid = [f.name for f in dataclasses.fields(self.config_cls)]
        unknown = sorted(k for k in values if k not in valid)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown} for the {self.name!r} encoder family; "
                              f"valid keys: {', '.join(valid)}.")
        try:
            return self.config_cls(**values)
        except TypeError as e:
            raise ConfigError(f"{source}: {e}") from None


_REGISTRY: dict[str, EncoderFamily] = {}
_loaded = False


def register_encoder(family: EncoderFamily) -> EncoderFamily:
    """Adds ``family`` under each of its model types; returns it (``FAMILY = register_encoder(...)``)."""
    for model_type in family.model_types:
        other = _REGISTRY.get(model_type)
        if other is not None and other.name != family.name:
            raise ValueError(f"model_type {model_type!r} is registered twice: by the {other.name!r} "
                             f"and the {family.name!r} encoder families.")
    _REGISTRY.update(dict.fromkeys(family.model_types, family))
    return family


def _load_families() -> None:
    global _loaded
    if not _loaded:
        for name in FAMILY_MODULES:
            importlib.import_module(f"sentjax.models.{name}")
        _loaded = True


def supported_model_types() -> list[str]:
    """Every HF model_type sentjax can encode, sorted."""
    _load_families()
    return sorted(_REGISTRY)


def families() -> list[EncoderFamily]:
    """The registered families, each once, in FAMILY_MODULES order."""
    _load_families()
    return list({f.name: f for f in _REGISTRY.values()}.values())


def get_encoder(model_type: str, source: str | None = None) -> EncoderFamily:
    """The family that reads ``model_type``; an unknown one is a ConfigError listing the supported."""
    _load_families()
    family = _REGISTRY.get(model_type)
    if family is None:
        where = f"{source}: " if source else ""
        raise ConfigError(f"{where}model_type {model_type!r} is not supported; sentjax encodes "
                          f"{', '.join(supported_model_types())}.")
    return family


def config_from_hf(raw: Any, source: str = "config") -> Any:
    """A Hugging Face config.json dict -> the config of the family its ``model_type`` names
    (a config without ``model_type`` is BERT's, as in older checkpoints)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(raw).__name__}.")
    return get_encoder(raw.get("model_type", "bert"), source).config_from_hf(raw, source)


def config_from_dict(values: Mapping[str, Any], source: str = "model.encoder") -> Any:
    """sentjax's own encoder config (``model_type`` defaults to "bert") -> the family's config;
    a key the family does not have is an error listing the valid ones."""
    values = dict(values)
    return get_encoder(values.get("model_type", "bert"), source).config_from_dict(values, source)


def read_config_json(path: str | os.PathLike) -> dict:
    """The parsed ``config.json``; a missing or malformed file raises an error naming it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No config.json at {path}: pass a folder holding a Hugging Face or "
            "sentence-transformers model (config.json, model.safetensors, tokenizer files).")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); re-download or fix the file.") from None


def read_config(path: str | os.PathLike) -> Any:
    """``config.json`` -> the config of its family."""
    return config_from_hf(read_config_json(path), source=os.fspath(path))
