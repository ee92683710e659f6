import KilnCore

/// GGUF's 4-bit block types and Q8_0 as members of the lookup-table family (issue 19, item 3), run on gemm_lut in their
/// stored values after a repack at load: Q4_0 = the symmetric `int` table (q − 8) × d, Q4_1 = the affine `int` table
/// q × d + m, IQ4_NL = its fixed non-uniform table (`QuantBlocks.iq4Values`) × d; groups of 32 (one block), f16 d and m.
/// A 4-bit block stores elements 0…15 in the low nibbles of its 16 code bytes and 16…31 in the high nibbles; the
/// canonical LUT layout pairs neighbours (element 2i low, 2i+1 high), so the repack moves nibbles.
/// Q8_0 (f16 d, then 32 signed bytes q) = the 8-bit symmetric `int` table (code − 128) × d: code = q + 128 (the sign
/// bit flipped), one byte per element, in element order.
extension LUTDevicePlanes {
    /// The LUT format and table a GGUF block format is a member of, or nil (other block types are converted to bf16).
    public static func ggufMember(_ f: WeightFormat) -> (format: WeightFormat.LUTFormat, table: [Float])? {
        switch f {
        case .gguf(.q4_0): return (.init(bits: 4, groupSize: 32, table: .int, hasOffsets: false), LUTTables.integer(bits: 4, affine: false))
        case .gguf(.q4_1): return (.init(bits: 4, groupSize: 32, table: .int, hasOffsets: true), LUTTables.integer(bits: 4, affine: true))
        case .gguf(.iq4_nl): return (.init(bits: 4, groupSize: 32, table: .custom, hasOffsets: false), QuantBlocks.iq4Values.map { Float($0) })
        case .gguf(.q8_0): return (.init(bits: 8, groupSize: 32, table: .int, hasOffsets: false), LUTTables.integer(bits: 8, affine: false))
        default: return nil
        }
    }

    /// The lookup-table view of a matrix format: itself for `.lut`, the member format for Q4_0 / Q4_1 / IQ4_NL / Q8_0.
    public static func lutView(_ f: WeightFormat) -> WeightFormat.LUTFormat? {
        if case .lut(let l) = f { return l }
        return ggufMember(f)?.format
    }

    /// One matrix's planes in the canonical LUT layout: codes [rows, LUTCodes.rowBytes(cols, bits)] (4 bits: element 2i
    /// in the low nibble; 8 bits: one byte each), scales and offsets [rows, cols/g] as f32 (the stored f16 values,
    /// exactly), and the table.
    public struct Canonical {
        public var bits: Int
        public var codes: [UInt8]
        public var scales: [Float]
        public var offsets: [Float]?
        public var table: [Float]
        /// Code (r, k) of a matrix `cols` wide.
        public func code(_ r: Int, _ k: Int, cols: Int) -> Int {
            let rowBytes = LUTCodes.rowBytes(cols: cols, bits: bits), bit = k * bits, at = r * rowBytes + bit / 8
            let pair = Int(codes[at]) | (bit / 8 + 1 < rowBytes ? Int(codes[at + 1]) << 8 : 0)
            return (pair >> (bit % 8)) & ((1 << bits) - 1)
        }
    }

    public static func canonical(_ m: QuantizedMatrix) throws -> Canonical {
        if case .lut(let l) = m.format {
            let groups = m.rows * (m.cols / l.groupSize)
            func f16(_ index: Int) -> [Float] {
                let bytes = m.planes[index].bytes
                return (0..<groups).map { halfToFloat(bytes.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self)) }
            }
            return Canonical(bits: l.bits, codes: Array(m.planes[0].bytes), scales: f16(1), offsets: l.hasOffsets ? f16(2) : nil,
                             table: GPUWeights.lutTable(m))
        }
        guard let (l, table) = ggufMember(m.format), case .gguf(let block) = m.format else {
            throw KilnError("tensor \(m.name): \(m.format.name) is not a lookup-table format gemm_lut reads")
        }
        let blocks = m.rows * (m.cols / 32), blockBytes = block.blockBytes
        let codeOffset = l.hasOffsets ? 4 : 2   // Q4_1: d, m, then codes; Q4_0 / IQ4_NL / Q8_0: d, then codes
        let raw = m.planes[0].bytes
        var out = Canonical(bits: l.bits, codes: [UInt8](repeating: 0, count: blocks * 4 * l.bits), scales: [Float](repeating: 0, count: blocks),
                            offsets: l.hasOffsets ? [Float](repeating: 0, count: blocks) : nil, table: table)
        for b in 0..<blocks {
            let base = b * blockBytes
            out.scales[b] = halfToFloat(raw.loadUnaligned(fromByteOffset: base, as: UInt16.self))
            if l.bits == 8 {   // Q8_0: q (two's complement) → code q + 128
                for e in 0..<32 { out.codes[b * 32 + e] = raw[base + codeOffset + e] ^ 0x80 }
                continue
            }
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
