#!/usr/bin/env bash
# bench/attention/run.sh — build and run the attention harness and the PyTorch SDPA baseline on the
# GPU machine, in one call. Writes $OUT/attention.txt (comparison table + summary), $OUT/results.txt
# (every RESULT line), $OUT/ptxas.txt (registers/spills), $OUT/sdpa.txt, $OUT/sass_*.txt.
# The harness runs twice: attention.cu's instances ("base"), then attention_hopper.cu's ("hopper"),
# each with its own timeout, so that a hang or a CUDA error in one cannot lose the other's results.
set -uo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-/tmp/attn_out}
mkdir -p "$OUT"
NVCC=${NVCC:-nvcc}
FLAGS="-O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -I../../Sources/KilnKernels/cuda/common"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
t0=$(date +%s)
$NVCC $FLAGS harness.cu -o /tmp/attn_harness 2> "$OUT/ptxas.txt" || { grep -v "ptxas info" "$OUT/ptxas.txt" | head -40; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s; functions with spills: $(grep 'bytes spill stores' "$OUT/ptxas.txt" | grep -vc ' 0 bytes spill stores')"
f=kiln_attn_prefill_d128_br128_bc64_kc32_w4
cuobjdump --dump-sass --function $f /tmp/attn_harness > "$OUT/sass_prefill.txt" 2>&1 &&
  echo "sass $f: $(grep -c HMMA "$OUT/sass_prefill.txt") HMMA, $(grep -c LDSM "$OUT/sass_prefill.txt") LDSM, $(grep -c 'LDL\|STL' "$OUT/sass_prefill.txt") local, $(grep -c MUFU.EX2 "$OUT/sass_prefill.txt") EX2"
fh=kiln_attn_prefill_hopper_d128_br128_bc128_s2_pp1
cuobjdump --dump-sass --function $fh /tmp/attn_harness > "$OUT/sass_hopper.txt" 2>&1 &&
  echo "sass $fh: $(grep -c HGMMA "$OUT/sass_hopper.txt") HGMMA, $(grep -c 'LDL\|STL' "$OUT/sass_hopper.txt") local, $(grep -c LDGSTS "$OUT/sass_hopper.txt") LDGSTS, $(grep -c MUFU.EX2 "$OUT/sass_hopper.txt") EX2, $(grep -c 'WARPGROUP.DEPBAR' "$OUT/sass_hopper.txt") WG.DEPBAR"
grep -A3 "Compiling entry function 'kiln_attn_prefill_hopper" "$OUT/ptxas.txt" | grep -o "kiln_attn_prefill_hopper[a-z0-9_]*' for\|[0-9]* bytes spill stores\|Used [0-9]* registers" | paste - - - | sed "s/' for//"
rm -f "$OUT/results_base.txt" "$OUT/results_hopper.txt"
timeout 150 /tmp/attn_harness "$OUT/results_base.txt" base > "$OUT/harness.log" 2>&1
rc=$?
timeout ${HOPPER_TIMEOUT:-90} /tmp/attn_harness "$OUT/results_hopper.txt" hopper > "$OUT/harness_hopper.log" 2>&1
rch=$?
cat "$OUT/results_base.txt" "$OUT/results_hopper.txt" 2>/dev/null | grep "^RESULT" > "$OUT/results.txt"
grep -v "^RESULT" "$OUT/harness.log"
grep -v "^RESULT" "$OUT/harness_hopper.log"
echo "harness rc=$rc (base), rc=$rch (hopper; 124 = timed out, i.e. a hang); FAIL lines: $(grep -c FAIL "$OUT/results.txt")"
grep FAIL "$OUT/results.txt" | head -20
PYTHONUNBUFFERED=1 timeout 90 python3 sdpa.py "$OUT/results.txt" > "$OUT/sdpa.txt" 2>&1
{
  cat "$OUT/gpu.txt"
  echo "harness rc=$rc (base), rc=$rch (hopper), failures: $(grep -c FAIL "$OUT/results.txt") of $(grep -c '^RESULT' "$OUT/results.txt") checks"
  echo "hopper: $(grep -c 'prefill_hopper.*PASS' "$OUT/results.txt") PASS, $(grep -c 'prefill_hopper.*FAIL' "$OUT/results.txt") FAIL"
  grep -A40 "==== Kiln vs" "$OUT/sdpa.txt"
  grep "^SDPA" "$OUT/sdpa.txt"
} > "$OUT/attention.txt"
cat "$OUT/attention.txt"
