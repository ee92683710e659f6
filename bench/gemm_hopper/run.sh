#!/usr/bin/env bash
# bench/gemm_hopper/run.sh — build, disassemble and run the Hopper prefill-GEMM harness on the GPU
# machine. Writes $OUT/gemm_hopper.txt (everything printed), $OUT/ptxas_hopper.txt (registers/spills),
# $OUT/sass_*.txt (SASS of the 128x256 instances).
set -uo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-/tmp/gemm_hopper_out}
mkdir -p "$OUT"
LOG="$OUT/gemm_hopper.txt"
NVCC=${NVCC:-nvcc}
FLAGS="-O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -I../../Sources/KilnKernels/cuda/common"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>&1 | tee "$LOG"
t0=$(date +%s)
LIBS="-lcuda -lcublasLt"
if ! $NVCC $FLAGS harness.cu -o /tmp/gemm_hopper_harness $LIBS 2> "$OUT/ptxas_hopper.txt"; then
    echo "build with cuBLASLt failed; building without the baseline" | tee -a "$LOG"
    grep -v "ptxas info" "$OUT/ptxas_hopper.txt" | head -20 | tee -a "$LOG"
    $NVCC $FLAGS -DNO_CUBLAS harness.cu -o /tmp/gemm_hopper_harness -lcuda 2> "$OUT/ptxas_hopper.txt" ||
        { grep -v "ptxas info" "$OUT/ptxas_hopper.txt" | head -40 | tee -a "$LOG"; exit 1; }
fi
echo "build: $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
grep -A2 "Function properties for kiln_gemm_hopper" "$OUT/ptxas_hopper.txt" | grep -o "kiln_gemm_hopper[a-z0-9_]*\|[0-9]* bytes spill stores\|Used [0-9]* registers" | paste - - - | tee -a "$LOG"
cuobjdump -sass /tmp/gemm_hopper_harness > /tmp/gemm_hopper_sass.txt 2>&1
echo "SASS: $(grep -c HGMMA /tmp/gemm_hopper_sass.txt) HGMMA instructions in the binary, $(grep -c 'LDL\|STL' /tmp/gemm_hopper_sass.txt) local-memory ops" | tee -a "$LOG"
for f in kiln_gemm_hopper_bm128_bn256_bk64_s4_c2_cl1 kiln_gemm_hopper_bm128_bn256_bk64_s4_c2_cl2; do
    cuobjdump -sass -fun $f /tmp/gemm_hopper_harness > "$OUT/sass_$f.txt" 2>&1
    echo "SASS $f: $(grep -c HGMMA "$OUT/sass_$f.txt") HGMMA, $(grep -c UTMALDG "$OUT/sass_$f.txt") UTMALDG" | tee -a "$LOG"
done
# Non-cluster instances first, then the cluster (TMA multicast) ones in a separate process, so that a
# hang in one group cannot lose the other's results.
timeout ${HARNESS_TIMEOUT:-100} /tmp/gemm_hopper_harness _cl1 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
timeout ${HARNESS_TIMEOUT:-60} /tmp/gemm_hopper_harness _cl2 2>&1 | tee -a "$LOG"
rc2=${PIPESTATUS[0]}
echo "harness exit code (cl1): $rc, (cl2): $rc2" | tee -a "$LOG"
[ $rc2 -ne 0 ] && rc=$rc2
exit $rc
