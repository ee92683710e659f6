import KilnCore

/// The CPU products of GGML's 256-element super-block formats (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS) against Q8_K
/// activations, with llama.cpp's arithmetic (`ggml_vec_dot_*_q8_K`): per super-block, integer products of the codes
/// with the activation quants, each 16 or 32 of them times the sub-block's integer scale; the weights' minimums
/// (Q2_K, Q4_K, Q5_K) through the activations' 16-element sums (`bsums`), never per element; then one multiply by
/// the weight scale `d` (and `dmin`) and the activation scale. Offsets of signed codes (Q6_K's -32, Q3_K's -4 unless
/// its hmask bit is set) are applied while unpacking, so every code is a small signed Int16.
///
/// A weight super-block is unpacked once (into codes in the activations' permuted order and 16 per-group scales)
/// and serves up to four tokens, so prefill pays the unpacking once per four tokens.
enum KQuantProducts {
    /// The formats whose product reads Q8_K activations.
    static let superBlockFormats: Set<WeightFormat.GGUFBlock> = [.q2_k, .q3_k, .q4_k, .q5_k, .q6_k, .iq4_xs]
}

/// One weight super-block unpacked for the product (scratch owned by the row loop).
struct UnpackedSuperBlock {
    let codes: UnsafeMutablePointer<Int16>   // [256] signed codes, permuted per 32 like `Q8KActivations`
    let scales: UnsafeMutablePointer<Float>  // [16] integer scale of each 16 elements (or of each 32: `scalePer32`)
    let mins: UnsafeMutablePointer<Float>    // [16] integer minimum of each 16 elements (formats with minimums)
}

/// How one super-block format unpacks. Specialised at compile time so each format gets its own loop.
protocol SuperBlockProduct {
    static var block: WeightFormat.GGUFBlock { get }
    /// The product subtracts dmin · Σ mins · bsums (Q2_K, Q4_K, Q5_K).
    static var hasMins: Bool { get }
    /// One scale per 32 elements, with four products per Int16 lane in range (|code| · 127 · 4 < 2¹⁵): `scales[0..<8]`.
    /// Otherwise one scale per 16 elements, two products per lane (IQ4_XS's 127 · 127 · 2 still fits).
    static var scalePer32: Bool { get }
    /// Unpacks the block at `blk`; returns the f16 scales d and dmin (0 without minimums) as floats.
    static func unpack(_ blk: UnsafeRawPointer, into u: UnpackedSuperBlock) -> (d: Float, dmin: Float)
}

extension LinearWeight {
    /// Rows `range` of a super-block matrix against Q8_K activations `act` (see `KQuantProducts`).
    func superBlockRows(_ block: WeightFormat.GGUFBlock, _ range: Range<Int>, _ act: Q8KActivations, _ tokens: Int,
                        _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
        switch block {
        case .q2_k: superBlockRows(Q2_KBlocks.self, range, act, tokens, out, outStride)
        case .q3_k: superBlockRows(Q3_KBlocks.self, range, act, tokens, out, outStride)
        case .q4_k: superBlockRows(Q4_KBlocks.self, range, act, tokens, out, outStride)
        case .q5_k: superBlockRows(Q5_KBlocks.self, range, act, tokens, out, outStride)
        case .q6_k: superBlockRows(Q6_KBlocks.self, range, act, tokens, out, outStride)
        case .iq4_xs: superBlockRows(IQ4_XSBlocks.self, range, act, tokens, out, outStride)
        default: preconditionFailure("\(block.rawValue) is not a super-block format")
        }
    }

