"""Errors shared across layers (no sentjax imports)."""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot be applied: a run config, a command-line override, or a model's
    config.json. One class, so the CLI reports all of them alike (exit status 2)."""
