import Foundation
import KilnCore
import KilnCPU
import KilnGPU
import KilnKernels

/// Conformance of gemm_fp8.cu: the activation quantizer bit for bit against KilnCore's `FP8BlockQuantizer`, and every
/// decode GEMM instance (quantizer + GEMM, as the engine runs them) against the CPU engine's W8A8 product
/// (`LinearWeight` with `FP8Numerics.w8a8`, the format's one reference), on random weights quantized by the same
/// block quantizer the checkpoint writer uses. Shapes include N and K that are not multiples of 128.
extension ConformanceSuite {
    public func runFP8Checks() {
        guard context.info.hasE4M3TensorCores else {
            log("skipped: gemm_fp8.cu (e4m3 tensor cores need compute capability 8.9; this GPU is \(context.info.arch))")
            return
        }
        checkFP8Quantizer(); checkFP8NormQuant(); checkFP8SwiGLUQuant(); checkFP8Dequantizer(); checkGemmFP8(); checkGemmFP8SwiGLU()
        runFP8PrefillChecks()   // gemm_fp8_hopper and the engine's FP8 prefill (ConformanceSuite+FP8Prefill.swift)
    }

    /// Random weights [n, k] in (−1, 1) quantized to e4m3 with 128×128 scales: (codes, scale_inv).
    func fp8Weights(n: Int, k: Int) -> (codes: [UInt8], scaleInv: [Float]) {
        let w = rng.uniform(n * k, -1, 1)
        var codes = [UInt8](repeating: 0, count: n * k)
        var scaleInv = [Float](repeating: 0, count: ((n + 127) / 128) * ((k + 127) / 128))
        FP8BlockQuantizer.quantize(w, rows: n, cols: k, blockRows: 128, blockCols: 128, codes: &codes, scaleInv: &scaleInv)
        return (codes, scaleInv)
    }

    /// `body` with the e4m3 matrix (codes, scaleInv) [n, k] as the CPU's `QuantizedMatrix` of the format.
    static func withFP8Matrix<R>(codes: [UInt8], scaleInv: [Float], n: Int, k: Int, _ body: (QuantizedMatrix) throws -> R) throws -> R {
        try codes.withUnsafeBytes { cb in
            try scaleInv.withUnsafeBytes { sb in
                let format = WeightFormat.fp8E4M3(blockRows: 128, blockCols: 128)
                let layout = try format.planes(rows: n, cols: k, what: "conformance fp8")
                return try body(try QuantizedMatrix(name: "conformance.fp8", rows: n, cols: k, format: format, planes: [
                    .init(layout[0].role, shape: layout[0].shape, dtype: layout[0].dtype, bytes: cb),
                    .init(layout[1].role, shape: layout[1].shape, dtype: layout[1].dtype, bytes: sb)]))
            }
        }
    }

    /// The CPU engine's W8A8 product of bf16-valued activations x [m, k] and the e4m3 matrix (codes, scaleInv) [n, k].
    static func fp8Reference(x: [Float], m: Int, codes: [UInt8], scaleInv: [Float], n: Int, k: Int) throws -> [Float] {
        var out = [Float](repeating: .nan, count: m * n)
        try withFP8Matrix(codes: codes, scaleInv: scaleInv, n: n, k: k) { matrix in
            let weight = try LinearWeight(matrix, fp8: .w8a8)
            let act = Q8Activations(maxTokens: m, maxCols: 32)
            x.withUnsafeBufferPointer { xp in
                out.withUnsafeMutableBufferPointer { op in
                    weight.apply(rows: 0..<n, x: xp.baseAddress!, act: act, tokens: m, out: op.baseAddress!, outStride: n)
                }
            }
        }
        return out
    }

