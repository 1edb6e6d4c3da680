#!/usr/bin/env bash
# One prepared run for the `device` tool (one GPU): tiled InfoNCE loss + gradient up to B = 2^20.
#   run(command="bash experiments/bench/tiled_loss_gpu.sh", timeout_s=540)
# Needs a CUDA jaxlib on the device machine (pip install -U "jax[cuda12]" if the venv is CPU-only).
# Writes the table to $OUT/tiled_loss_gpu.md (and prints it); copy its rows into results/tiled_loss.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python}"
[ -x .venv/bin/python ] && PY=.venv/bin/python
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # so peak_bytes_in_use reflects what the loss needs
"$PY" -c "import jax; d = jax.devices()[0]; assert d.platform == 'gpu', f'no GPU visible to JAX: {d}'; print(d.device_kind)"
OUT_DIR="${OUT:-/tmp}"
"$PY" experiments/bench/tiled_loss.py --gpu --tile "${TILE:-4096}" --out "$OUT_DIR/tiled_loss_gpu.md"
