/// A weight matrix `[rows, cols]` (`rows` = output features N, `cols` = input features K) in some `WeightFormat`,
/// as the planes that format consists of, each checked against the format's layout when the matrix is made.
///
/// Planes point into memory the weight source owns (a memory-mapped file, an in-memory store): nothing is copied,
/// and the source must outlive the matrix. A GGUF matrix is ONE plane of interleaved blocks exactly as the file
/// stores them, not separate code and scale planes: splitting would copy (and double the memory of) every matrix
/// at load, while the CPU product reads a block's scale and its codes from the same cache line anyway. A backend
/// that wants planes apart (a GPU kernel reading codes with 16-byte loads) repacks at its own load.
public struct QuantizedMatrix {
    public struct Plane {
        public var role: PlaneRole
        public var shape: [Int]
        public var dtype: DType
        public var bytes: UnsafeRawBufferPointer
        public init(_ role: PlaneRole, shape: [Int], dtype: DType, bytes: UnsafeRawBufferPointer) {
            self.role = role; self.shape = shape; self.dtype = dtype; self.bytes = bytes
        }
    }

    /// The tensor's name (canonical, e.g. `blk.0.attn_q.weight`), for error messages.
    public let name: String
    public let rows: Int
    public let cols: Int
    public let format: WeightFormat
    /// In the order of `format.planes(rows:cols:)`.
    public let planes: [Plane]

    /// Checks `planes` against the format's layout: same roles in the same order, same shapes and element types,
    /// exactly the bytes those need. Errors name the tensor and the plane.
    public init(name: String, rows: Int, cols: Int, format: WeightFormat, planes: [Plane]) throws {
        let layout = try format.planes(rows: rows, cols: cols, what: "tensor \(name)")
        guard planes.map(\.role) == layout.map(\.role) else {
            throw KilnError("tensor \(name): a \(format.name) matrix has planes \(layout.map(\.role.rawValue)), got \(planes.map(\.role.rawValue))")
        }
        for (p, want) in zip(planes, layout) {
            guard p.shape == want.shape, p.dtype == want.dtype else {
                throw KilnError("tensor \(name): plane \(p.role.rawValue) is \(p.shape) of \(p.dtype.rawValue), expected \(want.shape) of \(want.dtype.rawValue) for a [\(rows), \(cols)] \(format.name) matrix")
            }
            guard p.bytes.count == want.byteCount else {
                throw KilnError("tensor \(name): plane \(p.role.rawValue) has \(p.bytes.count) bytes, expected \(want.byteCount) (\(want.shape) of \(want.dtype.rawValue))")
            }
            guard p.bytes.baseAddress != nil else { throw KilnError("tensor \(name): plane \(p.role.rawValue) has no data") }
        }
        self.name = name; self.rows = rows; self.cols = cols; self.format = format; self.planes = planes
    }

    /// A dense or GGUF matrix: one plane of `format`'s single tensor type holding `data`.
    public init(name: String, rows: Int, cols: Int, format: WeightFormat, data: UnsafeRawBufferPointer) throws {
        let layout = try format.planes(rows: rows, cols: cols, what: "tensor \(name)")
        guard layout.count == 1 else {
            throw KilnError("tensor \(name): a \(format.name) matrix has \(layout.count) planes (\(layout.map(\.role.rawValue))), not one")
        }
        try self.init(name: name, rows: rows, cols: cols, format: format,
                      planes: [Plane(layout[0].role, shape: layout[0].shape, dtype: layout[0].dtype, bytes: data)])
    }

    public func plane(_ role: PlaneRole) -> Plane? { planes.first { $0.role == role } }

    /// Bytes of all planes.
    public var byteCount: Int { planes.reduce(0) { $0 + $1.bytes.count } }

    /// Bytes of one row of a single-plane format (dense elements or GGUF blocks); nil for multi-plane formats.
    public var rowBytes: Int? {
        guard planes.count == 1, format.singleTensorType != nil else { return nil }
        return planes[0].bytes.count / rows
    }

    // MARK: the CPU reference: dequantization

    /// Rows `range` as f32 into `out` (`[range.count × cols]`, row-major): the format's one CPU dequantization, which the
    /// CPU engine's float mode, the GPU's conversion at load and the conformance references all use.
    public func dequantize(rows range: Range<Int>, into out: UnsafeMutablePointer<Float>) throws {
        guard range.lowerBound >= 0, range.upperBound <= rows else {
            throw KilnError("tensor \(name): rows \(range) outside 0..<\(rows)")
        }
        switch format {
        case .dense, .gguf:
            let type = format.singleTensorType!, rb = rowBytes!, base = planes[0].bytes.baseAddress!
            for (i, r) in range.enumerated() {
                QuantBlocks.dequantize(type, base + r * rb, out + i * cols, count: cols)
            }
        case .fp8E4M3(let br, let bc):
            // value = e4m3(code) × scale_inv of the code's [br × bc] block (Hugging Face's `weight_scale_inv`).
            let codes = planes[0].bytes.bindMemory(to: UInt8.self), scales = planes[1].bytes.bindMemory(to: Float.self)
            let scaleCols = planes[1].shape[1], table = E4M3.table
            for (i, r) in range.enumerated() {
                let scaleRow = scales.baseAddress! + (r / br) * scaleCols, codeRow = codes.baseAddress! + r * cols
                for c in 0..<cols { out[i * cols + c] = table[Int(codeRow[c])] * scaleRow[c / bc] }
            }
        case .lut(let l):
            try dequantizeLUT(l, rows: range, into: out)   // LUTTables.swift
        }
    }

    /// The whole matrix as f32 (`[rows × cols]`); for tests and small matrices.
    public func dequantized() throws -> [Float] {
        var out = [Float](repeating: 0, count: rows * cols)
        try out.withUnsafeMutableBufferPointer { try dequantize(rows: 0..<rows, into: $0.baseAddress!) }
        return out
    }
}
