"""Sigmoid loss (SigLIP) across 8 devices: the ppermute ring vs the dense all-gather, time and peak memory.

Random embeddings, anchors and positives [B, DIM] float32 (no hard negatives), t' = log 10,
b = -10 (the paper's initialisation), ``value_and_grad`` w.r.t. the anchors, the positives, t' and b,
on 8 fake CPU devices under ``jax.shard_map`` (gradient taken outside, as the trainer does). The
dense loss all-gathers the positives and builds each device's [B/8, B] logits (B x B over the
8 devices of this one machine); the ring (``impl="tiled"``) keeps [B/8, tile] slices and rotates
the candidate blocks with ``lax.ppermute``. Each case runs in its own process (clean peak RSS; an
address-space cap so the dense loss fails with an allocation error instead of waking the OOM
killer on a shared machine). Reported: wall time of one step after AOT compilation, peak RSS of the
process (all 8 fake devices share it), and XLA's compiled temporary-buffer size of the SPMD program
(per device; it does not depend on the machine's load).

  python experiments/bench/sigmoid_ring.py --out experiments/bench/results/sigmoid_ring.md
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

N_DEV = 8


def child(impl: str, log2b: int, dim: int, tile: int) -> dict:
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P
    from sentjax.losses.sigmoid import sigmoid_loss
    from sentjax.losses.tiled_sigmoid import tiled_sigmoid_loss
    big_b = 2 ** log2b
    mesh = jax.make_mesh((N_DEV,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    rows = jax.sharding.NamedSharding(mesh, P("data"))
    ka, kp = jax.random.split(jax.random.key(log2b))
    make = jax.jit(lambda k: jax.random.normal(k, (big_b, dim)), out_shardings=rows)
    a, p = make(ka), make(kp)
    ls, bias = jnp.float32(math.log(10.0)), jnp.float32(-10.0)
    if impl == "tiled":
        fn = lambda a, p, ls, b: tiled_sigmoid_loss(a, p, log_scale=ls, bias=b, axis_name="data",  # noqa: E731
                                                    tile_size=tile)[0]
    else:
        fn = lambda a, p, ls, b: sigmoid_loss(a, p, log_scale=ls, bias=b, axis_name="data")[0]  # noqa: E731
    loss = jax.shard_map(fn, mesh=mesh, in_specs=(P("data"), P("data"), P(), P()), out_specs=P())
    t = time.perf_counter()
    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3))).lower(a, p, ls, bias).compile()
    compile_s = time.perf_counter() - t
    temp = step.memory_analysis().temp_size_in_bytes
    t = time.perf_counter()
    value, grads = jax.block_until_ready(step(a, p, ls, bias))
    seconds = time.perf_counter() - t
    return {"impl": impl, "log2b": log2b, "dim": dim, "tile": tile, "seconds": seconds, "compile_s": compile_s,
            "loss": float(value), "grad_t": float(grads[2]), "grad_b": float(grads[3]),
            "temp_gib": temp / 2 ** 30, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def run_case(impl: str, log2b: int, dim: int, tile: int, mem_limit_gib: float) -> dict:
    def cap():
        lim = int(mem_limit_gib * 2 ** 30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", XLA_FLAGS=f"--xla_force_host_platform_device_count={N_DEV}")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", impl, str(log2b), str(dim),
                           str(tile)], env=env, capture_output=True, text=True, preexec_fn=cap)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    err = proc.stderr.strip().splitlines()
    oom = any(s in proc.stderr for s in ("RESOURCE_EXHAUSTED", "Out of memory", "bad_alloc", "MemoryError",
                                         "Cannot allocate", "out of memory"))
    return {"impl": impl, "log2b": log2b, "dim": dim, "tile": tile,
            "failed": ("OOM" if oom or proc.returncode < 0 else "error") +
            f" (rc {proc.returncode}): {err[-1][:160] if err else ''}"}


def table(rows: list[dict]) -> str:
    out = ["| B | impl | tile | time (s) | compile (s) | peak RSS (GiB) | XLA temp / device (GiB) | loss | dL/dt' | dL/db |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tile = r["tile"] if r["impl"] == "tiled" else "-"
        name = "ring" if r["impl"] == "tiled" else "dense"
        if "failed" in r:
            out.append(f"| 2^{r['log2b']} | {name} | {tile} | {r['failed']} | | | | | | |")
            continue
        out.append(f"| 2^{r['log2b']} | {name} | {tile} | {r['seconds']:.2f} | {r['compile_s']:.1f} | "
                   f"{r['peak_rss_gib']:.2f} | {r['temp_gib']:.3f} | {r['loss']:.6f} | {r['grad_t']:.6f} | "
                   f"{r['grad_b']:.6f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=4, metavar=("IMPL", "LOG2B", "DIM", "TILE"), help=argparse.SUPPRESS)
    ap.add_argument("--log2b", default="14,16", help="batch sizes as powers of two (default 14,16)")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--mem-limit-gib", type=float, default=12.0,
                    help="address-space cap per case (the dense loss fails cleanly above it)")
    ap.add_argument("--out", default=None, help="write the markdown table here")
    args = ap.parse_args()
    if args.child:
        impl, log2b, dim, tile = args.child
        print(json.dumps(child(impl, int(log2b), int(dim), int(tile))), flush=True)
        return
    rows = []
    for log2b in (int(x) for x in args.log2b.split(",")):
        for impl in ("dense", "tiled"):
            r = run_case(impl, log2b, args.dim, args.tile, args.mem_limit_gib)
            rows.append(r)
            print(json.dumps(r), flush=True)
    load = os.getloadavg()
    text = (f"machine: {json.dumps(common.machine())}\n\nload average after the run (1/5/15 min): "
            f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n\ncommand: `python {' '.join(sys.argv)}`\n\n"
            f"8 fake CPU devices, dim {args.dim}, float32, no hard negatives, t' = log 10, b = -10; "
            f"address-space cap {args.mem_limit_gib} GiB per case\n\n" + table(rows))
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
