"""Locator for the real data files bundled with sentjax (see ``README.md`` in this folder).

This folder is a data folder; this module only maps ``"<dataset>/<file>"`` to an absolute path
so that code never depends on the working directory or on where the package is installed.
:func:`resolve` is THE resolver of the ``bundled/<dataset>/<file>`` spelling that configs and dataset
specs use: every reader of ``sentjax.data.readers`` calls it on the paths it is given, so nothing
else in sentjax handles the prefix.
"""
from __future__ import annotations

import os

ROOT: str = os.path.dirname(os.path.abspath(__file__))

__all__ = ["ROOT", "PREFIX", "path", "resolve", "datasets"]

PREFIX = "bundled/"


def datasets() -> list[str]:
    """Names of the bundled dataset folders, e.g. ``["commonvoice_en", ..., "tatoeba_laser_v1"]``."""
    return sorted(d for d in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, d)) and not d.startswith(("_", ".")))


def path(rel: str) -> str:
    """Absolute path of bundled file or folder ``rel`` (``"<dataset>/<file>"``).

    Large plain-text files are stored gzipped; asking for ``"x.csv"`` returns ``"x.csv.gz"`` when only
    the compressed twin exists (every sentjax reader opens ``.gz`` transparently).

    Raises:
        FileNotFoundError: naming the missing file and listing what exists at the closest level.
    """
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
        raise ValueError(f"bundled.path expects a relative path like 'stsb_multi_mt/stsb-en-dev.csv', got {rel!r}.")
    full = os.path.join(ROOT, rel)
    for cand in (full, full + ".gz"):
        if os.path.exists(cand):
            return cand
    # Walk up to the deepest existing folder so the error can list real alternatives.
    parent = os.path.dirname(full)
    while not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    entries = sorted(e for e in os.listdir(parent) if not e.startswith(("_", ".")))
    shown = ", ".join(entries[:30]) + (f", ... ({len(entries)} entries)" if len(entries) > 30 else "")
    where = os.path.relpath(parent, ROOT)
    where = "The bundled root" if where == "." else f"Bundled folder {where!r}"
    raise FileNotFoundError(f"No bundled data file {rel!r}. {where} contains: {shown}. "
                            "See sentjax/data/bundled/README.md for the list of datasets.")


def resolve(path_or_spec: str | os.PathLike) -> str:
    """``"bundled/<dataset>/<file>"`` -> :func:`path` of ``"<dataset>/<file>"``; any other path unchanged.

    Raises:
        FileNotFoundError: for a ``bundled/`` path that names no bundled file (see :func:`path`).
    """
    s = os.fspath(path_or_spec)
    return path(s[len(PREFIX):]) if s.startswith(PREFIX) else s
