import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnCUDA
import KilnModels

extension EngineBench {
    /// The prefill rows of `kiln bench kernels --weights lut…` (M > 16, Hopper): per linear shape of `c` and M, over random
    /// weights of `format`, TFLOP/s (2·M·N·K) of
    ///   - permute + gemm_lut_hopper with the default instance (what the engine runs with `--lut-prefill-kernel`),
    ///   - the best instance of the width (the permute included),
    ///   - the dequantize path (kiln_lut{B}_dequant of the layer + Kiln's bf16 GEMM at the dispatch's choice: the default),
    ///   - Kiln's bf16 GEMM alone on a bf16 matrix of the shape (the bar: the LUT GEMM ≥ 0.8× of it at M = 4096),
    /// and the permute alone. Plain stream timing (prefill is not graph-captured), medians of 7.
    public static func lutPrefillKernels(config c: ModelConfig, format: WeightFormat.LUTFormat, library: KernelLibrary, tune: TuneTable?,
                                         ms: [Int], log: @escaping (String) -> Void) throws {
        guard let ctx = library.context else { throw KilnError("the LUT prefill bench needs a GPU") }
        let rows = ms.filter { $0 > 16 }
        guard !rows.isEmpty else { return }
        guard GemmDispatch.hasHopperKernels(ctx.info), GemmLUTHopper.supports(format) else {
            log("LUT prefill rows skipped: gemm_lut_hopper needs a Hopper GPU and a supported format (\(ctx.info.arch), \(WeightFormat.lut(format).name))")
            return
        }
        let stream = try GPUStream(ctx)
        let rand = try RandomInit(library)
        let shapes = gemmShapes(c).filter { $0.0 != "logits" }
        let maxN = shapes.map(\.1).max()!, maxK = shapes.map(\.2).max()!, maxM = rows.max()!
        let dispatch = try GemmDispatch(library: library, tune: tune, maxN: maxN, stream: stream, log: log)
        let permute = try LUTPermute(library), dequantize = try LUTDequantizer(library)
        let x = try DeviceBuffer<UInt16>(ctx, count: maxM * maxK), xp = try DeviceBuffer<UInt16>(ctx, count: maxM * LUTPermute.paddedCols(maxK))
        let y = try DeviceBuffer<UInt16>(ctx, count: maxM * maxN)
        try rand(y: x.address, count: maxM * maxK, seed: 7, center: 0, halfWidth: 1, minMag: 0.01, stream: stream)
        var kernels: [GemmLUTHopper.Config: GemmLUTHopper] = [:]
        func kernel(_ cfg: GemmLUTHopper.Config) throws -> GemmLUTHopper {
            if let k = kernels[cfg] { return k }
            let k = try GemmLUTHopper(library, config: cfg); kernels[cfg] = k; return k
        }
        log("")
        log("| op | N | K | M | permute µs | LUT default µs | TFLOP/s | default | best µs | best | dequant + bf16 µs | bf16 µs | TFLOP/s | LUT / bf16 |")
        log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for (op, n, k) in shapes {
            guard GemmLUT.unsupported(.lut(format), rows: n, cols: k) == nil else { continue }
            guard case .lut(let w) = try LUTDevicePlanes(dummyRows: n, cols: k, format: format, seed: 3000).upload(ctx) else { continue }
            let dense = try DeviceBuffer<UInt16>(ctx, count: n * k), bw = try DeviceBuffer<UInt16>(ctx, count: n * k)
            try rand(y: bw.address, count: n * k, seed: 1000, center: 0, halfWidth: 0.035, minMag: 0.005, stream: stream)
            for m in rows {
                let flops = 2.0 * Double(m) * Double(n) * Double(k)
                func tflops(_ ms: Double) -> String { String(format: "%.0f", flops / (ms * 1e-3) / 1e12) }
                let permuteMs = try GPUBench.median(stream, runs: 7) { try permute(x: x.address, xPermuted: xp.address, m: m, k: k, stream: stream) }
                func lutRun(_ cfg: GemmLUTHopper.Config) throws -> Double {
                    let kern = try kernel(cfg)
                    return try GPUBench.median(stream, runs: 7, batch: 5) {
                        try permute(x: x.address, xPermuted: xp.address, m: m, k: k, stream: stream)
                        try kern(xPermuted: xp.address, codes: w.codes.address, scales: w.scales.address, offsets: w.offsets?.address ?? 0,
                                 table: w.table.address, y: y.address, m: m, n: n, k: k, group: format.groupSize, stream: stream)
                    }
                }
                guard let def = GemmLUTHopper.defaultConfig(m: m, bits: format.bits, affine: format.hasOffsets) else { continue }
                let defMs = try lutRun(def)
                var best = (ms: defMs, name: def.name)
                for cfg in GemmLUTHopper.configs where cfg != def && cfg.bits == format.bits && cfg.affine == format.hasOffsets {
                    let t = try lutRun(cfg)
                    if t < best.ms { best = (t, cfg.name) }
                }
                let bchoice = dispatch.choose(op: op, m: m, n: n, k: k, outF32: false)
                let dequantMs = try GPUBench.median(stream, runs: 7, batch: 5) {
                    try dequantize(codes: w.codes.address, scales: w.scales.address, offsets: w.offsets?.address ?? 0, table: w.table.address,
                                   y: dense.address, n: n, k: k, group: format.groupSize, bits: format.bits, stream: stream)
                    try dispatch(op, x: x.address, w: dense.address, y: y.address, m: m, n: n, k: k, choice: bchoice, stream: stream)
                }
                let bf16Ms = try GPUBench.median(stream, runs: 7, batch: 5) {
                    try dispatch(op, x: x.address, w: bw.address, y: y.address, m: m, n: n, k: k, choice: bchoice, stream: stream)
                }
                log("| \(op) | \(n) | \(k) | \(m) | " + String(format: "%.1f | %.1f", permuteMs * 1000, defMs * 1000) + " | \(tflops(defMs)) | \(def.name) | "
                    + String(format: "%.1f", best.ms * 1000) + " | \(best.name) | " + String(format: "%.1f | %.1f", dequantMs * 1000, bf16Ms * 1000)
                    + " | \(tflops(bf16Ms)) | " + String(format: "%.2f", bf16Ms / best.ms) + " |")
            }
        }
    }
}
