/// How the bytes of a weight matrix encode its values: a descriptor, not code. Loaders say which format a matrix
/// is stored in, each format has one CPU reference (dequantize in `QuantizedMatrix`, the product in KilnCPU's
/// `LinearWeight`), and a backend decides per format whether it runs it natively or converts it
/// (`GPUWeights.plan`). Kernel choice and the tuning table are keyed by it (`TuneEntry.format`).
///
/// Every format is a set of planes (`planes(rows:cols:)`): a dense matrix is one plane of elements; a GGUF matrix is
/// one plane of interleaved blocks; FP8 block-scaled weights are codes plus a scale plane; lookup-table weights are
/// codes, group scales, optional group offsets and a table.
public enum WeightFormat: Hashable, Sendable, CustomStringConvertible {
    /// Plain elements.
    case dense(DenseElement)
    /// GGML's blocks (32 elements, or 256-element super-blocks), as stored in GGUF files.
    case gguf(GGUFBlock)
    /// FP8 e4m3 codes with one f32 scale per `blockRows × blockCols` block (Hugging Face fine-grained FP8:
    /// `weight` + `weight_scale_inv`, value = e4m3(code) × scale; edge blocks may be partial). CPU reference:
    /// `QuantizedMatrix.dequantize` (e4m3 is `E4M3`), the quantizer `FP8BlockQuantizer`, the products in KilnCPU.
    case fp8E4M3(blockRows: Int, blockCols: Int)
    /// b-bit codes into a table of 2^b values, times a per-group scale (plus a per-group offset when affine).
    /// CPU reference: `LUTCodes.dequantizeRow` (tables in `LUTTables`), the quantizer `LUTQuantizer`, the product in
    /// KilnCPU's `LUTProducts.swift`.
    case lut(LUTFormat)

    public enum DenseElement: String, Hashable, Sendable, CaseIterable {
        case f32, f16, bf16
        public var dtype: DType {
            switch self { case .f32: return .f32; case .f16: return .f16; case .bf16: return .bf16 }
        }
    }

    /// The GGML block types Kiln reads. Layouts (ggml's): Q8_0 = f16 d, int8 q[32]; Q4_0 = f16 d, u8 qs[16];
    /// Q4_1 = f16 d, f16 m, u8 qs[16]; the K-quants and i-quants are described in `QuantBlocks`.
    public enum GGUFBlock: String, Hashable, Sendable, CaseIterable {
        case q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs
        /// The plane element type: one element is one whole block.
        public var dtype: DType { DType(rawValue: rawValue)! }
        /// Elements per block: 32, or 256 for the K-quant super-blocks and IQ4_XS.
        public var blockSize: Int { dtype.blockSize }
        public var blockBytes: Int { dtype.blockBytes }
    }

    /// The lookup-table family of the LUT issue: `bits` ∈ {2, 3, 4}, `groupSize` ∈ {32, 64, 128} input elements; and
    /// `bits` = 8 with the symmetric `int` table (code − 128) only: GGUF Q8_0 as the GPU holds it (its member of the
    /// family). No checkpoint or `kiln quantize` target has 8-bit codes.
    public struct LUTFormat: Hashable, Sendable {
        public enum Table: String, Hashable, Sendable, CaseIterable { case int, nf, fp4, learned, custom }
        public var bits: Int
        public var groupSize: Int
        public var table: Table
        /// Affine: one offset per group besides the scale.
        public var hasOffsets: Bool
        public init(bits: Int, groupSize: Int, table: Table, hasOffsets: Bool) {
            self.bits = bits; self.groupSize = groupSize; self.table = table; self.hasOffsets = hasOffsets
        }
    }

    public static let bf16 = WeightFormat.dense(.bf16)

    /// The format of a raw tensor stored with element type `dtype`, or nil when such a tensor is no weight matrix
    /// (integer tensors).
    public init?(stored dtype: DType) {
        switch dtype {
        case .f32: self = .dense(.f32)
        case .f16: self = .dense(.f16)
        case .bf16: self = .dense(.bf16)
        case .q8_0: self = .gguf(.q8_0)
        case .q4_0: self = .gguf(.q4_0)
        case .q4_1: self = .gguf(.q4_1)
        case .q5_0, .q5_1, .q2_k, .q3_k, .q4_k, .q5_k, .q6_k, .iq4_nl, .iq4_xs: self = .gguf(GGUFBlock(rawValue: dtype.rawValue)!)
        case .i32, .i64, .u8, .f8_e4m3: return nil   // FP8 codes are a matrix only with their scales
        }
    }

    /// The element type of a format that is one plane of one raw tensor type (dense and GGUF), else nil.
    public var singleTensorType: DType? {
        switch self {
        case .dense(let e): return e.dtype
        case .gguf(let b): return b.dtype
        case .fp8E4M3, .lut: return nil
        }
    }

    /// Stable name, used in tuning tables and logs: `bf16`, `q4_1`, `fp8_e4m3_b128x128`, `lut4_g64_nf`, `lut4_g64_int_affine`.
    public var name: String {
        switch self {
        case .dense(let e): return e.rawValue
        case .gguf(let b): return b.rawValue
        case .fp8E4M3(let r, let c): return "fp8_e4m3_b\(r)x\(c)"
        case .lut(let l): return "lut\(l.bits)_g\(l.groupSize)_\(l.table.rawValue)" + (l.hasOffsets ? "_affine" : "")
        }
    }
    public var description: String { name }

