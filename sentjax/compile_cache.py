"""The persistent XLA compilation cache, on by default for training, evaluation and the demo.

Compiling the train step of a small encoder takes tens of seconds on a CPU, and a resumed or
repeated run compiles exactly the same programs again. With the cache on, a run whose programs
were compiled before (same shapes, flags, devices and jax version) loads them from disk instead.

Where the cache lives (first that applies):

1. ``config.compile_cache`` set to a folder (or ``"off"`` / ``""``: no cache);
2. ``SENTJAX_COMPILE_CACHE=DIR`` (or ``off``) in the environment;
3. JAX's own ``JAX_COMPILATION_CACHE_DIR``;
4. ``$XDG_CACHE_HOME/sentjax/jax`` (default ``~/.cache/sentjax/jax``).

JAX treats the cache as trusted code: keep it in a folder only you can write to.
"""
from __future__ import annotations

import os

__all__ = ["ENV", "resolve", "enable"]

ENV = "SENTJAX_COMPILE_CACHE"
_OFF = ("", "off", "none", "0", "false")


def default_dir() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "sentjax", "jax")


def resolve(setting: str = "auto") -> str | None:
    """The cache folder for a ``config.compile_cache`` value (``"auto"``, ``"off"`` or a folder)."""
    setting = "auto" if setting is None else str(setting)
    if setting == "auto":
        setting = os.environ.get(ENV, "auto")
    if setting.strip().lower() in _OFF:
        return None
    if setting == "auto":
        return os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_dir()
    return os.path.abspath(os.path.expanduser(setting))


def enable(setting: str = "auto") -> str | None:
    """Points JAX's persistent cache at ``resolve(setting)`` (also after earlier compilations in
    this process) and returns the folder, or None when it is off."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc
    path = resolve(setting)
    if path == jax.config.jax_compilation_cache_dir:
        return path
    if path is not None:
        os.makedirs(path, exist_ok=True)
        if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
            # small programs too: on a CPU they still take a second or more each
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_compilation_cache_dir", path)
    cc.reset_cache()  # JAX decides once per process whether to use the cache: decide again
    return path
