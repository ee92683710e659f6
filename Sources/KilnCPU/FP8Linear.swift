import KilnCore

/// The two numerics of the FP8 block-scaled product (`WeightFormat.fp8E4M3`), each a CPU reference:
public enum FP8Numerics: String, Sendable, CaseIterable {
    /// Weights dequantized exactly (`QuantizedMatrix.dequantize`: e4m3 × its block's scale_inv), float activations.
    case w8a16
    /// Activations quantized per 1 × blockCols block to e4m3 with an absmax f32 scale, as transformers' fine-grained
    /// FP8 does (`act_quant`: s = absmax / 448, code = e4m3(x / s)); per K block the e4m3 products are summed in f32,
    /// then times the activation scale and the weight block's scale_inv (`w8a8_block_fp8_matmul`'s accumulation).
    case w8a8

    /// The CPU engine's default: the numerics closer to the source model (measured on SmolLM2-135M, see
    /// `EngineFP8Tests`).
    public static let `default` = FP8Numerics.w8a16
}

extension LinearWeight {
    /// FP8 rows `range`: each weight row is decoded once into f32 and serves every token.
    func fp8Rows(blockRows br: Int, blockCols bc: Int, _ range: Range<Int>, _ x: UnsafePointer<Float>, _ tokens: Int,
                 _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
        let scaleCols = (cols + bc - 1) / bc
        let table = E4M3.table
        let codes = data.assumingMemoryBound(to: UInt8.self), scaleInv = fp8Scales!
        withUnsafeTemporaryAllocation(of: Float.self, capacity: cols) { rowBuffer in
            let row = rowBuffer.baseAddress!
            switch fp8Numerics {
            case .w8a16:
                for r in range {
                    let rowCodes = codes + r * cols, rowScales = scaleInv + (r / br) * scaleCols
                    for c in 0..<cols { row[c] = table[Int(rowCodes[c])] * rowScales[c / bc] }
                    for t in 0..<tokens { out[t * outStride + r] = Self.dot(row, x + t * cols, cols) }
                }
            case .w8a8:
                // The activations of all tokens, quantized once per call: decoded e4m3 values [tokens × cols] and
                // scales [tokens × scaleCols].
                withUnsafeTemporaryAllocation(of: Float.self, capacity: tokens * (cols + scaleCols)) { actBuffer in
                    let xq = actBuffer.baseAddress!, xs = xq + tokens * cols
                    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: cols) { codeBuffer in
                        for t in 0..<tokens {
                            FP8BlockQuantizer.quantizeActivations(x + t * cols, count: cols, block: bc,
                                                                  codes: codeBuffer.baseAddress!, scales: xs + t * scaleCols)
                            for c in 0..<cols { xq[t * cols + c] = table[Int(codeBuffer[c])] }
                        }
                    }
                    for r in range {
                        let rowCodes = codes + r * cols, rowScales = scaleInv + (r / br) * scaleCols
                        for c in 0..<cols { row[c] = table[Int(rowCodes[c])] }
                        for t in 0..<tokens {
                            var acc: Float = 0
                            for kb in 0..<scaleCols {
                                let c0 = kb * bc, n = min(cols, c0 + bc) - c0
                                acc += Self.dot(row + c0, xq + t * cols + c0, n) * xs[t * scaleCols + kb] * rowScales[kb]
                            }
                            out[t * outStride + r] = acc
                        }
                    }
                }
            }
        }
    }

    /// Σ a[i]·b[i] over `n` floats, eight lanes at a time.
    @inline(__always) static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD8<Float>(), tail: Float = 0
        let n8 = n / 8 * 8
        for c in stride(from: 0, to: n8, by: 8) {
            acc += UnsafeRawPointer(a + c).loadUnaligned(as: SIMD8<Float>.self) * UnsafeRawPointer(b + c).loadUnaligned(as: SIMD8<Float>.self)
        }
        for c in n8..<n { tail += a[c] * b[c] }
        return acc.sum() + tail
    }
}
