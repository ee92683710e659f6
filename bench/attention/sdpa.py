"""bench/attention/sdpa.py — PyTorch SDPA baseline for the shapes bench/attention/harness.cu times.

Prefill: causal, B=1 S=4096 32/8 heads (d=128 and d=64), B=4 S=1024 d=128; FLOPs = 4·B·Hq·S²·d/2.
Tried with GQA (enable_gqa=True) and with K/V expanded to Hq heads, under each SDPA backend that
accepts the call; the best is the baseline. Decode: q [B, Hq, 1, d] against contiguous K/V [B, Hkv, L, d],
enable_gqa=True, event-timed with a cold L2 (256 MB memset before each call, outside the events) and warm
inside a CUDA graph (20 calls per graph). Median of 25 runs.

Usage: python3 sdpa.py [harness_results_file]  — with the file, prints the Kiln vs SDPA table.
"""
import re
import sys

import torch
import torch.nn.functional as F

dev = "cuda"
torch.manual_seed(0)
scrub = torch.empty(256 << 20, dtype=torch.uint8, device=dev)


def timed(fn, reps=25, cold=False):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(3):
        fn()
    ts = []
    for _ in range(reps):
        if cold:
            scrub.fill_(1)
        s.record()
        fn()
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e) * 1000.0)
    ts.sort()
    return ts[len(ts) // 2]


def graph_timed(fn, n=20):
    st = torch.cuda.Stream()
    st.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(st):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(st)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n):
            fn()
    g.replay()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(7):
        s.record()
        g.replay()
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e) * 1000.0 / n)
    ts.sort()
    return ts[len(ts) // 2]


backends = {}
try:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"default": None, "flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION}
except Exception as ex:  # noqa: BLE001
    print("no sdpa_kernel:", ex)
    backends = {"default": None}

results = {}
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")

for (B, S, Hq, Hkv, d) in [(1, 4096, 32, 8, 128), (1, 4096, 32, 8, 64), (4, 1024, 32, 8, 128)]:
    q = torch.randn(B, Hq, S, d, device=dev, dtype=torch.bfloat16)
    k = torch.randn(B, Hkv, S, d, device=dev, dtype=torch.bfloat16)
    v = torch.randn(B, Hkv, S, d, device=dev, dtype=torch.bfloat16)
    ke, ve = k.repeat_interleave(Hq // Hkv, 1), v.repeat_interleave(Hq // Hkv, 1)
    flops = 4.0 * B * Hq * S * S * d / 2
    best = None
    for name, be in backends.items():
        for gqa in (True, False):
            def call(q=q, gqa=gqa):
                if gqa:
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                return F.scaled_dot_product_attention(q, ke, ve, is_causal=True)

            try:
                if be is None:
                    us = timed(call)
                else:
                    with sdpa_kernel([be]):
                        us = timed(call)
            except Exception as ex:  # noqa: BLE001
                print(f"  prefill B={B} S={S} d={d} {name} gqa={gqa}: unavailable ({str(ex).splitlines()[0][:80]})")
                continue
            tf = flops / us * 1e-6
            print(f"  prefill B={B} S={S} d={d} {name} gqa={gqa}: {us:.1f} us {tf:.1f} TFLOP/s")
            if best is None or us < best[0]:
                best = (us, tf, f"{name},gqa={gqa}")
    results[("prefill", B, S, d)] = best
    print(f"SDPA prefill B={B} S={S} Hq={Hq} Hkv={Hkv} D={d}: best {best[0]:.1f} us {best[1]:.1f} TFLOP/s ({best[2]})")

for (B, L) in [(2, 768), (1, 4096), (8, 4096), (1, 32768), (8, 32768)]:
    Hq, Hkv, d = 32, 8, 128
    q = torch.randn(B, Hq, 1, d, device=dev, dtype=torch.bfloat16)
    k = torch.randn(B, Hkv, L, d, device=dev, dtype=torch.bfloat16)
    v = torch.randn(B, Hkv, L, d, device=dev, dtype=torch.bfloat16)

    def call():
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    cold = timed(call, cold=True)
    warm = timed(call)
    try:
        g = graph_timed(call)
    except Exception as ex:  # noqa: BLE001
        print("  graph failed:", str(ex).splitlines()[0][:80])
        g = float("nan")
    results[("decode", B, L)] = (cold, warm, g)
    print(f"SDPA decode B={B} L={L}: cold {cold:.2f} us, warm {warm:.2f} us, graph warm {g:.2f} us")

if len(sys.argv) > 1:
    pre, dec = {}, {}
    for line in open(sys.argv[1]):
        if not line.startswith("RESULT") or "PASS" not in line:
            continue
        kv = dict(re.findall(r"(\w+)=([^\s]+)", line))
        name = line.split()[2]
        if line.split()[1] == "prefill" and "tflops" in kv:
            # best instance per shape and per kernel family (attention.cu mma.sync / attention_hopper.cu wgmma)
            fam = "wgmma" if "prefill_hopper" in name else "mma"
            key = ("prefill", int(kv["B"]), int(kv["S"]), int(kv["D"]), fam)
            t = float(kv["tflops"])
            if key not in pre or t > pre[key][0]:
                pre[key] = (t, float(kv["us"]), name)
        elif line.split()[1] == "decode" and "us_cold" in kv:
            lens = kv["lens"].split(",")
            key = ("decode", int(kv["B"]), int(lens[0]))
            c, w = float(kv["us_cold"]), float(kv["us_graph_warm"])
            if key not in dec or c < dec[key][0]:
                dec[key] = (c, w, name, int(kv["splits"]))
    print("\n==== Kiln vs PyTorch SDPA (same run, same GPU) ====")
    print(f"{'prefill (causal)':22s} {'kernel':>6s} {'Kiln TFLOP/s':>12s} {'SDPA TFLOP/s':>12s} {'ratio':>6s}  best Kiln instance")
    for key, (t, us, name) in sorted(pre.items()):
        s = results.get(key[:4])
        if s:
            print(f"B={key[1]} S={key[2]} d={key[3]:<6d} {key[4]:>6s} {t:12.1f} {s[1]:12.1f} {t / s[1]:6.2f}  {name}")
    print(f"{'decode 32/8 d=128':28s} {'Kiln cold us':>12s} {'SDPA cold':>10s} {'Kiln graph':>10s} {'SDPA graph':>10s}  best (by cold)")
    for key, (c, w, name, sp) in sorted(dec.items()):
        s = results.get(key)
        if s:
            print(f"B={key[1]} L={key[2]:<20d} {c:12.2f} {s[0]:10.2f} {w:10.2f} {s[2]:10.2f}  {name} splits={sp}")
