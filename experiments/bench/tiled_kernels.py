"""Tiled InfoNCE kernels side by side in one process: the numbers of results/tiled_loss.md run 4.

  python experiments/bench/tiled_kernels.py LOG2B TILE        # PANEL_MIB=0 forces the ring kernel

value_and_grad of ``tiled_infonce_loss`` on random unit vectors [B, 384] float32, temperature 0.05,
best of 2 after AOT compilation; the floor is 3 x 2 B^2 d at the 2048^3 matmul rate measured first.
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, HERE)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import common  # noqa: E402
from sentjax.losses.tiled_infonce import tiled_infonce_loss  # noqa: E402

log2b = int(sys.argv[1]) if len(sys.argv) > 1 else 14
tile = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
panel_mib = float(os.environ.get("PANEL_MIB", "256"))
B, D = 2 ** log2b, 384
rate = common.jax_matmul_gflops()
ka, kp = jax.random.split(jax.random.key(0))
unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
a, p = unit(jax.random.normal(ka, (B, D))), unit(jax.random.normal(kp, (B, D)))
f = lambda a, p: tiled_infonce_loss(a, p, temperature=0.05, tile_size=tile, panel_mib=panel_mib)[0]  # noqa: E731
vg = jax.jit(jax.value_and_grad(f, argnums=(0, 1))).lower(a, p).compile()
times = []
for _ in range(2):
    t = time.perf_counter()
    loss, grads = jax.block_until_ready(vg(a, p))
    times.append(time.perf_counter() - t)
floor = 3 * 2 * B ** 2 * D / (rate * 1e9)
print(f"B=2^{log2b} tile={tile} panel_mib={panel_mib:g} rate={rate:.0f} GFLOP/s loss+grad={min(times):.2f}s "
      f"floor={floor:.2f}s ratio={min(times) / floor:.3f} loss={float(loss):.6f}")
