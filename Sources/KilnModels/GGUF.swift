import Foundation
import KilnCore

/// A metadata value of a GGUF file (all 13 value types; arrays may nest).
public indirect enum GGUFValue: Equatable, CustomStringConvertible {
    case uint(UInt64, type: UInt32)
    case int(Int64, type: UInt32)
    case float(Double, type: UInt32)
    case bool(Bool)
    case string(String)
    case array([GGUFValue], elementType: UInt32)

    public var int: Int? {
        switch self {
        case .uint(let v, _): return v <= UInt64(Int.max) ? Int(v) : nil
        case .int(let v, _): return Int(v)
        default: return nil
        }
    }
    public var double: Double? {
        switch self {
        case .float(let v, _): return v
        case .uint(let v, _): return Double(v)
        case .int(let v, _): return Double(v)
        default: return nil
        }
    }
    public var string: String? { if case .string(let s) = self { return s }; return nil }
    public var bool: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var array: [GGUFValue]? { if case .array(let a, _) = self { return a }; return nil }
    public var strings: [String]? { array?.compactMap { $0.string } }
    public var ints: [Int]? { array?.compactMap { $0.int } }
    public var doubles: [Double]? { array?.compactMap { $0.double } }

    public var description: String {
        switch self {
        case .uint(let v, _): return "\(v)"
        case .int(let v, _): return "\(v)"
        case .float(let v, _): return "\(v)"
        case .bool(let b): return "\(b)"
        case .string(let s): return s.count > 60 ? "\"\(s.prefix(57))...\"" : "\"\(s)\""
        case .array(let a, _): return "[\(a.count) items]"
        }
    }
}

/// GGML tensor types. Only some are supported for data access; the rest are named in errors.
public enum GGMLType {
    public static let names: [UInt32: String] = [
        0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
        10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
        17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS",
        24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0",
        39: "MXFP4",
    ]
    public static func dtype(_ raw: UInt32) -> DType? {
        switch raw {
        case 0: return .f32
        case 1: return .f16
        case 2: return .q4_0
        case 3: return .q4_1
        case 6: return .q5_0
        case 7: return .q5_1
        case 8: return .q8_0
        case 10: return .q2_k
        case 11: return .q3_k
        case 12: return .q4_k
        case 13: return .q5_k
        case 14: return .q6_k
        case 20: return .iq4_nl
        case 23: return .iq4_xs
        case 30: return .bf16
        case 26: return .i32
        case 27: return .i64
        default: return nil
        }
    }
    public static func name(_ raw: UInt32) -> String { names[raw] ?? "unknown type \(raw)" }
    /// The GGML type names Kiln reads and runs, for error messages.
    public static let supportedNames = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS"
}

/// One tensor of a GGUF file. `shape` is in ggml order: `shape[0]` is the contiguous (innermost) dimension.
public struct GGUFTensorInfo {
    public var name: String
    public var shape: [Int]
    public var rawType: UInt32
    public var offset: Int          // relative to the data section
    public var typeName: String { GGMLType.name(rawType) }
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A parsed, memory-mapped GGUF file (versions 2 and 3).
public final class GGUFFile {
    public let path: String
    public let version: UInt32
    public let metadata: [String: GGUFValue]
    /// Keys in file order (for printing).
    public let metadataKeys: [String]
    public let tensors: [GGUFTensorInfo]
    public let tensorIndex: [String: Int]
    public let alignment: Int
    public let dataOffset: Int
    public let file: MappedFile