    /// Parses `name`; nil for anything else (a table written by a newer Kiln, a typo).
    public init?(name: String) {
        if let e = DenseElement(rawValue: name) { self = .dense(e); return }
        if let b = GGUFBlock(rawValue: name) { self = .gguf(b); return }
        let parts = name.split(separator: "_").map(String.init)
        if parts.count == 3, parts[0] == "fp8", parts[1] == "e4m3", parts[2].hasPrefix("b") {
            let dims = parts[2].dropFirst().split(separator: "x").compactMap { Int($0) }
            guard dims.count == 2, dims.allSatisfy({ $0 > 0 }) else { return nil }
            self = .fp8E4M3(blockRows: dims[0], blockCols: dims[1]); return
        }
        if (parts.count == 3 || parts.count == 4), parts[0].hasPrefix("lut"), parts[1].hasPrefix("g"),
           let bits = Int(parts[0].dropFirst(3)), let group = Int(parts[1].dropFirst()), let table = LUTFormat.Table(rawValue: parts[2]),
           parts.count == 3 || parts[3] == "affine" {
            self = .lut(LUTFormat(bits: bits, groupSize: group, table: table, hasOffsets: parts.count == 4)); return
        }
        return nil
    }

    /// Bytes of a `[rows, cols]` matrix in this format (all planes), or nil when the shape does not fit the format.
    public func byteCount(rows: Int, cols: Int) -> Int? {
        guard let layout = try? planes(rows: rows, cols: cols) else { return nil }
        return layout.reduce(0) { $0 + $1.byteCount }
    }

    /// The planes a `[rows, cols]` matrix of this format consists of, in order, with shapes and element types.
    /// Throws when the shape does not fit the format (a row that is not whole blocks or groups); `what` names the
    /// matrix in the message.
    public func planes(rows: Int, cols: Int, what: String = "matrix") throws -> [PlaneLayout] {
        guard rows > 0, cols > 0 else { throw KilnError("\(what): \(name) matrix of shape [\(rows), \(cols)] is empty") }
        func ceilDiv(_ a: Int, _ b: Int) -> Int { (a + b - 1) / b }
        switch self {
        case .dense(let e):
            return [PlaneLayout(.values, shape: [rows, cols], dtype: e.dtype)]
        case .gguf(let b):
            guard cols % b.blockSize == 0 else {
                throw KilnError("\(what): \(name) rows of \(cols) elements are not whole \(b.blockSize)-element blocks")
            }
            // One plane, blocks as in the file (scale, [minimum,] codes): read in place, never split (see QuantizedMatrix).
            return [PlaneLayout(.blocks, shape: [rows, cols / b.blockSize], dtype: b.dtype)]
        case .fp8E4M3(let br, let bc):
            guard br > 0, bc > 0 else { throw KilnError("\(what): \(name) has an empty scale block") }
            return [PlaneLayout(.codes, shape: [rows, cols], dtype: .u8),
                    PlaneLayout(.scales, shape: [ceilDiv(rows, br), ceilDiv(cols, bc)], dtype: .f32)]
        case .lut(let l):
            guard [2, 3, 4].contains(l.bits) || (l.bits == 8 && l.table == .int && !l.hasOffsets) else {
                throw KilnError("\(what): \(name): lookup-table codes of \(l.bits) bits with the \(l.table.rawValue) table\(l.hasOffsets ? " and offsets" : "") (2, 3 or 4 bits supported; 8 bits only as GGUF Q8_0's symmetric int table)")
            }
            guard l.groupSize > 0, cols % l.groupSize == 0 else {
                throw KilnError("\(what): \(name): K = \(cols) is not a multiple of the group size \(l.groupSize)")
            }
            // Codes packed little-endian along K; each row padded to whole bytes (3-bit rows).
            var out = [PlaneLayout(.codes, shape: [rows, ceilDiv(cols * l.bits, 8)], dtype: .u8),
                       PlaneLayout(.scales, shape: [rows, cols / l.groupSize], dtype: .f16)]
            if l.hasOffsets { out.append(PlaneLayout(.offsets, shape: [rows, cols / l.groupSize], dtype: .f16)) }
            out.append(PlaneLayout(.table, shape: [1 << l.bits], dtype: .f32))
            return out
        }
    }
}

/// What a plane of a quantized matrix holds.
public enum PlaneRole: String, Hashable, Sendable {
    /// Dense elements.
    case values
    /// GGML blocks: scale(s) and codes interleaved per block (32 elements, or a 256-element super-block).
    case blocks
    /// Quantized codes (FP8 bytes, packed LUT indices).
    case codes
    /// Scales per block or group.
    case scales
    /// Offsets (minimums) per group.
    case offsets
    /// Lookup table of code values.
    case table
}

/// The expected shape, element type and size of one plane.
public struct PlaneLayout: Equatable, Sendable, CustomStringConvertible {
    public var role: PlaneRole
    /// Row-major; for `blocks` the last dimension counts blocks, for packed `codes` bytes.
    public var shape: [Int]
    public var dtype: DType
    public init(_ role: PlaneRole, shape: [Int], dtype: DType) { self.role = role; self.shape = shape; self.dtype = dtype }
    public var elementCount: Int { shape.reduce(1, *) }
    /// Bytes of the plane; one element of a GGML block type is one whole block.
    public var byteCount: Int { elementCount * dtype.blockBytes }
    public var description: String { "\(role.rawValue) \(shape) \(dtype.rawValue) (\(byteCount) bytes)" }
}
