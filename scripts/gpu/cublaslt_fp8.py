"""cuBLASLt FP8 GEMMs through PyTorch (`torch._scaled_mm`, e4m3 × e4m3, bf16 out) on the Llama-3-8B and -70B prefill
shapes: the baseline issue 18 compares gemm_fp8_hopper with (`kiln bench kernels --weights fp8` in the same device call).

Per shape and M: per-tensor scales (one f32 each, the issue's reference; cuBLAS's own accumulation, `use_fast_accum`
off) and, where this PyTorch/cuBLAS has it (CUDA ≥ 12.9, sm_90), DeepSeek-style block scales — 1×128 activation and
128×128 weight scales, the numerics gemm_fp8_hopper computes. Random data (never zeros); weights rotated over ≥ 256 MB of
copies so they come from HBM as in `kiln bench kernels`; 3 warm-up calls, then the median of 7 samples, each a CUDA-event
timing of a CUDA graph of back-to-back calls (about 0.4 TFLOP per sample, 3…20 calls), so launch cost is out.
usage: python3 scripts/gpu/cublaslt_fp8.py [--m 64,512,1024,4096] [--models llama3-8b,llama3-70b] [--fast-accum] [--json]
Prints a markdown table (TFLOP/s = 2·M·N·K / time; % of the 1979 TFLOP/s dense FP8 peak); --json adds RESULT lines."""
import argparse, json, statistics
import torch

SHAPES = {"llama3-8b": [("qkv", 6144, 4096), ("o", 4096, 4096), ("gate_up", 28672, 4096), ("down", 4096, 14336)],
          "llama3-70b": [("qkv", 10240, 8192), ("o", 8192, 8192), ("gate_up", 57344, 8192), ("down", 8192, 28672)]}
PEAK = 1979.0


def random_e4m3(rows, cols, gen):
    # Values in ±[0.02, 0.9] before the cast: every code finite and non-zero.
    mag = torch.rand(rows, cols, device="cuda", generator=gen) * 0.88 + 0.02
    sign = torch.where(torch.rand(rows, cols, device="cuda", generator=gen) < 0.5, -1.0, 1.0)
    return (mag * sign * 448.0).to(torch.float8_e4m3fn)


def time_ms(fn, flops):
    """Median ms of one call: graph of `calls` back-to-back calls, 7 event-timed replays after 3 warm-ups."""
    calls = max(3, min(20, int(4e11 / flops)))
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    samples = []
    for _ in range(7):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / calls)
    return statistics.median(samples)


def block_scaled_call(x, w, xs, ws):
    """The 1×128 × 128×128 block-scaled product, in the scale layouts cuBLAS wants (PyTorch's tests): activation scales
    [M, K/128] outer-dim-major, weight scales [K/128 (padded to 4), N/128] as the transpose of a contiguous
    [N/128, L4]. Returns a callable, or raises where this PyTorch has no such path."""
    call = lambda: torch._scaled_mm(x, w.t(), scale_a=xs, scale_b=ws, out_dtype=torch.bfloat16)
    call()
    return call


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", default="64,512,1024,4096")
    ap.add_argument("--models", default="llama3-8b,llama3-70b")
    ap.add_argument("--fast-accum", action="store_true", help="also time per-tensor with use_fast_accum=True (no promotion)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    ms = [int(v) for v in a.m.split(",")]
    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    extra = " fast-accum µs | TFLOP/s |" if a.fast_accum else ""
    print("| model | op | N × K | M | per-tensor µs | TFLOP/s | % peak | block-scaled µs | TFLOP/s |" + extra)
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if a.fast_accum else ""))
    block_error = None
    for model in a.models.split(","):
        for op, n, k in SHAPES[model]:
            copies = max(1, min(8, (256 << 20) // (n * k) + 1))
            ws = [random_e4m3(n, k, gen) for _ in range(copies)]
            one = torch.tensor(1.0, device="cuda")
            kb, l4 = k // 128, (k // 128 + 3) // 4 * 4
            w_scales = (torch.rand(n // 128, l4, device="cuda", generator=gen) * 1e-3 + 1e-4).t()
            for m in ms:
                x = random_e4m3(m, k, gen)
                x_scales = (torch.rand(m, kb, device="cuda", generator=gen) * 1e-2 + 1e-3).t().contiguous().t()
                flops = 2.0 * m * n * k
                i = [0]

                def per_tensor(fast=False):
                    w = ws[i[0] % copies]; i[0] += 1
                    return torch._scaled_mm(x, w.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16, use_fast_accum=fast)
                t = time_ms(per_tensor, flops)
                tf = flops / (t * 1e-3) / 1e12
                row = {"model": model, "op": op, "n": n, "k": k, "m": m, "per_tensor_us": t * 1e3, "per_tensor_tflops": tf}
                bt = "—"; btf = "—"
                try:
                    calls = [block_scaled_call(x, w, x_scales, w_scales) for w in ws]
                    j = [0]

                    def blocked():
                        calls[j[0] % copies](); j[0] += 1
                    b = time_ms(blocked, flops)
                    bt, btf = f"{b * 1e3:.1f}", f"{flops / (b * 1e-3) / 1e12:.0f}"
                    row["block_scaled_us"], row["block_scaled_tflops"] = b * 1e3, flops / (b * 1e-3) / 1e12
                except Exception as e:   # no block-scaled cuBLAS path in this build: say why once
                    block_error = block_error or f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                fa = ""
                if a.fast_accum:
                    f = time_ms(lambda: per_tensor(True), flops)
                    fa = f" {f * 1e3:.1f} | {flops / (f * 1e-3) / 1e12:.0f} |"
                    row["fast_accum_us"], row["fast_accum_tflops"] = f * 1e3, flops / (f * 1e-3) / 1e12
                print(f"| {model} | {op} | {n} × {k} | {m} | {t * 1e3:.1f} | {tf:.0f} | {100 * tf / PEAK:.1f}% | {bt} | {btf} |" + fa)
                if a.json:
                    print("RESULT " + json.dumps(row))
            del ws
            torch.cuda.empty_cache()
    if block_error:
        print(f"block-scaled column empty: {block_error}")


if __name__ == "__main__":
    main()
