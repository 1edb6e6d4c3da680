"""Shared helpers of the benchmarks: frozen input, machine facts, matmul rate, child processes."""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SENTENCES = os.path.join(HERE, "sentences-2048.txt")
SENTENCES_SHA256 = "e8391e231939b8b6156d9c840a7979989a0ae31f28896c7e40fbeb8079389ac4"


def read_sentences() -> list[str]:
    import hashlib
    with open(SENTENCES, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != SENTENCES_SHA256:
        raise RuntimeError(f"{SENTENCES} is not the frozen benchmark file (sha256 mismatch).")
    return data.decode("utf-8").splitlines()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def numpy_matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    import numpy as np
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def jax_matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    import jax
    import jax.numpy as jnp
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def machine() -> dict:
    import importlib.metadata as md
    versions = {}
    for pkg in ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "sentence-transformers",
                "transformers", "tokenizers"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("MemTotal"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "mem": mem, "python": platform.python_version(),
            "versions": versions}


def child_env(threads: int = 2) -> dict:
    """The environment of a benchmark's child process: ``threads`` BLAS/OpenMP threads, offline hub."""
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")


def run_child(script: str, args: list[str], threads: int = 2) -> dict:
    """Runs ``script --child ...`` in a fresh process (clean peak-RSS) and parses its JSON line."""
    proc = subprocess.run([sys.executable, script, "--child", *args], env=child_env(threads),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-3000:]}")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"child {args} printed no result:\n{proc.stdout[-2000:]}")


def bert_flops_per_sentence(n_tokens: int, hidden: int = 384, layers: int = 6,
                            intermediate: int = 1536) -> float:
    """Forward FLOPs of one sentence of n real tokens (matmuls only; attention over itself)."""
    linear = 2 * n_tokens * (4 * hidden * hidden + 2 * hidden * intermediate)
    attention = 2 * 2 * n_tokens * n_tokens * hidden
    return layers * (linear + attention)
