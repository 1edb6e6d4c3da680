#!/usr/bin/env bash
# One prepared run for the `device` tool (one GPU, < 10 minutes): encode and train throughput
# (fp32/bf16, batch 64..4096, packed/padded), the tiled loss at 2^16..2^20, MFU.
#   run(command="bash experiments/bench/accelerator.sh", timeout_s=590)
# Needs a CUDA jaxlib there (see ../../.library/device/README.md: wheels travel in a carried .whl/).
# Writes $OUT/accelerator.md as rows are measured; copy it to experiments/bench/results/accelerator.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && PY=.venv/bin/python
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
"$PY" -c "import jax; d = jax.devices()[0]; assert d.platform == 'gpu', f'no GPU visible to JAX: {d}'; print(d.device_kind)"
exec "$PY" experiments/bench/accelerator.py --budget-s "${BUDGET_S:-500}" --out "${OUT:-/tmp}/accelerator.md" "$@"
