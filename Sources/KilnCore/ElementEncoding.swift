// Element encodings of float arrays, shared by the conformance suite, the benches and the tests.

/// Bytes of `values` stored as `dtype` (f32, f16 or bf16; round to nearest even).
public func encode(_ values: [Float], _ dtype: DType) -> [UInt8] {
    switch dtype {
    case .f32: return values.withUnsafeBytes { Array($0) }
    case .bf16: return values.map(floatToBF16).withUnsafeBytes { Array($0) }
    case .f16: return values.map(floatToHalf).withUnsafeBytes { Array($0) }
    default: preconditionFailure("encode: \(dtype)")
    }
}

public func decode(_ bytes: [UInt8], _ dtype: DType) -> [Float] {
    bytes.withUnsafeBytes { p in
        switch dtype {
        case .f32: return Array(p.bindMemory(to: Float.self))
        case .bf16: return p.bindMemory(to: UInt16.self).map(bf16ToFloat)
        case .f16: return p.bindMemory(to: UInt16.self).map(halfToFloat)
        default: preconditionFailure("decode: \(dtype)")
        }
    }
}

/// The values `dtype` can hold nearest to `values`.
public func roundTo(_ values: [Float], _ dtype: DType) -> [Float] { dtype == .f32 ? values : decode(encode(values, dtype), dtype) }
