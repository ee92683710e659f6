import Foundation
import KilnCore

/// One tensor of a safetensors file: row-major `shape`, bytes `[begin, end)` of the data section.
public struct SafetensorsTensorInfo: Equatable, Sendable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    public var begin: Int
    public var end: Int
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A parsed, memory-mapped `.safetensors` file.
///
/// Layout: an 8-byte little-endian header length N, N bytes of JSON
/// (`{"name": {"dtype": "BF16", "shape": [r, c], "data_offsets": [b, e]}, "__metadata__": {...}}`),
/// then the data section that the offsets index. Every field is checked before any tensor is
/// handed out, so a bad file fails at open with one line naming the file and the tensor.
public final class SafetensorsFile {
    public let path: String
    public let file: MappedFile
    /// Tensors sorted by their offset in the data section.
    public let tensors: [SafetensorsTensorInfo]
    public let tensorIndex: [String: Int]
    /// The free-form `__metadata__` strings (for example `format: pt`).
    public let metadata: [String: String]
    /// Absolute file offset of the data section.
    public let dataOffset: Int

    /// Headers larger than this are refused (real ones are well under 1 MB even for 400B models).
    public static let maxHeaderBytes = 100 << 20
    static let maxDims = 8

    public convenience init(path: String) throws { try self.init(file: MappedFile(path: path)) }

    public init(file: MappedFile) throws {
        self.file = file
        path = file.path
        var c = ByteCursor(file)
        guard file.size >= 8 else {
            throw KilnError("\(path): truncated safetensors file of \(file.size) bytes (needs an 8-byte header length)")
        }
        let headerLength = try c.read(UInt64.self, "header length")
        guard headerLength <= UInt64(SafetensorsFile.maxHeaderBytes) else {
            throw KilnError("\(path): safetensors header length \(headerLength) is larger than the \(SafetensorsFile.maxHeaderBytes >> 20) MB limit")
        }
        guard headerLength <= UInt64(file.size - 8) else {
            throw KilnError("\(path): safetensors header length \(headerLength) lies past the end of the file (\(file.size) bytes): truncated?")
        }
        guard headerLength >= 2 else { throw KilnError("\(path): safetensors header of \(headerLength) bytes is too short for a JSON object") }
        let headerBytes = try c.readBytes(Int(headerLength), "safetensors header")
        dataOffset = 8 + Int(headerLength)
        let dataSize = file.size - dataOffset

        // The first non-blank byte must open an object; this gives a clearer error than the decoder's.
        guard let first = headerBytes.first(where: { $0 != 0x20 && $0 != 0x0a && $0 != 0x0d && $0 != 0x09 }), first == UInt8(ascii: "{") else {
            throw KilnError("\(path): safetensors header is not a JSON object")
        }
        let header = try JSONFile.decode(RawHeader.self, from: Data(headerBytes), path: path + " (safetensors header)")
        metadata = header.metadata

        var infos: [SafetensorsTensorInfo] = []
        infos.reserveCapacity(header.entries.count)
        for (name, e) in header.entries {
            infos.append(try SafetensorsFile.check(name: name, entry: e, dataSize: dataSize, dataOffset: dataOffset, path: path))
        }
        infos.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        // Tensors may not share bytes: an overlap means a corrupt header (or a crafted one aliasing weights).
        for i in infos.indices.dropFirst() where infos[i].begin < infos[i - 1].end {
            throw KilnError("\(path): tensors \(infos[i - 1].name) and \(infos[i].name) overlap in the data section (offsets \(infos[i - 1].begin)..<\(infos[i - 1].end) and \(infos[i].begin)..<\(infos[i].end))")
        }
        tensors = infos
        var index: [String: Int] = [:]
        for (i, t) in infos.enumerated() { index[t.name] = i }
        tensorIndex = index
    }

