#!/usr/bin/env bash
# bench/tma_decode/run.sh — builds and runs the TMA/wgmma M = 16 decode prototype on the GPU machine.
set -uo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-/tmp/tma_decode_out}
mkdir -p "$OUT"
nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -I../../Sources/KilnKernels/cuda/common harness.cu -o /tmp/tma_decode -lcuda \
    2> "$OUT/build.txt" || { grep -v "ptxas info" "$OUT/build.txt" | head -30; exit 1; }
timeout 120 /tmp/tma_decode | tee "$OUT/tma_decode.txt"
