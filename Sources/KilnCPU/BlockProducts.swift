import KilnCore

/// The fast product of Q8_0 / Q4_0 / Q4_1 weights against `Q8Activations`, the one `apply` runs; `referenceQuantRows`
/// (LinearKernels.swift) is the plain version it is tested against.
///
/// Each 32-element block is unpacked once into two `SIMD16<Int16>` vectors (the permuted order of `Q8Activations`, so
/// a block's 32 activations are two vectors too) and serves a tile of four tokens. The integer dot of a block is exact
/// and takes seven instructions on 256-bit registers (`blockDot`); its scale product is one FMA into eight
/// float lanes per token, reduced once per output. Q4_0's -8 is folded into the weights (exact in 16 bits), so only
/// Q4_1's minimum needs the activations' block sums. Block scales are converted from half by F16C (no table lookups).
extension LinearWeight {
    @inline(__always)
    func quantRows<F: Q8BlockProduct>(_: F.Type, _ range: Range<Int>, _ act: Q8Activations, _ tokens: Int,
                                      _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
        let nb = cols / 32
        let qStride = act.maxCols, bStride = act.maxCols / 32
        let q = UnsafeRawPointer(act.q), d = act.d, s = act.s
        for r in range {
            let row = data + r * rowBytes
            var t = 0
            while t + 4 <= tokens {
                var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>(), acc2 = SIMD8<Float>(), acc3 = SIMD8<Float>()
                var ex = SIMD4<Float>()
                let a0 = q + 2 * t * qStride, i0 = t * bStride
                for b in 0..<nb {
                    let blk = row + b * F.bytes
                    let (w0, w1) = unpackWide(F.self, blk)
                    let dw = halfToFloatF16C(blk)
                    let ab = a0 + 64 * b, ib = i0 + b
                    acc0.addProduct(SIMD8<Float>(blockDot(w0, w1, ab)), dw * d[ib])
                    acc1.addProduct(SIMD8<Float>(blockDot(w0, w1, ab + 2 * qStride)), dw * d[ib + bStride])
                    acc2.addProduct(SIMD8<Float>(blockDot(w0, w1, ab + 4 * qStride)), dw * d[ib + 2 * bStride])
                    acc3.addProduct(SIMD8<Float>(blockDot(w0, w1, ab + 6 * qStride)), dw * d[ib + 3 * bStride])
                    if F.hasMin {
                        let mins = SIMD4<Float>(s[ib], s[ib + bStride], s[ib + 2 * bStride], s[ib + 3 * bStride])
                        ex.addProduct(mins, halfToFloatF16C(blk + 2))
                    }
                }
                out[t * outStride + r] = acc0.sum() + ex[0]
                out[(t + 1) * outStride + r] = acc1.sum() + ex[1]
                out[(t + 2) * outStride + r] = acc2.sum() + ex[2]
                out[(t + 3) * outStride + r] = acc3.sum() + ex[3]
                t += 4
            }
            while t < tokens {
                var acc = SIMD8<Float>(), ex: Float = 0
                let a0 = q + 2 * t * qStride, i0 = t * bStride
                for b in 0..<nb {
                    let blk = row + b * F.bytes
                    let (w0, w1) = unpackWide(F.self, blk)
                    acc.addProduct(SIMD8<Float>(blockDot(w0, w1, a0 + 64 * b)), halfToFloatF16C(blk) * d[i0 + b])
                    if F.hasMin { ex.addProduct(halfToFloatF16C(blk + 2), s[i0 + b]) }
                }
                out[t * outStride + r] = acc.sum() + ex
                t += 1
            }
        }
    }
}

/// A block's 32 weights as two 16-lane vectors (slots 0…15 and 16…31 of the permuted order), with Q4_0's offset applied.
@inline(__always) private func unpackWide<F: Q8BlockProduct>(_: F.Type, _ blk: UnsafeRawPointer) -> (SIMD16<Int16>, SIMD16<Int16>) {
    let w = F.unpack(blk)
    var lo = SIMD16<Int16>(lowHalf: w.0, highHalf: w.1), hi = SIMD16<Int16>(lowHalf: w.2, highHalf: w.3)
    if F.offset != 0 {
        let o = SIMD16<Int16>(repeating: Int16(F.offset))
        lo &+= o; hi &+= o
    }
    return (lo, hi)
}

/// Σ w·a over one block as eight 32-bit partial sums. Two products summed in 16 bits cannot overflow (4-bit weights:
/// 2 · 15 · 127; 8-bit: 2 · 128 · 127 < 32768), so the block is two pmullw, one paddw and one widening of lane pairs.
/// (Written this way rather than as the pmaddwd pattern, x.evenHalf · y.evenHalf + x.oddHalf · y.oddHalf: LLVM sees
/// through the unpacking into that pattern and emits ~50 shuffles per block instead of ~20 instructions.)
@inline(__always) private func blockDot(_ w0: SIMD16<Int16>, _ w1: SIMD16<Int16>, _ a: UnsafeRawPointer) -> SIMD8<Int32> {
    let s = w0 &* a.loadUnaligned(as: SIMD16<Int16>.self) &+ w1 &* a.loadUnaligned(fromByteOffset: 32, as: SIMD16<Int16>.self)
    let s32 = unsafeBitCast(s, to: SIMD8<Int32>.self)
    return ((s32 &<< 16) &>> 16) &+ (s32 &>> 16)
}

/// The IEEE half at `p` as a Float (one vcvtph2ps where F16C is available).
@inline(__always) func halfToFloatF16C(_ p: UnsafeRawPointer) -> Float {
    Float(Float16(bitPattern: p.loadUnaligned(as: UInt16.self)))
}
