"""Tokenization through Hugging Face ``tokenizers`` with bucketed padding.

jit compiles one program per input shape, so batches are padded to a small set of
lengths (multiples of ``bucket_multiple``, capped at ``max_length``) instead of to
their exact longest text: at most ``max_length / bucket_multiple`` shapes per batch size.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt", "sentencepiece.bpe.model", "spiece.model", "merges.txt",
                   "vocab.json")


def bucket_length(n_tokens: int, max_length: int, multiple: int = 8) -> int:
    """Smallest multiple of ``multiple`` >= n_tokens, capped at max_length."""
    return int(min(max_length, max(multiple, -(-n_tokens // multiple) * multiple)))


class Tokenizer:
    """Wraps a fast ``tokenizers.Tokenizer`` loaded from a local model folder.

    Attributes:
      max_length: texts are truncated to this many tokens (special tokens included).
      bucket_multiple: padded lengths are multiples of this.
    """

    def __init__(self, backend, max_length: int = 128, bucket_multiple: int = 8,
                 pad_token_id: int = 0):
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for the special tokens), got {max_length}.")
        self.backend = backend
        self.max_length = int(max_length)
        self.bucket_multiple = int(bucket_multiple)
        self.pad_token_id = int(pad_token_id)
        # The packaged tokenizer.json may switch fixed padding on; we pad ourselves.
        self.backend.no_padding()
        self.backend.enable_truncation(self.max_length)

    @classmethod
    def from_dir(cls, path: str | os.PathLike, max_length: int | None = None,
                 bucket_multiple: int = 8) -> "Tokenizer":
        """Loads ``tokenizer.json`` (or converts a slow tokenizer through transformers).

        max_length defaults to sentence_bert_config.json's max_seq_length, then the
        tokenizer's model_max_length, then 512.
        """
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"Tokenizer folder {path} does not exist.")
        from tokenizers import Tokenizer as HFTokenizer
        tok_file = os.path.join(path, "tokenizer.json")
        if os.path.isfile(tok_file):
            try:
                backend = HFTokenizer.from_file(tok_file)
            except Exception as e:  # tokenizers raises a bare Exception on bad JSON
                raise ValueError(f"{tok_file} could not be read ({e}); re-download the tokenizer "
                                 "files or pass a folder with a valid tokenizer.json.") from None
        else:
            if not any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES):
                raise FileNotFoundError(
                    f"No tokenizer files in {path} (expected tokenizer.json, or vocab.txt / "
                    "sentencepiece.bpe.model with tokenizer_config.json).")
            from transformers import AutoTokenizer
            backend = AutoTokenizer.from_pretrained(path, local_files_only=True).backend_tokenizer
        if max_length is None:
            max_length = _configured_max_length(path)
        pad_id = backend.token_to_id("[PAD]")
        if pad_id is None:
            pad_id = backend.token_to_id("<pad>")
        return cls(backend, max_length=max_length, bucket_multiple=bucket_multiple,
                   pad_token_id=0 if pad_id is None else pad_id)

    def save(self, path: str | os.PathLike) -> None:
        """Writes tokenizer.json (padding/truncation off: sentence-transformers sets its own)."""
        self.backend.save(os.path.join(os.fspath(path), "tokenizer.json"))

    def encode_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids (with special tokens, truncated) of each text, unpadded."""
        texts = _check_texts(texts)
        return [e.ids for e in self.backend.encode_batch(texts)]

    def prompt_length(self, prompt: str) -> int:
        """Tokens a prompt takes at the start of a prompted text, as sentence-transformers counts
        them (``include_prompt=False``): the prompt tokenized alone, less a trailing special token
        ([SEP], </s>). Includes the leading [CLS]/<s>; 0 for the empty prompt (no prompt)."""
        if not prompt:
            return 0
        enc = self.backend.encode(prompt)
        special = {i for i, t in self.backend.get_added_tokens_decoder().items() if t.special}
        n = len(enc.ids)
        return n - 1 if n and (enc.ids[-1] in special or enc.special_tokens_mask[-1]) else n

    def count_tokens(self, texts: Sequence[str]) -> np.ndarray:
        """[n] token counts after truncation (special tokens included)."""
        return np.array([len(ids) for ids in self.encode_ids(texts)], dtype=np.int32)

    def pad(self, ids: Sequence[Sequence[int]], length: int | None = None) -> dict[str, np.ndarray]:
        """Pads token-id lists into ``[n, L]`` int32 arrays (L bucketed unless given)."""
        longest = max((len(x) for x in ids), default=1)
        if length is None:
            length = bucket_length(longest, self.max_length, self.bucket_multiple)
        elif length < longest:
            raise ValueError(f"length {length} is shorter than the longest text ({longest} tokens).")
        input_ids = np.full((len(ids), length), self.pad_token_id, dtype=np.int32)
        mask = np.zeros((len(ids), length), dtype=np.int32)
        for i, x in enumerate(ids):
            input_ids[i, :len(x)] = x
            mask[i, :len(x)] = 1
        return {"input_ids": input_ids, "attention_mask": mask,
                "token_type_ids": np.zeros_like(input_ids)}

    def __call__(self, texts: Sequence[str], length: int | None = None) -> dict[str, np.ndarray]:
        """Tokenizes, truncates and pads: dict of ``[n, L]`` int32 arrays."""
        return self.pad(self.encode_ids(texts), length)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("Pass a list of texts, not a single string (wrap it: [text]).")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"Text {i} is {type(t).__name__}, not str; convert it (or drop None rows).")
    return out


def _configured_max_length(path: str) -> int:
    sbert = os.path.join(path, "sentence_bert_config.json")
    if os.path.isfile(sbert):
        with open(sbert, encoding="utf-8") as f:
            value = json.load(f).get("max_seq_length")
        if value:
            return int(value)
    tok_cfg = os.path.join(path, "tokenizer_config.json")
    if os.path.isfile(tok_cfg):
        with open(tok_cfg, encoding="utf-8") as f:
            value = json.load(f).get("model_max_length")
        if isinstance(value, int) and 0 < value <= 100_000:
            return value
    return 512
