"""``sentjax.load`` / ``SentenceModel.encode`` / ``sentjax.save``.

A saved model is a sentence-transformers folder: config.json + model.safetensors with
Hugging Face tensor names, tokenizer files, modules.json, 1_Pooling/config.json,
optionally 2_Dense (SimCSE's MLP) and a Normalize module, and a model card README.md
(``sentjax.models.card``). Those folders load here and
in ``sentence_transformers.SentenceTransformer`` alike.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sentjax._version import __version__
from sentjax.models import card as card_lib
from sentjax.models import registry
from sentjax.models.card import TrainingCard
from sentjax.models.hf_weights import hf_to_params, params_to_hf, read_tensors
from sentjax.models.sentence_model import SentenceEncoderModule, abstract_params, init_params
from sentjax.ops import l2_normalize
from sentjax.tokenization import TOKENIZER_FILES, Tokenizer, _check_texts

_ST_TRANSFORMER = "sentence_transformers.models.Transformer"
_ST_POOLING = "sentence_transformers.models.Pooling"
_ST_NORMALIZE = "sentence_transformers.models.Normalize"
_ST_DENSE = "sentence_transformers.models.Dense"
_TANH = "torch.nn.modules.activation.Tanh"


class ModelLoadError(ValueError):
    """A model folder or hub id that cannot be loaded."""


@dataclasses.dataclass
class SentenceModel:
    """A loaded sentence encoder: Flax module, explicit parameter pytree and tokenizer.

    Attributes:
      module: the ``SentenceEncoderModule`` (encoder + pooler).
      params: its parameter pytree ``{"encoder": ..., "pooler": ...}``.
      tokenizer: the ``sentjax.tokenization.Tokenizer``.
      source_dir: folder the model came from (tokenizer files are copied from it on save).
      truncate_dim: keep only the first this many coordinates of every embedding (a Matryoshka
        model used at a smaller size), or None; saved as sentence-transformers' ``truncate_dim``.
      prompts: named prompts, e.g. ``{"query": "query: ", "passage": "passage: "}``, prepended to
        the texts by ``encode(prompt_name=...)``; saved in config_sentence_transformers.json.
      default_prompt_name: the prompt ``encode`` uses when given neither prompt_name nor prompt.
    """
    module: SentenceEncoderModule
    params: Any
    tokenizer: Tokenizer
    source_dir: str | None = None
    truncate_dim: int | None = None
    prompts: dict[str, str] = dataclasses.field(default_factory=dict)
    default_prompt_name: str | None = None

    def __post_init__(self) -> None:
        self.truncate_dim = _check_truncate_dim(self.truncate_dim, self.dim)
        self.prompts = dict(self.prompts or {})
        check_prompts(self.prompts, self.default_prompt_name)
        self._forward = jax.jit(lambda p, b: self.module.apply({"params": p}, b, deterministic=True))

    @property
    def config(self) -> Any:
        """The encoder config (its family's dataclass, e.g. ``EncoderConfig`` for BERT)."""
        return self.module.config

    @property
    def dim(self) -> int:
        return self.config.hidden_size

    def encode(self, texts: Sequence[str], batch_size: int = 64, normalize: bool | None = None,
               show_progress: bool | None = None, packing: bool = True,
               truncate_dim: int | None = None, *,
               prompt_name: str | None = None, prompt: str | None = None) -> np.ndarray:
        """Embeds texts: ``[n, dim]`` float32, rows in input order.

        With ``packing`` (default) several sentences share a row under block-diagonal
        attention, so almost no compute goes to padding; otherwise texts are sorted by
        token count and each batch pads to a bucketed length. Both give the same
        embeddings (to float rounding). Empty strings encode as [CLS][SEP].
        ``normalize`` overrides the model's own setting. ``truncate_dim`` (default: the model's
        ``truncate_dim``) keeps the first coordinates, as sentence-transformers does: after the
        model's own Normalize module, before ``normalize=True``.

        Prompts, as sentence-transformers' ``encode``: ``prompt`` (a literal string) or
        ``prompt_name`` (a key of ``self.prompts``) is prepended to every text; with neither,
        ``default_prompt_name``'s prompt applies (if set). With ``include_prompt=False`` pooling
        the prompt's tokens are left out of the pooled tokens.
        """
        texts = _check_texts(texts)
        prompt = self.resolve_prompt(prompt_name, prompt)
        if prompt:
            texts = [prompt + t for t in texts]
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        keep = _check_truncate_dim(truncate_dim, self.dim) or self.truncate_dim or self.dim
        if not texts:
            return np.zeros((0, keep), np.float32)
        ids = self.tokenizer.encode_ids(texts)
        plen = self.tokenizer.prompt_length(prompt) if prompt and not self.module.include_prompt else None
        run = self._encode_packed if packing else self._encode_padded
        out = run(ids, batch_size, show_progress, plen)[:, :keep]
        if normalize and (not self.module.normalize or keep < self.dim):
            out = l2_normalize(out)
        return out

    def resolve_prompt(self, prompt_name: str | None = None, prompt: str | None = None) -> str | None:
        """The prompt ``encode`` prepends: ``prompt`` if given, else ``prompts[prompt_name]``, else
        the default prompt's text, else None."""
        if prompt is not None:
            if prompt_name is not None:
                raise ValueError(f"Pass either prompt={prompt!r} or prompt_name={prompt_name!r}, not both.")
            return prompt
        if prompt_name is None:
            return self.prompts.get(self.default_prompt_name) if self.default_prompt_name else None
        if prompt_name not in self.prompts:
            raise ValueError(f"Prompt name {prompt_name!r} is not one of this model's prompts "
                             f"{sorted(self.prompts)}; pass one of those, or a literal prompt=... .")
        return self.prompts[prompt_name]

    def _progress(self, it, n_batches: int, show_progress: bool | None):
        if show_progress or (show_progress is None and n_batches > 8):
            from tqdm.auto import tqdm
            return tqdm(it, total=n_batches, desc="encode", unit="batch")
        return it

    def _encode_padded(self, ids, batch_size, show_progress, prompt_length=None) -> np.ndarray:
        out = np.zeros((len(ids), self.dim), np.float32)
        order = np.argsort([-len(x) for x in ids], kind="stable")
        # Rows are padded up to a power of two (<= batch_size) to bound compiled shapes.
        rows = min(batch_size, 1 << (len(ids) - 1).bit_length())
        starts = range(0, len(ids), batch_size)
        for s in self._progress(starts, len(starts), show_progress):
            idx = order[s:s + batch_size]
            chunk = [ids[i] for i in idx] + [[self.tokenizer.pad_token_id]] * (rows - len(idx))
            batch = self.tokenizer.pad(chunk)
            if prompt_length is not None:
                batch["prompt_length"] = np.full((rows,), prompt_length, np.int32)
            emb = np.asarray(self._forward(self.params, batch))
            out[idx] = emb[:len(idx)]
        return out

    def _encode_packed(self, ids, batch_size, show_progress, prompt_length=None) -> np.ndarray:
        from sentjax.packing import pack_rows, packed_batch
        from sentjax.tokenization import bucket_length
        lengths = np.array([len(x) for x in ids])
        tok = self.tokenizer
        row_length = bucket_length(max(64, int(lengths.max())), tok.max_length, 16)
        max_segments = 16
        rows = pack_rows(lengths, row_length, max_segments)
        # About batch_size sentences' worth of tokens per call, rounded to a power of two rows.
        per_call = max(1, int(batch_size * lengths.mean()) // row_length)
        per_call = min(1 << (per_call - 1).bit_length(), 1 << (len(rows) - 1).bit_length())
        offset = self.config.position_offset
        out = np.zeros((len(ids), self.dim), np.float32)
        starts = range(0, len(rows), per_call)
        for s in self._progress(starts, len(starts), show_progress):
            chunk = rows[s:s + per_call]
            batch = packed_batch(ids, chunk, row_length, max_segments, per_call, tok.pad_token_id,
                                 offset, None if prompt_length is None else [prompt_length] * len(ids))
            emb = np.asarray(self._forward(self.params, batch))  # [rows, k, dim]
            for r, row in enumerate(chunk):
                out[row] = emb[r, :len(row)]
        return out


def _check_truncate_dim(truncate_dim: int | None, dim: int) -> int | None:
    if truncate_dim is None:
        return None
    if isinstance(truncate_dim, bool) or not isinstance(truncate_dim, (int, np.integer)) \
            or not 1 <= truncate_dim <= dim:
        raise ValueError(f"truncate_dim must be an integer in [1, {dim}] (the model's embedding size) or "
                         f"None, got {truncate_dim!r}.")
    return int(truncate_dim)


# ----------------------------------------------------------------------------- load


def _resolve(path_or_hub_id: str) -> str:
    path = os.path.expanduser(os.fspath(path_or_hub_id))
    if os.path.isdir(path):
        return path
    looks_like_path = path.startswith((".", "/", "~")) or os.sep in path and os.path.exists(
        os.path.dirname(path) or ".") and path.count("/") != 1
    if looks_like_path or path.count("/") > 1:
        raise FileNotFoundError(
            f"Model folder {path} does not exist. Pass a folder with config.json, "
            "model.safetensors and tokenizer files (e.g. one written by sentjax.save).")
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(path)
    except Exception as e:
        raise ModelLoadError(
            f"{path!r} is not a local folder and could not be downloaded from the Hugging Face "
            f"hub ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Offline? "
            "Download the model elsewhere and pass its local folder instead, e.g. "
            "sentjax.load('/path/to/all-MiniLM-L6-v2'). The all-MiniLM-L6-v2 weights ship in "
            "the `models` extra: sentjax.models.bundled.minilm_dir().") from None


def _read_modules(folder: str) -> list[dict]:
    path = os.path.join(folder, "modules.json")
    if not os.path.isfile(path):
        return []
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path} is not valid JSON ({e}); fix or delete it.") from None


def check_prompts(prompts: Any, default_prompt_name: str | None = None) -> None:
    """Prompts must map names to strings, and a default prompt name must be one of them."""
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in prompts.items()):
        raise ValueError(f"prompts must be a dict of name -> prompt text, e.g. "
                         f"{{'query': 'query: '}}; got {prompts!r}.")
    if default_prompt_name is not None and default_prompt_name not in prompts:
        raise ValueError(f"default_prompt_name {default_prompt_name!r} is not one of the prompts "
                         f"{sorted(prompts)}.")


