"""Compares teacher-forced logits (raw fp32 [tokens, vocab] files).

mode ref:  GOT against a transformers reference: top-1 must agree wherever the reference's
           top-1/top-2 gap > 0.1, and the per-row relative L2 error must stay bf16-sized
           (mean < 2e-2, max < 5e-2).
mode cpu:  GOT (GPU) against Kiln's CPU engine: top-1 equal where the CPU's gap >= 0.5, and the
           CPU's top-5 logits within 1.0 in GOT.
mode fp8:  GOT (Kiln, FP8 checkpoint) against transformers' FP8 logits of the same checkpoint (W8A8: e4m3 weights with
           128×128 block scales, activations quantized per 1×128 block): top-1 must agree wherever the reference's
           top-1/top-2 gap > 0.1, and the per-row relative L2 error mean < 8e-2, max < 1.2e-1.
mode fp8-vs-bf16: GOT (Kiln, FP8 checkpoint) against the bf16 model's fp32 reference: per-row relative L2 error within
           FP8 quantization error, mean < 0.15, max < 0.2 (top-1 agreement is printed, not required).
Prints one PASS/FAIL line; exit 1 on FAIL. NaN anywhere fails.

Why the FP8 bounds. e4m3 keeps 3 mantissa bits: rounding moves a value by at most half a step, 1/16 of it, and by
about 2.5% RMS (a uniform error over a step of 1/8 of its binade). A W8A8 product rounds both operands, about 3.6% RMS
per GEMM; over K terms of random sign the errors average down as the product does, so a layer's output carries about
that relative error, and the logits after 2 layers (4 GEMMs each, compounding through the residual stream and the
norms) carry a few times it: 7.5% mean rel L2 (max 9.3%) on the script's 2-layer random checkpoint at test width,
Kiln's CPU engine (W8A8 and W8A16) and an fp32 emulation alike. Hence fp8-vs-bf16 < 0.15 mean, < 0.2 max: twice that;
unrelated logits give ~1.4, a wrong scale or block layout tenths, but a second rounding of the weights (transformers
5.17's on-the-fly quantization: 0.11) stays inside, which is why the W8A16 check below exists.
FP8 against FP8 is not much tighter, because activation quantization is discontinuous: where two implementations
carry the same activations with a relative difference d (bf16 rounding of the residual stream in one and not in the
other: d ~ 2^-9), a fraction d / (1/8) of the codes round to the neighbouring value, a whole step each, so the outputs
differ by about sqrt(d / 8) ~ 1.6% RMS per GEMM, half the full quantization noise, whatever both do right. Measured at
test width: fp32- against bf16-activation W8A8 emulations of the same checkpoint 5.2% mean (max 6.6%); Kiln's CPU
engine (f32 activations) against transformers' numerics 5.3% (max 6.3%). Hence fp8 < 8e-2 mean, < 1.2e-1 max. The
agreement that is fine-grained is W8A16's: Kiln's prefill path that dequantizes FP8 layers to bf16 is held to mode
ref against hf_fp8_reference.py's w8a16_ref_logits.f32 (0.08% on the CPU engine)."""
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
elif mode == "fp8":
    need = gap > 0.1
    ok = bool(agree[need].all()) and rel.mean() < 8e-2 and rel.max() < 1.2e-1
    detail = f"top-1 {agree[need].sum()}/{need.sum()} (gap>0.1; {agree.sum()}/{len(agree)} overall), rel L2 err mean {rel.mean():.2e} max {rel.max():.2e}"
elif mode == "fp8-vs-bf16":
    ok = rel.mean() < 0.15 and rel.max() < 0.2
    detail = f"rel L2 err mean {rel.mean():.2e} max {rel.max():.2e} (FP8 quantization error), top-1 {agree.sum()}/{len(agree)} (not required)"
elif mode == "cpu":
    need = gap >= 0.5
    top5 = np.argsort(ref, axis=1)[:, -5:]
    d5 = np.abs(np.take_along_axis(got, top5, 1) - np.take_along_axis(ref, top5, 1)).max()
    ok = bool(agree[need].all()) and d5 <= 1.0
    detail = f"top-1 {agree[need].sum()}/{need.sum()} (gap>=0.5), max top-5 logit diff {d5:.3f}, rel L2 err mean {rel.mean():.2e}"
else:
    print(f"FAIL {name}: unknown mode (ref, cpu, fp8, fp8-vs-bf16)"); sys.exit(1)
print(("PASS " if ok else "FAIL ") + name + ": " + detail)
sys.exit(0 if ok else 1)
