"""Encoder configuration, read from a Hugging Face ``config.json``.

One frozen dataclass describes every BERT-family encoder sentjax supports. The
architectures differ only in a handful of fields (position-id offset, vocabulary,
token-type vocabulary), so one Flax module serves all of them.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert")
_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")


class ConfigError(ValueError):
    """A config.json that sentjax cannot turn into an encoder."""


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Hyper-parameters of a BERT-family encoder.

    Field names follow Hugging Face's ``BertConfig`` so that a config.json maps 1:1.
    """

    vocab_size: int = 30522  # rows of the word-embedding matrix
    hidden_size: int = 384  # model width H
    num_hidden_layers: int = 6  # transformer blocks
    num_attention_heads: int = 12  # heads per block; must divide hidden_size
    intermediate_size: int = 1536  # feed-forward width
    hidden_act: str = "gelu"  # "gelu" is the exact erf GELU, "gelu_new" the tanh one
    hidden_dropout_prob: float = 0.1  # dropout on embeddings and residual branches
    attention_probs_dropout_prob: float = 0.1  # dropout on attention probabilities
    max_position_embeddings: int = 512  # rows of the position-embedding matrix
    type_vocab_size: int = 2  # token-type (segment) vocabulary; 1 for RoBERTa
    layer_norm_eps: float = 1e-12  # LayerNorm epsilon (1e-5 for RoBERTa/XLM-R)
    pad_token_id: int = 0  # id of [PAD] / <pad>
    model_type: str = "bert"  # one of SUPPORTED_MODEL_TYPES
    initializer_range: float = 0.02  # std of the truncated-normal init for training from scratch
    add_pooling_layer: bool = True  # whether the checkpoint has BERT's tanh pooler

    def __post_init__(self) -> None:
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"model_type {self.model_type!r} is not supported; sentjax encodes "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}.")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}; fix config.json.")
        if self.hidden_act not in _ACTIVATIONS:
            raise ConfigError(
                f"hidden_act {self.hidden_act!r} is not supported; use one of {_ACTIVATIONS}.")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")

    @property
    def uses_padding_offset_positions(self) -> bool:
        """RoBERTa-style models number positions from pad_token_id + 1."""
        return self.model_type != "bert"

    @property
    def max_tokens(self) -> int:
        """Longest sequence the position table allows (RoBERTa loses pad_token_id + 1 rows)."""
        if self.uses_padding_offset_positions:
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> "EncoderConfig":
        """Builds a config from a Hugging Face config dict, ignoring keys we do not use."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(raw).__name__}.")
        model_type = raw.get("model_type", "bert")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"{source}: model_type {model_type!r} is not supported; sentjax encodes "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}.")
        required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size")
        missing = [k for k in required if k not in raw]
        if missing:
            raise ConfigError(
                f"{source}: missing required key(s) {missing}; a BERT-family config.json needs "
                f"{list(required)}.")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in raw.items() if k in fields}
        kwargs["model_type"] = model_type
        if "layer_norm_eps" not in raw and model_type != "bert":
            kwargs["layer_norm_eps"] = 1e-5
        if "pad_token_id" not in raw and model_type != "bert":
            kwargs["pad_token_id"] = 1
        try:
            return cls(**kwargs)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        except TypeError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "EncoderConfig":
        """Reads ``config.json``; a missing or malformed file raises ConfigError naming it."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"No config.json at {path}: pass a folder holding a Hugging Face or "
                "sentence-transformers model (config.json, model.safetensors, tokenizer files).")
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); re-download or fix the file.") from None
        return cls.from_dict(raw, source=path)

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json written by ``save``: loadable by transformers."""
        d = dataclasses.asdict(self)
        arch = {"bert": "BertModel", "roberta": "RobertaModel",
                "xlm-roberta": "XLMRobertaModel", "camembert": "CamembertModel"}[self.model_type]
        d["architectures"] = [arch]
        d.pop("add_pooling_layer")
        d["position_embedding_type"] = "absolute"
        return d
