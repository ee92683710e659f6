import Foundation
import KilnCore
import KilnModels
import KilnTestSupport
import XCTest
@testable import KilnCPU

/// The integer products of the K-quants, IQ4_XS (against Q8_K activations), Q5_0 / IQ4_NL (against Q8_0) and Q5_1
/// (against Q8_1), checked against independent expectations:
///  - the Q8_K quantization equals a straightforward transcription of ggml's `quantize_row_q8_K_ref` (the `gguf`
///    package has no Q8_K quantizer), including its rounding through the 1.5·2²³ magic number;
///  - the product of random blocks equals the float dot product of the `gguf` package's dequantization of the same
///    blocks with the dequantized Q8 activations, up to float rounding;
///  - and is within the activation-quantization bound of the exact f32 product.
final class KQuantProductTests: XCTestCase {
    static let superBlockTypes: [DType] = [.q2_k, .q3_k, .q4_k, .q5_k, .q6_k, .iq4_xs]
    static let q8_0Types: [DType] = [.q5_0, .q5_1, .iq4_nl]
    /// Odd row count, split into two ranges; 3 super-blocks per row; 6 tokens (a group of four, then a tail of two).
    let rows = 7, cols = 768, tokens = 6

    // MARK: Q8_K activations

    /// ggml's definition, written out: amax and the first signed element reaching it; iscale = -127/max; q = min(127,
    /// nearest_int(iscale·x)) with nearest_int's float trick; bsums of 16; d = 1/iscale; zero blocks all zero.
    func referenceQ8K(_ x: [Float]) -> (q: [Int], d: [Float], bsums: [Int]) {
        var q: [Int] = [], d: [Float] = [], bsums: [Int] = []
        for b in 0..<(x.count / 256) {
            let block = Array(x[(256 * b)..<(256 * b + 256)])
            var amax: Float = 0, maxValue: Float = 0
            for v in block where abs(v) > amax { amax = abs(v); maxValue = v }
            if amax == 0 {
                q += [Int](repeating: 0, count: 256); d.append(0); bsums += [Int](repeating: 0, count: 16); continue
            }
            let iscale = -127 / maxValue
            let qs = block.map { v -> Int in
                let shifted = iscale * v + 12582912
                return min(127, Int(shifted.bitPattern & 0x007f_ffff) - 0x0040_0000)
            }
            q += qs
            for g in 0..<16 { bsums.append(qs[(16 * g)..<(16 * g + 16)].reduce(0, +)) }
            d.append(1 / iscale)
        }
        return (q, d, bsums)
    }

    func testQ8KQuantizationMatchesGGMLDefinition() {
        var rng = SplitMix64(seed: 81)
        let tokens = 5, cols = 512
        var x = (0..<(tokens * cols)).map { _ in Float(rng.unit() * 2 - 1) * (rng.unit() < 0.1 ? 40 : 1) }
        // Edge cases: an all-zero super-block, a tie between +amax and -amax (the first wins), values at exact halves
        // of the quantization step (round half to even), a negative maximum.
        for j in 256..<512 { x[j] = 0 }
        for j in 512..<768 { x[j] /= 100 }
        x[512] = 3; x[600] = -3
        for j in 1024..<1280 { x[j] = Float(j % 64) - 31.5 }   // max -127 → iscale 1: every other value is a tie
        x[1024] = -127
        let act = Q8KActivations(maxTokens: tokens, maxCols: cols)
        x.withUnsafeBufferPointer { act.quantize($0.baseAddress!, tokens: tokens, cols: cols) }
        for t in 0..<tokens {
            let want = referenceQ8K(Array(x[(t * cols)..<((t + 1) * cols)]))
            for j in 0..<cols { XCTAssertEqual(Int(act.value(token: t, j)), want.q[j], "token \(t) element \(j)") }
            for b in 0..<(cols / 256) { XCTAssertEqual(act.scale(token: t, block: b).bitPattern, want.d[b].bitPattern, "token \(t) d \(b)") }
            for g in 0..<(cols / 16) { XCTAssertEqual(Int(act.blockSum(token: t, group: g)), want.bsums[g], "token \(t) bsum \(g)") }
        }
        XCTAssertEqual(act.scale(token: 0, block: 1), 0)
        // 3 is the first of ±3: iscale = -127/3, so 3 → -127 and d < 0.
        XCTAssertEqual(Int(act.value(token: 1, 0)), -127)
        XCTAssertEqual(Int(act.value(token: 1, 88)), 127)
        XCTAssertLessThan(act.scale(token: 1, block: 0), 0)
    }

    // MARK: products

