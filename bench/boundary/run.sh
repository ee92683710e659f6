#!/usr/bin/env bash
# bench/boundary/run.sh — kernel-boundary, access-pattern and decode-GEMM prototype measurements
# (harness.cu) on the GPU machine. Every RESULT line goes to $OUT/boundary.txt.
set -uo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-/tmp/boundary_out}
mkdir -p "$OUT"
NVCC=${NVCC:-nvcc}
$NVCC -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -I../../Sources/KilnKernels/cuda/common harness.cu -o /tmp/boundary 2> "$OUT/build.txt" || { grep -v "ptxas info" "$OUT/build.txt" | head -30; exit 1; }
timeout 150 /tmp/boundary "$@" | tee "$OUT/boundary.txt"
