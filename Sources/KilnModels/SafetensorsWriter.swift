import Foundation
import KilnCore

/// Writes `.safetensors` files (header padded to 8 bytes, tensors packed in order).
///
/// Fixtures use it; `rawHeader` lets malformed-file tests write any header text over real data.
public struct SafetensorsWriter {
    public struct Tensor {
        public var name: String
        public var dtypeName: String
        public var shape: [Int]
        public var data: [UInt8]
        public init(name: String, dtypeName: String, shape: [Int], data: [UInt8]) {
            self.name = name; self.dtypeName = dtypeName; self.shape = shape; self.data = data
        }
    }
    public var tensors: [Tensor] = []
    public var metadata: [String: String] = ["format": "pt"]

    public init() {}

    /// Adds a tensor from row-major floats, stored as `dtype` (F32, F16 or BF16).
    public mutating func add(_ name: String, shape: [Int], dtype: DType, values: [Float]) throws {
        guard let dn = SafetensorsFile.dtypeName(dtype) else { throw KilnError("SafetensorsWriter: cannot write \(dtype) tensor \(name)") }
        tensors.append(Tensor(name: name, dtypeName: dn, shape: shape,
                              data: try TensorEncoding.encode(values, as: dtype, rowLength: shape.last ?? 1, name: name)))
    }

    /// Adds a tensor from its stored bytes (FP8 codes, or bytes encoded elsewhere).
    public mutating func addRaw(_ name: String, dtype: DType, shape: [Int], bytes: [UInt8]) {
        tensors.append(Tensor(name: name, dtypeName: SafetensorsFile.dtypeName(dtype) ?? dtype.rawValue, shape: shape, data: bytes))
    }

    /// Orders the tensors by element size, largest first (stable), as Python's safetensors does, so every tensor
    /// starts aligned to its elements whatever the byte counts of 1-byte tensors (FP8 codes) before it.
    public mutating func alignTensors() {
        func size(_ t: Tensor) -> Int { SafetensorsFile.dtypeOf(t.dtypeName)?.blockBytes ?? 1 }
        tensors = tensors.enumerated().sorted { (size($0.element), -$0.offset) > (size($1.element), -$1.offset) }.map(\.element)
    }

    /// The header JSON the writer would produce (tests edit it to make malformed files).
    public func headerJSON() -> String {
        var parts: [String] = []
        if !metadata.isEmpty {
            let md = metadata.sorted { $0.key < $1.key }.map { "\(quote($0.key)):\(quote($0.value))" }.joined(separator: ",")
            parts.append("\"__metadata__\":{\(md)}")
        }
        var offset = 0
        for t in tensors {
            let shape = t.shape.map(String.init).joined(separator: ",")
            parts.append("\(quote(t.name)):{\"dtype\":\(quote(t.dtypeName)),\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + t.data.count)]}")
            offset += t.data.count
        }
        return "{" + parts.joined(separator: ",") + "}"
    }

    /// The whole file with the writer's header, or with `rawHeader` (padded with spaces to 8 bytes) in its place.
    public func bytes(rawHeader: String? = nil, headerLengthOverride: UInt64? = nil) -> [UInt8] {
        var header = Array((rawHeader ?? headerJSON()).utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        var b = LEBytes()
        b.u64(headerLengthOverride ?? UInt64(header.count))
        b.bytes.append(contentsOf: header)
        for t in tensors { b.bytes.append(contentsOf: t.data) }
        return b.bytes
    }

    public func write(to path: String, rawHeader: String? = nil, headerLengthOverride: UInt64? = nil) throws {
        let data = Data(bytes(rawHeader: rawHeader, headerLengthOverride: headerLengthOverride))
        guard FileManager.default.createFile(atPath: path, contents: data) else {
            throw KilnError("\(path): cannot write safetensors file")
        }
    }

    private func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            default: out += u.value < 0x20 ? String(format: "\\u%04x", u.value) : String(u)
            }
        }
        return out + "\""
    }
}