    func checkFP8Quantizer() {
        // K a multiple of 128, one that is not (a partial last block), and a short one; one all-zero block (scale 0).
        for (m, k) in [(1, 4096), (5, 1040), (16, 14336), (3, 48)] {
            check("fp8_quant_act M=\(m) K=\(k) (codes and scales exact)") {
                var x = roundTo(rng.uniform(m * k, -3, 3), .bf16)
                if k >= 256 { for c in 128..<256 { x[c] = 0 } }   // token 0, block 1: all zero
                let kb = FP8ActivationQuantizer.scaleColumns(k: k)
                let dx = try upload(x, .bf16)
                let dq = try DeviceBuffer<UInt8>(context, count: m * k), ds = try DeviceBuffer<Float>(context, count: m * kb)
                try dq.fill(byte: 0xFF, stream: stream); try ds.fill(byte: 0xFF, stream: stream)
                try stream.synchronize()
                try FP8ActivationQuantizer(library)(x: dx.address, xq: dq.address, xs: ds.address, m: m, k: k, stream: stream)
                try stream.synchronize()
                return ConformanceSuite.fp8ActivationMismatch(x: x, rows: m, cols: k, codes: try dq.download(), scales: try ds.download())
            }
        }
    }

    /// Codes and scales from a GPU kernel (`codes` [rows, cols], `scales` [rows, ceil(cols / 128)]) against KilnCore's
    /// `FP8BlockQuantizer` applied to each row of `x`, both bit for bit: the quantizer's check and the fused norm's.
    static func fp8ActivationMismatch(x: [Float], rows: Int, cols: Int, codes: [UInt8], scales: [Float]) -> Mismatch? {
        let kb = FP8ActivationQuantizer.scaleColumns(k: cols)
        var wantCodes = [UInt8](repeating: 0, count: rows * cols), wantScales = [Float](repeating: 0, count: rows * kb)
        x.withUnsafeBufferPointer { xp in
            wantCodes.withUnsafeMutableBufferPointer { cp in
                wantScales.withUnsafeMutableBufferPointer { sp in
                    for t in 0..<rows {
                        FP8BlockQuantizer.quantizeActivations(xp.baseAddress! + t * cols, count: cols, block: 128,
                                                              codes: cp.baseAddress! + t * cols, scales: sp.baseAddress! + t * kb)
                    }
                }
            }
        }
        if let bad = zip(codes, wantCodes).enumerated().first(where: { $0.element.0 != $0.element.1 }) {
            return Mismatch(badCount: zip(codes, wantCodes).filter { $0 != $1 }.count, total: rows * cols, firstIndex: bad.offset,
                            got: Float(bad.element.0), want: Float(bad.element.1))
        }
        return Conformance.compare(scales, wantScales, tolerance: .exact)
    }

    func checkFP8Dequantizer() {
        for (n, k) in [(264, 4096), (77, 1040), (1000, 48)] {
            check("fp8_dequant N=\(n) K=\(k) (bf16 bits exact)") {
                let (codes, scaleInv) = fp8Weights(n: n, k: k)
                let dw = try DeviceBuffer<UInt8>(context, count: n * k)
                try dw.upload(codes)
                let ds8 = try upload(try GemmFP8.expandScales(scaleInv, rows: n, cols: k), .f32), dy = try output(n * k, .bf16)
                try FP8Dequantizer(library)(w: dw.address, scale8: ds8.address, y: dy.address, n: n, k: k, stream: stream)
                var want = [Float](repeating: .nan, count: n * k)   // the format's one CPU dequantization
                try ConformanceSuite.withFP8Matrix(codes: codes, scaleInv: scaleInv, n: n, k: k) { matrix in
                    try want.withUnsafeMutableBufferPointer { try matrix.dequantize(rows: 0..<n, into: $0.baseAddress!) }
                }
                return Conformance.compare(try read(dy, .bf16), roundTo(want, .bf16), tolerance: .exact)
            }
        }
    }

