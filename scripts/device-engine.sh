#!/usr/bin/env bash
# Runs ON THE GPU MACHINE: the GPU engine's check-and-bench round, split in named steps so that a round
# fits the device's 10-minute call limit (run the steps over two or three calls to one warm machine;
# $KILN_HOME, with the kernel cache and the tuning table, lives in /tmp and survives between them).
#   bash scripts/device-engine.sh [STEP...]      (no steps: all of them, in this order)
# Full logs come back as $OUT/logs-<steps>.tgz. Steps:
#   gemm       bench/gemm/run.sh: nvcc harness, every gemm_splitk instance × split checked and timed, cuBLASLt
#   check      doctor + kiln check (every kernel against its CPU reference, engine kernels included)
#   tune       kiln tune (Llama-3-8B shapes, M 1…16 and 64…4096); the table is copied to $OUT
#   kernels    kiln bench kernels with the tuned table, M 1…16, 64, 512, 1024, 4096, against cuBLASLt (graph-timed)
#   decode     decode bench (bs=2, prompt 512, 256 tokens): default kernels, then the tuned table
#   kernels_nopdl, decode_nopdl   the same without programmatic dependent launch (--no-pdl), M ≤ 16 / tuned table
#   fastllama  PyTorch torch.compile baseline (bench/baselines/fastllama.py) in the same call as `decode`
#   logits     transformers reference checkpoints (llama, granite, qwen3) and Kiln's CUDA logits against them
#   cpu        the same llama checkpoint on Kiln's CPU engine against its CUDA logits (minutes)
#   fp8logits  scripts/gpu/hf_fp8_reference.py: transformers quantizes a random Llama-3-8B-width checkpoint to fine-grained
#              FP8 and saves it; kiln logits on that folder three ways (--no-fp8-prefill-kernel: prefill dequantizes to
#              bf16; the default: gemm_fp8_hopper; --rows 1: every row on gemm_fp8's decode kernels), each compared
#              (compare_logits.py) with transformers' FP8 logits (fp8) and the bf16 model's (fp8-vs-bf16); the dequantize
#              path also with the exact W8A16 function (w8a16), which is what it computes
#   attention  bench/attention/run.sh: attention kernels checked against an fp32 reference, timed, SDPA baseline
#   serve      scripts/gpu/serve_gpu_test.py: `kiln serve --device cuda` over HTTP on a tiny checkpoint made here
#   tp1        tensor parallelism on one GPU (docs/tensor-parallel.md): bs=1 decode without --tp, then --tp 1 (the same
#              wrapper, no NCCL; within 1%), greedy ids of both (must be identical), and after `logits` the llama
#              checkpoint's teacher-forced logits with --tp 1 (must equal the plain path's bit for bit)
#   tp         on a multi-GPU machine, for N = 2 and 4 (as many as there are GPUs): after `logits`, each reference
#              checkpoint's logits with --tp N against transformers' and against the single-GPU engine's (compare_logits
#              ref: top-1 where the gap > 0.1, bf16-level relative error), then bs=1 decode of llama3-8b and llama3-70b
# The binary comes gzipped in .carry/kiln.gz (scripts/device-round.sh builds it).
set -uo pipefail
out="${OUT:-device-logs}"; mkdir -p "$out"
# $OUT brings back at most 8 files: every log goes to $logs, which is packed into one $OUT/logs-<steps>.tgz at the end.
logs=/tmp/kiln-device-logs; mkdir -p "$logs"
export KILN_HOME="${KILN_HOME:-/tmp/kiln-home}"
kiln=/tmp/kiln
gz="${KILN_GZ:-.carry/kiln.gz}"
if [ ! -x "$kiln" ] || [ "$gz" -nt "$kiln" ]; then
  gunzip -c "$gz" > "$kiln" && chmod +x "$kiln" || { echo "no $gz: run scripts/device-round.sh first"; exit 1; }
