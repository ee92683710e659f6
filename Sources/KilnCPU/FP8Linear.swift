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
                    for kb in 0..<scaleCols {
                        let scale = rowScales[kb]
                        for c in (kb * bc)..<min(cols, (kb + 1) * bc) { row[c] = table[Int(rowCodes[c])] * scale }
                    }
                    rowTimesTokens(row, r, x, tokens, out, outStride)
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
                        var t = 0
                        while t + 4 <= tokens {
                            var acc = SIMD4<Float>()
                            for kb in 0..<scaleCols {
                                let c0 = kb * bc, n = min(cols, c0 + bc) - c0
                                let xsb = SIMD4<Float>(xs[t * scaleCols + kb], xs[(t + 1) * scaleCols + kb],
                                                       xs[(t + 2) * scaleCols + kb], xs[(t + 3) * scaleCols + kb])
                                acc += Self.dot4(row + c0, xq + t * cols + c0, cols, n) * xsb * rowScales[kb]
                            }
                            for k in 0..<4 { out[(t + k) * outStride + r] = acc[k] }
                            t += 4
                        }
                        while t < tokens {
                            var acc: Float = 0
                            for kb in 0..<scaleCols {
                                let c0 = kb * bc, n = min(cols, c0 + bc) - c0
                                acc += dot(row + c0, xq + t * cols + c0, n) * xs[t * scaleCols + kb] * rowScales[kb]
                            }
                            out[t * outStride + r] = acc
                            t += 1
                        }
                    }
                }
            }
        }
    }

    /// F16 / BF16 rows: each row widened exactly to f32 once, then dotted with every token (four at a time).
    func widenedRows(_ element: WeightFormat.DenseElement, _ range: Range<Int>, _ x: UnsafePointer<Float>, _ tokens: Int,
                     _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
        let table = halfTable
        withUnsafeTemporaryAllocation(of: Float.self, capacity: cols) { rowBuffer in
            let row = rowBuffer.baseAddress!
            for r in range {
                let bits = data + r * rowBytes
                if element == .bf16 { for c in 0..<cols { row[c] = bf16ToFloat(bits.loadUnaligned(fromByteOffset: 2 * c, as: UInt16.self)) } }
                else { for c in 0..<cols { row[c] = table[Int(bits.loadUnaligned(fromByteOffset: 2 * c, as: UInt16.self))] } }
                rowTimesTokens(row, r, x, tokens, out, outStride)
            }
        }
    }

    /// out[t, r] = row · x[t] for every token, four tokens at a time (a row already widened to f32).
    @inline(__always) func rowTimesTokens(_ row: UnsafePointer<Float>, _ r: Int, _ x: UnsafePointer<Float>, _ tokens: Int,
                                          _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
        var t = 0
        while t + 4 <= tokens {
            let s = Self.dot4(row, x + t * cols, cols, cols)
            for k in 0..<4 { out[(t + k) * outStride + r] = s[k] }
            t += 4
        }
        while t < tokens { out[t * outStride + r] = dot(row, x + t * cols, cols); t += 1 }
    }

    /// `dot` of `a` with four vectors `b`, `b + stride`, `b + 2·stride`, `b + 3·stride` at once: each load of `a` serves
    /// four tokens and the four accumulators hide the add latency. Same lane order and tail as `dot` (CPUAttention.swift), so a token's
    /// result does not depend on whether it ran in a group of four.
    @inline(__always) static func dot4(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ stride: Int, _ n: Int) -> SIMD4<Float> {
        var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>(), acc2 = SIMD8<Float>(), acc3 = SIMD8<Float>()
        let n8 = n / 8 * 8
        let b0 = UnsafeRawPointer(b), b1 = UnsafeRawPointer(b + stride), b2 = UnsafeRawPointer(b + 2 * stride), b3 = UnsafeRawPointer(b + 3 * stride)
        for c in Swift.stride(from: 0, to: n8, by: 8) {
            let w = UnsafeRawPointer(a + c).loadUnaligned(as: SIMD8<Float>.self)
            acc0 += w * b0.loadUnaligned(fromByteOffset: 4 * c, as: SIMD8<Float>.self)
            acc1 += w * b1.loadUnaligned(fromByteOffset: 4 * c, as: SIMD8<Float>.self)
            acc2 += w * b2.loadUnaligned(fromByteOffset: 4 * c, as: SIMD8<Float>.self)
            acc3 += w * b3.loadUnaligned(fromByteOffset: 4 * c, as: SIMD8<Float>.self)
        }
        var tail = SIMD4<Float>()
        for c in n8..<n {
            tail[0] += a[c] * b[c]; tail[1] += a[c] * b[stride + c]; tail[2] += a[c] * b[2 * stride + c]; tail[3] += a[c] * b[3 * stride + c]
        }
        return SIMD4<Float>(acc0.sum(), acc1.sum(), acc2.sum(), acc3.sum()) + tail
    }
}
