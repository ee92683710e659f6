import Foundation
import KilnCore
import KilnGPU
import KilnKernels

/// rmsnorm.cu's _fp8 kernels (the norm that also quantizes its output for the FP8 GEMM behind it): y bit for bit that
/// of the plain kernel (and the residual it writes back), and the codes and scales bit for bit KilnCore's
/// `FP8BlockQuantizer` applied to that y, as the separate quantizer's check demands of kiln_fp8_quant_act. Likewise
/// swiglu.cu's swiglu_rows_fp8: codes and scales bit for bit the CPU quantizer applied to the plain kernel's output.
extension ConformanceSuite {
    /// Widths: Llama-3-8B and -70B, a partial last 128-block (1040 = 8·128 + 16), a row shorter than a block, a width
    /// that is no multiple of 128 at 256 threads (8184), and rows 1…16 and 33 (decode and a prefill chunk).
    static let fp8NormShapes: [(Int, Int)] = [(1, 4096), (2, 4096), (7, 4096), (16, 4096), (33, 4096), (1, 8192), (3, 8192),
                                              (5, 1040), (4, 136), (2, 8184)]

    func checkFP8NormQuant() {
        for (rows, cols) in ConformanceSuite.fp8NormShapes {
            for residual in [false, true] {
                check("\(residual ? "residual_" : "")rmsnorm_fp8 rows=\(rows) cols=\(cols) (y, codes and scales exact)") {
                    try fp8NormMismatch(rows: rows, cols: cols, residual: residual)
                }
            }
        }
    }

    /// (rows, F): Llama-3-8B's FFN, a partial last block (1032 = 8·128 + 8), a width under one block, a prefill chunk.
    static let fp8SwiGLUShapes: [(Int, Int)] = [(17, 14336), (3, 1032), (2, 56), (40, 2048)]

    func checkFP8SwiGLUQuant() {
        for (rows, ffn) in ConformanceSuite.fp8SwiGLUShapes {
            for interleaved in [false, true] {
                check("swiglu_rows_fp8 rows=\(rows) F=\(ffn) interleaved=\(interleaved) (codes and scales exact)") {
                    // gate in ±4 (silu's curved part), up in ±2; one row's up scaled by 1e-30 (tiny scales); one block of
                    // row 0 zero (up = 0 there: scale 0, codes 0).
                    var gu = roundTo(rng.uniform(rows * 2 * ffn, -2, 2), .bf16)
                    for i in 0..<rows { for c in 0..<ffn { gu[i * 2 * ffn + c] *= 2 } }
                    let up = { (f: Int) -> Int in interleaved ? 16 * (f / 8) + f % 8 + 8 : ffn + f }
                    if rows > 1 { for f in 0..<ffn { gu[2 * ffn + up(f)] = roundTo([gu[2 * ffn + up(f)] * 1e-30], .bf16)[0] } }
                    if ffn >= 256 { for f in 128..<256 { gu[up(f)] = 0 } }
                    let dgu = try upload(gu, .bf16), dy = try output(rows * ffn, .bf16)
                    let kb = FP8ActivationQuantizer.scaleColumns(k: ffn)
                    let dq = try DeviceBuffer<UInt8>(context, count: rows * ffn), ds = try DeviceBuffer<Float>(context, count: rows * kb)
                    try dq.fill(byte: 0xFF, stream: stream); try ds.fill(byte: 0xFF, stream: stream)
                    let k = try SwiGLU(library)
                    try k(gateUp: dgu.address, out: dy.address, rows: rows, ffn: ffn, interleaved: interleaved, stream: stream)
                    try k.quantized(gateUp: dgu.address, codes: dq.address, scales: ds.address, rows: rows, ffn: ffn, interleaved: interleaved,
                                    stream: stream)
                    return ConformanceSuite.fp8ActivationMismatch(x: try read(dy, .bf16), rows: rows, cols: ffn, codes: try dq.download(),
                                                                  scales: try ds.download())
                }
            }
        }
    }

    private func fp8NormMismatch(rows: Int, cols: Int, residual: Bool) throws -> Mismatch? {
        let kb = FP8ActivationQuantizer.scaleColumns(k: cols)
        // The f32 stream in the hundreds (as real residual streams), a bf16 branch; one row scaled down 1e-30 so its
        // blocks have tiny scales, and one block of row 0 zero after the norm (weight 0 there): scale 0, codes 0.
        var stream32 = rng.uniform(rows * cols, -300, 300)
        if rows > 1 { for c in 0..<cols { stream32[cols + c] *= 1e-30 } }
        let branch = roundTo(rng.uniform(rows * cols, -2, 2), .bf16)
        var w = roundTo(rng.uniform(cols, 0.5, 1.5), .bf16)
        if cols >= 256 { for c in 128..<256 { w[c] = 0 } }
        let dw = try upload(w, .bf16)

        /// One run: (y, the stream after it) and, with `fp8`, the codes and scales.
        func run(fp8: Bool) throws -> (y: [Float], stream: [Float], codes: [UInt8], scales: [Float]) {
            let dx = try upload(stream32, .f32), dbranch = try upload(branch, .bf16), dy = try output(rows * cols, .bf16)
            let dq = try DeviceBuffer<UInt8>(context, count: rows * cols), ds = try DeviceBuffer<Float>(context, count: rows * kb)
            try dq.fill(byte: 0xFF, stream: self.stream); try ds.fill(byte: 0xFF, stream: self.stream)
            let out = fp8 ? RMSNorm.FP8Output(codes: dq.address, scales: ds.address) : nil
            if residual {
                let k = try ResidualRMSNorm(library, dtype: .bf16, residual: .f32, fp8Output: fp8)
                try k(x: dbranch.address, residual: dx.address, weight: dw.address, y: dy.address, rows: rows, cols: cols, eps: 1e-5, fp8: out,
                      stream: self.stream)
            } else {
                let k = try RMSNorm(library, dtype: .bf16, input: .f32, fp8Output: fp8)
                try k(x: dx.address, weight: dw.address, y: dy.address, rows: rows, cols: cols, eps: 1e-5, fp8: out, stream: self.stream)
            }
            let y = try read(dy, .bf16), s = try read(dx, .f32)
            return (y, s, fp8 ? try dq.download() : [], fp8 ? try ds.download() : [])
        }
        let plain = try run(fp8: false), fused = try run(fp8: true)
        if let m = Conformance.compare(fused.y, plain.y, tolerance: .exact) { return m }
        if let m = Conformance.compare(fused.stream, plain.stream, tolerance: .exact) { return m }
        return ConformanceSuite.fp8ActivationMismatch(x: fused.y, rows: rows, cols: cols, codes: fused.codes, scales: fused.scales)
    }
}