    /// Tokens four at a time (each unpacked super-block serves four), then the remaining tokens one by one. Every
    /// token keeps four partial sums across the row's super-blocks, added up once at the end.
    @inline(__always)
    private func superBlockRows<F: SuperBlockProduct>(_: F.Type, _ range: Range<Int>, _ act: Q8KActivations, _ tokens: Int,
                                                    _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
        let nb = cols / 256, bytes = F.block.blockBytes
        withUnsafeTemporaryAllocation(of: SIMD8<Int16>.self, capacity: 32) { codes in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 32) { floats in
                let u = UnpackedSuperBlock(codes: UnsafeMutableRawPointer(codes.baseAddress!).assumingMemoryBound(to: Int16.self),
                                           scales: floats.baseAddress!, mins: floats.baseAddress! + 16)
                for r in range {
                    let row = data + r * rowBytes
                    var t = 0
                    while t + 4 <= tokens {
                        var s0 = SIMD4<Float>(), s1 = SIMD4<Float>(), s2 = SIMD4<Float>(), s3 = SIMD4<Float>()
                        for b in 0..<nb {
                            let (d, dmin) = F.unpack(row + b * bytes, into: u)
                            s0 += superBlockDot(F.self, u, d, dmin, act, token: t, block: b)
                            s1 += superBlockDot(F.self, u, d, dmin, act, token: t + 1, block: b)
                            s2 += superBlockDot(F.self, u, d, dmin, act, token: t + 2, block: b)
                            s3 += superBlockDot(F.self, u, d, dmin, act, token: t + 3, block: b)
                        }
                        out[t * outStride + r] = s0.sum(); out[(t + 1) * outStride + r] = s1.sum()
                        out[(t + 2) * outStride + r] = s2.sum(); out[(t + 3) * outStride + r] = s3.sum()
                        t += 4
                    }
                    while t < tokens {
                        var s = SIMD4<Float>()
                        for b in 0..<nb {
                            let (d, dmin) = F.unpack(row + b * bytes, into: u)
                            s += superBlockDot(F.self, u, d, dmin, act, token: t, block: b)
                        }
                        out[t * outStride + r] = s.sum()
                        t += 1
                    }
                }
            }
        }
    }
}

/// One unpacked super-block against token `t`'s super-block `b`, as four partial sums:
/// d_act · (d · Σ scale · codes · quants − dmin · Σ mins · bsums).
@inline(__always) private func superBlockDot<F: SuperBlockProduct>(_: F.Type, _ u: UnpackedSuperBlock, _ d: Float, _ dmin: Float,
                                                                  _ act: Q8KActivations, token t: Int, block b: Int) -> SIMD4<Float> {
    let a = act.q + t * act.maxCols + 256 * b
    var v = d * (F.scalePer32 ? dotPer32(u, a) : dotPer16(u, a))
    if F.hasMins { v -= dmin * minimumsDot(u.mins, act.bsums + t * (act.maxCols / 16) + 16 * b) }
    return act.d[t * (act.maxCols / 256) + b] * v
}

/// Σ over 16 groups of 16 of scale · Σ code · activation: two products per Int16 lane, widened once per group.
/// Every term is an integer below 2²⁴ in magnitude (≤ 32258 · 128), so each is exact in f32.
@inline(__always) private func dotPer16(_ u: UnpackedSuperBlock, _ a: UnsafePointer<Int16>) -> SIMD4<Float> {
    let w = UnsafeRawPointer(u.codes), x = UnsafeRawPointer(a)
    var acc = SIMD4<Float>()
    for g in 0..<16 {
        let o = 32 * g
        let s = w.load(fromByteOffset: o, as: SIMD8<Int16>.self) &* x.loadUnaligned(fromByteOffset: o, as: SIMD8<Int16>.self)
            &+ w.load(fromByteOffset: o + 16, as: SIMD8<Int16>.self) &* x.loadUnaligned(fromByteOffset: o + 16, as: SIMD8<Int16>.self)
        acc += SIMD4<Float>(pairwiseWiden(s)) * u.scales[g]
    }
    return acc
}

/// Σ over 8 groups of 32 of scale · Σ code · activation: four products per Int16 lane (Q4_K, Q5_K).
@inline(__always) private func dotPer32(_ u: UnpackedSuperBlock, _ a: UnsafePointer<Int16>) -> SIMD4<Float> {
    let w = UnsafeRawPointer(u.codes), x = UnsafeRawPointer(a)
    var acc = SIMD4<Float>()
    for g in 0..<8 {
        let o = 64 * g
        var s = w.load(fromByteOffset: o, as: SIMD8<Int16>.self) &* x.loadUnaligned(fromByteOffset: o, as: SIMD8<Int16>.self)
        s &+= w.load(fromByteOffset: o + 16, as: SIMD8<Int16>.self) &* x.loadUnaligned(fromByteOffset: o + 16, as: SIMD8<Int16>.self)
        s &+= w.load(fromByteOffset: o + 32, as: SIMD8<Int16>.self) &* x.loadUnaligned(fromByteOffset: o + 32, as: SIMD8<Int16>.self)
        s &+= w.load(fromByteOffset: o + 48, as: SIMD8<Int16>.self) &* x.loadUnaligned(fromByteOffset: o + 48, as: SIMD8<Int16>.self)
        acc += SIMD4<Float>(pairwiseWiden(s)) * u.scales[g]
    }
    return acc
}

