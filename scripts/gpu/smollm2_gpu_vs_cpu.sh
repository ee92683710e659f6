#!/usr/bin/env bash
# Runs ON THE GPU MACHINE: SmolLM2-135M (real Q4_1 GGUF weights, dequantized to bf16 for the GPU) on Kiln's GPU
# engine against Kiln's CPU engine, teacher-forced over the golden prompts of Tests/Fixtures/smollm2-llamacpp.json
# (prompt + llama.cpp's 48 generated tokens): top-1 equal where the CPU's top-1/top-2 gap >= 0.5, the CPU's top-5
# logits within 1.0 (scripts/gpu/compare_logits.py cpu); also against the CPU engine with --cpu-float (no Q8
# activation rounding), and the two CPU modes against each other. Then greedy and sampled generation on the GPU.
# Usage: scripts/gpu/smollm2_gpu_vs_cpu.sh MODEL.gguf   (kiln unpacked at $KILN, default /tmp/kiln; $GPU_FLAGS: extra
# kernel-choice flags for every --device cuda command, e.g. --q8-kernels)
set -uo pipefail
model=$1; kiln=${KILN:-/tmp/kiln}; work=/tmp/smol-check; mkdir -p $work
status=0
for id in a b chat_nosys; do
  python3 - "$id" > $work/$id.txt <<'PY'
import json, sys
d = json.load(open("Tests/Fixtures/smollm2-llamacpp.json"))
cases = {c["id"]: c for c in d["prompts"] + [d["chat_no_system"]]}
c = cases[sys.argv[1]]
print(" ".join(str(t) for t in c["prompt_token_ids"] + c["generated_token_ids"]))
PY
  $kiln logits -m "$model" --tokens $work/$id.txt --out $work/$id.cpu.f32 --device cpu > /dev/null || status=1
  $kiln logits -m "$model" --tokens $work/$id.txt --out $work/$id.cpufloat.f32 --device cpu --cpu-float > /dev/null || status=1
  $kiln logits -m "$model" --tokens $work/$id.txt --out $work/$id.cuda.f32 --device cuda ${GPU_FLAGS:-} 2>/dev/null | tail -1 || status=1
  echo "-- $id: GPU vs the CPU engine (llama.cpp-style Q8 activations)"
  python3 scripts/gpu/compare_logits.py cpu $work/$id.cuda.f32 $work/$id.cpu.f32 49152 || status=1
  echo "-- $id: GPU vs the CPU engine with --cpu-float (weights dequantized to f32, no activation rounding)"
  python3 scripts/gpu/compare_logits.py cpu $work/$id.cuda.f32 $work/$id.cpufloat.f32 49152 || status=1
  echo "-- $id: the two CPU modes against each other (the Q8 path's own rounding noise)"
  python3 scripts/gpu/compare_logits.py cpu $work/$id.cpufloat.f32 $work/$id.cpu.f32 49152
done
echo "== greedy on the GPU"; $kiln run -m "$model" --device cuda ${GPU_FLAGS:-} -p "The capital of France is" -n 24 --temp 0 || status=1
echo "== sampled on the GPU (seed 7)"; $kiln run -m "$model" --device cuda ${GPU_FLAGS:-} -p "The capital of France is" -n 24 --seed 7 || status=1
echo "== chat on the GPU"; $kiln run -m "$model" --device cuda ${GPU_FLAGS:-} --chat -p "What is the tallest mountain in the world?" -n 32 --temp 0 || status=1
echo "== bench on the GPU"; $kiln bench -m "$model" --device cuda ${GPU_FLAGS:-} -p 128 -n 64 -r 3 || status=1
exit $status
