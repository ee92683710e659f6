#!/usr/bin/env bash
# Runs ON THE GPU MACHINE: SmolLM2-135M in GGUF Q8_0 on Kiln's GPU engine — its linear layers kept in 8 bits on
# gemm_lut's 8-bit instances (decode, M ≤ 16) and kiln_lut8_dequant (prefill), GPUWeights.plan — against Kiln's CPU
# engine (its own Q8_0 path) by scripts/gpu/smollm2_gpu_vs_cpu.sh's teacher-forced rule; then greedy decode on both
# devices (the texts should agree for most of their length: bf16 weights and activations on the GPU vs the CPU's f32 /
# Q8 activations may part at a near tie) and the GPU load log, which must show the linear layers "q8_0, native".
#
# The test data holds no Q8_0 SmolLM2 (scripts/fetch-test-data.sh fetches the Q4_1 GGUF) and Kiln writes no GGUF Q8_0,
# so give a Q8_0 file, or the Q4_1 file with LLAMA_QUANTIZE=path/to/llama-quantize (llama.cpp's, built by the tests in
# ~/.cache/kiln/llama.cpp-build/cmake/bin; its shared libraries beside it): it requantizes to Q8_0 with
# --allow-requantize — the Q8_0 rounding of the Q4_1 weights, a valid Q8_0 model, which both engines then read.
# Usage: [LLAMA_QUANTIZE=…/llama-quantize] scripts/gpu/smollm2_q8_gpu_vs_cpu.sh SmolLM2.gguf   (kiln at $KILN, default /tmp/kiln)
# Q8_0's 8-bit kernels are off by default until checked on a device: every GPU command here passes --q8-kernels.
set -uo pipefail
model=$1; kiln=${KILN:-/tmp/kiln}
if [ -n "${LLAMA_QUANTIZE:-}" ]; then
  q8=/tmp/smol-q8/SmolLM2-135M-Instruct.Q8_0.gguf; mkdir -p /tmp/smol-q8
  LD_LIBRARY_PATH="$(dirname "$LLAMA_QUANTIZE"):${LD_LIBRARY_PATH:-}" "$LLAMA_QUANTIZE" --allow-requantize "$model" "$q8" Q8_0 > /tmp/smol-q8/quantize.log 2>&1 \
    || { tail -5 /tmp/smol-q8/quantize.log; exit 1; }
  model=$q8
fi
$kiln info -m "$model" | grep "tensor types" | grep -q "Q8_0" || { echo "$model has no Q8_0 tensors (set LLAMA_QUANTIZE to make one)"; exit 1; }
status=0
echo "== GPU load log (linear layers must be q8_0, native; nothing converted to bf16 but the embedding)"
$kiln run -m "$model" --device cuda --q8-kernels -p "The capital of France is" -n 1 --temp 0 > /tmp/smol-q8-load.log 2>&1 || status=1
grep -E "weights |converted" /tmp/smol-q8-load.log
grep -q "attn_q.weight.*q8_0, native" /tmp/smol-q8-load.log || { echo "FAIL: no q8_0 layer is native"; status=1; }
grep -q "converted to bf16 (" /tmp/smol-q8-load.log && { echo "FAIL: a linear layer was converted to bf16"; status=1; }
GPU_FLAGS=--q8-kernels KILN=$kiln scripts/gpu/smollm2_gpu_vs_cpu.sh "$model" || status=1
for device in cuda cpu; do
  echo "== greedy decode on $device"
  flags=""; [ $device = cuda ] && flags=--q8-kernels
  $kiln run -m "$model" --device $device $flags -p "The capital of France is" -n 32 --temp 0 || status=1
done
echo "== gemm_lut 8-bit conformance"; $kiln check --only lut 2>&1 | grep -E "lut8|passed|FAIL" | tail -20 || status=1
exit $status
