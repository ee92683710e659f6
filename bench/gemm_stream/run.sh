#!/usr/bin/env bash
# bench/gemm_stream/run.sh — builds and runs the gemm_stream sweep (harness.cu) on the GPU machine.
# Every RESULT line goes to $OUT/gemm_stream.txt; ptxas register/smem counts to $OUT/build.txt.
set -uo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-/tmp/gemm_stream_out}
mkdir -p "$OUT"
NVCC=${NVCC:-nvcc}
$NVCC -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -I../../Sources/KilnKernels/cuda/common harness.cu -o /tmp/gemm_stream -lcuda \
    2> "$OUT/build.txt" || { grep -v "ptxas info" "$OUT/build.txt" | head -30; exit 1; }
timeout 240 /tmp/gemm_stream 2>&1 | tee "$OUT/gemm_stream.txt"
