import XCTest
import KilnCore
@testable import KilnCPU

/// The CPU engine's lookup-table product against a reference written here: codes unpacked from the bit layout's
/// definition, times the table and the f16 group scale (plus offset), then a Double dot product with every token.
final class LUTProductTests: XCTestCase {
    func check(bits: Int, group: Int, affine: Bool, seed: UInt64) throws {
        let rows = 7, cols = 3 * group, tokens = 5, groups = cols / group
        var rng = SplitMix64(seed: seed)
        let rowBytes = (cols * bits + 7) / 8
        let codes = (0..<(rows * rowBytes)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let scales = (0..<(rows * groups)).map { _ in floatToHalf(Float(rng.unit()) * 0.1 - 0.05) }
        let offsets = (0..<(rows * groups)).map { _ in floatToHalf(Float(rng.unit()) * 0.02 - 0.01) }
        let table = (0..<(1 << bits)).map { _ in Float(rng.unit()) * 4 - 2 }
        let x = (0..<(tokens * cols)).map { _ in Float(rng.unit()) * 2 - 1 }
        // Reference: code k of row r = bits [k·b, k·b + b) of the row, little-endian.
        func code(_ r: Int, _ k: Int) -> Int {
            var v = 0
            for i in 0..<bits { let bit = k * bits + i; v |= Int((codes[r * rowBytes + bit / 8] >> (bit % 8)) & 1) << i }
            return v
        }
        var want = [Double](repeating: 0, count: tokens * rows)
        for r in 0..<rows {
            let w = (0..<cols).map { k in
                Double(table[code(r, k)]) * Double(halfToFloat(scales[r * groups + k / group]))
                    + (affine ? Double(halfToFloat(offsets[r * groups + k / group])) : 0)
            }
            for t in 0..<tokens { want[t * rows + r] = (0..<cols).reduce(0.0) { $0 + w[$1] * Double(x[t * cols + $1]) } }
        }
        let f = WeightFormat.LUTFormat(bits: bits, groupSize: group, table: .learned, hasOffsets: affine)
        let le16 = { (v: [UInt16]) in v.flatMap { [UInt8($0 & 0xff), UInt8($0 >> 8)] } }
        var blobs: [(PlaneRole, [Int], DType, [UInt8])] = [(.codes, [rows, rowBytes], .u8, codes), (.scales, [rows, groups], .f16, le16(scales))]
        if affine { blobs.append((.offsets, [rows, groups], .f16, le16(offsets))) }
        blobs.append((.table, [table.count], .f32, table.flatMap { v in (0..<4).map { UInt8((v.bitPattern >> (8 * $0)) & 0xff) } }))
        let buffers = blobs.map { UnsafeMutableRawBufferPointer.allocate(byteCount: $0.3.count, alignment: 16) }
        defer { buffers.forEach { $0.deallocate() } }
        for (b, p) in zip(buffers, blobs) { b.copyBytes(from: p.3) }
        let m = try QuantizedMatrix(name: "blk.0.ffn_up.weight", rows: rows, cols: cols, format: .lut(f),
                                    planes: zip(blobs, buffers).map { .init($0.0, shape: $0.1, dtype: $0.2, bytes: UnsafeRawBufferPointer($1)) })
        let lw = try LinearWeight(m)
        XCTAssertFalse(lw.usesQ8)
        let act = Q8Activations(maxTokens: tokens, maxCols: cols)
        var out = [Float](repeating: .nan, count: tokens * rows)
        x.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { o in
                lw.apply(rows: 0..<3, x: xp.baseAddress!, act: act, tokens: tokens, out: o.baseAddress!, outStride: rows)
                lw.apply(rows: 3..<rows, x: xp.baseAddress!, act: act, tokens: tokens, out: o.baseAddress!, outStride: rows)
            }
        }
        for i in 0..<out.count {
            XCTAssertEqual(Double(out[i]), want[i], accuracy: 1e-4 * max(1, abs(want[i])), "\(bits) bits g\(group) affine \(affine), output \(i)")
        }
    }

    func testProductMatchesReferenceForEveryWidth() throws {
        for bits in [2, 3, 4] {
            try check(bits: bits, group: 32, affine: false, seed: UInt64(bits))
            try check(bits: bits, group: 64, affine: true, seed: UInt64(10 + bits))
        }
        try check(bits: 3, group: 128, affine: false, seed: 99)
    }
}
