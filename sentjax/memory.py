"""Hand XLA's compile-time heap back to the OS after every compilation (glibc's ``malloc_trim``).

XLA:CPU allocates a few hundred MiB of compiler data structures while compiling a training step and
frees them when done, but glibc keeps the freed pages of its (per-thread) arenas mapped, so they stay in
the process's resident set and the step's own buffers are allocated on top of them. Measured on the
MiniLM batch-64 step of ``experiments/bench/train.py`` (state donated), one process each: RSS after
compilation 909 -> 719 MiB, peak RSS over three steps 2443 -> 2186 MiB (the peak with both engines:
``experiments/bench/results/train-memory.md``). The trim runs in a ``jax.monitoring`` listener on
XLA's backend-compile event, i.e. after every compilation (once per shape) and before the first
execution; it costs milliseconds. Elsewhere than glibc (macOS, musl) it is a no-op.
Disable with ``SENTJAX_MALLOC_TRIM=0``.
"""
from __future__ import annotations

import ctypes
import os

import jax

__all__ = ["trim_after_compile"]

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_installed = False


def trim_after_compile() -> bool:
    """Installs the listener once per process; True if it is active."""
    global _installed
    if _installed:
        return True
    if os.environ.get("SENTJAX_MALLOC_TRIM", "1") == "0":
        return False
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]

    def listener(event: str, duration_secs: float, **kwargs) -> None:
        if event == _COMPILE_EVENT:
            trim(0)

    jax.monitoring.register_event_duration_secs_listener(listener)
    _installed = True
    return True
