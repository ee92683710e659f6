import Foundation

/// The fixed tables of the lookup-table weight family (`WeightFormat.LUTFormat`). A weight is
/// `table[code] × scale + offset` (offset 0 without offsets); the table of a stored matrix is always its
/// `*.weight_table` tensor, these are what `kiln quantize` writes for the fixed kinds and what `learned` starts from.
/// Entries are in code order; none of the code that reads a table assumes it is sorted.
public enum LUTTables {
    /// NF4 exactly as published by QLoRA and shipped by bitsandbytes (`functional.py`, the NF4 code book), as f32.
    public static let nf4: [Float] = [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
        -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
        0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ]

    /// The e2m1 (FP4) values, code = the e2m1 bit pattern (sign, 2 exponent bits, 1 mantissa bit): codes 0…7 are
    /// 0, 0.5, 1, 1.5, 2, 3, 4, 6 and codes 8…15 their negatives (code 8 is -0, equal to 0 as a weight).
    public static let fp4E2M1: [Float] = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6]

    /// NormalFloat with `bits` bits, built as bitsandbytes' `create_normal_map(offset, use_extra_value=True)` builds
    /// NF4: 2^(b-1) positive quantiles Φ⁻¹(linspace(offset, 0.5, 2^(b-1)+1)[:-1]), 2^(b-1)-1 negative ones
    /// -Φ⁻¹(linspace(offset, 0.5, 2^(b-1))[:-1]), an exact zero, all divided by the largest. `offset` is the mean of
    /// 1 - 1/(2·(2^b-1)) and 1 - 1/(2·2^b), which for b = 4 is QLoRA's 0.9677083; for b = 3 it is 0.9330357 and for
    /// b = 2 0.8541667. For b = 4 this reproduces `nf4` to 1e-6 (tested); `nf4` itself is the published literal.
    public static func normalFloat(bits: Int) -> [Float] { bits == 4 ? nf4 : normalFloatQuantiles(bits: bits) }

    /// The construction behind `normalFloat` (for 4 bits it rebuilds `nf4`, which the tests check).
    public static func normalFloatQuantiles(bits: Int) -> [Float] {
        let n = 1 << bits
        let offset = 1 - 0.5 * (1 / (2 * Double(n - 1)) + 1 / (2 * Double(n)))
        func linspace(_ a: Double, _ b: Double, _ count: Int) -> [Double] {
            (0..<count).map { a + (b - a) * Double($0) / Double(count - 1) }
        }
        let positive = linspace(offset, 0.5, n / 2 + 1).dropLast().map(inverseNormalCDF)
        let negative = linspace(offset, 0.5, n / 2).dropLast().map { -inverseNormalCDF($0) }
        let values = (positive + negative + [0]).sorted()
        let top = values.map(abs).max()!
        return values.map { Float($0 / top) }
    }

    /// Uniform integers: symmetric `code - 2^(b-1)` (-8…7 for 4 bits, like GGUF's Q4_0), or `code` (0…15) with
    /// offsets (like Q4_1, where the offset is the group minimum).
    public static func integer(bits: Int, affine: Bool) -> [Float] {
        (0..<(1 << bits)).map { Float(affine ? $0 : $0 - (1 << (bits - 1))) }
    }

    /// The fixed table of `format`, or nil for `learned` and `custom` tables (which come with the matrix).
    public static func fixed(_ format: WeightFormat.LUTFormat) throws -> [Float]? {
        switch format.table {
        case .int: return integer(bits: format.bits, affine: format.hasOffsets)
        case .nf: return normalFloat(bits: format.bits)
        case .fp4:
            guard format.bits == 4 else { throw KilnError("the fp4 table (e2m1 values) needs 4-bit codes, not \(format.bits)") }
            return fp4E2M1
        case .learned, .custom: return nil
        }
    }

    /// Φ⁻¹(p) of the standard normal, by bisection on Φ(x) = erfc(-x/√2)/2 to double precision (a table is built once).
    static func inverseNormalCDF(_ p: Double) -> Double {
        var lo = -10.0, hi = 10.0
        for _ in 0..<200 {
            let mid = (lo + hi) / 2
            if 0.5 * erfc(-mid / 2.0.squareRoot()) < p { lo = mid } else { hi = mid }
        }
        return (lo + hi) / 2
    }
}

