"""Logging for the ``sentjax`` command line: one handler on the ``sentjax`` logger, to stderr.

Library code logs through ``logging.getLogger(__name__)`` and never prints; the entry points
(``sentjax.cli.main``, ``python -m sentjax.train.train``) call :func:`configure` once. Only the
``sentjax`` logger is configured: other libraries (JAX, Orbax/absl, asyncio) keep their own
settings and filters. Records look like the lines the CLI printed before logging existed:
``info`` as the bare message, other levels as ``warning: message``, so stdout stays free for
results (JSON summaries, tables).
"""
from __future__ import annotations

import logging
import sys

__all__ = ["LEVELS", "configure"]

LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")


class _Formatter(logging.Formatter):

    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        return msg if record.levelno == logging.INFO else f"{record.levelname.lower()}: {msg}"


class _Handler(logging.StreamHandler):
    """Writes to the *current* ``sys.stderr`` (pytest's capsys and redirections replace it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure(level: str | None = None) -> logging.Logger:
    """Sets up the ``sentjax`` logger (idempotent); ``level``: one of :data:`LEVELS` (default
    ``info``, or the level of an earlier call when None)."""
    logger = logging.getLogger("sentjax")
    if not any(isinstance(h, _Handler) for h in logger.handlers):
        logger.addHandler(_Handler())
        logger.propagate = False
        logger.setLevel(logging.INFO)
    if level is not None:
        if level.lower() not in LEVELS:
            raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}.")
        logger.setLevel(level.upper())
    return logger
