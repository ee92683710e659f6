import Foundation

/// The one error type every layer throws for bad input or a failed operation.
///
/// The message is a single line that names what is wrong and where (file, tensor, field),
/// so the CLI can print it as is and exit non-zero.
public struct KilnError: Error, CustomStringConvertible, LocalizedError, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
    public var errorDescription: String? { message }
}

/// Element types of tensors, as stored in model files and used by backends.
public enum DType: String, Sendable, CaseIterable {
    case f32, f16, bf16, q8_0, q4_0, q4_1, i32, i64, u8
    /// GGML block types beyond the first three (layouts in `QuantBlocks`): 32-element Q5_0, Q5_1, IQ4_NL and
    /// 256-element super-blocks Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS.
    case q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs
    /// OCP FP8 E4M3 bytes (safetensors `F8_E4M3`); as a matrix only with a block-scale tensor (`WeightFormat.fp8E4M3`).
    case f8_e4m3

    /// Elements per block (1 for plain types).
    public var blockSize: Int {
        switch self {
        case .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .iq4_nl: return 32
        case .q2_k, .q3_k, .q4_k, .q5_k, .q6_k, .iq4_xs: return 256
        default: return 1
        }
    }
    /// Bytes per block (per element for plain types).
    public var blockBytes: Int {
        switch self {
        case .f32, .i32: return 4
        case .f16, .bf16: return 2
        case .i64: return 8
        case .u8, .f8_e4m3: return 1
        case .q8_0: return 34   // f16 scale + 32 x int8
        case .q4_0: return 18   // f16 scale + 16 bytes of nibbles
        case .q4_1: return 20   // f16 scale + f16 min + 16 bytes of nibbles
        case .q5_0: return 22   // f16 d + u32 fifth bits + 16 bytes of nibbles
        case .q5_1: return 24   // f16 d + f16 m + u32 fifth bits + 16 bytes of nibbles
        case .iq4_nl: return 18 // f16 d + 16 bytes of table indices
        case .q2_k: return 84   // 16 bytes of 4-bit scale|min pairs + 64 bytes of 2-bit codes + f16 d + f16 dmin
        case .q3_k: return 110  // 32 bytes of high bits + 64 bytes of 2-bit codes + 12 bytes of 6-bit scales + f16 d
        case .q4_k: return 144  // f16 d + f16 dmin + 12 bytes of 6-bit scales/mins + 128 bytes of nibbles
        case .q5_k: return 176  // Q4_K's + 32 bytes of fifth bits before the nibbles
        case .q6_k: return 210  // 128 bytes low nibbles + 64 bytes high 2 bits + 16 int8 scales + f16 d
        case .iq4_xs: return 136 // f16 d + u16 high scale bits + 4 bytes low scale nibbles + 128 bytes of indices
        }
    }
    /// Bytes needed for `count` elements; nil when `count` is not a whole number of blocks.
    public func byteCount(elements count: Int) -> Int? {
        guard count >= 0, count % blockSize == 0 else { return nil }
        let (r, o) = (count / blockSize).multipliedReportingOverflow(by: blockBytes)
        return o ? nil : r
    }
}
