import XCTest
import KilnCore
import KilnModels
@testable import KilnCPU

/// The CPU engine's product of each weight format (`LinearWeight.apply`) against the format's dequantization
/// followed by a float dot product in Double: equal up to float summation when the activations are exactly
/// representable in Q8, and within the Q8 activation rounding bound otherwise.
final class FormatProductTests: XCTestCase {
    static let formats: [WeightFormat] = [.dense(.f32), .dense(.f16), .dense(.bf16), .gguf(.q8_0), .gguf(.q4_0), .gguf(.q4_1)]
    let rows = 5, cols = 128, tokens = 6   // 6 tokens: the four-token prefill path and the single-token tail

    /// Random weights in ±[0.01, 1), stored in `format` with ggml's reference quantizers.
    func storedWeights(_ format: WeightFormat, seed: UInt64) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        let values = (0..<(rows * cols)).map { _ -> Float in
            let mag = 0.01 + 0.99 * rng.unit()
            return rng.unit() < 0.5 ? -mag : mag
        }
        return InMemoryWeights.encode(values, as: format.singleTensorType!)
    }

    /// Runs `LinearWeight.apply` on `x` ([tokens × cols]) and returns (product, dequantize-then-dot reference,
    /// Σ|w·x| per output, the dequantized weights).
    func run(_ format: WeightFormat, _ bytes: [UInt8], _ x: [Float]) throws -> (got: [Float], ref: [Double], mag: [Double], w: [Float]) {
        try bytes.withUnsafeBytes { raw in
            let m = try QuantizedMatrix(name: "blk.0.ffn_up.weight", rows: rows, cols: cols, format: format, data: raw)
            let lw = try LinearWeight(m)
            XCTAssertEqual(lw.usesQ8, { if case .gguf = format { return true }; return false }())
            let act = Q8Activations(maxTokens: tokens, maxCols: cols)
            var out = [Float](repeating: .nan, count: tokens * rows)
            x.withUnsafeBufferPointer { xp in
                act.quantize(xp.baseAddress!, tokens: tokens, cols: cols)
                out.withUnsafeMutableBufferPointer { lw.apply(rows: 0..<rows, x: xp.baseAddress!, act: act, tokens: tokens, out: $0.baseAddress!, outStride: rows) }
            }
            let w = try m.dequantized()
            var ref = [Double](repeating: 0, count: tokens * rows), mag = ref
            for t in 0..<tokens {
                for r in 0..<rows {
                    for c in 0..<cols {
                        ref[t * rows + r] += Double(w[r * cols + c]) * Double(x[t * cols + c])
                        mag[t * rows + r] += abs(Double(w[r * cols + c]) * Double(x[t * cols + c]))
                    }
                }
            }
            return (out, ref, mag, w)
        }
    }

    /// Activations that Q8 represents exactly: per 32-element block, integers k in [-127, 127] (one of them ±127) times a
    /// power of two, with |Σk| ≤ 2048 so the block sum is exact in half precision too. No activation rounding happens, so
    /// the product must equal dequantize-then-dot up to float summation order.
    func testProductEqualsDequantizedDotWhenActivationsAreExact() throws {
        var rng = SplitMix64(seed: 5)
        var x = [Float](repeating: 0, count: tokens * cols)
        for b in 0..<(tokens * cols / 32) {
            let step = Float(sign: .plus, exponent: -(Int(rng.next() % 6) + 4), significand: 1)   // 2^-4 … 2^-9
            var ks = (0..<32).map { _ in Int(rng.next() % 121) - 60 }
            ks[Int(rng.next() % 32)] = rng.unit() < 0.5 ? 127 : -127
            for j in 0..<32 { x[b * 32 + j] = Float(ks[j]) * step }
        }
        for (i, format) in FormatProductTests.formats.enumerated() {
            let (got, ref, mag, _) = try run(format, storedWeights(format, seed: UInt64(10 + i)), x)
            for o in 0..<got.count {
                XCTAssertLessThanOrEqual(abs(Double(got[o]) - ref[o]), 1e-5 * mag[o] + 1e-7, "\(format) output \(o): \(got[o]) vs \(ref[o])")
            }
        }
    }

    /// Arbitrary activations: the Q8 path differs from the exact product by at most the activation rounding.
    /// Per 32-element block with scale d = amax/127: each activation is off by ≤ d/2 from rounding plus ≤ 127·d·2⁻¹¹ from
    /// storing d in half precision (≤ 0.5625·d in all), which multiplies Σ|w| over the block (for Q4_1 Σ|w - m| ≤ Σ|w| + 32|m|);
    /// Q4_1's minimum m multiplies the block sum, which is off by ≤ 32·d/2 + 32·127·d·2⁻¹¹ ≤ 18·d. The float path
    /// (dense formats) has no activation rounding: float summation only.
    func testProductIsWithinTheQ8RoundingBound() throws {
        var rng = SplitMix64(seed: 9)
        let x = (0..<(tokens * cols)).map { i -> Float in (rng.unit() * 2 - 1) * (i % 64 < 32 ? 3 : 0.05) }
        for (i, format) in FormatProductTests.formats.enumerated() {
            let (got, ref, mag, w) = try run(format, storedWeights(format, seed: UInt64(20 + i)), x)
            for t in 0..<tokens {
                for r in 0..<rows {
                    var bound = 1e-5 * mag[t * rows + r] + 1e-7
                    if case .gguf(let block) = format {
                        for b in 0..<(cols / 32) {
                            let xs = x[(t * cols + b * 32)..<(t * cols + b * 32 + 32)], ws = w[(r * cols + b * 32)..<(r * cols + b * 32 + 32)]
                            let d = Double(xs.map(abs).max()!) / 127
                            let sumW = ws.reduce(0.0) { $0 + abs(Double($1)) }
                            // |m| ≤ max|w|: ggml's Q4_1 quantizer maps the block minimum to code 0, whose value is m.
                            let m = block == .q4_1 ? ws.map { abs(Double($0)) }.max()! : 0
                            bound += 0.5625 * d * (sumW + 32 * m) + 18 * d * m
                        }
                    }
                    let o = t * rows + r
                    XCTAssertLessThanOrEqual(abs(Double(got[o]) - ref[o]), bound, "\(format) token \(t) row \(r): \(got[o]) vs \(ref[o])")
                }
            }
        }
    }

    func testBlockProductsMatchTheirDescriptors() {
        let products: [any Q8BlockProduct.Type] = [Q8_0Blocks.self, Q4_0Blocks.self, Q4_1Blocks.self]
        // The other GGUF blocks (K-quants, i-quants, Q5_0/Q5_1) are checked by KQuantProductTests.
        let others: [WeightFormat.GGUFBlock] = [.q5_0, .q5_1, .q2_k, .q3_k, .q4_k, .q5_k, .q6_k, .iq4_nl, .iq4_xs]
        XCTAssertEqual(products.map { $0.block } + others, WeightFormat.GGUFBlock.allCases)
        for p in products { XCTAssertEqual(p.bytes, p.block.blockBytes, "\(p.block)") }
    }

    func testLookupTableWithANaNEntryIsAnErrorNamingTheTensor() throws {
        // A 4-bit lookup-table matrix: codes [4, 32], scales [4, 1] f16, table [16] f32 of NaNs (all bytes 0xFF).
        let codes = [UInt8](repeating: 0, count: 4 * 32), scales = [UInt8](repeating: 0, count: 4 * 2), table = [UInt8](repeating: 0xFF, count: 64)
        try codes.withUnsafeBytes { c in
            try scales.withUnsafeBytes { s in
              try table.withUnsafeBytes { t in
                let m = try QuantizedMatrix(name: "blk.1.attn_v.weight", rows: 4, cols: 64,
                                            format: .lut(.init(bits: 4, groupSize: 64, table: .nf, hasOffsets: false)),
                                            planes: [.init(.codes, shape: [4, 32], dtype: .u8, bytes: c), .init(.scales, shape: [4, 1], dtype: .f16, bytes: s),
                                                     .init(.table, shape: [16], dtype: .f32, bytes: t)])
                XCTAssertThrowsError(try LinearWeight(m)) { XCTAssertTrue("\($0)".contains("blk.1.attn_v.weight"), "\($0)") }
              }
            }
        }
    }

    /// InMemoryWeights hands out matrices in the format they were stored in, exactly sized; strict loading still
    /// counts them as used; integer tensors are no weight format.
    func testInMemoryWeightsProduceMatrices() throws {
        let cfg = ModelConfig(architecture: .llama, vocabSize: 8, hiddenSize: 64, intermediateSize: 64, numLayers: 1, numHeads: 1,
                              numKVHeads: 1, contextLength: 16, rmsNormEps: 1e-5, ropeTheta: 10000)
        let w = InMemoryWeights(config: cfg)
        w.add("a", shape: [3, 64], values: (0..<192).map { Float($0 % 7) - 3 }, as: .q4_1)
        w.add("b", shape: [3, 64], values: (0..<192).map { Float($0) / 64 }, as: .bf16)
        let a = try w.matrix("a", rows: 3, cols: 64)
        XCTAssertEqual(a.format, .gguf(.q4_1))
        XCTAssertEqual(a.byteCount, 3 * 2 * 20)
        let b = try w.matrix("b", rows: 3, cols: 64)
        XCTAssertEqual(b.format, .bf16)
        XCTAssertEqual(try b.dequantized()[65], 65.0 / 64)
        try w.checkAllUsed()
        XCTAssertThrowsError(try w.matrix("a", rows: 64, cols: 3)) { XCTAssertTrue("\($0)".contains("tensor a has shape [3, 64]"), "\($0)") }
    }
}