/// Σ mins[g] · bsums[g] over the 16 groups, as four partial sums (exact in f32: |bsum| ≤ 2032, mins ≤ 63).
@inline(__always) private func minimumsDot(_ mins: UnsafePointer<Float>, _ bsums: UnsafePointer<Float>) -> SIMD4<Float> {
    let m = UnsafeRawPointer(mins), s = UnsafeRawPointer(bsums)
    @inline(__always) func part(_ i: Int) -> SIMD4<Float> {
        m.loadUnaligned(fromByteOffset: 16 * i, as: SIMD4<Float>.self) * s.loadUnaligned(fromByteOffset: 16 * i, as: SIMD4<Float>.self)
    }
    return (part(0) + part(1)) + (part(2) + part(3))
}

/// Sums the eight Int16 lanes pairwise into four Int32 lanes with sign-extending shifts (as `LinearWeight.widenPairs`;
/// a copy in this file so debug builds, which do not inline across files, keep it inline).
@inline(__always) func pairwiseWiden(_ s: SIMD8<Int16>) -> SIMD4<Int32> {
    let s32 = unsafeBitCast(s, to: SIMD4<Int32>.self)
    return ((s32 &<< 16) &>> 16) &+ (s32 &>> 16)
}

/// 32 bytes read as two vectors of byte pairs: element 2i of the 32 is the low byte of lane i of the first vector,
/// 2i+1 its high byte; elements 16.. the second vector. `field(shift, mask)` extracts a bit field of every byte in
/// the permuted order [even 0..14][odd 1..15][even 16..30][odd 17..31].
struct BytePairs {
    let low: SIMD8<Int16>, high: SIMD8<Int16>
    @inline(__always) init(_ p: UnsafeRawPointer) {
        low = p.loadUnaligned(as: SIMD8<Int16>.self); high = p.loadUnaligned(fromByteOffset: 16, as: SIMD8<Int16>.self)
    }
    @inline(__always) func field(_ shift: Int16, _ mask: Int16) -> BlockVectors {
        let m = SIMD8<Int16>(repeating: mask)
        return ((low &>> shift) & m, (low &>> (shift + 8)) & m, (high &>> shift) & m, (high &>> (shift + 8)) & m)
    }
}

@inline(__always) func store(_ v: BlockVectors, _ p: UnsafeMutablePointer<Int16>) {
    let r = UnsafeMutableRawPointer(p)
    r.storeBytes(of: v.0, as: SIMD8<Int16>.self); r.storeBytes(of: v.1, toByteOffset: 16, as: SIMD8<Int16>.self)
    r.storeBytes(of: v.2, toByteOffset: 32, as: SIMD8<Int16>.self); r.storeBytes(of: v.3, toByteOffset: 48, as: SIMD8<Int16>.self)
}

@inline(__always) private func half(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    halfTable[Int(p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))]
}

/// Q2_K: 2-bit codes; scales and minimums are the low and high nibbles of scales[16] (one per 16 elements).
enum Q2_KBlocks: SuperBlockProduct {
    static var block: WeightFormat.GGUFBlock { .q2_k }
    static var hasMins: Bool { true }
    static var scalePer32: Bool { false }
    @inline(__always) static func unpack(_ blk: UnsafeRawPointer, into u: UnpackedSuperBlock) -> (d: Float, dmin: Float) {
        let sc = blk.assumingMemoryBound(to: UInt8.self)
        for j in 0..<16 { u.scales[j] = Float(sc[j] & 0xF); u.mins[j] = Float(sc[j] >> 4) }
        for h in 0..<2 {
            let bytes = BytePairs(blk + 16 + 32 * h)
            for s in 0..<4 { store(bytes.field(Int16(2 * s), 3), u.codes + 32 * (4 * h + s)) }
        }
        return (half(blk, 80), half(blk, 82))
    }
}

