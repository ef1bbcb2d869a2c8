#!/usr/bin/env bash
# The GPU check of issue #32: the contract kit on cuda, the Recall@K engine GPU vs CPU at
# N = 100k, a two-cell real-data matrix with bf16 autocast on and off, kill -9 + resume on
# the GPU, training images/s against the CPU; one table, at most 8 minutes on one H100
# (benchmarks/gpu_check.py says what each row checks). Without a CUDA device it prints
# "no CUDA device" and exits 0.
#   tools/gpu-check.sh [--data ROOT] [--out docs/results/gpu/NAME.md]
# Real data: $LRBENCH_DATA (the CUB subset), else those two rows are skipped.
# Python: $PYTHON, else .venv/bin/python when it exists, else python3 (lrbench installed).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export CUBLAS_WORKSPACE_CONFIG="${CUBLAS_WORKSPACE_CONFIG:-:4096:8}"  # deterministic cuBLAS
exec timeout 540 "$PYTHON" -m benchmarks.gpu_check "$@"
