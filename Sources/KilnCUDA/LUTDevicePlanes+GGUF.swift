import KilnCore

/// GGUF's 4-bit block types as members of the lookup-table family (issue 19, item 3), run on gemm_lut in their stored
/// values after a repack at load: Q4_0 = the symmetric `int` table (q − 8) × d, Q4_1 = the affine `int` table q × d + m,
/// IQ4_NL = its fixed non-uniform table (`QuantBlocks.iq4Values`) × d; groups of 32 (one block), f16 d and m. A block
/// stores elements 0…15 in the low nibbles of its 16 code bytes and 16…31 in the high nibbles; the canonical LUT layout
/// pairs neighbours (element 2i low, 2i+1 high), so the repack moves nibbles.
extension LUTDevicePlanes {
    /// The LUT format and table a GGUF block format is a member of, or nil (other block types are converted to bf16).
    public static func ggufMember(_ f: WeightFormat) -> (format: WeightFormat.LUTFormat, table: [Float])? {
        switch f {
        case .gguf(.q4_0): return (.init(bits: 4, groupSize: 32, table: .int, hasOffsets: false), LUTTables.integer(bits: 4, affine: false))
        case .gguf(.q4_1): return (.init(bits: 4, groupSize: 32, table: .int, hasOffsets: true), LUTTables.integer(bits: 4, affine: true))
        case .gguf(.iq4_nl): return (.init(bits: 4, groupSize: 32, table: .custom, hasOffsets: false), QuantBlocks.iq4Values.map { Float($0) })
        default: return nil
        }
    }

    /// The lookup-table view of a matrix format: itself for `.lut`, the member format for Q4_0 / Q4_1 / IQ4_NL.
    public static func lutView(_ f: WeightFormat) -> WeightFormat.LUTFormat? {
        if case .lut(let l) = f { return l }
        return ggufMember(f)?.format
    }

    /// One matrix's planes in the canonical LUT layout: codes [rows, cols/2] (element 2i in the low nibble), scales and
    /// offsets [rows, cols/g] as f32 (the stored f16 values, exactly), and the table.
    public struct Canonical {
        public var codes: [UInt8]
        public var scales: [Float]
        public var offsets: [Float]?
        public var table: [Float]
        /// Code (r, k) of a matrix `cols` wide.
        public func code(_ r: Int, _ k: Int, cols: Int) -> Int { Int(codes[r * (cols / 2) + k / 2] >> (4 * UInt8(k % 2)) & 15) }
    }

    public static func canonical(_ m: QuantizedMatrix) throws -> Canonical {
        if case .lut(let l) = m.format {
            let groups = m.rows * (m.cols / l.groupSize)
            func f16(_ index: Int) -> [Float] {
                let bytes = m.planes[index].bytes
                return (0..<groups).map { halfToFloat(bytes.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self)) }
            }
            return Canonical(codes: Array(m.planes[0].bytes), scales: f16(1), offsets: l.hasOffsets ? f16(2) : nil, table: GPUWeights.lutTable(m))
        }
        guard let (l, table) = ggufMember(m.format), case .gguf(let block) = m.format else {
            throw KilnError("tensor \(m.name): \(m.format.name) is not a lookup-table format gemm_lut reads")
        }
        let blocks = m.rows * (m.cols / 32), blockBytes = block.blockBytes
        let codeOffset = l.hasOffsets ? 4 : 2   // Q4_1: d, m, then codes; Q4_0 / IQ4_NL: d, then codes
        let raw = m.planes[0].bytes
        var out = Canonical(codes: [UInt8](repeating: 0, count: blocks * 16), scales: [Float](repeating: 0, count: blocks),
                            offsets: l.hasOffsets ? [Float](repeating: 0, count: blocks) : nil, table: table)
        for b in 0..<blocks {
            let base = b * blockBytes
            out.scales[b] = halfToFloat(raw.loadUnaligned(fromByteOffset: base, as: UInt16.self))
            if l.hasOffsets { out.offsets![b] = halfToFloat(raw.loadUnaligned(fromByteOffset: base + 2, as: UInt16.self)) }
            func element(_ e: Int) -> UInt8 {
                let byte = raw[base + codeOffset + e % 16]
                return e < 16 ? byte & 0xF : byte >> 4
            }
            for i in 0..<16 { out.codes[b * 16 + i] = element(2 * i) | element(2 * i + 1) << 4 }
        }
        return out
    }
}
