import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnCUDA
import KilnModels

extension EngineBench {
    /// Bytes one decode GEMM over a LUT matrix [n, k] of `format.bits`-bit codes moves at m tokens: codes (k·bits/8
    /// per row), bf16 scales (and offsets) per group as the kernel reads them, the bf16 activations and the bf16 output
    /// (the issue's byte count plus the output).
    public static func lutBytes(n: Int, k: Int, m: Int, format: WeightFormat.LUTFormat) -> Int {
        n * k * format.bits / 8 + n * (k / format.groupSize) * 2 * (format.hasOffsets ? 2 : 1) + 2 * m * (k + n)
    }

    /// `kiln bench kernels --weights lut4-g64` (lut3-…, lut2-…): every linear GEMM shape of `c` (not the logits, which stay bf16) at each
    /// M ≤ 16 over random LUT weights of `format`, rotated over ≥ 256 MB of copies (HBM, not L2), each call timed as
    /// the decode step runs it (graph replay): the dispatch's choice (tuning table, else GemmLUT's default and split),
    /// the fastest of every instance × split 1, 2, 4, 8 (a sweep, for the next tuning table), and Kiln's bf16 GEMM on
    /// the same shape; % of the measured copy bandwidth counts `lutBytes`.
    public static func lutKernels(config c: ModelConfig, format: WeightFormat.LUTFormat, library: KernelLibrary, tune: TuneTable? = nil,
                                  ms: [Int], pdl: Bool = true, log: @escaping (String) -> Void) throws {
        let (ctx, stream, copy) = try GPUBench.kernelBenchStart(library: library, weights: WeightFormat.lut(format).name, tune: tune, pdl: pdl,
                                                                 log: log)
        let rand = try RandomInit(library)
        let shapes = gemmShapes(c).filter { $0.0 != "logits" }
        let maxN = shapes.map(\.1).max()!
        let dispatch = try GemmDispatch(library: library, tune: tune, maxN: maxN, stream: stream, log: log)
        let ws = try DeviceBuffer<Float>(ctx, count: GemmLUT.workspaceFloats(m: 16, n: maxN, split: 8))
        let cnt = try DeviceBuffer<UInt32>(ctx, count: maxN / 16 + 64)
        try cnt.fill(byte: 0, stream: stream)
        var kernels: [GemmLUT.Config: GemmLUT] = [:]
        log("| op | N | K | M | MB | floor µs | chosen µs | chosen | % copy BW | best µs | best | % copy BW | bf16 µs | bf16 / chosen |")
        log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for (op, n, k) in shapes {
            guard GemmLUT.unsupported(.lut(format), rows: n, cols: k) == nil else { log("| \(op) | \(n) | \(k) | — | not a \(WeightFormat.lut(format).name) shape |"); continue }
            let lutBytesPerCopy = n * k * format.bits / 8 + n * (k / format.groupSize) * 4
            let copies = max(1, min(8, (256 << 20) / lutBytesPerCopy + 1))
            let mats: [GPUMatrix.LUTMatrix] = try (0..<copies).map { i in
                guard case .lut(let l) = try LUTDevicePlanes(dummyRows: n, cols: k, format: format, seed: UInt64(2000 + i)).upload(ctx) else { fatalError() }
                return l
            }
            let bf16Copies = max(1, min(8, (256 << 20) / (2 * n * k) + 1))
            let bws = try (0..<bf16Copies).map { i -> DeviceBuffer<UInt16> in
                let b = try DeviceBuffer<UInt16>(ctx, count: n * k)
                try rand(y: b.address, count: n * k, seed: UInt64(1000 + i), center: 0, halfWidth: 0.035, minMag: 0.005, stream: stream)
                return b
            }
            let x = try DeviceBuffer<UInt16>(ctx, count: 16 * k), y = try DeviceBuffer<UInt16>(ctx, count: 16 * n)
            try rand(y: x.address, count: 16 * k, seed: 7, center: 0, halfWidth: 1, minMag: 0.01, stream: stream)
            for m in ms where m >= 1 && m <= 16 {
                let bytes = Double(lutBytes(n: n, k: k, m: m, format: format))
                func pct(_ ms: Double) -> String { String(format: "%.1f%%", 100 * bytes / (ms * 1e-3) / 1e9 / copy.gbps) }
                var i = 0
                let chosen = dispatch.chooseLUT(op: op, format: format, m: m, n: n, k: k)
                let chosenMs = try GPUBench.graphMedian(stream, runs: 15, batch: 20) {
                    try dispatch.lut(op, x: x.address, w: mats[i % copies], y: y.address, m: m, epilogue: .bf16, stream: stream); i += 1
                }
                var best = (ms: Double.infinity, name: "—")
                for cfg in GemmLUT.configs where cfg.maxM >= m && cfg.affine == format.hasOffsets && cfg.bits == format.bits {
                    let kernel: GemmLUT
                    if let cached = kernels[cfg] { kernel = cached } else { kernel = try GemmLUT(library, config: cfg); kernels[cfg] = kernel }
                    for split in [1, 2, 4, 8] {
                        let t = try GPUBench.graphMedian(stream, runs: 7, batch: 20) {
                            let w = mats[i % copies]; i += 1
                            try kernel(x: x.address, codes: w.codes.address, scales: w.scales.address, offsets: w.offsets?.address ?? 0,
                                       table: w.table.address, y: y.address, m: m, n: n, k: k, group: format.groupSize, split: split,
                                       workspace: ws.address, counters: cnt.address, stream: stream)
                        }
                        if t < best.ms { best = (t, cfg.name + (split > 1 ? " split \(split)" : "")) }
                    }
                }
                let bchoice = dispatch.choose(op: op, m: m, n: n, k: k, outF32: false)
                var j = 0
                let bf16Ms = try GPUBench.graphMedian(stream, runs: 15, batch: 20) {
                    try dispatch(op, x: x.address, w: bws[j % bf16Copies].address, y: y.address, m: m, n: n, k: k, choice: bchoice, stream: stream); j += 1
                }
                let floorUs = bytes / (copy.gbps * 1e9) * 1e6
                log("| \(op) | \(n) | \(k) | \(m) | " + String(format: "%.1f | %.2f | %.2f", bytes / 1e6, floorUs, chosenMs * 1000)
                    + " | \(chosen.config.name)\(chosen.split > 1 ? " split \(chosen.split)" : "") | \(pct(chosenMs)) | "
                    + String(format: "%.2f", best.ms * 1000) + " | \(best.name) | \(pct(best.ms)) | "
                    + String(format: "%.2f | %.2f", bf16Ms * 1000, bf16Ms / chosenMs) + " |")
            }
        }
    }
}