fi
steps=("$@"); [ ${#steps[@]} -gt 0 ] || steps=(gemm check tune kernels decode fastllama logits attention)
status=0
step() {  # step NAME SECONDS CMD... : runs with a time limit; full log in $out/NAME.log, tail on stdout
  local name=$1 secs=$2; shift 2
  echo "== $name"; local t0=$(date +%s)
  timeout "$secs" "$@" > "$logs/$name.log" 2>&1; local rc=$?
  tail -n "${TAIL:-25}" "$logs/$name.log"; echo "-- $name rc=$rc ($(( $(date +%s) - t0 )) s)"
  [ $rc = 0 ] || status=1
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
dummy="--dummy-weights llama3-8b"
ref=/tmp/kiln-ref
for s in "${steps[@]}"; do
  case $s in
    gemm) OUT="$logs/gemm" TAIL=60 step gemm 240 bash bench/gemm/run.sh ;;
    check)
      step doctor 30 $kiln doctor
      TAIL=40 step check 180 sh -c "$kiln check | grep -v '^ok'" ;;
    tune)
      TAIL=45 step tune 300 $kiln tune $dummy
      cp "$KILN_HOME"/tune/*.json "$logs/" 2>/dev/null ;;
    kernels) TAIL=60 step kernels 300 $kiln bench kernels $dummy --m 1,2,4,8,16,64,512,1024,4096 ;;
    kernels_nopdl) TAIL=30 step kernels_nopdl 120 $kiln bench kernels $dummy --m 1,2,4,8,16 --no-pdl ;;
    decode_nopdl) step decode_nopdl 150 $kiln bench-gpu $dummy --batch 2 -p 512 -n 256 -r 3 --no-pdl ;;
    decode)
      step decode_default 150 $kiln bench-gpu $dummy --batch 2 -p 512 -n 256 -r 3 --default-kernels
      step decode_tuned 150 $kiln bench-gpu $dummy --batch 2 -p 512 -n 256 -r 3 ;;
    fastllama) step fastllama 240 python3 bench/baselines/fastllama.py ;;
    serve) TAIL=20 step serve 240 python3 scripts/gpu/serve_gpu_test.py --kiln $kiln ;;
    logits)
      step hf_reference 180 python3 scripts/gpu/hf_reference.py --out $ref
      for kind in llama granite qwen3; do
        vocab=$(python3 -c "import json;print(json.load(open('$ref/$kind/config.json'))['vocab_size'])")
        step logits_$kind 120 $kiln logits -m $ref/$kind --tokens $ref/tokens.txt --out $ref/$kind/kiln_cuda.f32 --device cuda
        step compare_$kind 60 python3 scripts/gpu/compare_logits.py ref $ref/$kind/kiln_cuda.f32 $ref/$kind/ref_logits.f32 $vocab
      done ;;
    cpu)
      step logits_cpu 200 $kiln logits -m $ref/llama --tokens $ref/tokens.txt --out $ref/llama/kiln_cpu.f32 --device cpu
      step compare_cpu 60 python3 scripts/gpu/compare_logits.py cpu $ref/llama/kiln_cuda.f32 $ref/llama/kiln_cpu.f32 128256 ;;
    fp8logits)
      fr=/tmp/kiln-fp8ref
      TAIL=20 step hf_fp8_reference 400 python3 scripts/gpu/hf_fp8_reference.py --out $fr
      cat $fr/fp8/hf_fp8_backend.txt 2>/dev/null | sed 's/^/hf_fp8_logits.f32 computed by: /'
      vocab=$(python3 -c "import json;print(json.load(open('$fr/fp8/config.json'))['vocab_size'])")
      for way in dequant prefill_kernel decode; do
        case $way in dequant) flags=(--no-fp8-prefill-kernel) ;; prefill_kernel) flags=() ;; decode) flags=(--rows 1) ;; esac
        step logits_fp8_$way 180 $kiln logits -m $fr/fp8 --tokens $fr/tokens.txt --out $fr/fp8/kiln_$way.f32 --device cuda ${flags[@]+"${flags[@]}"}
        step compare_fp8_$way 60 python3 scripts/gpu/compare_logits.py fp8 $fr/fp8/kiln_$way.f32 $fr/fp8/hf_fp8_logits.f32 $vocab
        step compare_fp8_bf16_$way 60 python3 scripts/gpu/compare_logits.py fp8-vs-bf16 $fr/fp8/kiln_$way.f32 $fr/bf16/ref_logits.f32 $vocab
      done
      step compare_w8a16_dequant 60 python3 scripts/gpu/compare_logits.py w8a16 $fr/fp8/kiln_dequant.f32 $fr/fp8/w8a16_ref_logits.f32 $vocab ;;
    attention) OUT="$logs/attention" TAIL=60 step attention 300 bash bench/attention/run.sh ;;
    tp1)
      step decode_bs1 150 $kiln bench-gpu $dummy --batch 1 -p 512 -n 256 -r 3
      step decode_bs1_tp1 150 $kiln bench-gpu $dummy --batch 1 -p 512 -n 256 -r 3 --tp 1
      step ids_plain 120 $kiln bench --device cuda $dummy -p 64 -n 48 -r 1 --print-ids 48
      step ids_tp1 120 $kiln bench --device cuda $dummy -p 64 -n 48 -r 1 --print-ids 48 --tp 1
      step ids_equal 5 diff <(grep '^ids' "$logs/ids_plain.log") <(grep '^ids' "$logs/ids_tp1.log")
      if [ -f $ref/llama/kiln_cuda.f32 ]; then
        step logits_llama_tp1 120 $kiln logits -m $ref/llama --tokens $ref/tokens.txt --out $ref/llama/kiln_tp1.f32 --device cuda --tp 1
        step logits_tp1_equal 5 cmp $ref/llama/kiln_cuda.f32 $ref/llama/kiln_tp1.f32
      else echo "tp1: run the logits step first for the teacher-forced comparison"; fi ;;
    tp)
      gpus=$(nvidia-smi -L | wc -l)
      for n in 2 4; do
        [ "$gpus" -ge $n ] || { echo "tp: $gpus GPU(s), skipping --tp $n"; continue; }
        for kind in llama granite qwen3; do
          [ -f $ref/$kind/kiln_cuda.f32 ] || { echo "tp: run the logits step first"; break; }
          vocab=$(python3 -c "import json;print(json.load(open('$ref/$kind/config.json'))['vocab_size'])")
          step logits_${kind}_tp$n 180 $kiln logits -m $ref/$kind --tokens $ref/tokens.txt --out $ref/$kind/kiln_tp$n.f32 --device cuda --tp $n
          step compare_${kind}_tp${n}_ref 60 python3 scripts/gpu/compare_logits.py ref $ref/$kind/kiln_tp$n.f32 $ref/$kind/ref_logits.f32 $vocab
          step compare_${kind}_tp${n}_1gpu 60 python3 scripts/gpu/compare_logits.py ref $ref/$kind/kiln_tp$n.f32 $ref/$kind/kiln_cuda.f32 $vocab
        done
        step decode_8b_tp$n 200 $kiln bench-gpu $dummy --batch 1 -p 512 -n 256 -r 3 --tp $n
        step decode_70b_tp$n 400 $kiln bench-gpu --dummy-weights llama3-70b --batch 1 -p 128 -n 128 -r 2 --tp $n
      done ;;
    *) echo "unknown step: $s"; status=1 ;;
  esac
done
tar czf "$out/logs-$(IFS=-; echo "${steps[*]}").tgz" -C "$(dirname "$logs")" "$(basename "$logs")"
exit $status