/// Q3_K: 2 low bits, minus 4 where the hmask bit is clear; signed 6-bit scales (`QuantBlocks.scaleQ3K`).
enum Q3_KBlocks: SuperBlockProduct {
    static var block: WeightFormat.GGUFBlock { .q3_k }
    static var hasMins: Bool { false }
    static var scalePer32: Bool { false }
    @inline(__always) static func unpack(_ blk: UnsafeRawPointer, into u: UnpackedSuperBlock) -> (d: Float, dmin: Float) {
        let sc = (blk + 96).assumingMemoryBound(to: UInt8.self)
        for j in 0..<16 { u.scales[j] = Float(QuantBlocks.scaleQ3K(j, sc)) }
        let hmask = BytePairs(blk)
        let four = SIMD8<Int16>(repeating: 4)
        for h in 0..<2 {
            let bytes = BytePairs(blk + 32 + 32 * h)
            for s in 0..<4 {
                let g = 4 * h + s
                let lo = bytes.field(Int16(2 * s), 3), hi = hmask.field(Int16(g), 1)
                store((lo.0 &+ (hi.0 &<< 2) &- four, lo.1 &+ (hi.1 &<< 2) &- four,
                       lo.2 &+ (hi.2 &<< 2) &- four, lo.3 &+ (hi.3 &<< 2) &- four), u.codes + 32 * g)
            }
        }
        return (half(blk, 108), 0)
    }
}

/// Q4_K: nibbles; 6-bit scale and minimum per 32 elements (`QuantBlocks.scaleMinK4`).
enum Q4_KBlocks: SuperBlockProduct {
    static var block: WeightFormat.GGUFBlock { .q4_k }
    static var hasMins: Bool { true }
    static var scalePer32: Bool { true }
    @inline(__always) static func unpack(_ blk: UnsafeRawPointer, into u: UnpackedSuperBlock) -> (d: Float, dmin: Float) {
        unpackScalesAndMins(blk, u)
        for p in 0..<4 {
            let bytes = BytePairs(blk + 16 + 32 * p)
            store(bytes.field(0, 0xF), u.codes + 64 * p)
            store(bytes.field(4, 0xF), u.codes + 64 * p + 32)
        }
        return (half(blk, 0), half(blk, 2))
    }
}

/// Q5_K: Q4_K plus a fifth bit per element (bit j of qh[l] for element l of sub-block j).
enum Q5_KBlocks: SuperBlockProduct {
    static var block: WeightFormat.GGUFBlock { .q5_k }
    static var hasMins: Bool { true }
    static var scalePer32: Bool { true }
    @inline(__always) static func unpack(_ blk: UnsafeRawPointer, into u: UnpackedSuperBlock) -> (d: Float, dmin: Float) {
        unpackScalesAndMins(blk, u)
        let qh = BytePairs(blk + 16)
        for p in 0..<4 {
            let bytes = BytePairs(blk + 48 + 32 * p)
            for nibble in 0..<2 {
                let j = 2 * p + nibble
                let lo = bytes.field(Int16(4 * nibble), 0xF), hi = qh.field(Int16(j), 1)
                store((lo.0 | hi.0 &<< 4, lo.1 | hi.1 &<< 4, lo.2 | hi.2 &<< 4, lo.3 | hi.3 &<< 4), u.codes + 32 * j)
            }
        }
        return (half(blk, 0), half(blk, 2))
    }
}

/// Q4_K's and Q5_K's scales and minimums, one per 32 elements: scales[0..<8], mins duplicated per 16 for `minimumsDot`.
@inline(__always) private func unpackScalesAndMins(_ blk: UnsafeRawPointer, _ u: UnpackedSuperBlock) {
    let packed = (blk + 4).assumingMemoryBound(to: UInt8.self)
    for j in 0..<8 {
        let (sc, mn) = QuantBlocks.scaleMinK4(j, packed)
        u.scales[j] = Float(sc)
        u.mins[2 * j] = Float(mn); u.mins[2 * j + 1] = Float(mn)
    }
}

