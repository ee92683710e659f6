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
    /// OCP FP8 E4M3 bytes (safetensors `F8_E4M3`); as a matrix only with a block-scale tensor (`WeightFormat.fp8E4M3`).
    case f8_e4m3

    /// Elements per block (1 for plain types).
    public var blockSize: Int {
        switch self {
        case .q8_0, .q4_0, .q4_1: return 32
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
        }
    }
    /// Bytes needed for `count` elements; nil when `count` is not a whole number of blocks.
    public func byteCount(elements count: Int) -> Int? {
        guard count >= 0, count % blockSize == 0 else { return nil }
        let (r, o) = (count / blockSize).multipliedReportingOverflow(by: blockBytes)
        return o ? nil : r
    }
}
