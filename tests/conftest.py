"""Test setup: 8 fake CPU devices for the multi-device checks, offline hub, a shared compile cache.

Everything here must run before jax is imported. The persistent compilation cache lives in the
repo's ``.pytest_cache`` (ignored by git) and is inherited by the subprocess tests through the
environment, so a program compiled once (same shapes, flags and device count) is not compiled again.
"""
import os

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_REPO, ".pytest_cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# The suite is compile-bound (tiny models, many shapes): XLA's optimisation passes cost more than
# they save, about halving the suite's CPU time. Numerics are unchanged within the tests' tolerances;
# subprocess tests inherit it. Set JAX_DISABLE_MOST_OPTIMIZATIONS=0 to test the optimised programs.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """The tiny offline workspace (tests/tiny.py): tokenizer, sentences, STS and NLI files."""
    from tiny import make_tiny_workspace
    return make_tiny_workspace(str(tmp_path_factory.mktemp("ws")))


@pytest.fixture(scope="module")
def tok(ws):
    """The workspace's WordPiece tokenizer, max length 16."""
    from sentjax.tokenization import Tokenizer
    return Tokenizer.from_dir(ws.tokenizer, max_length=16)
