import Foundation
import KilnCore
import KilnModels

extension CPUModel {
    /// Causal grouped-query attention of the query rows `rows` (one sequence's new tokens, at positions `start...`) over
    /// its cache, whose rows for the new tokens are already written. Writes those rows of `out` (`[rows × qDim]`).
    /// Work items are (token, head) pairs, dealt to the threads in turn (later tokens see more positions).
    ///
    /// This follows llama.cpp's CPU flash attention with an F16 cache step by step (the golden data was made with it):
    /// the query is rounded to half, keys are visited in order with an online softmax, and the weighted sum of values
    /// is accumulated in half precision (every scale and multiply-add rounded to half). Matching its rounding keeps
    /// logits within a few hundredths of llama.cpp's instead of a few tenths.
    ///
    /// Same arithmetic, in two passes per item so each runs at full speed: the first computes every score (four keys at
    /// a time, each dot summed in the same order) and the online softmax's per-position factors (the rescale of the
    /// running sum, the value weight); the second replays them over the values with the running sum held in registers,
    /// 64 dimensions at a time, instead of a load-round-store of the sum at every position.
    func attention(layer l: Int, rows: Range<Int>, start: Int, cache: KVCache, out: UnsafeMutablePointer<Float>) {
        let c = config, b = buffers, n = rows.count, first = rows.lowerBound
        let d = c.headDim, heads = c.numHeads, group = c.numHeads / c.numKVHeads
        let scale = c.attentionScale, kvDim = c.kvDim
        b.reserveScores(d + 2 * (start + n))
        let q = b.q, scratch = b.scores, scratchStride = b.scoreCapacity
        let keys = cache.layerKeys(l), values = cache.layerValues(l)
        cache.runStarts.withUnsafeBufferPointer { runStarts in
            cache.runRows.withUnsafeBufferPointer { runRows in
                let runs = KVRuns(starts: runStarts.baseAddress!, rows: runRows.baseAddress!)
                pool.run { i, p in
                    let qh = scratch + i * scratchStride   // [headDim] the query rounded to half
                    let factors = qh + d                   // [positions × 2] (rescale of the running sum, value weight)
                    for item in stride(from: i, to: n * heads, by: p) {
                        let t = item / heads, hd = item % heads
                        let positions = start + t + 1
                        roundToHalf(q + ((first + t) * heads + hd) * d, into: qh, d)
                        let kvOffset = (hd / group) * d
                        attendHead(qh, keys: keys + kvOffset, values: values + kvOffset, runs: runs, stride: kvDim, d,
                                   positions: positions, scale: scale, factors: factors, out: out + ((first + t) * heads + hd) * d)
                    }
                }
            }
        }
    }
}

/// A cache's block table as runs of consecutive rows: run r covers positions `starts[r]..<starts[r + 1]` (the last
/// start is `Int.max`), stored from row `rows[r]` of the layer.
struct KVRuns {
    let starts: UnsafePointer<Int>
    let rows: UnsafePointer<Int>
}

/// One query head over `positions` positions of a paged layer (`keys`/`values` at the layer's row 0, rows `stride`
/// apart, positions placed by `runs`): each run is visited contiguously, the softmax's running maximum and sum and the
/// weighted sum of values carried from run to run. Visiting order and arithmetic are those of one contiguous run, so the
/// result is the same bit for bit however the positions are split into blocks.
@inline(__always) func attendHead(_ qh: UnsafePointer<Float>, keys: UnsafePointer<Float16>, values: UnsafePointer<Float16>, runs: KVRuns,
                                  stride: Int, _ d: Int, positions: Int, scale: Float, factors: UnsafeMutablePointer<Float>,
                                  out: UnsafeMutablePointer<Float>) {
    var m = -Float.infinity, sum: Float = 0
    var r = 0
    while runs.starts[r] < positions {
        let lo = runs.starts[r], hi = min(runs.starts[r + 1], positions)
        softmaxFactors(qh, keys: keys + runs.rows[r] * stride, stride: stride, d, hi - lo, scale, factors + 2 * lo, max: &m, sum: &sum)
        r += 1
    }
    for k in 0..<d { out[k] = 0 }
    r = 0
    while runs.starts[r] < positions {
        let lo = runs.starts[r], hi = min(runs.starts[r + 1], positions)
        accumulateValues(factors + 2 * lo, values: values + runs.rows[r] * stride, stride: stride, d, hi - lo, into: out)
        r += 1
    }
    let inv = sum == 0 ? 0 : 1 / sum
    for k in 0..<d { out[k] *= inv }
}