    /// Quantizer + GEMM on the device against `fp8Reference`; `rowOf` maps the kernel's weight rows to the reference's
    /// (identity here; the SwiGLU check interleaves).
    func fp8GemmCheck(_ name: String, c: GemmFP8.Config, m: Int, n: Int, k: Int, split: Int, f32: Bool, scratch: (ws: CUdeviceptr, cnt: CUdeviceptr)) {
        check(name) {
            let x = roundTo(rng.uniform(m * k, -2, 2), .bf16)
            let (codes, scaleInv) = fp8Weights(n: n, k: k)
            let kb = FP8ActivationQuantizer.scaleColumns(k: k)
            let out: DType = f32 ? .f32 : .bf16
            let dx = try upload(x, .bf16), dy = try output(m * n, out)
            let dq = try DeviceBuffer<UInt8>(context, count: m * k), ds = try DeviceBuffer<Float>(context, count: m * kb)
            let dw = try DeviceBuffer<UInt8>(context, count: n * k)
            try dw.upload(codes)
            let ds8 = try upload(try GemmFP8.expandScales(scaleInv, rows: n, cols: k), .f32)
            try FP8ActivationQuantizer(library)(x: dx.address, xq: dq.address, xs: ds.address, m: m, k: k, stream: stream)
            try GemmFP8(library, config: c)(xq: dq.address, xs: ds.address, w: dw.address, scale8: ds8.address, y: dy.address, m: m, n: n, k: k,
                                            split: split, workspace: scratch.ws, counters: scratch.cnt, epilogue: f32 ? .f32 : .bf16, stream: stream)
            let want = roundTo(try ConformanceSuite.fp8Reference(x: x, m: m, codes: codes, scaleInv: scaleInv, n: n, k: k), out)
            // Products of values in (−448, 448) summed in f32 in another order: the bf16 bound of a GEMM over K terms,
            // scaled to the outputs' size (weights ≈ U(−1, 1), activations ≈ U(−2, 2)).
            let tol = ConformanceSuite.gemmTolerance(k: k, out: out)
            return Conformance.compare(try read(dy, out), want, tolerance: Tolerance(rtol: tol.rtol, atol: 2 * tol.atol))
        }
    }

    func checkGemmFP8() {
        guard let ws = try? DeviceBuffer<Float>(context, count: 8 * 16 * 2048), let cnt = try? DeviceBuffer<UInt32>(context, count: 1024) else {
            check("gemm_fp8 scratch") { throw KilnError("cannot allocate split-K scratch") }; return
        }
        try? cnt.fill(byte: 0, stream: stream)
        let scratch = (ws: ws.address, cnt: cnt.address)
        // Every instance: smallest and largest M; N odd, below one tile, not a multiple of 128; K with a partial last
        // block (1040 = 8·128 + 16), a single partial block (48), blocks that do not fill a super-step (1792 = 14·128),
        // and split 1 and 3 (3 does not divide the blocks).
        for c in GemmFP8.configs {
            for (n, k) in [(1000, 1040), (77, 528), (264, 4096), (48, 1792), (130, 48)] {
                for m in [1, c.maxM] {
                    for split in [1, 3] {
                        fp8GemmCheck("gemm_fp8 \(c.name) M=\(m) N=\(n) K=\(k) split=\(split)", c: c, m: m, n: n, k: k, split: split, f32: false,
                                     scratch: scratch)
                    }
                }
            }
        }
        // The defaults at every M = 1…16, bf16 and fp32 out (the logits path), split 1 and 4.
        for m in 1...16 {
            for (split, f32) in [(1, false), (4, true)] {
                let c = GemmFP8.defaultConfig(m: m)
                fp8GemmCheck("gemm_fp8 default \(c.name) M=\(m) N=520 K=1024 split=\(split) f32=\(f32)", c: c, m: m, n: 520, k: 1024,
                             split: split, f32: f32, scratch: scratch)
            }
        }
        check("gemm_fp8 rejects M=17 and K % 16 != 0") {
            let c = GemmFP8.defaultConfig(m: 16)
            var refused = 0
            do { try GemmFP8(library, config: c)(xq: 0, xs: 0, w: 0, scale8: 0, y: 0, m: 17, n: 8, k: 128, stream: stream) } catch is KilnError { refused += 1 }
            do { try GemmFP8(library, config: c)(xq: 0, xs: 0, w: 0, scale8: 0, y: 0, m: 1, n: 8, k: 120, stream: stream) } catch is KilnError { refused += 1 }
            return refused == 2 ? nil : Mismatch(badCount: 2 - refused, total: 2, firstIndex: 0, got: Float(refused), want: 2)
        }
    }

