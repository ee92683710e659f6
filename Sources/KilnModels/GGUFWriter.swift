import Foundation
import KilnCore

/// Little-endian byte buffer used by the writers (and by tests that build malformed files by hand).
public struct LEBytes {
    public var bytes: [UInt8] = []
    public init() {}
    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    /// A GGUF string: u64 length then UTF-8 bytes.
    public mutating func string(_ s: String) { u64(UInt64(s.utf8.count)); bytes.append(contentsOf: Array(s.utf8)) }
    public mutating func pad(to alignment: Int) { while bytes.count % alignment != 0 { bytes.append(0) } }
}

/// Writes GGUF v3 files (v2 on request): metadata, tensor infos, aligned tensor data.
///
/// Fixtures and malformed-file tests use it; the `…Override` fields write values that do not
/// match the content so readers can be tested against lying headers.
public struct GGUFWriter {
    /// One tensor: `dims` in ggml order (`dims[0]` contiguous), `data` the raw bytes (blocks for quantized types).
    public struct Tensor {
        public var name: String
        public var dims: [UInt64]
        public var rawType: UInt32
        public var data: [UInt8]
        /// Written instead of the computed offset when set.
        public var offsetOverride: UInt64?
        public init(name: String, dims: [UInt64], rawType: UInt32, data: [UInt8], offsetOverride: UInt64? = nil) {
            self.name = name; self.dims = dims; self.rawType = rawType; self.data = data; self.offsetOverride = offsetOverride
        }
    }

    public var magic: UInt32 = 0x4655_4747
    public var version: UInt32 = 3
    /// Data alignment; `general.alignment` is added to the metadata when it is not 32 and not set already.
    public var alignment = 32
    public var tensorCountOverride: UInt64?
    public var metadataCountOverride: UInt64?
    /// Metadata entries, in order: key, value type, encoded value.
    public private(set) var metadata: [(key: String, type: UInt32, payload: [UInt8])] = []
    public var tensors: [Tensor] = []

    public init() {}

    /// Adds a metadata entry; `value`'s type tag decides the GGUF value type.
    public mutating func set(_ key: String, _ value: GGUFValue) {
        var b = LEBytes()
        GGUFWriter.encode(value, into: &b)
        metadata.append((key, GGUFWriter.typeTag(value), b.bytes))
    }
    public mutating func set(_ key: String, _ v: String) { set(key, .string(v)) }
    public mutating func set(_ key: String, uint32 v: UInt32) { set(key, .uint(UInt64(v), type: 4)) }
    public mutating func set(_ key: String, float32 v: Float) { set(key, .float(Double(v), type: 6)) }

    /// Removes every entry named `key`.
    public mutating func remove(_ key: String) { metadata.removeAll { $0.key == key } }

    /// Adds an entry with an arbitrary type tag and payload (for unknown types or lying lengths).
    public mutating func setRaw(_ key: String, type: UInt32, payload: [UInt8]) { metadata.append((key, type, payload)) }

    /// Adds a tensor from floats in row-major `shape` (`[rows, cols]`), encoded as `type`.
    public mutating func addTensor(_ name: String, shape: [Int], type: DType, values: [Float]) throws {
        guard let raw = GGUFWriter.rawType(type) else { throw KilnError("GGUFWriter: cannot write \(type) tensor \(name)") }
        let data = try TensorEncoding.encode(values, as: type, rowLength: shape.last ?? 1, name: name)
        tensors.append(Tensor(name: name, dims: shape.reversed().map { UInt64($0) }, rawType: raw, data: data))
    }

    public static func rawType(_ t: DType) -> UInt32? {
        switch t {
        case .f32: return 0
        case .f16: return 1
        case .q4_0: return 2
        case .q4_1: return 3
        case .q5_0: return 6
        case .q5_1: return 7
        case .q8_0: return 8
        case .q2_k: return 10
        case .q3_k: return 11
        case .q4_k: return 12
        case .q5_k: return 13
        case .q6_k: return 14
        case .iq4_nl: return 20
        case .iq4_xs: return 23
        case .bf16: return 30
        case .i32: return 26
        case .i64: return 27
        case .u8, .f8_e4m3: return nil
        }
    }

    /// The whole file.
    public func bytes() -> [UInt8] {
        var metadata = self.metadata
        if alignment != 32, !metadata.contains(where: { $0.key == "general.alignment" }) {
            var v = LEBytes()
            v.u32(UInt32(alignment))
            metadata.append(("general.alignment", 4, v.bytes))
        }
        var b = LEBytes()
        b.u32(magic)
        b.u32(version)
        b.u64(tensorCountOverride ?? UInt64(tensors.count))
        b.u64(metadataCountOverride ?? UInt64(metadata.count))
        for m in metadata {
            b.string(m.key)
            b.u32(m.type)
            b.bytes.append(contentsOf: m.payload)
        }
        var offset = 0
        var offsets: [Int] = []
        for t in tensors {
            offsets.append(offset)
            offset += (t.data.count + alignment - 1) / alignment * alignment
        }
        for (t, off) in zip(tensors, offsets) {
            b.string(t.name)
            b.u32(UInt32(t.dims.count))
            for d in t.dims { b.u64(d) }
            b.u32(t.rawType)
            b.u64(t.offsetOverride ?? UInt64(off))
        }
        b.pad(to: alignment)
        for t in tensors {
            b.bytes.append(contentsOf: t.data)
            b.pad(to: alignment)
        }
        return b.bytes
    }

