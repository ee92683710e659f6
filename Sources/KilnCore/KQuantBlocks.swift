/// Dequantization of GGML's 5-bit legacy blocks, K-quants and 4-bit i-quants: the one CPU reference of these
/// formats (called through `QuantBlocks.dequantize`). Layouts are ggml's (`ggml-common.h`); every value is computed
/// with the same f32 operations in the same order as the `gguf` Python package's `quants.py`, so results agree bit
/// for bit (KQuantDequantizeTests checks that against the package itself).
///
///  - Q5_0 (32, 22 B): f16 d, u32 qh, u8 qs[16]; q = nibble | (bit j of qh) << 4; x = d * (q - 16)
///  - Q5_1 (32, 24 B): f16 d, f16 m, u32 qh, u8 qs[16]; x = d * q + m
///  - IQ4_NL (32, 18 B): f16 d, u8 qs[16]; x = d * kvalues[nibble]
///  - Q2_K (256, 84 B): u8 scales[16] (low nibble scale, high nibble minimum of each 16 elements), u8 qs[64], f16 d,
///    f16 dmin; element e = 128h + 32s + l has code (qs[32h + l] >> 2s) & 3; x = (d * sc) * q - dmin * m
///  - Q3_K (256, 110 B): u8 hmask[32], u8 qs[64], u8 scales[12] (16 packed 6-bit scales), f16 d; element e = 128h + 32s + l
///    has low bits (qs[32h + l] >> 2s) & 3 and subtracts 4 unless bit e/32 of hmask[l] is set; scale j (of elements
///    16j..<16j+16) = (low nibble j | 2 high bits j << 4) - 32 (`scaleQ3K`); x = (d * scale) * q
///  - Q4_K (256, 144 B): f16 d, f16 dmin, u8 scales[12] (8 packed 6-bit scales and mins), u8 qs[128];
///    sub-block j (32 elements) of nibbles: qs[32·(j/2) ..< 32·(j/2)+32], low nibbles for even j, high for odd;
///    x = (d * sc_j) * q - dmin * m_j
///  - Q5_K (256, 176 B): Q4_K's header, u8 qh[32], u8 qs[128]; the fifth bit of element l of sub-block j is bit j of qh[l]
///  - Q6_K (256, 210 B): u8 ql[128], u8 qh[64], int8 scales[16], f16 d; x = (d * scales[e/16]) * (q - 32)
///  - IQ4_XS (256, 136 B): f16 d, u16 scales_h, u8 scales_l[4], u8 qs[128]; sub-block scale
///    ls_j = (scales_l nibble j | 2 bits j of scales_h << 4) - 32; x = (d * ls_j) * kvalues[nibble]
///  Nibbles of a 32-element block (or sub-block of 16 bytes) are low nibbles for elements 0..15, high for 16..31.
extension QuantBlocks {
    /// IQ4_NL's and IQ4_XS's fixed non-linear 16-value table (ggml's `kvalues_iq4nl`).
    public static let iq4Values: [Int8] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]

    /// Q4_K's and Q5_K's 6-bit scale and minimum of sub-block `j` (0..<8) from the 12 packed bytes (ggml's `get_scale_min_k4`).
    @inlinable public static func scaleMinK4(_ j: Int, _ s: UnsafePointer<UInt8>) -> (scale: UInt8, min: UInt8) {
        if j < 4 { return (s[j] & 63, s[j + 4] & 63) }
        return ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }

    /// Q3_K's signed 6-bit scale `j` (0..<16) from its 12 packed bytes: the low nibble is nibble j of bytes 0..<8
    /// (low nibbles first), the two high bits are bits 2·(j/4) of byte 8 + j%4.
    @inlinable public static func scaleQ3K(_ j: Int, _ s: UnsafePointer<UInt8>) -> Int {
        let low = (s[j % 8] >> UInt8(4 * (j / 8))) & 0xF
        let high = (s[8 + j % 4] >> UInt8(2 * (j / 4))) & 3
        return Int(low | high << 4) - 32
    }

    /// `count` elements (whole blocks) of one of the formats above; returns false for any other type.
    static func dequantizeExtended(_ type: DType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, count: Int) -> Bool {
        let bytes = type.blockBytes, size = type.blockSize
        for b in 0..<(count / max(size, 1)) {
            let blk = src + b * bytes, out = dst + b * size
            let u8 = blk.assumingMemoryBound(to: UInt8.self)
            @inline(__always) func half(_ offset: Int) -> Float { halfToFloat(blk.loadUnaligned(fromByteOffset: offset, as: UInt16.self)) }
            switch type {
            case .q5_0, .q5_1:
                let hasMin = type == .q5_1
                let d = half(0), m: Float = hasMin ? half(2) : 0
                let headerBytes = hasMin ? 4 : 2
                let qh = blk.loadUnaligned(fromByteOffset: headerBytes, as: UInt32.self)
                let qs = u8 + headerBytes + 4
                for j in 0..<32 {
                    let nibble = j < 16 ? qs[j] & 0xF : qs[j - 16] >> 4
                    let q = nibble | UInt8((qh >> UInt32(j)) & 1) << 4
                    out[j] = hasMin ? d * Float(q) + m : d * Float(Int(q) - 16)
                }
            case .iq4_nl:
                let d = half(0), qs = u8 + 2
                for j in 0..<16 {
                    out[j] = d * Float(iq4Values[Int(qs[j] & 0xF)])
                    out[j + 16] = d * Float(iq4Values[Int(qs[j] >> 4)])
                }
            case .q2_k:
                let scales = u8, qs = u8 + 16, d = half(80), dmin = half(82)
                for e in 0..<256 {
                    let sc = scales[e / 16]
                    let q = (qs[32 * (e / 128) + e % 32] >> UInt8(2 * ((e % 128) / 32))) & 3
                    out[e] = (d * Float(sc & 0xF)) * Float(q) - dmin * Float(sc >> 4)
                }
            case .q3_k:
                let hmask = u8, qs = u8 + 32, scales = u8 + 96, d = half(108)
                for e in 0..<256 {
                    let low = Int((qs[32 * (e / 128) + e % 32] >> UInt8(2 * ((e % 128) / 32))) & 3)
                    let q = (hmask[e % 32] >> UInt8(e / 32)) & 1 == 1 ? low : low - 4
                    out[e] = (d * Float(scaleQ3K(e / 16, scales))) * Float(q)
                }
            case .q4_k, .q5_k:
                let d = half(0), dmin = half(2), scales = u8 + 4
                let fifthBits: UnsafePointer<UInt8>? = type == .q5_k ? u8 + 16 : nil
                let qs = u8 + (type == .q5_k ? 48 : 16)
                for j in 0..<8 {
                    let (sc, mn) = scaleMinK4(j, scales)
                    let dj = d * Float(sc), mj = dmin * Float(mn)
                    let chunk = qs + 32 * (j / 2), shift = UInt8(4 * (j % 2))
                    for l in 0..<32 {
                        var q = (chunk[l] >> shift) & 0xF
                        if let qh = fifthBits { q |= ((qh[l] >> UInt8(j)) & 1) << 4 }
                        out[32 * j + l] = dj * Float(q) - mj
                    }
                }
            case .q6_k:
                let ql = u8, qh = u8 + 128, d = half(208)
                let scales = UnsafeRawPointer(u8 + 192).assumingMemoryBound(to: Int8.self)
                for e in 0..<256 {
                    let h = e / 128, inHalf = e % 128
                    let low = (ql[64 * h + inHalf % 64] >> UInt8(4 * (inHalf / 64))) & 0xF
                    let high = (qh[32 * h + inHalf % 32] >> UInt8(2 * (inHalf / 32))) & 3
                    let q = Int(low | high << 4) - 32
                    out[e] = (d * Float(scales[e / 16])) * Float(q)
                }
            case .iq4_xs:
                let d = half(0), scalesHigh = blk.loadUnaligned(fromByteOffset: 2, as: UInt16.self)
                let scalesLow = u8 + 4, qs = u8 + 8
                for j in 0..<8 {
                    let low = (scalesLow[j / 2] >> UInt8(4 * (j % 2))) & 0xF
                    let high = UInt8((scalesHigh >> UInt16(2 * j)) & 3)
                    let dj = d * Float(Int(low | high << 4) - 32)
                    let sub = qs + 16 * j
                    for l in 0..<16 {
                        out[32 * j + l] = dj * Float(iq4Values[Int(sub[l] & 0xF)])
                        out[32 * j + l + 16] = dj * Float(iq4Values[Int(sub[l] >> 4)])
                    }
                }
            default:
                return false
            }
        }
        return true
    }
}