/// One query head (`qh`, already rounded to half, `[d]`) over `positions` keys and values (rows `stride` apart):
/// the normalized weighted sum of values into `out` (`[d]`). `factors` is scratch for `2 · positions` floats.
@inline(__always) func attendHead(_ qh: UnsafePointer<Float>, keys: UnsafePointer<Float16>, values: UnsafePointer<Float16>, stride: Int,
                                  _ d: Int, positions: Int, scale: Float, factors: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) {
    let starts = [0, Int.max], rows = [0]
    starts.withUnsafeBufferPointer { s in
        rows.withUnsafeBufferPointer { r in
            attendHead(qh, keys: keys, values: values, runs: KVRuns(starts: s.baseAddress!, rows: r.baseAddress!), stride: stride, d,
                       positions: positions, scale: scale, factors: factors, out: out)
        }
    }
}

/// The online softmax over `positions` keys (rows `stride` apart), continuing from the running maximum `m` and
/// denominator `sum` of the keys before them: for each position, in order, the factor that rescales the running sum
/// (1 when the maximum did not change) and the value's weight, into `factors`. Scores are `dot(qh, key) · scale`, with
/// `dot`'s summation order.
@inline(__always) private func softmaxFactors(_ qh: UnsafePointer<Float>, keys: UnsafePointer<Float16>, stride: Int, _ d: Int,
                                              _ positions: Int, _ scale: Float, _ factors: UnsafeMutablePointer<Float>,
                                              max runningMax: inout Float, sum runningSum: inout Float) {
    var m = runningMax, sum = runningSum   // in registers through the loop
    defer { runningMax = m; runningSum = sum }
    @inline(__always) func visit(_ j: Int, _ s: Float) {
        var ms: Float = 1, vs: Float = 1
        if s > m { ms = exp(m - s); m = s } else { vs = exp(s - m) }
        factors[2 * j] = ms; factors[2 * j + 1] = vs
        sum = sum * ms + vs
    }
    var j = 0
    if d % 8 == 0 {
        while j + 4 <= positions {
            let k = keys + j * stride
            var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
            for i in Swift.stride(from: 0, to: d, by: 8) {
                let x = UnsafeRawPointer(qh + i).loadUnaligned(as: SIMD8<Float>.self)
                a0 += x * widen(k + i); a1 += x * widen(k + stride + i)
                a2 += x * widen(k + 2 * stride + i); a3 += x * widen(k + 3 * stride + i)
            }
            visit(j, a0.sum() * scale); visit(j + 1, a1.sum() * scale); visit(j + 2, a2.sum() * scale); visit(j + 3, a3.sum() * scale)
            j += 4
        }
    }
    while j < positions {
        visit(j, dotHalf(qh, keys + j * stride, d) * scale)
        j += 1
    }
}

/// acc = Σ over positions in order of: acc = half(acc · rescale) where the rescale is not 1, then acc = half(acc + weight · value),
/// continuing from acc's values (0 before the first position; `factors` from `softmaxFactors`; value rows `stride` apart).
@inline(__always) private func accumulateValues(_ factors: UnsafePointer<Float>, values: UnsafePointer<Float16>, stride: Int, _ d: Int,
                                                _ positions: Int, into acc: UnsafeMutablePointer<Float>) {
    var k = 0
    while k + 64 <= d {
        // Eight independent chains of eight lanes: the half rounding's latency overlaps.
        let a = UnsafeRawPointer(acc + k)
        var v0 = a.loadUnaligned(as: SIMD8<Float>.self), v1 = a.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self)
        var v2 = a.loadUnaligned(fromByteOffset: 64, as: SIMD8<Float>.self), v3 = a.loadUnaligned(fromByteOffset: 96, as: SIMD8<Float>.self)
        var v4 = a.loadUnaligned(fromByteOffset: 128, as: SIMD8<Float>.self), v5 = a.loadUnaligned(fromByteOffset: 160, as: SIMD8<Float>.self)
        var v6 = a.loadUnaligned(fromByteOffset: 192, as: SIMD8<Float>.self), v7 = a.loadUnaligned(fromByteOffset: 224, as: SIMD8<Float>.self)
        for j in 0..<positions {
            let ms = factors[2 * j], vs = factors[2 * j + 1]
            if ms != 1 {
                v0 = roundToHalfF16C(v0 * ms); v1 = roundToHalfF16C(v1 * ms); v2 = roundToHalfF16C(v2 * ms); v3 = roundToHalfF16C(v3 * ms)
                v4 = roundToHalfF16C(v4 * ms); v5 = roundToHalfF16C(v5 * ms); v6 = roundToHalfF16C(v6 * ms); v7 = roundToHalfF16C(v7 * ms)
            }
            let x = values + j * stride + k
            v0 = roundToHalfF16C(v0 + vs * widen(x)); v1 = roundToHalfF16C(v1 + vs * widen(x + 8))
            v2 = roundToHalfF16C(v2 + vs * widen(x + 16)); v3 = roundToHalfF16C(v3 + vs * widen(x + 24))
            v4 = roundToHalfF16C(v4 + vs * widen(x + 32)); v5 = roundToHalfF16C(v5 + vs * widen(x + 40))
            v6 = roundToHalfF16C(v6 + vs * widen(x + 48)); v7 = roundToHalfF16C(v7 + vs * widen(x + 56))
        }
        let o = UnsafeMutableRawPointer(acc + k)
        o.storeBytes(of: v0, toByteOffset: 0, as: SIMD8<Float>.self); o.storeBytes(of: v1, toByteOffset: 32, as: SIMD8<Float>.self)
        o.storeBytes(of: v2, toByteOffset: 64, as: SIMD8<Float>.self); o.storeBytes(of: v3, toByteOffset: 96, as: SIMD8<Float>.self)
        o.storeBytes(of: v4, toByteOffset: 128, as: SIMD8<Float>.self); o.storeBytes(of: v5, toByteOffset: 160, as: SIMD8<Float>.self)
        o.storeBytes(of: v6, toByteOffset: 192, as: SIMD8<Float>.self); o.storeBytes(of: v7, toByteOffset: 224, as: SIMD8<Float>.self)
        k += 64
    }
    while k + 8 <= d {
        var v = UnsafeRawPointer(acc + k).loadUnaligned(as: SIMD8<Float>.self)
        for j in 0..<positions {
            let ms = factors[2 * j], vs = factors[2 * j + 1]
            if ms != 1 { v = roundToHalfF16C(v * ms) }
            v = roundToHalfF16C(v + vs * widen(values + j * stride + k))
        }
        UnsafeMutableRawPointer(acc + k).storeBytes(of: v, as: SIMD8<Float>.self)
        k += 8
    }
    while k < d {
        var v = acc[k]
        for j in 0..<positions {
            let ms = factors[2 * j], vs = factors[2 * j + 1]
            if ms != 1 { v = Float(Float16(v * ms)) }
            v = Float(Float16(v + vs * Float(values[j * stride + k])))
        }
        acc[k] = v
        k += 1
    }
}

