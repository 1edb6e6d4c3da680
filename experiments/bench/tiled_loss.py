"""Tiled vs dense InfoNCE: loss + gradient time and peak memory at large batch.

Random unit embeddings (dim 384, float32), anchors and positives [B, 384], no hard negatives,
temperature 0.05, gradient w.r.t. both. Each case runs in its own process (clean peak RSS, and an
address-space cap so the dense loss fails with an allocation error instead of waking the kernel's
OOM killer on a shared machine). Each process first measures the float32 2048 x 2048 jnp matmul
rate, so the FLOP floor reflects the load at that moment:

    floor = 3 x 2 B^2 d / rate   (similarity matmul + the two gradient matmuls)

The tiled loss does 4 such matmuls (it recomputes the similarity tile in the backward pass), so
its ideal ratio to the floor is 4/3.

  python experiments/bench/tiled_loss.py                 # B = 2^12, 2^14, 2^16; writes results/tiled_loss.md
  python experiments/bench/tiled_loss.py --big           # also 2^18 tiled (~40 min on 2 cores)
  python experiments/bench/tiled_loss.py --gpu           # one GPU: tiled up to 2^20 (see tiled_loss_gpu.sh)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DIM, TEMPERATURE = 384, 0.05


def dense_loss_fn():
    from sentjax.losses.infonce import infonce_loss
    return infonce_loss, "sentjax.losses.infonce.infonce_loss"


def child(impl: str, log2b: int, tile: int, dtype: str) -> dict:
    import jax
    import jax.numpy as jnp
    from sentjax.losses.tiled_infonce import tiled_infonce_loss
    rate = common.jax_matmul_gflops()
    big_b = 2 ** log2b
    dt = jnp.dtype(dtype)
    ka, kp = jax.random.split(jax.random.key(log2b))
    unit = lambda x: (x / jnp.linalg.norm(x, axis=-1, keepdims=True)).astype(dt)  # noqa: E731
    a = jax.jit(lambda k: unit(jax.random.normal(k, (big_b, DIM))))(ka)
    p = jax.jit(lambda k: unit(jax.random.normal(k, (big_b, DIM))))(kp)
    if impl == "tiled":
        loss_fn = lambda a, p: tiled_infonce_loss(a, p, temperature=TEMPERATURE, tile_size=tile)[0]  # noqa: E731
        name = "tiled_infonce_loss"
    else:
        dense, name = dense_loss_fn()
        loss_fn = lambda a, p: dense(a, p, temperature=TEMPERATURE)[0]  # noqa: E731
    t = time.perf_counter()
    step = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1))).lower(a, p).compile()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    loss, grads = jax.block_until_ready(step(a, p))
    seconds = time.perf_counter() - t
    floor = 3 * 2 * big_b ** 2 * DIM / (rate * 1e9)
    out = {"impl": impl, "fn": name, "log2b": log2b, "tile": tile, "dtype": dtype, "seconds": seconds,
           "compile_s": compile_s, "loss": float(loss), "grad_norm": float(jnp.linalg.norm(grads[0])),
           "gflops_measured": rate, "floor_s": floor, "ratio": seconds / floor,
           "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
           "device": str(jax.devices()[0].device_kind)}
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:  # GPU: device memory, not host RSS
        out["device_peak_gib"] = stats["peak_bytes_in_use"] / 2 ** 30
    return out


def run_case(impl: str, log2b: int, tile: int, dtype: str, mem_limit_gib: float | None) -> dict:
    def cap():
        if mem_limit_gib:
            lim = int(mem_limit_gib * 2 ** 30)
            resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", impl, str(log2b),
                           str(tile), dtype], env=env, capture_output=True, text=True, preexec_fn=cap)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    err = proc.stderr.strip().splitlines()
    oom = any(s in proc.stderr for s in ("RESOURCE_EXHAUSTED", "Out of memory", "bad_alloc",
                                         "MemoryError", "Cannot allocate", "out of memory"))
    return {"impl": impl, "log2b": log2b, "tile": tile, "dtype": dtype,
            "failed": ("OOM" if oom or proc.returncode < 0 else "error") +
            f" (rc {proc.returncode}): {err[-1][:160] if err else ''}"}


def table(rows: list[dict]) -> str:
    head = ("| B | impl | tile | time (s) | compile (s) | peak mem (GiB) | matmul GFLOP/s | FLOP floor (s) "
            "| time / floor | loss |\n|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        b = f"2^{r['log2b']}"
        if "failed" in r:
            lines.append(f"| {b} | {r['impl']} | {r['tile'] if r['impl'] == 'tiled' else '-'} | "
                         f"{r['failed']} | | | | | | |")
            continue
        mem = r.get("device_peak_gib", r["peak_rss_gib"])
        lines.append(f"| {b} | {r['impl']} | {r['tile'] if r['impl'] == 'tiled' else '-'} | "
                     f"{r['seconds']:.2f} | {r['compile_s']:.1f} | {mem:.2f} | {r['gflops_measured']:.0f} | "
                     f"{r['floor_s']:.2f} | {r['ratio']:.2f} | {r['loss']:.4f} |")
    return head + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=4, metavar=("IMPL", "LOG2B", "TILE", "DTYPE"), help=argparse.SUPPRESS)
    ap.add_argument("--big", action="store_true", help="also run B = 2^18 tiled (~40 min on 2 CPU cores)")
    ap.add_argument("--gpu", action="store_true", help="one GPU: tiled at 2^16..2^20, dense at 2^14/2^16")
    ap.add_argument("--tile", type=int, default=None, help="tile size (default 1024 CPU, 4096 GPU)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--mem-limit-gib", type=float, default=20.0,
                    help="address-space cap per CPU case (the dense loss fails cleanly above it)")
    ap.add_argument("--out", default=None, help="write the markdown table here")
    args = ap.parse_args()
    if args.child:
        impl, log2b, tile, dtype = args.child
        print(json.dumps(child(impl, int(log2b), int(tile), dtype)), flush=True)
        return
    tile = args.tile or (4096 if args.gpu else 1024)
    if args.gpu:
        plan = [("dense", 14), ("tiled", 14), ("dense", 16), ("tiled", 16), ("tiled", 18), ("tiled", 20)]
        mem_cap = None  # device memory is the limit; the host cap would only hide GPU behaviour
    else:
        plan = [("dense", 12), ("tiled", 12), ("dense", 14), ("tiled", 14), ("dense", 16), ("tiled", 16)]
        plan += [("tiled", 18)] if args.big else []
        mem_cap = args.mem_limit_gib
    rows = []
    for impl, log2b in plan:
        r = run_case(impl, log2b, tile, args.dtype, mem_cap)
        rows.append(r)
        print(json.dumps(r), flush=True)
    info = common.machine()
    text = (f"machine: {json.dumps(info)}\n\ncommand: `python {' '.join(sys.argv)}`\n\n"
            f"dtype {args.dtype}, dim {DIM}, temperature {TEMPERATURE}, no hard negatives; "
            f"CPU address-space cap {mem_cap} GiB per case\n\n" + table(rows))
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