def _read_prompts(folder: str) -> tuple[dict[str, str], str | None]:
    path = os.path.join(folder, "config_sentence_transformers.json")
    if not os.path.isfile(path):
        return {}, None
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
        prompts, default = cfg.get("prompts") or {}, cfg.get("default_prompt_name")
        check_prompts(prompts, default)
    except (json.JSONDecodeError, ValueError) as e:
        raise ModelLoadError(f"{path}: {e} Fix or delete the file.") from None
    return prompts, default


def _pooling_from_st(folder: str) -> tuple[str, bool]:
    """(mode, include_prompt) of a Pooling module's config (sentence-transformers' legacy
    ``pooling_mode_*_tokens`` booleans or its newer ``pooling_mode`` key)."""
    path = os.path.join(folder, "config.json")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    include_prompt = bool(cfg.get("include_prompt", True))
    if "pooling_mode" in cfg:
        named = cfg["pooling_mode"]
        named = [named] if isinstance(named, str) else list(named)
        if len(named) == 1 and named[0] in ("mean", "cls", "max", "lasttoken"):
            return named[0], include_prompt
        raise ModelLoadError(f"{path}: sentjax supports exactly one of mean / cls / max / lasttoken pooling, got "
                             f"{named}; edit the pooling config or pass pooling=... to load().")
    modes = [m for m, key in (("mean", "pooling_mode_mean_tokens"), ("cls", "pooling_mode_cls_token"),
                              ("max", "pooling_mode_max_tokens"), ("lasttoken", "pooling_mode_lasttoken"))
             if cfg.get(key)]
    unsupported = [k for k in ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens")
                   if cfg.get(k)]
    if unsupported or len(modes) != 1:
        raise ModelLoadError(
            f"{path}: sentjax supports exactly one of mean / cls / max / lasttoken pooling, got "
            f"{modes + unsupported}; edit the pooling config or pass pooling=... to load().")
    return modes[0], include_prompt


