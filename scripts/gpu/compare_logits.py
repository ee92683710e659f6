"""Compares teacher-forced logits (raw fp32 [tokens, vocab] files).

mode ref:  GOT against a transformers reference: top-1 must agree wherever the reference's
           top-1/top-2 gap > 0.1, and the per-row relative L2 error must stay bf16-sized
           (mean < 2e-2, max < 5e-2).
mode cpu:  GOT (GPU) against Kiln's CPU engine: top-1 equal where the CPU's gap >= 0.5, and the
           CPU's top-5 logits within 1.0 in GOT.
mode fp8:  GOT (Kiln, FP8 checkpoint) against transformers' FP8 logits of the same checkpoint (W8A8: e4m3 weights with
           128×128 block scales, activations quantized per 1×128 block): per-row relative L2 error mean < 0.2, max < 0.25,
           and top-1 must agree wherever the reference's top-1/top-2 gap > 0.1 and > 4 × sqrt(2) × the row's RMS logit
           difference (the gap stands 4σ above the difference of two logits' errors); the count at gap > 0.1 alone (the
           issue's wording) is printed.
mode fp8-vs-bf16: GOT (Kiln, FP8 checkpoint) against the bf16 model's fp32 reference: per-row relative L2 error within
           FP8 quantization error, mean < 0.25, max < 0.3 (top-1 agreement is printed, not required).
mode w8a16: GOT (Kiln's prefill path that dequantizes FP8 layers to bf16) against the exact W8A16 function of the FP8
           checkpoint (hf_fp8_reference.py's w8a16_ref_logits.f32, fp32): per-row relative L2 error mean < 4e-2, max
           < 7e-2, top-1 wherever the gap > 0.1 and 4σ of the logit difference (as in fp8). Kiln's bf16 engine against
           fp32 on the bf16 model of the same width is 2.0e-2 mean, 3.7e-2 max (docs/perf-notes.md); the dequantized
           weights rounded to bf16 add one bf16 rounding of every weight, about as much again in quadrature (~2.8e-2).
           Measured at full width on a CPU: that path emulated (transformers in bf16, the dequantized weights rounded to
           bf16) 1.9e-2 mean, 2.5e-2 max; W8A8 numerics instead 0.12 (fails).
Prints one PASS/FAIL line; exit 1 on FAIL. NaN anywhere fails.

Why these FP8 bounds (measured with hf_fp8_reference.py's 2-layer random checkpoint at full Llama-3-8B width, run on a
CPU: the script's emulation of transformers' W8A8 and Kiln's CPU engine). e4m3 keeps 3 mantissa bits: rounding moves a
value by at most 1/16 of it, about 2.5% RMS; a W8A8 product rounds both operands, about 3.6% RMS per GEMM, and errors
of random sign average down over K as the product does, so each GEMM's output carries about that. Eight GEMMs in a
chain (qkv, o, gate/up, down × 2 layers, the SwiGLU product doubling what gate and up carry) give the logits far more:
transformers' own FP8 model is 17.3% mean rel L2 (max 20.3%) from the bf16 model's logits, W8A16 (exact weights,
float activations) 12.6% (max 15.1%), Kiln's CPU engine the same to 3 digits. Hence fp8-vs-bf16 < 0.25 mean,
< 0.3 max; unrelated logits give ~1.4. (At test width, --tiny, every figure is about half: the bf16 embeddings
still carry much of the residual stream there.)
FP8 against FP8 is hardly tighter, because activation quantization is discontinuous: where two correct implementations
carry activations that differ by a relative d (one rounds the residual stream to bf16, the other keeps it in f32:
d ~ 2^-9), a fraction d / (1/8) of the codes land on the neighbouring value, a whole step each, so the GEMM outputs
differ by about sqrt(d / 8) ~ 1.6% RMS, half of the full quantization noise, and the chain grows it as above: Kiln's
CPU engine (W8A8, f32 activations) is 11.7% (max 13.3%) from transformers' numerics (bf16 activations). Hence fp8
< 0.2 mean, < 0.25 max. The logits of this random model have RMS ~1.3 and a median top-1/top-2 gap of 0.19, so that
difference (~0.15 per logit) flips top-1 at gaps of 0.2-0.5: top-1 can only be required where the gap stands above it.
The fine-grained agreement is W8A16's: Kiln's prefill path that dequantizes FP8 layers to bf16 computes the exact
W8A16 function, which hf_fp8_reference.py writes as w8a16_ref_logits.f32, and is held to mode w8a16 against it (Kiln's
CPU engine: 0.17% mean): it pins down that Kiln reads and applies the saved codes and scales exactly (loader, block
layout, dequantization), which the FP8 bounds above cannot resolve."""
import sys
import numpy as np