    /// Random activations, some blocks much larger than others (so the per-block scales differ).
    func activations(seed: UInt64) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<(tokens * cols)).map { i in Float(rng.unit() * 2 - 1) * (i % 512 < 256 ? 2 : 0.1) }
    }

    /// The product of `apply` for random blocks of `type`; the weights as the gguf package dequantizes them.
    func product(_ type: DType, _ x: [Float], seed: UInt64, q8k: Bool) throws -> (got: [Float], blocks: [UInt8], w: [Float], act: Q8Activations) {
        var rng = SplitMix64(seed: seed)
        let blocks = RandomGGUFBlocks.make(type, blocks: rows * cols / type.blockSize, scaleMagnitude: nil, rng: &rng)
        let w = try GGUFPackageReference.dequantize(type, blocks)
        let act = Q8Activations(maxTokens: tokens, maxCols: cols)
        if q8k { act.superBlocks = Q8KActivations(maxTokens: tokens, maxCols: cols) }
        var out = [Float](repeating: .nan, count: tokens * rows)
        try blocks.withUnsafeBytes { raw in
            let m = try QuantizedMatrix(name: "blk.0.ffn_up.weight", rows: rows, cols: cols, format: .gguf(.init(rawValue: type.rawValue)!), data: raw)
            let lw = try LinearWeight(m)
            XCTAssertTrue(lw.usesQ8)
            XCTAssertEqual(lw.usesQ8K, Self.superBlockTypes.contains(type))
            x.withUnsafeBufferPointer { xp in
                act.quantize(xp.baseAddress!, tokens: tokens, cols: cols)
                act.superBlocks?.quantize(xp.baseAddress!, tokens: tokens, cols: cols)
                out.withUnsafeMutableBufferPointer { o in
                    lw.apply(rows: 0..<3, x: xp.baseAddress!, act: act, tokens: tokens, out: o.baseAddress!, outStride: rows)
                    lw.apply(rows: 3..<rows, x: xp.baseAddress!, act: act, tokens: tokens, out: o.baseAddress!, outStride: rows)
                }
            }
        }
        XCTAssertTrue(w.allSatisfy(\.isFinite), "\(type): non-finite reference weights")
        return (out, blocks, w, act)
    }

    /// |dmin| of the block holding element `e` of row `r` (0 for formats without minimums): bounds the cancellation
    /// inside a dequantized weight d·sc·q − dmin·m, whose float rounding is relative to |dmin·m| ≤ |dmin|·63.
    func minimumMagnitude(_ type: DType, _ blocks: [UInt8], row r: Int, element e: Int) -> Double {
        let offsets = RandomGGUFBlocks.halfScaleOffsets(type)
        guard offsets.count == 2 else { return 0 }
        let start = ((r * cols + e) / type.blockSize) * type.blockBytes + offsets[1]
        let m = Double(halfToFloat(UInt16(blocks[start]) | UInt16(blocks[start + 1]) << 8))
        return abs(m) * (type == .q2_k ? 15 : type == .q5_1 ? 1 : 63)
    }

    func testSuperBlockProductsEqualTheDequantizedDotWithQ8KActivations() throws {
        let x = activations(seed: 3)
        for (i, type) in Self.superBlockTypes.enumerated() {
            let (got, blocks, w, act) = try product(type, x, seed: UInt64(100 + i), q8k: true)
            let k = act.superBlocks!
            for t in 0..<tokens {
                for r in 0..<rows {
                    var want = 0.0, magnitude = 0.0, exact = 0.0, bound = 0.0
                    for e in 0..<cols {
                        let xq = Double(k.scale(token: t, block: e / 256)) * Double(k.value(token: t, e))
                        let we = Double(w[r * cols + e])
                        want += we * xq
                        magnitude += (abs(we) + minimumMagnitude(type, blocks, row: r, element: e)) * abs(xq)
                        exact += we * Double(x[t * cols + e])
                        // Q8_K rounds each activation to the nearest step |d| (d exact in f32): error ≤ |d|/2.
                        bound += abs(we) * Double(abs(k.scale(token: t, block: e / 256))) * 0.5
                    }
                    let o = t * rows + r
                    XCTAssertLessThanOrEqual(abs(Double(got[o]) - want), 2e-6 * magnitude, "\(type) token \(t) row \(r): \(got[o]) vs \(want)")
                    XCTAssertLessThanOrEqual(abs(Double(got[o]) - exact), bound * 1.001 + 2e-6 * magnitude, "\(type) token \(t) row \(r) vs f32")
                }
            }
        }
    }

    func testLegacyBlockProductsEqualTheDequantizedDotWithQ8Activations() throws {
        let x = activations(seed: 4)
        for (i, type) in Self.q8_0Types.enumerated() {
            let (got, blocks, w, act) = try product(type, x, seed: UInt64(200 + i), q8k: false)
            for t in 0..<tokens {
                for r in 0..<rows {
                    var want = 0.0, magnitude = 0.0, exact = 0.0, activationBound = 0.0
                    for b in 0..<(cols / 32) {
                        let d = Double(act.d[t * (act.maxCols / 32) + b])
                        let m = minimumMagnitude(type, blocks, row: r, element: 32 * b)   // Q5_1's |m|, else 0
                        var sumQ = 0.0, sumW = 0.0
                        for j in 0..<32 {
                            let e = 32 * b + j
                            let q = Double(act.q[t * act.maxCols + e - j + Q8Activations.slot(j)])
                            let we = Double(w[r * cols + e])
                            sumQ += q; sumW += abs(we)
                            want += we * d * q
                            magnitude += (abs(we) + m) * abs(d * q)
                            exact += we * Double(x[t * cols + e])
                        }
                        // Q8_0's step amax/127 is stored as half: each activation is off by ≤ 0.5625·step (see
                        // FormatProductTests); Q5_1's minimum multiplies the block sum, off by ≤ 32 such errors.
                        let amax = Double(x[(t * cols + 32 * b)..<(t * cols + 32 * b + 32)].map(abs).max()!)
                        activationBound += 0.5625 * amax / 127 * (sumW + 32 * m)
                        // Q8_1's s = half(d·Σq): llama.cpp multiplies Q5_1's minimum by it, not by Σ d·q.
                        let sRounding = m * abs(d * sumQ) * 0x1p-11
                        magnitude += sRounding / 2e-6
                    }
                    let o = t * rows + r
                    XCTAssertLessThanOrEqual(abs(Double(got[o]) - want), 2e-6 * magnitude, "\(type) token \(t) row \(r): \(got[o]) vs \(want)")
                    XCTAssertLessThanOrEqual(abs(Double(got[o]) - exact), activationBound + 2e-6 * magnitude, "\(type) token \(t) row \(r) vs f32")
                }
            }
        }
    }

    /// Without a Q8_K set (a caller that quantized only Q8_0), the super-block formats fall back to dequantized rows
    /// and the float product: the same values up to the activation rounding, never garbage.
    func testSuperBlockFormatsWithoutQ8KFallBackToTheFloatProduct() throws {
        let x = activations(seed: 5)
        let (got, _, w, _) = try product(.q4_k, x, seed: 300, q8k: false)
        for t in 0..<tokens {
            for r in 0..<rows {
                var want = 0.0, magnitude = 0.0
                for e in 0..<cols { want += Double(w[r * cols + e]) * Double(x[t * cols + e]); magnitude += abs(Double(w[r * cols + e]) * Double(x[t * cols + e])) }
                XCTAssertLessThanOrEqual(abs(Double(got[t * rows + r]) - want), 1e-5 * magnitude + 1e-30)
            }
        }
    }

    func testEveryGGUFBlockHasAnIntegerProduct() {
        let q8: [any Q8BlockProduct.Type] = [Q8_0Blocks.self, Q4_0Blocks.self, Q4_1Blocks.self, Q5_0Blocks.self, Q5_1Blocks.self, IQ4_NLBlocks.self]
        let q8k: [any SuperBlockProduct.Type] = [Q2_KBlocks.self, Q3_KBlocks.self, Q4_KBlocks.self, Q5_KBlocks.self, Q6_KBlocks.self, IQ4_XSBlocks.self]
        XCTAssertEqual(Set(q8.map { $0.block } + q8k.map { $0.block }), Set(WeightFormat.GGUFBlock.allCases))
        for p in q8 { XCTAssertEqual(p.bytes, p.block.blockBytes, "\(p.block)") }
        XCTAssertEqual(Set(q8k.map { $0.block }), KQuantProducts.superBlockFormats)
        for p in q8k { XCTAssertEqual(p.block.blockSize, 256, "\(p.block)") }
    }
}

/// The `gguf` Python package's dequantization (scripts/gguf-dequantize.py), the independent reference of every block
/// format; fails saying what is missing when python3, numpy or gguf are not installed (never a skip).
enum GGUFPackageReference {
    static func dequantize(_ type: DType, _ blocks: [UInt8]) throws -> [Float] {
        let name = type.rawValue.uppercased()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-kq-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("in.bin"), output = dir.appendingPathComponent("out.f32")
        try Data(blocks).write(to: input)
        try ReferencePython.ggufDequantize(type: name, input: input.path, output: output.path)
        let data = try Data(contentsOf: output)
        return data.withUnsafeBytes { raw in (0..<(data.count / 4)).map { raw.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) } }
    }
}
