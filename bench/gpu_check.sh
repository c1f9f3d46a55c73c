#!/usr/bin/env bash
# GPU checks for a machine with CUDA (a few minutes): AMRB = BPTT gradients with the CUDA RNG
# replayed, peak memory AMRB vs BPTT at T = 16, RMAAT vs RMT throughput at 8K in fp32 and bf16.
# Needs a CUDA build of torch in the Python it runs (PYTHON, default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH="$PWD" timeout 480 "${PYTHON:-python3}" bench/gpu_check.py
