"""PyTorch's tinygemm int4 GEMM (torch.ops.aten._weight_int4pack_mm, the gpt-fast / torchao int4 weight-only path) on
the Llama-3-8B and -70B decode shapes, M = 1…16: the baseline issue 19 compares gemm_lut with (same device call).

Timed with CUDA graphs of 100 back-to-back calls (launch overhead out, as `kiln bench kernels` times its GEMMs), the
median of 7 replays; bytes counted as packed int4 codes + bf16 scale/zero pairs per group + bf16 activations, so
the %-of-bandwidth column compares with Kiln's. Random codes and scales (never zeros).
usage: python3 scripts/gpu/tinygemm_int4.py [--group 64] [--m 1,2,4,8,16] [--bw-gbs 4000]
Prints a markdown table; with --json, one RESULT line per row."""
import argparse, json
import torch

SHAPES = {"llama3-8b": [("qkv", 6144, 4096), ("o", 4096, 4096), ("gate_up", 28672, 4096), ("down", 4096, 14336)],
          "llama3-70b": [("qkv", 10240, 8192), ("o", 8192, 8192), ("gate_up", 57344, 8192), ("down", 8192, 28672)]}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--group", type=int, default=64)
    ap.add_argument("--m", default="1,2,4,8,16")
    ap.add_argument("--bw-gbs", type=float, default=4000.0, help="copy bandwidth for the %% column (measure it: kiln bench kernels prints it)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    ms = [int(x) for x in a.m.split(",")]
    g = a.group
    torch.manual_seed(0)
    print(f"| model | op | N × K | M | µs | GB/s | % of {a.bw_gbs:.0f} GB/s |\n| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for model, shapes in SHAPES.items():
        for name, n, k in shapes:
            q = torch.randint(0, 16, (n, k), dtype=torch.int32, device="cuda")
            packed = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8)
            w = torch.ops.aten._convert_weight_to_int4pack(packed, 8)
            sz = torch.empty(k // g, n, 2, dtype=torch.bfloat16, device="cuda")
            sz[..., 0] = (torch.rand(k // g, n, device="cuda") + 0.5) * 1e-2
            sz[..., 1] = (torch.rand(k // g, n, device="cuda") - 0.5) * 1e-2
            for m in ms:
                x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
                y = torch.ops.aten._weight_int4pack_mm(x, w, g, sz)
                assert torch.isfinite(y).all(), f"{name} M={m}: non-finite output"
                s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(3): torch.ops.aten._weight_int4pack_mm(x, w, g, sz)
                torch.cuda.current_stream().wait_stream(s)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    for _ in range(100): torch.ops.aten._weight_int4pack_mm(x, w, g, sz)
                times = []
                for _ in range(7):
                    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    e0.record(); graph.replay(); e1.record(); torch.cuda.synchronize()
                    times.append(e0.elapsed_time(e1) * 1e3 / 100)
                us = sorted(times)[len(times) // 2]
                nbytes = n * k // 2 + (k // g) * n * 4 + 2 * m * k + 2 * m * n
                gbs = nbytes / (us * 1e-6) / 1e9
                print(f"| {model} | {name} | {n} × {k} | {m} | {us:.2f} | {gbs:.0f} | {100 * gbs / a.bw_gbs:.1f} |")
                if a.json:
                    print("RESULT " + json.dumps({"model": model, "op": name, "n": n, "k": k, "m": m, "us": us, "gbs": gbs}))
            del w, sz, q, packed

if __name__ == "__main__":
    main()
