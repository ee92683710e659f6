#!/usr/bin/env bash
# bench/gemm/run.sh — build and run the decode-GEMM harness on the GPU machine.
# Writes $OUT/gemm.txt (summary table), $OUT/gemm_all.txt (every instance × splitK),
# $OUT/ptxas.txt (registers/spills), $OUT/sass.txt (one instance's inner loop).
set -uo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-/tmp/gemm_out}
mkdir -p "$OUT"
NVCC=${NVCC:-nvcc}
FLAGS="-O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -I../../Sources/KilnKernels/cuda/common"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
t0=$(date +%s)
if ! $NVCC $FLAGS harness.cu -o /tmp/gemm_harness -lcublasLt 2> "$OUT/ptxas.txt"; then
    echo "build with cuBLASLt failed; building without the baseline" | tee -a "$OUT/gemm.txt"
    grep -v "ptxas info" "$OUT/ptxas.txt" | head -20
    $NVCC $FLAGS -DNO_CUBLAS harness.cu -o /tmp/gemm_harness 2> "$OUT/ptxas.txt" || { grep -v "ptxas info" "$OUT/ptxas.txt" | head -40; exit 1; }
fi
echo "build: $(( $(date +%s) - t0 )) s; spills: $(grep -c 'bytes spill stores' "$OUT/ptxas.txt") functions reported, $(grep 'bytes spill stores' "$OUT/ptxas.txt" | grep -vc ' 0 bytes spill stores') with spills"
for f in kiln_gemm_splitk_nt1_wn1_wk4_t1_u8_s0 kiln_gemm_splitk_nt1_wn1_wk4_t1_u4_s1 kiln_gemm_splitk_nt1_wn1_wk4_t1_u4_s4; do
  cuobjdump --dump-sass --function $f /tmp/gemm_harness > "$OUT/sass_$f.txt" 2>&1 &&
  echo "sass $f: $(grep -c HMMA "$OUT/sass_$f.txt") HMMA, $(grep -c 'LDG.E.*128' "$OUT/sass_$f.txt") LDG.128, $(grep -c LDGSTS "$OUT/sass_$f.txt") LDGSTS, $(grep -c 'LDL\|STL' "$OUT/sass_$f.txt") local"
done
/tmp/gemm_harness "$OUT" 2>&1 | tee -a "$OUT/gemm.txt"
