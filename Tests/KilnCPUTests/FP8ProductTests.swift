import XCTest
import KilnCore
@testable import KilnCPU

/// The two FP8 block-scaled products of the CPU engine against references written here: W8A16 against the format's
/// dequantization followed by a Double dot product; W8A8 against a plain reimplementation of transformers' fine-grained
/// FP8 (`act_quant` then `w8a8_block_fp8_matmul`) whose e4m3 rounding is a nearest search over the code table.
final class FP8ProductTests: XCTestCase {
    // N and K not multiples of 128: partial scale blocks in both directions; 5 tokens.
    let rows = 130, cols = 300, tokens = 5, block = 128
    var scaleRows: Int { (rows + block - 1) / block }
    var scaleCols: Int { (cols + block - 1) / block }

    /// Random finite codes, scales in [2⁻¹⁰, 2⁻⁶), activations in ±[0, 3) with one all-zero 128-block in token 1.
    func inputs(seed: UInt64) -> (codes: [UInt8], scaleInv: [Float], x: [Float]) {
        var rng = SplitMix64(seed: seed)
        let codes = (0..<(rows * cols)).map { _ -> UInt8 in
            let c = UInt8(truncatingIfNeeded: rng.next())
            return c & 0x7F == 0x7F ? 0x38 : c
        }
        let scaleInv = (0..<(scaleRows * scaleCols)).map { _ in Float(sign: .plus, exponent: -10, significand: 1 + 15 * rng.unit()) }
        var x = (0..<(tokens * cols)).map { _ in 6 * rng.unit() - 3 }
        for c in 128..<256 { x[1 * cols + c] = 0 }
        return (codes, scaleInv, x)
    }

    func apply(_ numerics: FP8Numerics, _ codes: [UInt8], _ scaleInv: [Float], _ x: [Float]) throws -> (out: [Float], w: [Float]) {
        try codes.withUnsafeBytes { c in
            try scaleInv.withUnsafeBytes { s in
                let m = try QuantizedMatrix(name: "blk.0.ffn_gate.weight", rows: rows, cols: cols, format: .fp8E4M3(blockRows: block, blockCols: block),
                                            planes: [.init(.codes, shape: [rows, cols], dtype: .u8, bytes: c),
                                                     .init(.scales, shape: [scaleRows, scaleCols], dtype: .f32, bytes: s)])
                let lw = try LinearWeight(m, fp8: numerics)
                XCTAssertFalse(lw.usesQ8)
                let act = Q8Activations(maxTokens: tokens, maxCols: cols)
                var out = [Float](repeating: .nan, count: tokens * rows)
                x.withUnsafeBufferPointer { xp in
                    out.withUnsafeMutableBufferPointer { o in
                        // Two row ranges, as threads split them.
                        lw.apply(rows: 0..<77, x: xp.baseAddress!, act: act, tokens: tokens, out: o.baseAddress!, outStride: rows)
                        lw.apply(rows: 77..<rows, x: xp.baseAddress!, act: act, tokens: tokens, out: o.baseAddress!, outStride: rows)
                    }
                }
                return (out, try m.dequantized())
            }
        }
    }

    func testW8A16EqualsDequantizeThenDot() throws {
        let (codes, scaleInv, x) = inputs(seed: 11)
        let (out, w) = try apply(.w8a16, codes, scaleInv, x)
        for t in 0..<tokens {
            for r in 0..<rows {
                var ref = 0.0, mag = 0.0
                for c in 0..<cols {
                    ref += Double(w[r * cols + c]) * Double(x[t * cols + c]); mag += abs(Double(w[r * cols + c]) * Double(x[t * cols + c]))
                }
                XCTAssertEqual(Double(out[t * rows + r]), ref, accuracy: 1e-6 * mag + 1e-30, "token \(t) row \(r)")
            }
        }
    }

    /// The nearest e4m3 value of `v` with ties to the even code: a search over the decoded table, not `E4M3.encode`.
    func nearestE4M3(_ v: Float) -> Float {
        var best: (code: Int, err: Float)? = nil
        for code in 0..<256 where code & 0x7F != 0x7F {
            let err = abs(E4M3.decode(UInt8(code)) - v)
            if best == nil || err < best!.err || (err == best!.err && code & 1 == 0 && best!.code & 1 == 1) { best = (code, err) }
        }
        return E4M3.decode(UInt8(best!.code))
    }

    func testW8A8MatchesTransformersFineGrainedFP8() throws {
        let (codes, scaleInv, x) = inputs(seed: 12)
        let (out, _) = try apply(.w8a8, codes, scaleInv, x)
        let (exact, _) = try apply(.w8a16, codes, scaleInv, x)
        var maxDiffFromW8A16: Float = 0
        for t in 0..<tokens {
            // act_quant per 1×128 block: s = absmax / 448, q = e4m3(x / s) (an all-zero block contributes nothing).
            var q = [Float](repeating: 0, count: cols), s = [Float](repeating: 0, count: scaleCols)
            for kb in 0..<scaleCols {
                let range = (kb * block)..<min(cols, (kb + 1) * block)
                let amax = range.map { abs(x[t * cols + $0]) }.max()!
                s[kb] = amax / 448
                for c in range { q[c] = s[kb] > 0 ? nearestE4M3(x[t * cols + c] / s[kb]) : 0 }
            }
            for r in 0..<rows {
                var ref = 0.0, mag = 0.0
                for kb in 0..<scaleCols {
                    var blockSum = 0.0
                    for c in (kb * block)..<min(cols, (kb + 1) * block) {
                        let p = Double(q[c]) * Double(E4M3.decode(codes[r * cols + c]))
                        blockSum += p; mag += abs(p) * Double(s[kb]) * Double(scaleInv[(r / block) * scaleCols + kb])
                    }
                    ref += blockSum * Double(s[kb]) * Double(scaleInv[(r / block) * scaleCols + kb])
                }
                XCTAssertEqual(Double(out[t * rows + r]), ref, accuracy: 1e-6 * mag + 1e-30, "token \(t) row \(r)")
                maxDiffFromW8A16 = max(maxDiffFromW8A16, abs(out[t * rows + r] - exact[t * rows + r]))
            }
        }
        // The activation rounding is visible: W8A8 is not W8A16 under another name.
        XCTAssertGreaterThan(maxDiffFromW8A16, 1e-4)
    }
}
