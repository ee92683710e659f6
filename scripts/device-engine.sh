#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (one device call): doctor, the kernel conformance suite (engine kernels
# included), the GPU engine benchmark (Llama-3-8B shape, dummy weights, bs=2, prompt 512, 256 new
# tokens), PyTorch's torch.compile baseline in the same call, the per-shape GEMM table against
# cuBLASLt, and the logits correctness checks against transformers. Logs go to $OUT.
# Decode is benched twice: with the documented default kernels, and after `kiln tune` with the tuned table.
# The binary comes gzipped in .carry/kiln.gz (scripts/device-round.sh builds it).
set -uo pipefail
out="${OUT:-device-logs}"; mkdir -p "$out"
export KILN_HOME="${KILN_HOME:-/tmp/kiln-home}"
kiln=/tmp/kiln
gz="${KILN_GZ:-.carry/kiln.gz}"   # the gzipped static binary (scripts/device-round.sh stages it)
gunzip -c "$gz" > "$kiln" && chmod +x "$kiln" || { echo "no $gz: run scripts/device-round.sh first"; exit 1; }
status=0
step() {  # step NAME SECONDS CMD... : runs with a time limit, tees to $out/NAME.log
  local name=$1 secs=$2; shift 2
  echo "== $name"; local t0=$(date +%s)
  # $OUT takes at most 8 files: the four big logs get their own, everything is also appended to all.log.
  local f="$out/$name.log"; case $name in check|bench|fastllama|kernels|tune) ;; *) f="/tmp/kiln-$name.log" ;; esac
  timeout "$secs" "$@" > "$f" 2>&1; local rc=$?
  { echo "== $name rc=$rc ($(( $(date +%s) - t0 )) s)"; cat "$f"; } >> "$out/all.log"
  tail -n "${TAIL:-25}" "$f"; echo "-- $name rc=$rc ($(( $(date +%s) - t0 )) s)"
  [ $rc = 0 ] || status=1
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
step doctor 30 $kiln doctor
TAIL=40 step check 150 sh -c "$kiln check | grep -v '^ok'"
step bench_default 120 $kiln bench-gpu --dummy-weights llama3-8b --batch 2 -p 512 -n 256 -r 3 --default-kernels
# Tune the decode GEMMs of Llama-3-8B (the issue asks for M in 1..16 in under 3 minutes), then bench with the table.
step tune 180 $kiln tune --dummy-weights llama3-8b --m 1,2,4,8,16
step bench 120 $kiln bench-gpu --dummy-weights llama3-8b --batch 2 -p 512 -n 256 -r 3
step fastllama 240 python3 bench/baselines/fastllama.py
ref=/tmp/kiln-ref
step hf_reference 180 python3 scripts/gpu/hf_reference.py --out $ref
compare() {  # compare KIND: Kiln CUDA logits vs transformers
  local kind=$1 vocab
  vocab=$(python3 -c "import json;print(json.load(open('$ref/$kind/config.json'))['vocab_size'])")
  step logits_$kind 120 $kiln logits -m $ref/$kind --tokens $ref/tokens.txt --out $ref/$kind/kiln_cuda.f32 --device cuda
  step compare_$kind 60 python3 scripts/gpu/compare_logits.py ref $ref/$kind/kiln_cuda.f32 $ref/$kind/ref_logits.f32 $vocab
}
compare llama
TAIL=45 step kernels 120 $kiln bench kernels --dummy-weights llama3-8b
compare granite
[ "${SKIP_CPU_COMPARE:-0}" = 1 ] && exit $status   # the CPU-engine comparison takes minutes on 2-layer full-width weights
step logits_cpu 200 $kiln logits -m $ref/llama --tokens $ref/tokens.txt --out $ref/llama/kiln_cpu.f32 --device cpu
step compare_cpu 60 python3 scripts/gpu/compare_logits.py cpu $ref/llama/kiln_cuda.f32 $ref/llama/kiln_cpu.f32 128256
exit $status