def load(path_or_hub_id: str, *, max_length: int | None = None, pooling: str | None = None,
         normalize: bool | None = None, dtype: Any = jnp.float32,
         truncate_dim: int | None = None, include_prompt: bool | None = None) -> SentenceModel:
    """Loads a Hugging Face or sentence-transformers model folder (or hub id, online).

    Args:
      path_or_hub_id: local folder, or a hub id like "sentence-transformers/all-MiniLM-L6-v2".
      max_length: truncation length; default from sentence_bert_config.json.
      pooling / normalize: override what the folder's modules say (a plain HF folder
        defaults to mean pooling, not normalised).
      dtype: compute dtype (float32 or bfloat16); parameters stay float32.
      truncate_dim: embeddings keep their first this many coordinates; default: the folder's
        ``config_sentence_transformers.json`` ``truncate_dim`` (None: all).
      include_prompt: override the Pooling module's ``include_prompt`` (False: prompt tokens are
        left out of the pooling). The folder's prompts (config_sentence_transformers.json) load too.
    """
    from sentjax.memory import trim_after_compile
    trim_after_compile()  # encode's compilations leave the heap as the trainer's do
    folder = _resolve(path_or_hub_id)
    modules = _read_modules(folder)
    base = folder
    pool_mode, do_norm, dense_dir, incl = "mean", False, None, True
    for m in modules:
        mtype, mpath = m.get("type", ""), os.path.join(folder, m.get("path", ""))
        if mtype.endswith("Transformer"):
            base = mpath
        elif mtype.endswith("Pooling"):
            pool_mode, incl = _pooling_from_st(mpath)
        elif mtype.endswith("Normalize"):
            do_norm = True
        elif mtype.endswith("Dense"):
            dense_dir = mpath
        else:
            raise ModelLoadError(f"{folder}/modules.json: module type {mtype!r} is not supported.")
    config = registry.read_config(os.path.join(base, "config.json"))
    family = registry.get_encoder(config.model_type)
    tensors, weights_path = read_tensors(base)
    config = family.config_for_weights(config, tensors)
    mlp = None
    if dense_dir is not None:
        if pool_mode != "cls":
            raise ModelLoadError(f"{dense_dir}: a Dense module is supported only after CLS pooling "
                                 "(SimCSE's MLP).")
        mlp = _read_dense(dense_dir, config.hidden_size)
        pool_mode = "cls_mlp"
    if pooling is not None:
        pool_mode = pooling
    if normalize is not None:
        do_norm = normalize
    if include_prompt is not None:
        incl = include_prompt
    module = SentenceEncoderModule(config, pooling=pool_mode, normalize=do_norm, dtype=dtype,
                                   include_prompt=incl)
    abstract = abstract_params(module)
    params = {"encoder": hf_to_params(tensors, abstract["encoder"], source=weights_path,
                                      name_map=family.name_map)}
    if "pooler" in abstract:
        if mlp is None:
            raise ModelLoadError(
                f"pooling {pool_mode!r} needs MLP weights that {folder} does not have; "
                "initialise them with sentjax.init_model or choose pooling='cls'.")
        params["pooler"] = mlp
    tokenizer = Tokenizer.from_dir(base, max_length=max_length)
    # Padding must use the model's pad id: RoBERTa-style position ids are derived from it.
    tokenizer = Tokenizer(tokenizer.backend, min(tokenizer.max_length, config.max_tokens),
                          tokenizer.bucket_multiple, config.pad_token_id)
    params = jax.tree.map(jnp.asarray, params)
    if truncate_dim is None:
        truncate_dim = _saved_truncate_dim(folder)
    prompts, default_prompt = _read_prompts(folder)
    return SentenceModel(module, params, tokenizer, source_dir=base, truncate_dim=truncate_dim,
                         prompts=prompts, default_prompt_name=default_prompt)