mode, got_path, ref_path, vocab = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
got = np.fromfile(got_path, dtype=np.float32).reshape(-1, vocab)
ref = np.fromfile(ref_path, dtype=np.float32).reshape(-1, vocab)
name = f"{mode} {got_path} vs {ref_path}"
if got.shape != ref.shape:
    print(f"FAIL {name}: shapes {got.shape} vs {ref.shape}"); sys.exit(1)
if not np.isfinite(got).all() or not np.isfinite(ref).all():
    print(f"FAIL {name}: non-finite values (got {np.count_nonzero(~np.isfinite(got))})"); sys.exit(1)
top2 = np.sort(ref, axis=1)[:, -2:]
gap = top2[:, 1] - top2[:, 0]
agree = got.argmax(1) == ref.argmax(1)
rel = np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)
if mode == "ref":
    need = gap > 0.1
    ok = bool(agree[need].all()) and rel.mean() < 2e-2 and rel.max() < 5e-2
    detail = f"top-1 {agree[need].sum()}/{need.sum()} (gap>0.1; {agree.sum()}/{len(agree)} overall), rel L2 err mean {rel.mean():.2e} max {rel.max():.2e}"
elif mode in ("fp8", "w8a16"):
    noise = np.sqrt(((got - ref) ** 2).mean(axis=1))   # RMS logit difference per row
    need = gap > np.maximum(0.1, 4 * np.sqrt(2) * noise)
    literal = gap > 0.1
    mean_bound, max_bound = (0.2, 0.25) if mode == "fp8" else (4e-2, 7e-2)
    ok = bool(agree[need].all()) and rel.mean() < mean_bound and rel.max() < max_bound
    detail = (f"top-1 {agree[need].sum()}/{need.sum()} (gap > 0.1 and 4σ of the logit difference; at gap > 0.1 alone "
              f"{agree[literal].sum()}/{literal.sum()}; {agree.sum()}/{len(agree)} overall), rel L2 err mean {rel.mean():.2e} max {rel.max():.2e}")
elif mode == "fp8-vs-bf16":
    ok = rel.mean() < 0.25 and rel.max() < 0.3
    detail = f"rel L2 err mean {rel.mean():.2e} max {rel.max():.2e} (FP8 quantization error), top-1 {agree.sum()}/{len(agree)} (not required)"
elif mode == "cpu":
    need = gap >= 0.5
    top5 = np.argsort(ref, axis=1)[:, -5:]
    d5 = np.abs(np.take_along_axis(got, top5, 1) - np.take_along_axis(ref, top5, 1)).max()
    ok = bool(agree[need].all()) and d5 <= 1.0
    detail = f"top-1 {agree[need].sum()}/{need.sum()} (gap>=0.5), max top-5 logit diff {d5:.3f}, rel L2 err mean {rel.mean():.2e}"
else:
    print(f"FAIL {name}: unknown mode (ref, cpu, fp8, fp8-vs-bf16, w8a16)"); sys.exit(1)
print(("PASS " if ok else "FAIL ") + name + ": " + detail)
sys.exit(0 if ok else 1)
