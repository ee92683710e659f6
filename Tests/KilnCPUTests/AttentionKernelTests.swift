import XCTest
import KilnCore
@testable import KilnCPU

/// The two-pass attention of one head (`attendHead`) against the one-pass loop it replaced, written out here as
/// llama.cpp's CPU flash attention with an F16 cache does it: per key in order, the score, the online-softmax update,
/// and the running sum of values rounded to half after every scale and multiply-add. Same arithmetic, so the outputs
/// must be equal bit for bit, on random inputs with odd lengths and head sizes (64-wide, 8-wide and scalar paths).
final class AttentionKernelTests: XCTestCase {
    func half(_ x: Float) -> Float { Float(Float16(x)) }

    func reference(_ qh: [Float], _ keys: [Float16], _ values: [Float16], stride: Int, offset: Int, d: Int, positions: Int, scale: Float) -> [Float] {
        var acc = [Float](repeating: 0, count: d)
        var m = -Float.infinity, sum: Float = 0
        for j in 0..<positions {
            // Dot in eight lanes then the tail, as `dot` sums.
            var lanes = SIMD8<Float>(), tail: Float = 0
            let n8 = d / 8 * 8
            for i in Swift.stride(from: 0, to: n8, by: 8) {
                var k = SIMD8<Float>(), q = SIMD8<Float>()
                for e in 0..<8 { k[e] = Float(keys[j * stride + offset + i + e]); q[e] = qh[i + e] }
                lanes += q * k
            }
            for i in n8..<d { tail += qh[i] * Float(keys[j * stride + offset + i]) }
            let s = (lanes.sum() + tail) * scale
            var ms: Float = 1, vs: Float = 1
            if s > m {
                ms = exp(m - s); m = s
                for k in 0..<d { acc[k] = half(acc[k] * ms) }
            } else {
                vs = exp(s - m)
            }
            for k in 0..<d { acc[k] = half(acc[k] + vs * Float(values[j * stride + offset + k])) }
            sum = sum * ms + vs
        }
        let inv = sum == 0 ? 0 : 1 / sum
        return acc.map { $0 * inv }
    }

    func testTwoPassHeadEqualsTheOnePassReferenceBitForBit() {
        var rng = SplitMix64(seed: 31)
        for (d, positions) in [(64, 1), (64, 37), (128, 130), (72, 9), (20, 5), (64, 203)] {
            let heads = 3, stride = heads * d + 8, offset = d   // the middle head of a wider row
            let keys = (0..<(positions * stride)).map { _ in Float16((rng.unit() * 2 - 1) * 3) }
            let values = (0..<(positions * stride)).map { _ in Float16((rng.unit() * 2 - 1) * 2) }
            let qh = (0..<d).map { _ in half((rng.unit() * 2 - 1) * 4) }
            let scale = 1 / Float(d).squareRoot()
            var out = [Float](repeating: .nan, count: d), factors = [Float](repeating: .nan, count: 2 * positions)
            keys.withUnsafeBufferPointer { k in
                values.withUnsafeBufferPointer { v in
                    attendHead(qh, keys: k.baseAddress! + offset, values: v.baseAddress! + offset, stride: stride, d,
                               positions: positions, scale: scale, factors: &factors, out: &out)
                }
            }
            let ref = reference(qh, keys, values, stride: stride, offset: offset, d: d, positions: positions, scale: scale)
            for k in 0..<d {
                XCTAssertEqual(out[k].bitPattern, ref[k].bitPattern, "d \(d), \(positions) positions, lane \(k): \(out[k]) vs \(ref[k])")
            }
            XCTAssertNotEqual(ref.map { abs($0) }.max()!, 0)
        }
    }
}