/// The codes plane of a lookup-table matrix: per row, element k's b-bit code at bits [k·b, k·b + b) of the row's
/// bytes, little-endian (bit 0 of a byte first; a 3-bit code may straddle two bytes); each row padded to whole bytes,
/// so a row is ceil(K·b / 8) bytes.
public enum LUTCodes {
    public static func rowBytes(cols: Int, bits: Int) -> Int { (cols * bits + 7) / 8 }

    @inline(__always) public static func code(_ row: UnsafePointer<UInt8>, _ k: Int, bits: Int) -> Int {
        let bit = k * bits, byte = bit >> 3, shift = bit & 7
        var v = Int(row[byte]) >> shift
        if shift + bits > 8 { v |= Int(row[byte + 1]) << (8 - shift) }
        return v & ((1 << bits) - 1)
    }

    /// Packs one row of codes (each < 2^bits) into `out` (`rowBytes` bytes, zeroed here first).
    public static func pack(_ codes: UnsafePointer<UInt8>, count: Int, bits: Int, into out: UnsafeMutablePointer<UInt8>) {
        let n = rowBytes(cols: count, bits: bits)
        out.update(repeating: 0, count: n)
        for k in 0..<count {
            let bit = k * bits, byte = bit >> 3, shift = bit & 7
            let v = Int(codes[k]) << shift
            out[byte] |= UInt8(v & 0xff)
            if shift + bits > 8 { out[byte + 1] |= UInt8(v >> 8) }
        }
    }

    /// The CPU reference of the format: row `r` of a `[rows, cols]` lookup-table matrix as f32,
    /// `value[k] = table[code[k]] × scale[k / g] + offset[k / g]` with f16 scales and offsets.
    /// `codes` is the whole codes plane, `scales` / `offsets` the f16 planes `[rows, cols / g]`, `table` 2^b entries.
    public static func dequantizeRow(_ r: Int, format l: WeightFormat.LUTFormat, cols: Int, codes: UnsafePointer<UInt8>,
                                     scales: UnsafePointer<UInt16>, offsets: UnsafePointer<UInt16>?, table: UnsafePointer<Float>,
                                     into out: UnsafeMutablePointer<Float>) {
        let groups = cols / l.groupSize
        let row = codes + r * rowBytes(cols: cols, bits: l.bits)
        for g in 0..<groups {
            let scale = halfToFloat(scales[r * groups + g])
            let offset = offsets.map { halfToFloat($0[r * groups + g]) } ?? 0
            for k in (g * l.groupSize)..<((g + 1) * l.groupSize) {
                out[k] = table[code(row, k, bits: l.bits)] * scale + offset
            }
        }
    }
}

extension QuantizedMatrix {
    /// The lookup-table planes' rows as f32 (`QuantizedMatrix.dequantize` for `.lut`). The table must be finite: a
    /// NaN or infinite entry is an error naming the tensor (checked once per call, 16 values at most).
    func dequantizeLUT(_ l: WeightFormat.LUTFormat, rows range: Range<Int>, into out: UnsafeMutablePointer<Float>) throws {
        let codes = planes[0].bytes.bindMemory(to: UInt8.self).baseAddress!
        let scales = planes[1].bytes.bindMemory(to: UInt16.self).baseAddress!
        let offsets = l.hasOffsets ? planes[2].bytes.bindMemory(to: UInt16.self).baseAddress! : nil
        let table = planes[planes.count - 1].bytes.bindMemory(to: Float.self)
        if let bad = table.firstIndex(where: { !$0.isFinite }) {
            throw KilnError("tensor \(name): lookup table entry \(bad) is \(table[bad]), not a finite value")
        }
        for (i, r) in range.enumerated() {
            LUTCodes.dequantizeRow(r, format: l, cols: cols, codes: codes, scales: scales, offsets: offsets,
                                   table: table.baseAddress!, into: out + i * cols)
        }
    }
}