    static let maxDims = 4
    static let maxArrayDepth = 8

    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws {
        self.file = file
        path = file.path
        var c = ByteCursor(file)
        let magic = try c.read(UInt32.self, "magic")
        guard magic == 0x4655_4747 else { // "GGUF" little-endian
            throw KilnError("\(path): not a GGUF file (wrong magic 0x\(String(magic, radix: 16)), expected \"GGUF\")")
        }
        version = try c.read(UInt32.self, "version")
        guard version == 2 || version == 3 else {
            throw KilnError("\(path): unsupported GGUF version \(version) (supported: 2, 3)")
        }
        let nTensors = try c.read(UInt64.self, "tensor count")
        let nKV = try c.read(UInt64.self, "metadata count")
        // Each metadata pair needs at least 12 bytes (key length + type), each tensor info at least 24.
        let remaining = UInt64(file.size - c.offset)
        guard nKV <= remaining / 12 else { throw KilnError("\(path): absurd metadata count \(nKV) for a file of \(file.size) bytes") }
        guard nTensors <= remaining / 24 else { throw KilnError("\(path): absurd tensor count \(nTensors) for a file of \(file.size) bytes") }

        var md: [String: GGUFValue] = [:]
        var keys: [String] = []
        for i in 0..<Int(nKV) {
            let key = try GGUFFile.readString(&c, "key of metadata entry \(i)")
            let type = try c.read(UInt32.self, "type of metadata \(key)")
            let value = try GGUFFile.readValue(&c, type: type, key: key, depth: 0)
            if md[key] != nil { throw KilnError("\(path): duplicate metadata key \(key)") }
            md[key] = value
            keys.append(key)
        }
        metadata = md
        metadataKeys = keys

        var align = 32
        if let a = md["general.alignment"] {
            guard let v = a.int, v > 0, v <= 1 << 20, v & (v - 1) == 0 else {
                throw KilnError("\(path): general.alignment must be a power of two, got \(a)")
            }
            align = v
        }
        alignment = align

        var infos: [GGUFTensorInfo] = []
        var index: [String: Int] = [:]
        infos.reserveCapacity(Int(nTensors))
        for i in 0..<Int(nTensors) {
            let name = try GGUFFile.readString(&c, "name of tensor \(i)")
            let nDims = try c.read(UInt32.self, "dimension count of tensor \(name)")
            guard nDims >= 1, nDims <= UInt32(GGUFFile.maxDims) else {
                throw KilnError("\(path): tensor \(name) has \(nDims) dimensions (1...\(GGUFFile.maxDims) allowed)")
            }
            var shape: [Int] = []
            var elements = 1
            for d in 0..<Int(nDims) {
                let n = try c.read(UInt64.self, "dimension \(d) of tensor \(name)")
                guard n > 0, n < 1 << 40 else { throw KilnError("\(path): tensor \(name) has invalid dimension \(d) = \(n)") }
                let (p, o) = elements.multipliedReportingOverflow(by: Int(n))
                guard !o, p < 1 << 42 else { throw KilnError("\(path): tensor \(name) has an absurd element count") }
                elements = p
                shape.append(Int(n))
            }
            let type = try c.read(UInt32.self, "type of tensor \(name)")
            let off = try c.read(UInt64.self, "offset of tensor \(name)")
            guard off < UInt64(file.size) else {
                throw KilnError("\(path): tensor \(name) offset \(off) lies past the end of the file (\(file.size) bytes)")
            }
            guard Int(off) % align == 0 else { throw KilnError("\(path): tensor \(name) offset \(off) is not aligned to \(align)") }
            if index[name] != nil { throw KilnError("\(path): duplicate tensor name \(name)") }
            index[name] = infos.count
            infos.append(GGUFTensorInfo(name: name, shape: shape, rawType: type, offset: Int(off)))
        }
        tensors = infos
        tensorIndex = index
        dataOffset = (c.offset + align - 1) / align * align

        // Every tensor of a known type must lie inside the file.
        for t in infos {
            guard let dt = GGMLType.dtype(t.rawType) else { continue }
            guard t.shape[0] % dt.blockSize == 0, let bytes = dt.byteCount(elements: t.elementCount) else {
                throw KilnError("\(path): tensor \(t.name) of type \(t.typeName) has row length \(t.shape[0]), not a multiple of \(dt.blockSize)")
            }
            if dataOffset + t.offset > file.size || bytes > file.size - dataOffset - t.offset {
                throw KilnError("\(path): tensor \(t.name) (\(t.typeName), \(bytes) bytes at offset \(t.offset)) lies past the end of the file (\(file.size) bytes): truncated?")
            }
        }
    }

    // MARK: metadata access

    public subscript(key: String) -> GGUFValue? { metadata[key] }

    public var architecture: String? { metadata["general.architecture"]?.string }

    public func requireInt(_ key: String) throws -> Int {
        guard let v = metadata[key] else { throw KilnError("\(path): missing metadata \(key)") }
        guard let i = v.int else { throw KilnError("\(path): metadata \(key) should be an integer, got \(v)") }
        return i
    }

    public func requireDouble(_ key: String) throws -> Double {
        guard let v = metadata[key] else { throw KilnError("\(path): missing metadata \(key)") }
        guard let d = v.double else { throw KilnError("\(path): metadata \(key) should be a number, got \(v)") }
        return d
    }

    // MARK: tensors

    public func info(_ name: String) throws -> GGUFTensorInfo {
        guard let i = tensorIndex[name] else { throw KilnError("\(path): missing tensor \(name)") }
        return tensors[i]
    }

