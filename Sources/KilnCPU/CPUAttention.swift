import Foundation
import KilnCore
import KilnModels

extension CPUModel {
    /// Causal grouped-query attention of the query rows `rows` (one sequence's new tokens, at positions `start...`) over
    /// its cache, whose rows for the new tokens are already written. Writes those rows of `out` (`[rows × qDim]`).
    /// Work items are (token, head) pairs.
    ///
    /// This follows llama.cpp's CPU flash attention with an F16 cache step by step (the golden data was made with it):
    /// the query is rounded to half, keys are visited in order with an online softmax, and the weighted sum of values
    /// is accumulated in half precision (every scale and multiply-add rounded to half). Matching its rounding keeps
    /// logits within a few hundredths of llama.cpp's instead of a few tenths.
    func attention(layer l: Int, rows: Range<Int>, start: Int, cache: KVCache, out: UnsafeMutablePointer<Float>) {
        let c = config, b = buffers, n = rows.count, first = rows.lowerBound
        let d = c.headDim, heads = c.numHeads, group = c.numHeads / c.numKVHeads
        let scale = c.attentionScale
        let q = b.q, scratch = b.scores, scratchStride = b.scoreCapacity
        pool.run { i, p in
            let qh = scratch + i * scratchStride   // [headDim] the query rounded to half
            for item in ThreadPool.slice(n * heads, i, p) {
                let t = item / heads, hd = item % heads
                let positions = start + t + 1
                let qv = q + ((first + t) * heads + hd) * d
                roundToHalf(qv, into: qh, d)
                let kvOffset = (hd / group) * d
                let acc = out + ((first + t) * heads + hd) * d   // the half-precision running sum of values
                for k in 0..<d { acc[k] = 0 }
                var m = -Float.infinity, sum: Float = 0
                for j in 0..<positions {
                    let s = dot(qh, cache.keyRow(l, j) + kvOffset, d) * scale
                    var ms: Float = 1, vs: Float = 1
                    if s > m {
                        ms = exp(m - s); m = s
                        scaleHalf(acc, ms, d)
                    } else {
                        vs = exp(s - m)
                    }
                    madHalf(vs, cache.valueRow(l, j) + kvOffset, acc, d)
                    sum = sum * ms + vs
                }
                let inv = sum == 0 ? 0 : 1 / sum
                for k in 0..<d { acc[k] *= inv }
            }
        }
    }
}

/// Rounds to the nearest half-precision value (ties to even), kept in Float; exact for the normal and subnormal
/// half range, which is all attention sums reach. Eight lanes at a time, with integer tricks rather than F16C.
@inline(__always) func roundToHalf(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let bits = unsafeBitCast(x, to: SIMD8<UInt32>.self)
    let lsb = (bits &>> 13) & 1
    let normal = unsafeBitCast((bits &+ 0x0fff &+ lsb) & 0xffff_e000, to: SIMD8<Float>.self)
    // Below 2^-14 half values are multiples of 2^-24: round with the 1.5·2^23 magic constant.
    let magic = SIMD8<Float>(repeating: 12_582_912)
    let sub = ((x * 16_777_216 + magic) - magic) * (1 / 16_777_216)
    let tiny = (unsafeBitCast(bits & 0x7fff_ffff, to: SIMD8<Float>.self) .< SIMD8<Float>(repeating: 6.103515625e-05))
    return normal.replacing(with: sub, where: tiny)
}

@inline(__always) func roundToHalf(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, _ n: Int) {
    let n8 = n / 8 * 8
    for i in stride(from: 0, to: n8, by: 8) {
        UnsafeMutableRawPointer(y + i).storeBytes(of: roundToHalf(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)), as: SIMD8<Float>.self)
    }
    for i in n8..<n { y[i] = halfTable[Int(floatToHalf(x[i]))] }
}

/// y = half(y · s), as ggml_vec_scale_f16.
@inline(__always) func scaleHalf(_ y: UnsafeMutablePointer<Float>, _ s: Float, _ n: Int) {
    let n8 = n / 8 * 8
    for i in stride(from: 0, to: n8, by: 8) {
        let p = UnsafeMutableRawPointer(y + i)
        p.storeBytes(of: roundToHalf(p.loadUnaligned(as: SIMD8<Float>.self) * s), as: SIMD8<Float>.self)
    }
    for i in n8..<n { y[i] = halfTable[Int(floatToHalf(y[i] * s))] }
}

/// y = half(y + a · x), as ggml_vec_mad_f16.
@inline(__always) func madHalf(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    let n8 = n / 8 * 8
    for i in stride(from: 0, to: n8, by: 8) {
        let p = UnsafeMutableRawPointer(y + i)
        let v = p.loadUnaligned(as: SIMD8<Float>.self) + a * UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
        p.storeBytes(of: roundToHalf(v), as: SIMD8<Float>.self)
    }
    for i in n8..<n { y[i] = halfTable[Int(floatToHalf(y[i] + a * x[i]))] }
}

/// Σ a[i]·b[i] over `n` floats, eight lanes at a time.
@inline(__always) func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD8<Float>(), tail: Float = 0
    let n8 = n / 8 * 8
    for i in stride(from: 0, to: n8, by: 8) {
        acc += UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self) * UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
    }
    for i in n8..<n { tail += a[i] * b[i] }
    return acc.sum() + tail
}

