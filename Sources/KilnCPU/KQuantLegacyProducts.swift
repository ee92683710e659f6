import KilnCore

// The 32-element GGUF blocks that llama-quantize puts into K-quant files where a row is not whole super-blocks
// (Q5_0, Q5_1) and IQ4_NL: products against the Q8_0/Q8_1 activations of `Q8Activations` through `Q8BlockProduct`,
// as llama.cpp pairs them (`ggml_vec_dot_q5_0_q8_0`, `_q5_1_q8_1`, `_iq4_nl_q8_0`). Q5_0's -16 offset goes through
// the activations' block sums (like Q4_0's -8), Q5_1's minimum through their `s` (like Q4_1's).

/// The fifth bits of a 32-element block (bit j of `qh` for element j) as 16 in the permuted order, ready to OR in.
@inline(__always) private func fifthBits(_ qh: UInt32) -> BlockVectors {
    let evenMasks = SIMD8<Int16>(1 << 0, 1 << 2, 1 << 4, 1 << 6, 1 << 8, 1 << 10, 1 << 12, Int16(bitPattern: 1 << 14))
    let oddMasks = SIMD8<Int16>(1 << 1, 1 << 3, 1 << 5, 1 << 7, 1 << 9, 1 << 11, 1 << 13, Int16(bitPattern: 1 << 15))
    let low = SIMD8<Int16>(repeating: Int16(truncatingIfNeeded: qh)), high = SIMD8<Int16>(repeating: Int16(truncatingIfNeeded: qh >> 16))
    let zero = SIMD8<Int16>(), sixteen = SIMD8<Int16>(repeating: 16)
    @inline(__always) func bits(_ v: SIMD8<Int16>, _ m: SIMD8<Int16>) -> SIMD8<Int16> { zero.replacing(with: sixteen, where: v & m .!= zero) }
    return (bits(low, evenMasks), bits(low, oddMasks), bits(high, evenMasks), bits(high, oddMasks))
}

@inline(__always) private func fiveBitCodes(_ qs: UnsafeRawPointer, _ qh: UInt32) -> BlockVectors {
    let n = unpackNibblePairs(qs), h = fifthBits(qh)
    return (n.0 | h.0, n.1 | h.1, n.2 | h.2, n.3 | h.3)
}

/// Codes up to 31: four products per Int16 lane stay below 2¹⁵ (31 · 127 · 4), summed before widening.
@inline(__always) private func dotSmallCodes(_ w: BlockVectors, _ a: UnsafePointer<Int16>) -> SIMD4<Int32> {
    let p = UnsafeRawPointer(a)
    let s = w.0 &* p.loadUnaligned(as: SIMD8<Int16>.self) &+ w.1 &* p.loadUnaligned(fromByteOffset: 16, as: SIMD8<Int16>.self)
        &+ w.2 &* p.loadUnaligned(fromByteOffset: 32, as: SIMD8<Int16>.self) &+ w.3 &* p.loadUnaligned(fromByteOffset: 48, as: SIMD8<Int16>.self)
    return pairwiseWiden(s)
}

enum Q5_0Blocks: Q8BlockProduct {
    static var block: WeightFormat.GGUFBlock { .q5_0 }
    static var bytes: Int { 22 }
    static var hasMin: Bool { false }
    static var offset: Float { -16 }
    @inline(__always) static func unpack(_ blk: UnsafeRawPointer) -> BlockVectors {
        fiveBitCodes(blk + 6, blk.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
    }
    @inline(__always) static func dot(_ w: BlockVectors, _ a: UnsafePointer<Int16>) -> SIMD4<Int32> { dotSmallCodes(w, a) }
}

enum Q5_1Blocks: Q8BlockProduct {
    static var block: WeightFormat.GGUFBlock { .q5_1 }
    static var bytes: Int { 24 }
    static var hasMin: Bool { true }
    static var offset: Float { 0 }
    @inline(__always) static func unpack(_ blk: UnsafeRawPointer) -> BlockVectors {
        fiveBitCodes(blk + 8, blk.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
    }
    @inline(__always) static func dot(_ w: BlockVectors, _ a: UnsafePointer<Int16>) -> SIMD4<Int32> { dotSmallCodes(w, a) }
}

enum IQ4_NLBlocks: Q8BlockProduct {
    static var block: WeightFormat.GGUFBlock { .iq4_nl }
    static var bytes: Int { 18 }
    static var hasMin: Bool { false }
    static var offset: Float { 0 }
    @inline(__always) static func unpack(_ blk: UnsafeRawPointer) -> BlockVectors { nonLinearValues(unpackNibblePairs(blk + 2)) }
    /// Table values reach -127: two products per Int16 lane (≤ 2 · 127²), widened per pair of vectors.
    @inline(__always) static func dot(_ w: BlockVectors, _ a: UnsafePointer<Int16>) -> SIMD4<Int32> {
        let p = UnsafeRawPointer(a)
        return pairwiseWiden(w.0 &* p.loadUnaligned(as: SIMD8<Int16>.self) &+ w.1 &* p.loadUnaligned(fromByteOffset: 16, as: SIMD8<Int16>.self))
            &+ pairwiseWiden(w.2 &* p.loadUnaligned(fromByteOffset: 32, as: SIMD8<Int16>.self) &+ w.3 &* p.loadUnaligned(fromByteOffset: 48, as: SIMD8<Int16>.self))
    }
}