def _saved_truncate_dim(folder: str) -> int | None:
    path = os.path.join(folder, "config_sentence_transformers.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("truncate_dim")


def _read_dense(folder: str, dim: int) -> dict:
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    if cfg.get("activation_function") != _TANH or cfg.get("in_features") != dim or \
            cfg.get("out_features") != dim:
        raise ModelLoadError(f"{folder}: only a {dim}->{dim} tanh Dense (SimCSE's MLP) is supported.")
    from safetensors.numpy import load_file
    t = load_file(os.path.join(folder, "model.safetensors"))
    return {"mlp": {"kernel": np.ascontiguousarray(t["linear.weight"].T), "bias": t["linear.bias"]}}


def init_model(config: Any, tokenizer: Tokenizer, rng: jax.Array, *, pooling: str = "mean",
               normalize: bool = False, mlp_at_inference: bool = True,
               dtype: Any = jnp.float32, include_prompt: bool = True) -> SentenceModel:
    """A randomly initialised model (training from scratch); ``config``: any registered family's."""
    module = SentenceEncoderModule(config, pooling=pooling, normalize=normalize,
                                   mlp_at_inference=mlp_at_inference, dtype=dtype,
                                   include_prompt=include_prompt)
    return SentenceModel(module, init_params(module, rng), tokenizer)


# ----------------------------------------------------------------------------- save


def save(model: SentenceModel, path: str | os.PathLike, params: Any = None,
         card: TrainingCard | None = None) -> str:
    """Writes a sentence-transformers folder with its model card (``README.md``); returns its path.

    ``params`` overrides ``model.params`` (e.g. the trained parameters of a run); ``card`` is the
    run's ``sentjax.models.card.TrainingCard`` (None: a minimal card without a training section).
    """
    from safetensors.numpy import save_file
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    params = model.params if params is None else params
    cfg, module = model.config, model.module
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg.to_hf_dict(), f, indent=2)
    name_map = registry.get_encoder(cfg.model_type).name_map
    save_file(params_to_hf(params["encoder"], name_map), os.path.join(path, "model.safetensors"),
              metadata={"format": "pt"})
    _save_tokenizer(model, path)
    with open(os.path.join(path, "sentence_bert_config.json"), "w", encoding="utf-8") as f:
        json.dump({"max_seq_length": model.tokenizer.max_length, "do_lower_case": False}, f, indent=2)
    st_config = {"__version__": {"sentjax": __version__}, "prompts": dict(model.prompts),
                 "default_prompt_name": model.default_prompt_name, "similarity_fn_name": "cosine"}
    if model.truncate_dim is not None:
        st_config["truncate_dim"] = model.truncate_dim
    with open(os.path.join(path, "config_sentence_transformers.json"), "w", encoding="utf-8") as f:
        json.dump(st_config, f, indent=2)
    mods = [{"idx": 0, "name": "0", "path": "", "type": _ST_TRANSFORMER}]
    pool_dir = os.path.join(path, "1_Pooling")
    os.makedirs(pool_dir, exist_ok=True)
    mode = "cls" if module.pooling == "cls_mlp" else module.pooling
    with open(os.path.join(pool_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump({"word_embedding_dimension": cfg.hidden_size,
                   "pooling_mode_cls_token": mode == "cls",
                   "pooling_mode_mean_tokens": mode == "mean",
                   "pooling_mode_max_tokens": mode == "max",
                   "pooling_mode_lasttoken": mode == "lasttoken",
                   "pooling_mode_mean_sqrt_len_tokens": False,
                   "include_prompt": bool(module.include_prompt)}, f, indent=2)
    mods.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": _ST_POOLING})
    if module.pooling == "cls_mlp" and module.mlp_at_inference:
        dense_dir = os.path.join(path, "2_Dense")
        os.makedirs(dense_dir, exist_ok=True)
        mlp = params["pooler"]["mlp"]
        save_file({"linear.weight": np.ascontiguousarray(np.asarray(mlp["kernel"], np.float32).T),
                   "linear.bias": np.asarray(mlp["bias"], np.float32)},
                  os.path.join(dense_dir, "model.safetensors"))
        with open(os.path.join(dense_dir, "config.json"), "w", encoding="utf-8") as f:
            json.dump({"in_features": cfg.hidden_size, "out_features": cfg.hidden_size,
                       "bias": True, "activation_function": _TANH}, f, indent=2)
        mods.append({"idx": len(mods), "name": str(len(mods)), "path": "2_Dense", "type": _ST_DENSE})
    if module.normalize:
        mods.append({"idx": len(mods), "name": str(len(mods)), "path": f"{len(mods)}_Normalize",
                     "type": _ST_NORMALIZE})
    with open(os.path.join(path, "modules.json"), "w", encoding="utf-8") as f:
        json.dump(mods, f, indent=2)
    source = os.path.basename(os.path.normpath(model.source_dir)) if model.source_dir else ""
    with open(os.path.join(path, "README.md"), "w", encoding="utf-8") as f:
        f.write(card_lib.render(model, params, card, source=source))
    return path


def _save_tokenizer(model: SentenceModel, path: str) -> None:
    src = model.source_dir
    copied = False
    if src and os.path.abspath(src) != os.path.abspath(path):
        for name in TOKENIZER_FILES:
            if os.path.isfile(os.path.join(src, name)):
                shutil.copyfile(os.path.join(src, name), os.path.join(path, name))
                copied = True
    if not copied:
        model.tokenizer.save(path)
