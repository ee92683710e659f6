import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnModels
import KilnCUDA

extension EngineBench {
    /// The M values `kiln bench kernels --weights fp8` times by default: decode (gemm_fp8) and prefill (gemm_fp8_hopper).
    public static let fp8KernelMs = [1, 16, 64, 512, 1024, 4096]
    /// Dense FP8 tensor-core peak of an H100 SXM / H200 (TFLOP/s), the roofline of the prefill rows.
    public static let fp8PeakTFLOPs = 1979.0

    /// Bytes one FP8 GEMM over [n, k] at m tokens moves at least: the e4m3 codes, the expanded f32 scales (one per 8 rows
    /// and 128 columns, as the kernels read them), the e4m3 activations with their per-128 f32 scales and the bf16 output.
    public static func fp8Bytes(n: Int, k: Int, m: Int) -> Int {
        let kb = FP8ActivationQuantizer.scaleColumns(k: k), groups = (n + GemmFP8.scaleGroupRows - 1) / GemmFP8.scaleGroupRows
        return n * k + 4 * groups * kb + m * (k + 4 * kb) + 2 * m * n
    }

    /// FLOP-scaled graph batch: about 0.4 TFLOP per replay (≥ 3 calls, ≤ 20), so a 70B M = 4096 GEMM is not replayed
    /// 20 times per sample while a small one still amortizes the replay's launch.
    static func graphBatch(flops: Double) -> Int { max(3, min(20, Int(4e11 / max(1, flops)))) }

