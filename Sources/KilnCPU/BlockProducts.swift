import KilnCore

/// The fast product of Q8_0 / Q4_0 / Q4_1 weights against `Q8Activations`, the one `apply` runs; `referenceQuantRows`
/// (LinearKernels.swift) is the plain version it is tested against.
///
/// Each 32-element block is unpacked once into two `SIMD16<Int16>` vectors (the permuted order of `Q8Activations`, so
/// a block's 32 activations are two vectors too) and serves a tile of eight (then four) tokens. The integer dot of a block is exact
/// and takes seven instructions on 256-bit registers (`blockDot`); its scale product is one FMA into eight
/// float lanes per token, reduced once per output. Q4_0's -8 is folded into the weights (exact in 16 bits), so only
/// Q4_1's minimum needs the activations' block sums. Block scales are converted from half by F16C (no table lookups).
extension LinearWeight {
    @inline(__always)
    func quantRows<F: Q8BlockProduct>(_: F.Type, _ range: Range<Int>, _ act: Q8Activations, _ tokens: Int,
                                      _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
        let nb = cols / 32
        let qStride = act.maxCols
        let q = UnsafeRawPointer(act.q), d = act.d, s = act.s, dT = act.dByBlock, sT = act.sByBlock, maxT = act.maxTokens
        for r in range {
            let row = data + r * rowBytes
            var t = 0
            while t + 8 <= tokens {
                var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>(), acc2 = SIMD8<Float>(), acc3 = SIMD8<Float>()
                var acc4 = SIMD8<Float>(), acc5 = SIMD8<Float>(), acc6 = SIMD8<Float>(), acc7 = SIMD8<Float>()
                let a0 = q + 2 * t * qStride
                for b in 0..<nb {
                    let blk = row + b * F.bytes
                    let (w0, w1) = unpackWide(F.self, blk)
                    let ab = a0 + 64 * b, ib = b * maxT + t, dw = halfToFloatF16C(blk)
                    // The eight tokens' block scales times the weight's, in two multiplies.
                    let dd0 = UnsafeRawPointer(dT + ib).loadUnaligned(as: SIMD4<Float>.self) * dw
                    let dd1 = UnsafeRawPointer(dT + ib + 4).loadUnaligned(as: SIMD4<Float>.self) * dw
                    acc0.addProduct(SIMD8<Float>(blockDot(F.self, w0, w1, ab)), dd0[0])
                    acc1.addProduct(SIMD8<Float>(blockDot(F.self, w0, w1, ab + 2 * qStride)), dd0[1])
                    acc2.addProduct(SIMD8<Float>(blockDot(F.self, w0, w1, ab + 4 * qStride)), dd0[2])
                    acc3.addProduct(SIMD8<Float>(blockDot(F.self, w0, w1, ab + 6 * qStride)), dd0[3])
                    acc4.addProduct(SIMD8<Float>(blockDot(F.self, w0, w1, ab + 8 * qStride)), dd1[0])
                    acc5.addProduct(SIMD8<Float>(blockDot(F.self, w0, w1, ab + 10 * qStride)), dd1[1])
                    acc6.addProduct(SIMD8<Float>(blockDot(F.self, w0, w1, ab + 12 * qStride)), dd1[2])
                    acc7.addProduct(SIMD8<Float>(blockDot(F.self, w0, w1, ab + 14 * qStride)), dd1[3])
                }
                // Q4_1's minimum times the activations' block sums, in its own loop to keep the one above in registers.
                var ex0 = SIMD4<Float>(), ex1 = SIMD4<Float>()
                if F.hasMin {
                    for b in 0..<nb {
                        let mw = halfToFloatF16C(row + b * F.bytes + 2), ib = b * maxT + t
                        ex0.addProduct(UnsafeRawPointer(sT + ib).loadUnaligned(as: SIMD4<Float>.self), mw)
                        ex1.addProduct(UnsafeRawPointer(sT + ib + 4).loadUnaligned(as: SIMD4<Float>.self), mw)
                    }
                }
                out[t * outStride + r] = acc0.sum() + ex0[0]
                out[(t + 1) * outStride + r] = acc1.sum() + ex0[1]
                out[(t + 2) * outStride + r] = acc2.sum() + ex0[2]
                out[(t + 3) * outStride + r] = acc3.sum() + ex0[3]
                out[(t + 4) * outStride + r] = acc4.sum() + ex1[0]
                out[(t + 5) * outStride + r] = acc5.sum() + ex1[1]
                out[(t + 6) * outStride + r] = acc6.sum() + ex1[2]
                out[(t + 7) * outStride + r] = acc7.sum() + ex1[3]
                t += 8
            }
            while t + 4 <= tokens {
                var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>(), acc2 = SIMD8<Float>(), acc3 = SIMD8<Float>()
                var ex = SIMD4<Float>()
                let a0 = q + 2 * t * qStride
                for b in 0..<nb {
                    let blk = row + b * F.bytes
                    let (w0, w1) = unpackWide(F.self, blk)
                    let ab = a0 + 64 * b, ib = b * maxT + t
                    // The four tokens' block scales times the weight's, in one multiply.
                    let dd = UnsafeRawPointer(dT + ib).loadUnaligned(as: SIMD4<Float>.self) * halfToFloatF16C(blk)
                    acc0.addProduct(SIMD8<Float>(blockDot(F.self, w0, w1, ab)), dd[0])
                    acc1.addProduct(SIMD8<Float>(blockDot(F.self, w0, w1, ab + 2 * qStride)), dd[1])
                    acc2.addProduct(SIMD8<Float>(blockDot(F.self, w0, w1, ab + 4 * qStride)), dd[2])
                    acc3.addProduct(SIMD8<Float>(blockDot(F.self, w0, w1, ab + 6 * qStride)), dd[3])
                    if F.hasMin { ex.addProduct(UnsafeRawPointer(sT + ib).loadUnaligned(as: SIMD4<Float>.self), halfToFloatF16C(blk + 2)) }
                }
                out[t * outStride + r] = acc0.sum() + ex[0]
                out[(t + 1) * outStride + r] = acc1.sum() + ex[1]
                out[(t + 2) * outStride + r] = acc2.sum() + ex[2]
                out[(t + 3) * outStride + r] = acc3.sum() + ex[3]
                t += 4
            }
            while t < tokens {
                var acc = SIMD8<Float>(), ex: Float = 0
                let a0 = q + 2 * t * qStride, i0 = t * (qStride / 32)
                for b in 0..<nb {
                    let blk = row + b * F.bytes
                    let (w0, w1) = unpackWide(F.self, blk)
                    acc.addProduct(SIMD8<Float>(blockDot(F.self, w0, w1, a0 + 64 * b)), halfToFloatF16C(blk) * d[i0 + b])
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
/// Four products still fit in 16 bits for 4- and 5-bit weights (Q4_0/Q4_1: 4 · 15 · 127; Q5_0/Q5_1: 4 · 31 · 127), so
/// their pair sum is formed in the upper half of each 32-bit lane and shifted down (three instructions); 8-bit weight
/// values (Q8_0, IQ4_NL's table, any other format) may not (4 · 128 · 127), so their halves are sign-extended
/// separately (four).
/// (Written this way rather than as the pmaddwd pattern, x.evenHalf · y.evenHalf + x.oddHalf · y.oddHalf: LLVM sees
/// through the unpacking into that pattern and emits ~50 shuffles per block instead of ~20 instructions.)
@inline(__always) private func blockDot<F: Q8BlockProduct>(_: F.Type, _ w0: SIMD16<Int16>, _ w1: SIMD16<Int16>, _ a: UnsafeRawPointer) -> SIMD8<Int32> {
    let s = w0 &* a.loadUnaligned(as: SIMD16<Int16>.self) &+ w1 &* a.loadUnaligned(fromByteOffset: 32, as: SIMD16<Int16>.self)
    let s32 = unsafeBitCast(s, to: SIMD8<Int32>.self)
    switch F.block {
    case .q4_0, .q4_1, .q5_0, .q5_1: return (s32 &+ (s32 &<< 16)) &>> 16
    default: return ((s32 &<< 16) &>> 16) &+ (s32 &>> 16)
    }
}

/// The IEEE half at `p` as a Float (one vcvtph2ps where F16C is available).
@inline(__always) func halfToFloatF16C(_ p: UnsafeRawPointer) -> Float {
    Float(Float16(bitPattern: p.loadUnaligned(as: UInt16.self)))
}
