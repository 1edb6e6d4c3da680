"""Errors shared across layers (this module imports nothing from sentjax)."""
from __future__ import annotations


class ConfigError(ValueError):
    """A config file, key or value that cannot be applied; the message says how to fix it."""
