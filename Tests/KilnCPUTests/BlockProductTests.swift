import XCTest
import KilnCore
import KilnModels
@testable import KilnCPU

/// The fast quantized product `apply` runs (BlockProducts.swift) against the plain reference (`referenceQuantRows`) on
/// random weights and activations of odd shapes: every token-tile tail (1…9 tokens), odd row counts and row ranges.
final class BlockProductTests: XCTestCase {
    func testTiledProductEqualsTheReferenceOnRandomInputs() throws {
        var rng = SplitMix64(seed: 77)
        // Q4_0 / Q4_1 / Q8_0 from random values through the writer; Q5_0 / Q5_1 / IQ4_NL (KQuantLegacyProducts.swift) as
        // random blocks with finite f16 scales, since the writer has no quantizer for them.
        for format in [WeightFormat.gguf(.q4_0), .gguf(.q4_1), .gguf(.q8_0), .gguf(.q5_0), .gguf(.q5_1), .gguf(.iq4_nl)] {
            for (rows, cols) in [(7, 96), (13, 160), (3, 32)] {
                let type = format.singleTensorType!
                let bytes: [UInt8]
                switch type {
                case .q4_0, .q4_1, .q8_0:
                    bytes = InMemoryWeights.encode((0..<(rows * cols)).map { _ in Float(rng.unit() * 2 - 1) * (rng.unit() < 0.1 ? 4 : 0.5) }, as: type)
                default:
                    bytes = RandomGGUFBlocks.make(type, blocks: rows * cols / 32, scaleMagnitude: 0.5 / RandomGGUFBlocks.codeRange(type), rng: &rng)
                }
                var values = [Float](repeating: 0, count: rows * cols)   // the weights' values, for the error bound
                try bytes.withUnsafeBytes { raw in
                    try QuantizedMatrix(name: "values", rows: rows, cols: cols, format: format, data: raw).dequantize(rows: 0..<rows, into: &values)
                }
                try bytes.withUnsafeBytes { raw in
                    let m = try QuantizedMatrix(name: "blk.0.ffn_up.weight", rows: rows, cols: cols, format: format, data: raw)
                    let w = try LinearWeight(m)
                    for tokens in 1...9 {
                        let x = (0..<(tokens * cols)).map { _ in Float(rng.unit() * 2 - 1) * (rng.unit() < 0.05 ? 8 : 1) }
                        let act = Q8Activations(maxTokens: tokens + 2, maxCols: cols + 64)   // strides wider than the rows
                        var fast = [Float](repeating: .nan, count: tokens * rows), ref = fast
                        x.withUnsafeBufferPointer { xp in
                            act.quantize(xp.baseAddress!, tokens: tokens, cols: cols)
                            // Two row ranges, as two threads would split them.
                            fast.withUnsafeMutableBufferPointer { o in
                                w.apply(rows: 0..<(rows / 2), x: xp.baseAddress!, act: act, tokens: tokens, out: o.baseAddress!, outStride: rows)
                                w.apply(rows: (rows / 2)..<rows, x: xp.baseAddress!, act: act, tokens: tokens, out: o.baseAddress!, outStride: rows)
                            }
                            ref.withUnsafeMutableBufferPointer { o in
                                switch format {
                                case .gguf(.q4_0): w.referenceQuantRows(Q4_0Blocks.self, 0..<rows, act, tokens, o.baseAddress!, rows)
                                case .gguf(.q4_1): w.referenceQuantRows(Q4_1Blocks.self, 0..<rows, act, tokens, o.baseAddress!, rows)
                                case .gguf(.q5_0): w.referenceQuantRows(Q5_0Blocks.self, 0..<rows, act, tokens, o.baseAddress!, rows)
                                case .gguf(.q5_1): w.referenceQuantRows(Q5_1Blocks.self, 0..<rows, act, tokens, o.baseAddress!, rows)
                                case .gguf(.iq4_nl): w.referenceQuantRows(IQ4_NLBlocks.self, 0..<rows, act, tokens, o.baseAddress!, rows)
                                default: w.referenceQuantRows(Q8_0Blocks.self, 0..<rows, act, tokens, o.baseAddress!, rows)
                                }
                            }
                        }
                        // Same integer dots; only the float summation order and FMA rounding differ.
                        var magnitude = [Float](repeating: 0, count: tokens * rows)
                        for t in 0..<tokens { for r in 0..<rows { for c in 0..<cols { magnitude[t * rows + r] += abs(values[r * cols + c] * x[t * cols + c]) } } }
                        for i in 0..<fast.count {
                            XCTAssertFalse(ref[i].isNaN)
                            XCTAssertLessThanOrEqual(abs(fast[i] - ref[i]), 2e-5 * magnitude[i] + 1e-6,
                                                     "\(format) \(rows)×\(cols), \(tokens) tokens, output \(i): \(fast[i]) vs \(ref[i])")
                        }
                    }
                }
            }
        }
    }
}
