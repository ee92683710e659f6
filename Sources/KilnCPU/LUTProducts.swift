import KilnCore

/// The planes of a lookup-table matrix (`WeightFormat.lut`) as the CPU product reads them, checked once when the
/// `LinearWeight` is built (a non-finite table entry is an error naming the tensor).
struct LUTPlanes {
    let format: WeightFormat.LUTFormat
    let codes: UnsafePointer<UInt8>      // [rows, ceil(cols·bits/8)] packed little-endian along K
    let scales: UnsafePointer<UInt16>    // [rows, cols/g] f16
    let offsets: UnsafePointer<UInt16>?  // [rows, cols/g] f16, affine only
    let table: UnsafePointer<Float>      // [2^bits]

    init(_ m: QuantizedMatrix) throws {
        guard case .lut(let l) = m.format, let c = m.plane(.codes), let s = m.plane(.scales), let t = m.plane(.table) else {
            throw KilnError("tensor \(m.name): \(m.format.name) is not a lookup-table matrix with codes, scales and a table")
        }
        let tableValues = t.bytes.bindMemory(to: Float.self)
        if let bad = tableValues.firstIndex(where: { !$0.isFinite }) {
            throw KilnError("tensor \(m.name): lookup table entry \(bad) is \(tableValues[bad]), not a finite value")
        }
        format = l
        codes = c.bytes.bindMemory(to: UInt8.self).baseAddress!
        scales = s.bytes.bindMemory(to: UInt16.self).baseAddress!
        offsets = l.hasOffsets ? m.plane(.offsets)?.bytes.bindMemory(to: UInt16.self).baseAddress : nil
        table = tableValues.baseAddress!
        if l.hasOffsets && offsets == nil { throw KilnError("tensor \(m.name): \(m.format.name) has no offsets plane") }
    }
}

extension LinearWeight {
    /// Lookup-table rows `range`: each row dequantized once into f32 by the format's CPU reference
    /// (`LUTCodes.dequantizeRow`), then dotted with every token in float. Correct first; the integer/LUT-vectorized
    /// product is later work.
    func lutRows(_ p: LUTPlanes, _ range: Range<Int>, _ x: UnsafePointer<Float>, _ tokens: Int,
                 _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: cols) { rowBuffer in
            let row = rowBuffer.baseAddress!
            for r in range {
                LUTCodes.dequantizeRow(r, format: p.format, cols: cols, codes: p.codes, scales: p.scales, offsets: p.offsets,
                                       table: p.table, into: row)
                rowTimesTokens(row, r, x, tokens, out, outStride)
            }
        }
    }
}
