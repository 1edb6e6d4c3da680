"""Packaged configs: ``default.py`` (every key a run understands, with its default) and ``demo.py``
(the README's ``sentjax demo``). Each is a ``get_config()`` file like those in ``experiments/``;
``path(name)`` gives its file for ``sentjax train --config``."""
from __future__ import annotations

import os

__all__ = ["path"]


def path(name: str) -> str:
    """The file of packaged config ``name`` (``"default"``, ``"demo"``)."""
    file = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    if not os.path.isfile(file):
        names = sorted(f[:-3] for f in os.listdir(os.path.dirname(file)) if f.endswith(".py") and f != "__init__.py")
        raise FileNotFoundError(f"No packaged config {name!r}; choose one of {names}.")
    return file