/// Q6_K: low nibble from ql, two high bits from qh, minus 32; int8 scale per 16 elements.
enum Q6_KBlocks: SuperBlockProduct {
    static var block: WeightFormat.GGUFBlock { .q6_k }
    static var hasMins: Bool { false }
    static var scalePer32: Bool { false }
    @inline(__always) static func unpack(_ blk: UnsafeRawPointer, into u: UnpackedSuperBlock) -> (d: Float, dmin: Float) {
        let sc = (blk + 192).assumingMemoryBound(to: Int8.self)
        for j in 0..<16 { u.scales[j] = Float(sc[j]) }
        let offset = SIMD8<Int16>(repeating: 32)
        for h in 0..<2 {
            let qh = BytePairs(blk + 128 + 32 * h)
            for g in 0..<4 {
                // Elements 32g..<32g+32 of this half: nibble 4·(g/2) of ql[32·(g%2) + l], bits 2g of qh[l].
                let lo = BytePairs(blk + 64 * h + 32 * (g % 2)).field(Int16(4 * (g / 2)), 0xF), hi = qh.field(Int16(2 * g), 3)
                store(((lo.0 | hi.0 &<< 4) &- offset, (lo.1 | hi.1 &<< 4) &- offset,
                       (lo.2 | hi.2 &<< 4) &- offset, (lo.3 | hi.3 &<< 4) &- offset), u.codes + 32 * (4 * h + g))
            }
        }
        return (half(blk, 208), 0)
    }
}

/// IQ4_XS: nibbles index the non-linear table; 6-bit scale minus 32 per 32 elements (kept per 16: two products per
/// lane only, as table values reach -127).
enum IQ4_XSBlocks: SuperBlockProduct {
    static var block: WeightFormat.GGUFBlock { .iq4_xs }
    static var hasMins: Bool { false }
    static var scalePer32: Bool { false }
    @inline(__always) static func unpack(_ blk: UnsafeRawPointer, into u: UnpackedSuperBlock) -> (d: Float, dmin: Float) {
        let high = blk.loadUnaligned(fromByteOffset: 2, as: UInt16.self), low = (blk + 4).assumingMemoryBound(to: UInt8.self)
        for j in 0..<8 {
            let ls = Int((low[j / 2] >> UInt8(4 * (j % 2))) & 0xF) | Int((high >> UInt16(2 * j)) & 3) << 4
            u.scales[2 * j] = Float(ls - 32); u.scales[2 * j + 1] = Float(ls - 32)
            store(nonLinearValues(unpackNibblePairs(blk + 8 + 16 * j)), u.codes + 32 * j)
        }
        return (half(blk, 0), 0)
    }
}

/// Splits 16 bytes of nibbles (low nibbles elements 0..15, high 16..31, as in a 32-element block) into the permuted order.
@inline(__always) func unpackNibblePairs(_ p: UnsafeRawPointer) -> BlockVectors {
    let v = p.loadUnaligned(as: SIMD8<Int16>.self)
    let m = SIMD8<Int16>(repeating: 0x0f)
    return (v & m, (v &>> 8) & m, (v &>> 4) & m, (v &>> 12) & m)
}

/// IQ4_NL's and IQ4_XS's table value of every nibble (a scalar lookup: the baseline x86-64 target has no byte shuffle).
@inline(__always) func nonLinearValues(_ n: BlockVectors) -> BlockVectors {
    @inline(__always) func map(_ v: SIMD8<Int16>) -> SIMD8<Int16> {
        var out = SIMD8<Int16>()
        for i in 0..<8 { out[i] = Int16(iq4Table[Int(v[i])]) }
        return out
    }
    return (map(n.0), map(n.1), map(n.2), map(n.3))
}

/// `QuantBlocks.iq4Values` in a fixed buffer (no array bounds or retain traffic in the unpacking loops).
let iq4Table: UnsafeMutablePointer<Int8> = {
    let t = UnsafeMutablePointer<Int8>.allocate(capacity: 16)
    for (i, v) in QuantBlocks.iq4Values.enumerated() { t[i] = v }
    return t
}()