    /// The SwiGLU epilogue over FP8 gate_up rows interleaved per 16-row tile (as GPUWeights lays them out), the scales
    /// expanded through the same interleave: against the reference product, gate and up rounded to bf16, then silu·mul.
    func checkGemmFP8SwiGLU() {
        guard let ws = try? DeviceBuffer<Float>(context, count: 8 * 16 * 2048), let cnt = try? DeviceBuffer<UInt32>(context, count: 1024) else {
            check("gemm_fp8 swiglu scratch") { throw KilnError("cannot allocate split-K scratch") }; return
        }
        try? cnt.fill(byte: 0, stream: stream)
        for (m, f, k, split) in [(1, 264, 1040, 1), (16, 264, 1040, 2), (7, 1024, 4096, 1)] {
            let c = GemmFP8.defaultConfig(m: m)
            check("gemm_fp8 swiglu \(c.name) M=\(m) F=\(f) K=\(k) split=\(split)") {
                let n = 2 * f
                let x = roundTo(rng.uniform(m * k, -2, 2), .bf16)
                // Checkpoint layout: gate rows 0..<f then up rows f..<2f, each its own 128-row scale blocks.
                let gate = fp8Weights(n: f, k: k), up = fp8Weights(n: f, k: k)
                let kb = FP8ActivationQuantizer.scaleColumns(k: k)
                // The kernel's rows: tile j = gate rows 8j…8j+7, then up rows 8j…8j+7.
                let source = { (r: Int) -> Int in GemmFP8.gateUpSourceRow(r, ffn: f) }
                var codes = [UInt8](repeating: 0, count: n * k)
                for r in 0..<n {
                    let s = source(r)
                    for j in 0..<k { codes[r * k + j] = s < f ? gate.codes[s * k + j] : up.codes[(s - f) * k + j] }
                }
                let scaleInv = gate.scaleInv + up.scaleInv   // [ceil(f/128) gate blocks, then up blocks] × kb
                let gateBlocks = (f + 127) / 128
                let scale8 = try GemmFP8.expandScales(scaleInv, rows: n, cols: k, rowOf: { r in
                    let s = source(r)
                    return s < f ? s : gateBlocks * 128 + (s - f)   // up rows start at the first block after gate's
                })
                let dx = try upload(x, .bf16), dy = try output(m * f, .bf16)
                let dq = try DeviceBuffer<UInt8>(context, count: m * k), ds = try DeviceBuffer<Float>(context, count: m * kb)
                let dw = try DeviceBuffer<UInt8>(context, count: n * k)
                try dw.upload(codes)
                let ds8 = try upload(scale8, .f32)
                try FP8ActivationQuantizer(library)(x: dx.address, xq: dq.address, xs: ds.address, m: m, k: k, stream: stream)
                try GemmFP8(library, config: c)(xq: dq.address, xs: ds.address, w: dw.address, scale8: ds8.address, y: dy.address, m: m, n: n, k: k,
                                                split: split, workspace: ws.address, counters: cnt.address, epilogue: .swiglu, stream: stream)
                let g = roundTo(try ConformanceSuite.fp8Reference(x: x, m: m, codes: gate.codes, scaleInv: gate.scaleInv, n: f, k: k), .bf16)
                let u = roundTo(try ConformanceSuite.fp8Reference(x: x, m: m, codes: up.codes, scaleInv: up.scaleInv, n: f, k: k), .bf16)
                let want = roundTo(Reference.siluMul(gate: g, up: u), .bf16)
                let tol = ConformanceSuite.gemmTolerance(k: k, out: .bf16)
                return Conformance.compare(try read(dy, .bf16), want, tolerance: Tolerance(rtol: 2 * tol.rtol, atol: 2 * tol.atol))
            }
        }
    }
}
