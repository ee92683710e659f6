import KilnCore
import KilnModels

/// A `WeightSource` held in memory: tiny models built in tests, or weights converted on the fly.
///
/// ```swift
/// let w = InMemoryWeights(config: cfg)
/// w.add("token_embd.weight", shape: [vocab, hidden], values: randomFloats)           // F32
/// w.add("blk.0.attn_q.weight", shape: [q, hidden], values: floats, as: .q4_1)        // quantized like GGML
/// let m = try w.matrix("blk.0.attn_q.weight", rows: q, cols: hidden)                  // format .gguf(.q4_1)
/// ```
public final class InMemoryWeights: WeightSource {
    public let config: ModelConfig
    public let sourcePath: String
    private var storage: [String: (shape: [Int], dtype: DType, bytes: UnsafeMutableRawBufferPointer)] = [:]
    private var used = Set<String>()

    public init(config: ModelConfig, name: String = "in-memory model") {
        self.config = config
        sourcePath = name
    }

    deinit { for (_, t) in storage { t.bytes.deallocate() } }

    /// Stores `values` (row-major, `shape`) as `dtype`; quantized types use GGML's reference rounding.
    public func add(_ name: String, shape: [Int], values: [Float], as dtype: DType = .f32) {
        precondition(values.count == shape.reduce(1, *), "\(name): \(values.count) values for shape \(shape)")
        let bytes = InMemoryWeights.encode(values, as: dtype)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 64)
        bytes.withUnsafeBytes { buf.copyMemory(from: $0) }
        if let old = storage[name] { old.bytes.deallocate() }
        storage[name] = (shape, dtype, buf)
    }

    public func has(_ name: String) -> Bool { storage[name] != nil }

    public func tensor(_ name: String, shape: [Int]) throws -> WeightTensor {
        guard let t = storage[name] else { throw KilnError("\(sourcePath): missing tensor \(name)") }
        guard t.shape == shape else { throw KilnError("\(sourcePath): tensor \(name) has shape \(t.shape), expected \(shape)") }
        used.insert(name)
        // The buffer holds at least one byte (an empty allocation has no address); hand out exactly the tensor's bytes.
        let count = t.dtype.byteCount(elements: shape.reduce(1, *)) ?? t.bytes.count
        return WeightTensor(name: name, shape: shape, dtype: t.dtype, data: UnsafeRawBufferPointer(rebasing: t.bytes[0..<count]))
    }

    public func checkAllUsed() throws {
        let unused = storage.keys.filter { !used.contains($0) }.sorted()
        if !unused.isEmpty { throw KilnError("\(sourcePath): \(unused.count) unused tensor(s): \(unused.prefix(5).joined(separator: ", "))") }
    }

    /// Encodes floats as `dtype` (quantized types need a multiple of 32 values), following ggml's reference quantizers.
    public static func encode(_ x: [Float], as dtype: DType) -> [UInt8] {
        var out: [UInt8] = []
        func appendHalf(_ v: Float) { let h = floatToHalf(v); out.append(UInt8(h & 0xff)); out.append(UInt8(h >> 8)) }
        switch dtype {
        case .f32, .f16, .bf16:
            return KilnCore.encode(x, dtype)   // the one dense encoding (ElementEncoding.swift)
        case .q8_0:
            for b in stride(from: 0, to: x.count, by: 32) {
                let blk = x[b..<(b + 32)]
                let amax = blk.map(abs).max() ?? 0
                let d = amax / 127, id: Float = d != 0 ? 1 / d : 0
                appendHalf(d)
                for v in blk { out.append(UInt8(bitPattern: Int8((v * id).rounded()))) }
            }
        case .q4_0:
            for b in stride(from: 0, to: x.count, by: 32) {
                let blk = Array(x[b..<(b + 32)])
                var maxAbs: Float = 0, maxVal: Float = 0
                for v in blk where abs(v) > maxAbs { maxAbs = abs(v); maxVal = v }
                let d = maxVal / -8, id: Float = d != 0 ? 1 / d : 0
                appendHalf(d)
                for j in 0..<16 {
                    let lo = UInt8(min(15, Int8(blk[j] * id + 8.5)))
                    let hi = UInt8(min(15, Int8(blk[j + 16] * id + 8.5)))
                    out.append(lo | hi << 4)
                }
            }
        case .q4_1:
            for b in stride(from: 0, to: x.count, by: 32) {
                let blk = Array(x[b..<(b + 32)])
                let mn = blk.min() ?? 0, mx = blk.max() ?? 0
                let d = (mx - mn) / 15, id: Float = d != 0 ? 1 / d : 0
                appendHalf(d); appendHalf(mn)
                for j in 0..<16 {
                    let lo = UInt8(min(15, Int8((blk[j] - mn) * id + 0.5)))
                    let hi = UInt8(min(15, Int8((blk[j + 16] - mn) * id + 0.5)))
                    out.append(lo | hi << 4)
                }
            }
        case .f8_e4m3:   // bare codes, no block scale
            out = x.map(E4M3.encode)
        case .i32, .i64, .u8:
            preconditionFailure("InMemoryWeights stores floating-point weights only")
        case .q5_0, .q5_1, .q2_k, .q3_k, .q4_k, .q5_k, .q6_k, .iq4_nl, .iq4_xs:
            preconditionFailure("Kiln has no quantizer for \(dtype.rawValue): such weights are read from GGUF files, not encoded")
        }
        return out
    }
}
