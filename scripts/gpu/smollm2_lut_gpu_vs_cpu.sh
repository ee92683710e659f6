#!/usr/bin/env bash
# Runs ON THE GPU MACHINE: SmolLM2-135M quantized to 4-bit lookup tables (kiln quantize --to lut4, g64; BITS=3 or 2 for
# lut3 / lut2) on Kiln's GPU engine against Kiln's CPU engine. Teacher-forced logits (prefill: the layers dequantized to
# bf16 by kiln_lut{4,3,2}_dequant)
# through scripts/gpu/smollm2_gpu_vs_cpu.sh's rule, then greedy decode (gemm_lut, M = 1) on the GPU and the CPU — the
# two texts should agree for most of their length (bf16 weights and activations on the GPU vs f32 on the CPU may part
# at a near tie) — and the GPU load log, which must show the linear layers "native" (nf: one table per layer) or, for
# `learned`, q/k/v and gate/up "converted to bf16 (the parts' tables differ …)".
# Usage: [BITS=3] scripts/gpu/smollm2_lut_gpu_vs_cpu.sh SmolLM2.gguf [nf|learned] [offsets]   (kiln at $KILN, default /tmp/kiln)
# (2 bits makes SmolLM2 useless — docs/perf-notes-lut.md's perplexity table — so only the teacher-forced rule means much there.)
set -uo pipefail
model=$1; table=${2:-nf}; kiln=${KILN:-/tmp/kiln}; bits=${BITS:-4}
out=/tmp/smol-lut$bits-$table${3:+-affine}; rm -rf "$out"
status=0
$kiln quantize -m "$model" --to lut$bits --group 64 --table "$table" ${3:+--offsets} -o "$out" || exit 1
KILN=$kiln scripts/gpu/smollm2_gpu_vs_cpu.sh "$out" || status=1
for device in cuda cpu; do
  echo "== greedy decode on $device"
  $kiln run -m "$out" --device $device -p "The capital of France is" -n 32 --temp 0 || status=1
done
exit $status