    /// `kiln bench kernels --weights fp8`: every linear GEMM shape of `c` (not the logits, which stay bf16) over random
    /// FP8 weights (e4m3 codes, 128×128 scales as the kernels read them), rotated over ≥ 256 MB of copies, each call
    /// graph-timed as the engine runs it. M ≤ 16: the decode GEMM the dispatch picks (gemm_fp8), % of copy bandwidth
    /// counting codes + scales + activations + output. M > 16 on Hopper: gemm_fp8_hopper — the dispatch's choice (tuning
    /// table, else GemmFP8Hopper's default) alone and after the activation quantizer (what prefill runs), the fastest of
    /// every instance (a sweep, for the next tuning table), the previous prefill path (dequantize the layer to bf16 +
    /// Kiln's bf16 GEMM) and Kiln's bf16 GEMM alone; TFLOP/s and % of the 1979 TFLOP/s dense FP8 peak.
    /// cuBLASLt FP8 is timed by scripts/gpu/cublaslt_fp8.py (PyTorch `_scaled_mm`) in the same device call.
    public static func fp8Kernels(config c: ModelConfig, library: KernelLibrary, tune: TuneTable? = nil, ms: [Int], pdl: Bool = true,
                                  log: @escaping (String) -> Void) throws {
        let (ctx, stream, copy) = try GPUBench.kernelBenchStart(library: library, weights: "fp8_e4m3_b128x128", tune: tune, pdl: pdl, log: log)
        let rand = try RandomInit(library), quantize = try FP8ActivationQuantizer(library), dequantize = try FP8Dequantizer(library)
        let shapes = gemmShapes(c).filter { $0.0 != "logits" }
        let maxN = shapes.map(\.1).max()!, maxM = max(1, ms.max() ?? 1)
        let dispatch = try GemmDispatch(library: library, tune: tune, maxN: maxN, stream: stream, log: log)
        var kernels: [GemmFP8Hopper.Config: GemmFP8Hopper] = [:]
        func kernel(_ cfg: GemmFP8Hopper.Config) throws -> GemmFP8Hopper {
            if let k = kernels[cfg] { return k }
            let k = try GemmFP8Hopper(library, config: cfg); kernels[cfg] = k; return k
        }
        log("| op | N | K | M | chosen µs | chosen | TFLOP/s or % copy BW | % FP8 peak | quant + GEMM µs | TFLOP/s | best µs | best | TFLOP/s "
            + "| dequant + bf16 µs | bf16 GEMM µs | bf16 / chosen |")
        log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for (op, n, k) in shapes {
            guard k % 16 == 0 else { log("| \(op) | \(n) | \(k) | — | K not a multiple of 16: no FP8 kernel |"); continue }
            let kb = FP8ActivationQuantizer.scaleColumns(k: k), groups = (n + GemmFP8.scaleGroupRows - 1) / GemmFP8.scaleGroupRows
            let copies = max(1, min(8, (256 << 20) / (n * k) + 1))
            let codes = try (0..<copies).map { i -> DeviceBuffer<UInt8> in
                let b = try DeviceBuffer<UInt8>(ctx, count: n * k)
                try rand.e4m3(y: b.address, count: n * k, seed: UInt64(3000 + i), stream: stream)
                return b
            }
            // One scale_inv everywhere, as `--dummy-weights … --weights fp8` makes: values ±[1.2e-6, 0.033).
            let scale8 = try DeviceBuffer<Float>(ctx, [Float](repeating: 0.035 / 448, count: groups * kb))
            let bf16Copies = max(1, min(8, (256 << 20) / (2 * n * k) + 1))
            let dense = try (0..<bf16Copies).map { i -> DeviceBuffer<UInt16> in
                let b = try DeviceBuffer<UInt16>(ctx, count: n * k)
                try rand(y: b.address, count: n * k, seed: UInt64(1000 + i), center: 0, halfWidth: 0.035, minMag: 0.005, stream: stream)
                return b
            }
            let x = try DeviceBuffer<UInt16>(ctx, count: maxM * k), y = try DeviceBuffer<UInt16>(ctx, count: maxM * n)
            let xq = try DeviceBuffer<UInt8>(ctx, count: maxM * k), xs = try DeviceBuffer<Float>(ctx, count: maxM * kb)
            try rand(y: x.address, count: maxM * k, seed: 7, center: 0, halfWidth: 1, minMag: 0.01, stream: stream)
            try quantize(x: x.address, xq: xq.address, xs: xs.address, m: maxM, k: k, stream: stream)   // rows are independent
            for m in ms where m >= 1 {
                let flops = 2 * Double(m) * Double(n) * Double(k), batch = graphBatch(flops: flops)
                func tflops(_ ms: Double) -> String { String(format: "%.0f", flops / (ms * 1e-3) / 1e12) }
                func us(_ ms: Double) -> String { String(format: "%.2f", ms * 1000) }
                var i = 0, j = 0
                let bchoice = dispatch.choose(op: op, m: m, n: n, k: k, outF32: false)
                let bf16Ms = try GPUBench.graphMedian(stream, runs: 7, batch: batch) {
                    try dispatch(op, x: x.address, w: dense[j % bf16Copies].address, y: y.address, m: m, n: n, k: k, choice: bchoice, stream: stream); j += 1
                }
                if m <= 16 {
                    let (cfg, split) = dispatch.chooseFP8(op: op, m: m, n: n, k: k)
                    let chosenMs = try GPUBench.graphMedian(stream, runs: 15, batch: 20) {
                        try dispatch.fp8(op, xq: xq.address, xs: xs.address, w: codes[i % copies].address, scale8: scale8.address, y: y.address,
                                         m: m, n: n, k: k, epilogue: .bf16, stream: stream); i += 1
                    }
                    let bytes = Double(fp8Bytes(n: n, k: k, m: m))
                    let pct = String(format: "%.1f%%", 100 * bytes / (chosenMs * 1e-3) / 1e9 / copy.gbps)
                    log("| \(op) | \(n) | \(k) | \(m) | \(us(chosenMs)) | \(cfg.name)\(split > 1 ? " split \(split)" : "") | \(pct) | — | — | — | — | — | — "
                        + "| — | \(us(bf16Ms)) | " + String(format: "%.2f", bf16Ms / chosenMs) + " |")
                    continue
                }
                guard dispatch.hasFP8Prefill else { log("| \(op) | \(n) | \(k) | \(m) | — | no FP8 prefill GEMM on \(ctx.info.arch) |"); continue }
                let chosen = dispatch.chooseFP8Prefill(op: op, m: m, n: n, k: k)
                func gemmMs(_ cfg: GemmFP8Hopper.Config, runs: Int, quantizing: Bool = false) throws -> Double {
                    let g = try kernel(cfg)
                    return try GPUBench.graphMedian(stream, runs: runs, batch: batch) {
                        if quantizing { try quantize(x: x.address, xq: xq.address, xs: xs.address, m: m, k: k, stream: stream) }
                        try g(xq: xq.address, xs: xs.address, w: codes[i % copies].address, scale8: scale8.address, y: y.address, m: m, n: n, k: k,
                              stream: stream); i += 1
                    }
                }
                let chosenMs = try gemmMs(chosen, runs: 15)
                let quantMs = try gemmMs(chosen, runs: 7, quantizing: true)
                var best = (ms: chosenMs, cfg: chosen)
                for cfg in GemmFP8Hopper.configs where cfg != chosen {
                    let t = try gemmMs(cfg, runs: 7)
                    if t < best.ms { best = (t, cfg) }
                }
                let oldMs = try GPUBench.graphMedian(stream, runs: 7, batch: batch) {
                    try dequantize(w: codes[i % copies].address, scale8: scale8.address, y: dense[0].address, n: n, k: k, stream: stream); i += 1
                    try dispatch(op, x: x.address, w: dense[0].address, y: y.address, m: m, n: n, k: k, choice: bchoice, stream: stream)
                }
                let peak = String(format: "%.1f%%", 100 * flops / (chosenMs * 1e-3) / 1e12 / fp8PeakTFLOPs)
                log("| \(op) | \(n) | \(k) | \(m) | \(us(chosenMs)) | \(chosen.name) | \(tflops(chosenMs)) | \(peak) | \(us(quantMs)) | \(tflops(quantMs)) "
                    + "| \(us(best.ms)) | \(best.cfg.name) | \(tflops(best.ms)) | \(us(oldMs)) | \(us(bf16Ms)) | "
                    + String(format: "%.2f", bf16Ms / chosenMs) + " |")
            }
        }
    }
}
