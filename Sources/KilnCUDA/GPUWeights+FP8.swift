import KilnCore
import KilnGPU
import KilnKernels
import KilnModels

/// FP8 linear layers as gemm_fp8.cu reads them: the checkpoint's e4m3 codes as stored (parts stacked row after row, or
/// gate/up interleaved per 16-row tile for the SwiGLU epilogue) and the scale_inv of each 8-row group and 128-column
/// block, times the layer's output scale (Granite's multiplier is folded into the scales, exactly, in f32).
extension GPUWeights {
    /// The FP8 matrix of `parts` (a fused layer's checkpoint matrices), or nil when they cannot run natively: another
    /// format or block size among them, a part whose rows are not a multiple of 8 (a scale group would straddle two
    /// parts), or K not a multiple of 16 (16-byte rows). `interleaveHalves`: parts are [gate, up], laid out per 16-row
    /// tile as 8 gate rows then their 8 up rows (GPUWeights.interleaveGateUp's layout).
    static func fp8Matrix(_ parts: [QuantizedMatrix], interleaveHalves: Bool, scale: Float, context: Context) throws -> GPUMatrix? {
        guard let first = parts.first, parts.allSatisfy({ $0.format == GPUMatrix.fp8Format && $0.cols == first.cols && $0.rows % 8 == 0 }),
              first.cols % 16 == 0, !interleaveHalves || (parts.count == 2 && parts[0].rows == parts[1].rows) else { return nil }
        let k = first.cols
        let rows = parts.reduce(0) { $0 + $1.rows }
        let codes = try DeviceBuffer<UInt8>(context, count: rows * k)
        /// A part's scale_inv plane `[ceil(rows/128), kb]` (it may sit unaligned in a mapped file).
        func scaleInv(_ part: QuantizedMatrix) -> [Float] {
            let plane = part.planes[1].bytes
            return (0..<(plane.count / 4)).map { plane.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) }
        }
        var scale8 = [Float]()
        if interleaveHalves {
            let f = parts[0].rows
            var host = [UInt8](repeating: 0, count: rows * k)
            for j in 0..<(f / 8) {
                for (h, part) in parts.enumerated() {
                    let src = part.planes[0].bytes.baseAddress! + 8 * j * k
                    host.withUnsafeMutableBytes { dst in (dst.baseAddress! + (16 * j + 8 * h) * k).copyMemory(from: src, byteCount: 8 * k) }
                }
            }
            try codes.upload(host)
            // gate's scale blocks, then up's: an up row s (≥ f) sits in block gateBlocks + (s − f)/128.
            let gateBlocks = (f + GemmFP8.block - 1) / GemmFP8.block
            scale8 = try GemmFP8.expandScales(scaleInv(parts[0]) + scaleInv(parts[1]), rows: rows, cols: k, rowOf: { r in
                let s = GemmFP8.gateUpSourceRow(r, ffn: f)
                return s < f ? s : gateBlocks * GemmFP8.block + (s - f)
            })
        } else {
            var offset = 0
            for part in parts {
                try codes.upload(bytes: part.planes[0].bytes, atByte: offset)
                offset += part.rows * k
                scale8 += try GemmFP8.expandScales(scaleInv(part), rows: part.rows, cols: k)
            }
        }
        if scale != 1 { scale8 = scale8.map { $0 * scale } }
        return .fp8(codes: codes, scale8: try DeviceBuffer<Float>(context, scale8))
    }

    /// Random FP8 matrix `[rows, cols]` for `--dummy-weights … --weights fp8`: finite nonzero e4m3 codes (2⁻⁶…416 in
    /// magnitude) and one scale_inv 0.035/448 everywhere, so values fall in ±[1.2e-6, 0.033) as the bf16 dummies' ±0.035.
    static func dummyFP8(rows: Int, cols: Int, seed: UInt64, rand: RandomInit, context: Context, stream: GPUStream) throws -> GPUMatrix {
        let codes = try DeviceBuffer<UInt8>(context, count: rows * cols)
        try rand.e4m3(y: codes.address, count: rows * cols, seed: seed, stream: stream)
        let groups = (rows + 7) / 8, kb = (cols + GemmFP8.block - 1) / GemmFP8.block
        let scales = try DeviceBuffer<Float>(context, [Float](repeating: 0.035 / 448, count: groups * kb))
        return .fp8(codes: codes, scale8: scales)
    }
}
