"""sentjax.memory: malloc_trim after every XLA compilation."""
import os
import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, sys
import jax, jax.numpy as jnp
import sentjax.memory as m
calls = []
if sys.argv[1] == "on":
    assert m.trim_after_compile()
    assert m.trim_after_compile()  # idempotent: one listener
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, d, **kw: calls.append(event) if event == m._COMPILE_EVENT else None)
jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((4, 4))).block_until_ready()
jax.jit(lambda x: jnp.cos(x) + 1)(jnp.ones((3,))).block_until_ready()
print(len(calls), len([l for l in jax._src.monitoring._event_duration_secs_listeners]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")
def test_listener_fires_after_each_compilation_and_is_installed_once():
    env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="false")
    out = subprocess.run([sys.executable, "-c", PROBE, "on"], capture_output=True, text=True, env=env, check=True)
    compiles, listeners_on = map(int, out.stdout.split())
    assert compiles >= 2  # the event the trim hangs on fires once per compilation
    base = subprocess.run([sys.executable, "-c", PROBE, "off"], capture_output=True, text=True, env=env, check=True)
    assert listeners_on == int(base.stdout.split()[1]) + 2  # ours (once) + the test's counter


def test_disabled_by_environment(monkeypatch):
    import sentjax.memory as m
    monkeypatch.setattr(m, "_installed", False)
    monkeypatch.setenv("SENTJAX_MALLOC_TRIM", "0")
    assert m.trim_after_compile() is False