    /// Tensors whose type Kiln cannot read (in file order): `kiln info` lists them, `GGUFModel` refuses the file.
    public var unsupportedTensors: [GGUFTensorInfo] { tensors.filter { GGMLType.dtype($0.rawType) == nil } }

    /// The supported element type of a tensor, or an error naming the tensor and its type.
    public func dtype(of t: GGUFTensorInfo) throws -> DType {
        guard let dt = GGMLType.dtype(t.rawType) else {
            throw KilnError("\(path): tensor \(t.name) has unsupported type \(t.typeName) (supported: \(GGMLType.supportedNames))")
        }
        return dt
    }

    /// The raw bytes of a tensor (blocks for quantized types), in place in the mapped file.
    public func data(_ t: GGUFTensorInfo) throws -> UnsafeRawBufferPointer {
        let dt = try dtype(of: t)
        let bytes = dt.byteCount(elements: t.elementCount)!
        return try file.bytes(at: dataOffset + t.offset, count: bytes, what: "tensor \(t.name)")
    }

    /// The tensor dequantized to Float (use for small tensors or tests; engines read blocks directly).
    public func floats(_ name: String) throws -> [Float] {
        let t = try info(name)
        let dt = try dtype(of: t)
        let raw = try data(t)
        var out = [Float](repeating: 0, count: t.elementCount)
        out.withUnsafeMutableBufferPointer { QuantBlocks.dequantize(dt, raw.baseAddress!, $0.baseAddress!, count: t.elementCount) }
        return out
    }

    // MARK: parsing

    static func readString(_ c: inout ByteCursor, _ what: @autoclosure () -> String) throws -> String {
        let n = try c.read(UInt64.self, what())
        guard n <= UInt64(c.file.size - c.offset) else {
            throw KilnError("\(c.file.path): \(what()) claims a string of \(n) bytes, past the end of the file")
        }
        let b = try c.readBytes(Int(n), what())
        return String(decoding: b, as: UTF8.self)
    }

    static func readValue(_ c: inout ByteCursor, type: UInt32, key: String, depth: Int) throws -> GGUFValue {
        switch type {
        case 0: return .uint(UInt64(try c.read(UInt8.self, key)), type: type)
        case 1: return .int(Int64(try c.read(Int8.self, key)), type: type)
        case 2: return .uint(UInt64(try c.read(UInt16.self, key)), type: type)
        case 3: return .int(Int64(try c.read(Int16.self, key)), type: type)
        case 4: return .uint(UInt64(try c.read(UInt32.self, key)), type: type)
        case 5: return .int(Int64(try c.read(Int32.self, key)), type: type)
        case 6: return .float(Double(Float(bitPattern: try c.read(UInt32.self, key))), type: type)
        case 7:
            let b = try c.read(UInt8.self, key)
            guard b <= 1 else { throw KilnError("\(c.file.path): metadata \(key) is a bool with value \(b)") }
            return .bool(b == 1)
        case 8: return .string(try readString(&c, "metadata \(key)"))
        case 9:
            guard depth < maxArrayDepth else { throw KilnError("\(c.file.path): metadata \(key) nests arrays deeper than \(maxArrayDepth)") }
            let et = try c.read(UInt32.self, "array type of \(key)")
            let n = try c.read(UInt64.self, "array length of \(key)")
            let minSize: UInt64
            switch et {
            case 0, 1, 7: minSize = 1
            case 2, 3: minSize = 2
            case 4, 5, 6: minSize = 4
            case 8, 10, 11, 12: minSize = 8
            case 9: minSize = 12
            default: throw KilnError("\(c.file.path): metadata \(key) is an array of unknown type \(et)")
            }
            guard n <= UInt64(c.file.size - c.offset) / minSize else {
                throw KilnError("\(c.file.path): metadata \(key) claims \(n) array items, more than the file can hold")
            }
            var items: [GGUFValue] = []
            // Bounded by the file size above, but a GGUFValue is ~40x a byte: reserve modestly, grow as items really parse.
            items.reserveCapacity(min(Int(n), 1 << 16))
            for _ in 0..<Int(n) { items.append(try readValue(&c, type: et, key: key, depth: depth + 1)) }
            return .array(items, elementType: et)
        case 10: return .uint(try c.read(UInt64.self, key), type: type)
        case 11: return .int(try c.read(Int64.self, key), type: type)
        case 12: return .float(Double(bitPattern: try c.read(UInt64.self, key)), type: type)
        default: throw KilnError("\(c.file.path): metadata \(key) has unknown value type \(type)")
        }
    }
}
