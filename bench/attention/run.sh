#!/usr/bin/env bash
# bench/attention/run.sh — build and run the attention harness and the PyTorch SDPA baseline on the
# GPU machine, in one call. Writes $OUT/attention.txt (comparison table + summary), $OUT/results.txt
# (every RESULT line), $OUT/ptxas.txt (registers/spills), $OUT/sdpa.txt.
set -uo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-/tmp/attn_out}
mkdir -p "$OUT"
NVCC=${NVCC:-nvcc}
FLAGS="-O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
t0=$(date +%s)
$NVCC $FLAGS harness.cu -o /tmp/attn_harness 2> "$OUT/ptxas.txt" || { grep -v "ptxas info" "$OUT/ptxas.txt" | head -40; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s; functions with spills: $(grep 'bytes spill stores' "$OUT/ptxas.txt" | grep -vc ' 0 bytes spill stores')"
f=kiln_attn_prefill_d128_br128_bc64_kc32_w4
cuobjdump --dump-sass --function $f /tmp/attn_harness > "$OUT/sass_prefill.txt" 2>&1 &&
  echo "sass $f: $(grep -c HMMA "$OUT/sass_prefill.txt") HMMA, $(grep -c LDSM "$OUT/sass_prefill.txt") LDSM, $(grep -c 'LDL\|STL' "$OUT/sass_prefill.txt") local, $(grep -c MUFU.EX2 "$OUT/sass_prefill.txt") EX2"
timeout 150 /tmp/attn_harness "$OUT/results.txt" > "$OUT/harness.log" 2>&1
rc=$?
grep -v "^RESULT" "$OUT/harness.log"
echo "harness rc=$rc; FAIL lines: $(grep -c FAIL "$OUT/results.txt")"
grep FAIL "$OUT/results.txt" | head -20
PYTHONUNBUFFERED=1 timeout 90 python3 sdpa.py "$OUT/results.txt" > "$OUT/sdpa.txt" 2>&1
{
  cat "$OUT/gpu.txt"
  echo "harness rc=$rc, failures: $(grep -c FAIL "$OUT/results.txt") of $(grep -c '^RESULT' "$OUT/results.txt") checks"
  grep -A40 "==== Kiln vs" "$OUT/sdpa.txt"
  grep "^SDPA" "$OUT/sdpa.txt"
} > "$OUT/attention.txt"
cat "$OUT/attention.txt"
