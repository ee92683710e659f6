"""Compares teacher-forced logits (raw fp32 [tokens, vocab] files).

mode ref:  GOT against a transformers reference: top-1 must agree wherever the reference's
           top-1/top-2 gap > 0.1, and the per-row relative L2 error must stay bf16-sized
           (mean < 2e-2, max < 5e-2).
mode cpu:  GOT (GPU) against Kiln's CPU engine: top-1 equal where the CPU's gap >= 0.5, and the
           CPU's top-5 logits within 1.0 in GOT.
Prints one PASS/FAIL line; exit 1 on FAIL. NaN anywhere fails."""
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
else:
    need = gap >= 0.5
    top5 = np.argsort(ref, axis=1)[:, -5:]
    d5 = np.abs(np.take_along_axis(got, top5, 1) - np.take_along_axis(ref, top5, 1)).max()
    ok = bool(agree[need].all()) and d5 <= 1.0
    detail = f"top-1 {agree[need].sum()}/{need.sum()} (gap>=0.5), max top-5 logit diff {d5:.3f}, rel L2 err mean {rel.mean():.2e}"
print(("PASS " if ok else "FAIL ") + name + ": " + detail)
sys.exit(0 if ok else 1)