    /// Validates one header entry: dtype, shape, and offsets consistent with shape × element size.
    private static func check(name: String, entry e: RawEntry, dataSize: Int, dataOffset: Int, path: String) throws -> SafetensorsTensorInfo {
        guard let dtypeName = e.dtype else { throw KilnError("\(path): tensor \(name) has no dtype") }
        guard let shape64 = e.shape else { throw KilnError("\(path): tensor \(name) has no shape") }
        guard let offsets = e.dataOffsets else { throw KilnError("\(path): tensor \(name) has no data_offsets") }
        guard let dtype = dtypeOf(dtypeName) else {
            let known = ["F64", "I64", "I32", "I16", "I8", "U16", "U32", "U64", "BOOL", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"]
            let what = known.contains(dtypeName) ? "unsupported dtype \(dtypeName)" : "unknown dtype \"\(dtypeName.prefix(40))\""
            throw KilnError("\(path): tensor \(name) has \(what) (supported: F32, F16, BF16, F8_E4M3, U8)")
        }
        guard shape64.count <= maxDims else { throw KilnError("\(path): tensor \(name) has \(shape64.count) dimensions (at most \(maxDims))") }
        var shape: [Int] = []
        var elements = 1
        for (d, n) in shape64.enumerated() {
            // Zero-size tensors are legal safetensors but never a model weight; treat them as corruption.
            guard n > 0, n < 1 << 40 else { throw KilnError("\(path): tensor \(name) has invalid dimension \(d) = \(n)") }
            let (p, o) = elements.multipliedReportingOverflow(by: Int(n))
            guard !o, p < 1 << 42 else { throw KilnError("\(path): tensor \(name) has an absurd element count (shape \(shape64))") }
            elements = p
            shape.append(Int(n))
        }
        guard offsets.count == 2 else {
            throw KilnError("\(path): tensor \(name) data_offsets must be [begin, end], got \(offsets.count) numbers")
        }
        let (begin, end) = (offsets[0], offsets[1])
        guard begin <= end else { throw KilnError("\(path): tensor \(name) data_offsets [\(begin), \(end)] are reversed") }
        guard end <= UInt64(dataSize) else {
            throw KilnError("\(path): tensor \(name) data_offsets [\(begin), \(end)] lie past the end of the data section (\(dataSize) bytes): truncated?")
        }
        let bytes = elements * dtype.blockBytes
        guard end - begin == UInt64(bytes) else {
            throw KilnError("\(path): tensor \(name) data_offsets [\(begin), \(end)] hold \(end - begin) bytes but shape \(shape) of \(dtypeName) needs \(bytes)")
        }
        // Backends read elements with aligned loads; safetensors writers pad the header so this holds.
        guard (dataOffset + Int(begin)) % dtype.blockBytes == 0 else {
            throw KilnError("\(path): tensor \(name) data at file offset \(dataOffset + Int(begin)) is not aligned to its \(dtype.blockBytes)-byte elements")
        }
        return SafetensorsTensorInfo(name: name, dtype: dtype, shape: shape, begin: Int(begin), end: Int(end))
    }

    static func dtypeOf(_ s: String) -> DType? {
        switch s {
        case "F32": return .f32
        case "F16": return .f16
        case "BF16": return .bf16
        case "F8_E4M3": return .f8_e4m3
        case "U8": return .u8   // lookup-table codes (kiln-lut)
        default: return nil
        }
    }

    /// Name safetensors uses for a dtype (for writers and messages).
    public static func dtypeName(_ d: DType) -> String? {
        switch d {
        case .f32: return "F32"
        case .f16: return "F16"
        case .bf16: return "BF16"
        case .f8_e4m3: return "F8_E4M3"
        case .u8: return "U8"
        default: return nil
        }
    }

    public func info(_ name: String) throws -> SafetensorsTensorInfo {
        guard let i = tensorIndex[name] else { throw KilnError("\(path): missing tensor \(name)") }
        return tensors[i]
    }

    /// The bytes of a tensor, in place in the mapped file.
    public func data(_ t: SafetensorsTensorInfo) throws -> UnsafeRawBufferPointer {
        try file.bytes(at: dataOffset + t.begin, count: t.end - t.begin, what: "tensor \(t.name)")
    }

    /// A tensor converted to Float (for small tensors and tests).
    public func floats(_ name: String) throws -> [Float] {
        let t = try info(name)
        let raw = try data(t)
        var out = [Float](repeating: 0, count: t.elementCount)
        if let src = raw.baseAddress {
            out.withUnsafeMutableBufferPointer { QuantBlocks.dequantize(t.dtype, src, $0.baseAddress!, count: t.elementCount) }
        }
        return out
    }
}

// MARK: header decoding

/// One header entry; all optional so `check` can name exactly which field is missing.
private struct RawEntry: Decodable {
    var dtype: String?
    var shape: [UInt64]?
    var dataOffsets: [UInt64]?
    enum CodingKeys: String, CodingKey { case dtype, shape, dataOffsets = "data_offsets" }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let name = c.codingPath.last?.stringValue ?? "?"
        dtype = try c.decodeIfPresent(String.self, forKey: .dtype)
        shape = try RawEntry.naturals(c, .shape, tensor: name)
        dataOffsets = try RawEntry.naturals(c, .dataOffsets, tensor: name)
    }

    /// A list of non-negative integers; negative, fractional or non-numeric entries get one clear error.
    private static func naturals(_ c: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys, tensor: String) throws -> [UInt64]? {
        guard c.contains(key) else { return nil }
        if let v = try? c.decode([UInt64].self, forKey: key) { return v }
        throw KilnError("tensor \(tensor) has an invalid \(key.stringValue) (expected a list of non-negative integers)")
    }
}

private struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// The header object: `__metadata__` (string to string) plus one entry per tensor.
private struct RawHeader: Decodable {
    var entries: [(String, RawEntry)] = []
    var metadata: [String: String] = [:]

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: AnyKey.self)
        for key in c.allKeys {
            if key.stringValue == "__metadata__" {
                metadata = try c.decode([String: String].self, forKey: key)
            } else {
                guard !key.stringValue.isEmpty else { throw KilnError("a tensor has an empty name") }
                entries.append((key.stringValue, try c.decode(RawEntry.self, forKey: key)))
            }
        }
    }
}