    public func write(to path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes())) else {
            throw KilnError("\(path): cannot write GGUF file")
        }
    }

    // MARK: value encoding

    static func typeTag(_ v: GGUFValue) -> UInt32 {
        switch v {
        case .uint(_, let t), .int(_, let t), .float(_, let t): return t
        case .bool: return 7
        case .string: return 8
        case .array: return 9
        }
    }

    static func encode(_ v: GGUFValue, into b: inout LEBytes) {
        switch v {
        case .uint(let x, let t):
            switch t {
            case 0: b.u8(UInt8(truncatingIfNeeded: x))
            case 2: withUnsafeBytes(of: UInt16(truncatingIfNeeded: x).littleEndian) { b.bytes.append(contentsOf: $0) }
            case 4: b.u32(UInt32(truncatingIfNeeded: x))
            default: b.u64(x)
            }
        case .int(let x, let t):
            switch t {
            case 1: b.u8(UInt8(bitPattern: Int8(truncatingIfNeeded: x)))
            case 3: withUnsafeBytes(of: Int16(truncatingIfNeeded: x).littleEndian) { b.bytes.append(contentsOf: $0) }
            case 5: b.u32(UInt32(bitPattern: Int32(truncatingIfNeeded: x)))
            default: b.u64(UInt64(bitPattern: x))
            }
        case .float(let x, let t):
            if t == 6 { b.u32(Float(x).bitPattern) } else { b.u64(x.bitPattern) }
        case .bool(let x): b.u8(x ? 1 : 0)
        case .string(let s): b.string(s)
        case .array(let items, let et):
            b.u32(et)
            b.u64(UInt64(items.count))
            for i in items { encode(i, into: &b) }
        }
    }
}

/// Float -> stored bytes for the formats fixtures write (plain types and ggml blocks).
public enum TensorEncoding {
    /// Encodes `values` as `type`; quantized types need `rowLength` to be a multiple of 32.
    public static func encode(_ values: [Float], as type: DType, rowLength: Int, name: String) throws -> [UInt8] {
        var b = LEBytes()
        switch type {
        case .f32: for v in values { b.u32(v.bitPattern) }
        case .f16: for v in values { le16(floatToHalf(v), &b) }
        case .bf16: for v in values { le16(floatToBF16(v), &b) }
        case .q8_0, .q4_0, .q4_1:
            guard rowLength % 32 == 0, values.count % 32 == 0 else {
                throw KilnError("tensor \(name): row length \(rowLength) is not a multiple of 32 for \(type)")
            }
            for start in stride(from: 0, to: values.count, by: 32) { block(values[start..<start + 32], type, &b) }
        default:
            throw KilnError("tensor \(name): cannot encode \(type)")
        }
        return b.bytes
    }

    private static func le16(_ v: UInt16, _ b: inout LEBytes) { b.u8(UInt8(v & 0xff)); b.u8(UInt8(v >> 8)) }

    /// ggml's reference quantizers (quantize_row_*_ref), one 32-element block.
    private static func block(_ x: ArraySlice<Float>, _ type: DType, _ b: inout LEBytes) {
        switch type {
        case .q8_0:
            let amax = x.map(abs).max() ?? 0
            let d = amax / 127
            let id: Float = d != 0 ? 1 / d : 0
            le16(floatToHalf(d), &b)
            for v in x { b.u8(UInt8(bitPattern: Int8((v * id).rounded()))) }
        case .q4_0:
            // The value of largest magnitude maps to -8, so its sign is kept.
            var maxV: Float = 0
            for v in x where abs(v) > abs(maxV) { maxV = v }
            let d = maxV / -8
            let id: Float = d != 0 ? 1 / d : 0
            le16(floatToHalf(d), &b)
            let q = x.map { UInt8(min(15, max(0, Int(($0 * id + 8.5).rounded(.down))))) }
            for j in 0..<16 { b.u8(q[j] | q[j + 16] << 4) }
        case .q4_1:
            let lo = x.min() ?? 0, hi = x.max() ?? 0
            let d = (hi - lo) / 15
            let id: Float = d != 0 ? 1 / d : 0
            le16(floatToHalf(d), &b)
            le16(floatToHalf(lo), &b)
            let q = x.map { UInt8(min(15, max(0, Int((($0 - lo) * id + 0.5).rounded(.down))))) }
            for j in 0..<16 { b.u8(q[j] | q[j + 16] << 4) }
        default: break
        }
    }
}