// The conversions below are written lane by lane: LLVM merges them into one vcvtph2ps / vcvtps2ph, while the standard
// library's generic SIMD8<Float>(SIMD8<Float16>) stays an out-of-line call (with a vzeroupper) in this module.

/// Eight halves at `p` as Floats (one vcvtph2ps).
@inline(__always) func widen(_ p: UnsafePointer<Float16>) -> SIMD8<Float> {
    let h = UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float16>.self)
    return SIMD8<Float>(Float(h[0]), Float(h[1]), Float(h[2]), Float(h[3]), Float(h[4]), Float(h[5]), Float(h[6]), Float(h[7]))
}

/// Eight Floats rounded to the nearest half, ties to even (one vcvtps2ph).
@inline(__always) func narrow(_ x: SIMD8<Float>) -> SIMD8<Float16> {
    SIMD8<Float16>(Float16(x[0]), Float16(x[1]), Float16(x[2]), Float16(x[3]), Float16(x[4]), Float16(x[5]), Float16(x[6]), Float16(x[7]))
}

/// Rounds to the nearest half (ties to even), kept in Float: vcvtps2ph + vcvtph2ps.
@inline(__always) func roundToHalfF16C(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let h = narrow(x)
    return SIMD8<Float>(Float(h[0]), Float(h[1]), Float(h[2]), Float(h[3]), Float(h[4]), Float(h[5]), Float(h[6]), Float(h[7]))
}

/// Writes `n` floats rounded to half (ties to even) into `y`.
@inline(__always) func storeHalf(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float16>, _ n: Int) {
    let n8 = n / 8 * 8
    for i in stride(from: 0, to: n8, by: 8) {
        UnsafeMutableRawPointer(y + i).storeBytes(of: narrow(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)), as: SIMD8<Float16>.self)
    }
    for i in n8..<n { y[i] = Float16(x[i]) }
}

/// Σ a[i]·b[i] with `b` in half precision, in `dot`'s order (eight lanes, then the tail).
@inline(__always) func dotHalf(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float16>, _ n: Int) -> Float {
    var acc = SIMD8<Float>(), tail: Float = 0
    let n8 = n / 8 * 8
    for i in stride(from: 0, to: n8, by: 8) { acc += UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self) * widen(b + i) }
    for i in n8..<n { tail += a[i] * Float(b[i]) }
    return acc.sum() + tail
}

/// y = x rounded to the nearest half (ties to even), kept in Float.
@inline(__always) func roundToHalf(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, _ n: Int) {
    let n8 = n / 8 * 8
    for i in stride(from: 0, to: n8, by: 8) {
        UnsafeMutableRawPointer(y + i).storeBytes(of: roundToHalfF16C(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)), as: SIMD8<Float>.self)
    }
    for i in n8..<n { y[i] = Float(Float16(x[i])) }
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

