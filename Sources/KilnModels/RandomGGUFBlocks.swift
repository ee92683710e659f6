import KilnCore

/// Random blocks of GGML types that Kiln reads but has no quantizer for (the K-quants, i-quants, Q5_0/Q5_1): random
/// code bytes with finite f16 scales, for the dequantization tests and the tiny models' GGUF matrices.
public enum RandomGGUFBlocks {
    /// Byte offsets of the f16 scale fields (d, and dmin or m) inside one block of `type`; every other byte is codes
    /// or packed sub-block scales, valid whatever its value.
    public static func halfScaleOffsets(_ type: DType) -> [Int] {
        switch type {
        case .q4_1, .q5_1, .q4_k, .q5_k: return [0, 2]
        case .q6_k: return [208]
        case .q2_k: return [80, 82]
        case .q3_k: return [108]
        default: return [0]   // Q8_0, Q4_0, Q5_0, IQ4_NL, IQ4_XS: d first
        }
    }

    /// `blocks` random blocks of `type`. With `scaleMagnitude` nil the f16 scales are any finite f16 (random bits,
    /// exponent not all ones: the dequantization tests); otherwise uniform in ±[scaleMagnitude/2, scaleMagnitude]
    /// (weights of a model that stays numerically tame).
    public static func make(_ type: DType, blocks: Int, scaleMagnitude: Float?, rng: inout SplitMix64) -> [UInt8] {
        precondition(type.blockSize > 1, "\(type.rawValue) is not a block type")
        var out = [UInt8](repeating: 0, count: blocks * type.blockBytes)
        for i in out.indices { out[i] = UInt8(truncatingIfNeeded: rng.next()) }
        let offsets = halfScaleOffsets(type)
        for b in 0..<blocks {
            for o in offsets {
                let bits: UInt16
                if let mag = scaleMagnitude {
                    let v = mag * Float(0.5 + 0.5 * rng.nextUnit()) * (rng.next() & 1 == 0 ? 1 : -1)
                    bits = floatToHalf(v)
                } else {
                    var r = UInt16(truncatingIfNeeded: rng.next())
                    while r & 0x7C00 == 0x7C00 { r = UInt16(truncatingIfNeeded: rng.next()) }   // inf / NaN
                    bits = r
                }
                out[b * type.blockBytes + o] = UInt8(bits & 0xff)
                out[b * type.blockBytes + o + 1] = UInt8(bits >> 8)
            }
        }
        return out
    }

    /// Types Kiln reads but cannot encode from floats (`TensorEncoding` covers F32/F16/BF16/Q8_0/Q4_0/Q4_1).
    public static func hasNoQuantizer(_ type: DType) -> Bool {
        [.q5_0, .q5_1, .q2_k, .q3_k, .q4_k, .q5_k, .q6_k, .iq4_nl, .iq4_xs].contains(type)
    }

    /// The largest |code × sub-block scale| product a block of `type` can produce, so tiny models can pick scale
    /// magnitudes that keep their weights near ±0.1 (x = d × that at most, plus dmin × 63 (Q2_K: × 15) for the K-quants' minimums).
    public static func codeRange(_ type: DType) -> Float {
        switch type {
        case .q5_0: return 16
        case .q5_1: return 31
        case .iq4_nl: return 127
        case .q2_k: return 3 * 15
        case .q3_k: return 4 * 32
        case .q4_k: return 15 * 63
        case .q5_k: return 31 * 63
        case .q6_k: return 32 * 128
        case .iq4_xs: return 127 * 32
        default: return 127
        }
    }
}
