import XCTest
import KilnCore

/// The lookup-table format's CPU reference and quantizer against expectations computed here by hand or from the
/// definitions (published NF4, e2m1 bit fields, little-endian bit packing), never from the code under test.
final class LUTFormatTests: XCTestCase {
    func testNormalFloatTables() {
        // The construction rebuilds the published NF4 (bitsandbytes) to float precision.
        let rebuilt = LUTTables.normalFloatQuantiles(bits: 4)
        XCTAssertEqual(rebuilt.count, 16)
        for (a, b) in zip(rebuilt, LUTTables.nf4) { XCTAssertEqual(a, b, accuracy: 1e-6) }
        // NF3 / NF2 from the same construction, computed independently with Python's statistics.NormalDist.inv_cdf.
        let nf3: [Float] = [-1.0, -0.535022708485538, -0.24693143181157523, 0.0, 0.18333748033548755, 0.3819939543209139, 0.6229857417143424, 1.0]
        let nf2: [Float] = [-1.0, 0.0, 0.43581816458311545, 1.0]
        for (a, b) in zip(LUTTables.normalFloat(bits: 3), nf3) { XCTAssertEqual(a, b, accuracy: 1e-6) }
        for (a, b) in zip(LUTTables.normalFloat(bits: 2), nf2) { XCTAssertEqual(a, b, accuracy: 1e-6) }
        XCTAssertEqual(LUTTables.normalFloat(bits: 3).count, 8)
        XCTAssertEqual(LUTTables.normalFloat(bits: 2).count, 4)
    }

    func testFP4AndIntegerTables() {
        // e2m1: sign bit 3, exponent bits 2–1 (bias 1), mantissa bit 0; exponent 0 is subnormal (m × 0.5).
        for code in 0..<16 {
            let sign: Float = code & 8 != 0 ? -1 : 1, e = (code >> 1) & 3, m = Float(code & 1)
            let magnitude: Float = e == 0 ? m * 0.5 : (1 + m / 2) * Float(1 << (e - 1))
            XCTAssertEqual(LUTTables.fp4E2M1[code], sign * magnitude, "code \(code)")
        }
        XCTAssertEqual(LUTTables.integer(bits: 4, affine: false), (-8...7).map(Float.init))
        XCTAssertEqual(LUTTables.integer(bits: 3, affine: true), (0...7).map(Float.init))
        XCTAssertEqual(LUTTables.integer(bits: 2, affine: false), [-2, -1, 0, 1])
        XCTAssertThrowsError(try LUTTables.fixed(.init(bits: 3, groupSize: 32, table: .fp4, hasOffsets: false)))
    }

    func testPackingLittleEndianAlongK() {
        // 3-bit codes 0…7: Σ k << 3k = bytes 136, 198, 250 (computed by hand / Python).
        var codes: [UInt8] = (0..<8).map(UInt8.init) + [UInt8](repeating: 0, count: 24)
        var out = [UInt8](repeating: 0xff, count: LUTCodes.rowBytes(cols: 32, bits: 3))
        XCTAssertEqual(out.count, 12)
        LUTCodes.pack(&codes, count: 32, bits: 3, into: &out)
        XCTAssertEqual(Array(out[0..<3]), [136, 198, 250])
        XCTAssertEqual(Array(out[3...]), [UInt8](repeating: 0, count: 9))
        // 2-bit codes 3, 0, 1, 2 -> 3 | 1 << 4 | 2 << 6 = 147; 4-bit: low nibble first.
        var two: [UInt8] = [3, 0, 1, 2], twoOut: [UInt8] = [0]
        LUTCodes.pack(&two, count: 4, bits: 2, into: &twoOut)
        XCTAssertEqual(twoOut, [147])
        var four: [UInt8] = [0x5, 0xa], fourOut: [UInt8] = [0]
        LUTCodes.pack(&four, count: 2, bits: 4, into: &fourOut)
        XCTAssertEqual(fourOut, [0xa5])
        // Round trip of random codes at every width, with rows whose bits straddle bytes.
        var rng = SystemRandomNumberGenerator()
        for bits in [2, 3, 4] {
            let n = 96
            var c = (0..<n).map { _ in UInt8.random(in: 0..<UInt8(1 << bits), using: &rng) }
            var packed = [UInt8](repeating: 0, count: LUTCodes.rowBytes(cols: n, bits: bits))
            LUTCodes.pack(&c, count: n, bits: bits, into: &packed)
            let back = packed.withUnsafeBufferPointer { p in (0..<n).map { UInt8(LUTCodes.code(p.baseAddress!, $0, bits: bits)) } }
            XCTAssertEqual(back, c, "\(bits) bits")
        }
    }

    /// A matrix from hand-made planes through `QuantizedMatrix.dequantize`.
    func matrix(_ f: WeightFormat.LUTFormat, rows: Int, cols: Int, codes: [UInt8], scales: [UInt16], offsets: [UInt16]?,
                table: [Float], body: (QuantizedMatrix) throws -> Void) throws {
        let groups = cols / f.groupSize
        var planes: [(PlaneRole, [Int], DType, [UInt8])] = [
            (.codes, [rows, LUTCodes.rowBytes(cols: cols, bits: f.bits)], .u8, codes),
            (.scales, [rows, groups], .f16, scales.flatMap { [UInt8($0 & 0xff), UInt8($0 >> 8)] })]
        if let offsets { planes.append((.offsets, [rows, groups], .f16, offsets.flatMap { [UInt8($0 & 0xff), UInt8($0 >> 8)] })) }
        planes.append((.table, [table.count], .f32, table.flatMap { v in (0..<4).map { UInt8((v.bitPattern >> (8 * $0)) & 0xff) } }))
        let buffers = planes.map { p in UnsafeMutableRawBufferPointer.allocate(byteCount: p.3.count, alignment: 16) }
        defer { buffers.forEach { $0.deallocate() } }
        for (b, p) in zip(buffers, planes) { b.copyBytes(from: p.3) }
        let m = try QuantizedMatrix(name: "test.weight", rows: rows, cols: cols, format: .lut(f),
                                    planes: zip(planes, buffers).map { .init($0.0, shape: $0.1, dtype: $0.2, bytes: UnsafeRawBufferPointer($1)) })
        try body(m)
    }

    func testHandComputedNF4Block() throws {
        // One row, K = 64, g = 32: codes k % 16, group scales 1.0 (0x3C00) and -2.0 (0xC000).
        let f = WeightFormat.LUTFormat(bits: 4, groupSize: 32, table: .nf, hasOffsets: false)
        let codes: [UInt8] = (0..<32).map { (j: Int) -> UInt8 in
            let lo: Int = (2 * j) % 16, hi: Int = (2 * j + 1) % 16
            return UInt8(lo | hi << 4)
        }
        try matrix(f, rows: 1, cols: 64, codes: codes, scales: [0x3C00, 0xC000], offsets: nil, table: LUTTables.nf4) { m in
            let v = try m.dequantized()
            XCTAssertEqual(v[0], -1.0); XCTAssertEqual(v[1], -0.6961928009986877); XCTAssertEqual(v[15], 1.0)
            XCTAssertEqual(v[7], 0); XCTAssertEqual(v[31], 1.0)
            XCTAssertEqual(v[32], 2.0); XCTAssertEqual(v[33], 2 * 0.6961928009986877); XCTAssertEqual(v[47], -2.0)
        }
    }

    func testHandComputedAffineInt3Block() throws {
        // Two rows, K = 32, 3-bit affine ints 0…7: value = code × 0.5 − 1 (row 0) and code × 0.25 + 2 (row 1).
        let f = WeightFormat.LUTFormat(bits: 3, groupSize: 32, table: .int, hasOffsets: true)
        var row = [UInt8](repeating: 0, count: 12)
        row[0] = 136; row[1] = 198; row[2] = 250   // codes 0…7, then zeros
        try matrix(f, rows: 2, cols: 32, codes: row + row, scales: [0x3800, 0x3400], offsets: [0xBC00, 0x4000],
                   table: LUTTables.integer(bits: 3, affine: true)) { m in
            let v = try m.dequantized()
            XCTAssertEqual(Array(v[0..<8]), [-1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5])
            XCTAssertEqual(v[8], -1)
            XCTAssertEqual(Array(v[32..<36]), [2, 2.25, 2.5, 2.75])
            XCTAssertEqual(v[63], 2)
        }
    }

    func testNonFiniteTableIsAnError() throws {
        let f = WeightFormat.LUTFormat(bits: 2, groupSize: 32, table: .learned, hasOffsets: false)
        try matrix(f, rows: 1, cols: 32, codes: [UInt8](repeating: 0, count: 8), scales: [0x3C00], offsets: nil,
                   table: [0, 1, .nan, 2]) { m in
            XCTAssertThrowsError(try m.dequantized()) { XCTAssertTrue("\($0)".contains("test.weight"), "\($0)") }
        }
    }

    // MARK: quantizer

    func gaussian(_ n: Int, seed: UInt64) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { _ in
            let u1 = max(Double(rng.next() >> 11) / Double(1 << 53), 1e-12), u2 = Double(rng.next() >> 11) / Double(1 << 53)
            return Float((-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)) * 0.02
        }
    }

    func testExactlyRepresentableMatrixRoundTrips() throws {
        // Values that are table entries times an f16 scale, with each group's largest magnitude at a table end:
        // the search must find the scale and codes back (error ~0), for every fixed table kind.
        for (bits, table, affine) in [(4, WeightFormat.LUTFormat.Table.nf, false), (4, .fp4, false), (3, .nf, false), (2, .int, true), (4, .int, true)] {
            let f = WeightFormat.LUTFormat(bits: bits, groupSize: 32, table: table, hasOffsets: affine)
            let values = try LUTTables.fixed(f)!
            let lo = values.min()!, hi = values.max()!
            var rng = SplitMix64(seed: UInt64(bits * 10 + values.count))
            let rows = 4, cols = 64
            var w = [Float](repeating: 0, count: rows * cols)
            for g in 0..<(rows * cols / 32) {
                let scale = halfToFloat(floatToHalf(Float(rng.next() % 1000 + 1) * 1e-4))
                let offset = affine ? halfToFloat(floatToHalf(-Float(rng.next() % 100) * 1e-3)) : 0
                for k in 0..<32 {
                    let t = k == 0 ? lo : k == 1 ? hi : values[Int(rng.next() % UInt64(values.count))]
                    w[g * 32 + k] = t * scale + offset
                }
            }
            let q = try LUTQuantizer.quantize(w, rows: rows, cols: cols, format: f)
            XCTAssertLessThan(q.relativeError, 2e-3, "\(WeightFormat.lut(f).name)")
        }
    }

    func testSearchedScaleBeatsAbsmaxAndLearnedBeatsSeed() throws {
        let rows = 64, cols = 256
        let w = gaussian(rows * cols, seed: 7)
        let f = WeightFormat.LUTFormat(bits: 4, groupSize: 64, table: .nf, hasOffsets: false)
        let q = try LUTQuantizer.quantize(w, rows: rows, cols: cols, format: f)
        // Plain absmax NF4, computed here: scale = absmax in f16, nearest entry by linear scan.
        var absmax = [Float](repeating: 0, count: w.count)
        for g in 0..<(w.count / 64) {
            let s = halfToFloat(floatToHalf(w[(g * 64)..<((g + 1) * 64)].map(abs).max()!))
            for k in (g * 64)..<((g + 1) * 64) {
                absmax[k] = LUTTables.nf4.min { abs($0 * s - w[k]) < abs($1 * s - w[k]) }! * s
            }
        }
        let absmaxError = LUTQuantizer.relativeError(w, absmax)
        XCTAssertLessThan(q.relativeError, absmaxError * 0.97, "searched \(q.relativeError) vs absmax \(absmaxError)")
        // The planes reproduce the reported error through the reference.
        XCTAssertEqual(LUTQuantizer.relativeError(w, q.dequantized()), q.relativeError, accuracy: 1e-9)

        var learnedFormat = f; learnedFormat.table = .learned
        let learned = try LUTQuantizer.quantize(w, rows: rows, cols: cols, format: learnedFormat)
        XCTAssertEqual(learned.table.count, 16)
        XCTAssertLessThanOrEqual(learned.relativeError, try XCTUnwrap(learned.seedRelativeError))
        XCTAssertLessThanOrEqual(learned.relativeError, q.relativeError)
        print("gaussian 64×256 lut4 g64: absmax nf \(absmaxError), searched nf \(q.relativeError), learned \(learned.relativeError)")
    }

    /// A fused group (like q/k/v: different heights, different spreads) learns one table that every member carries;
    /// the group's total squared error, computed here from the members' planes, is no worse than the seed's total
    /// (from each member's reported seed error) and than NF4's (quantized here per matrix).
    func testFusedGroupSharesOneLearnedTable() throws {
        let cols = 128
        let shapes = [(64, 1.0 as Float), (16, 3.0 as Float), (16, 0.5 as Float)]
        let members = shapes.enumerated().map { i, s in
            (weights: gaussian(s.0 * cols, seed: UInt64(20 + i)).enumerated().map { j, v in v * s.1 * (j % 7 == 0 ? 2.5 : 1) },
             rows: s.0, cols: cols, name: "blk.0.attn_\(["q", "k", "v"][i]).weight")
        }
        let f = WeightFormat.LUTFormat(bits: 4, groupSize: 32, table: .learned, hasOffsets: false)
        let qs = try LUTQuantizer.quantizeGroup(members, format: f)
        XCTAssertEqual(qs.count, 3)
        XCTAssertEqual(qs[1].table, qs[0].table); XCTAssertEqual(qs[2].table, qs[0].table)
        XCTAssertNotEqual(qs[0].table, LUTTables.nf4)   // learned, not the seed kept
        var nf = f; nf.table = .nf
        var learnedSq = 0.0, seedSq = 0.0, nfSq = 0.0, normSq = 0.0
        for (m, q) in zip(members, qs) {
            let got = q.dequantized()
            let norm = m.weights.reduce(0.0) { $0 + Double($1) * Double($1) }
            let err = zip(m.weights, got).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
            XCTAssertEqual((err / norm).squareRoot(), q.relativeError, accuracy: 1e-9, m.name)
            learnedSq += err; normSq += norm
            seedSq += pow(try XCTUnwrap(q.seedRelativeError), 2) * norm
            nfSq += pow(try LUTQuantizer.quantize(m.weights, rows: m.rows, cols: cols, format: nf).relativeError, 2) * norm
        }
        XCTAssertLessThanOrEqual(learnedSq, seedSq)
        XCTAssertLessThanOrEqual(learnedSq, nfSq)
        XCTAssertGreaterThan(learnedSq / normSq, 1e-5)   // 4 bits lose something
        // Fixed tables are per matrix anyway: the group path gives each member exactly its own quantization.
        let fixed = try LUTQuantizer.quantizeGroup(members, format: nf)
        XCTAssertEqual(fixed.map(\.codes), try members.map { try LUTQuantizer.quantize($0.weights, rows: $0.rows, cols: cols, format: nf).codes })
    }

    func testShapeErrorsNameTheMatrix() {
        let f = WeightFormat.LUTFormat(bits: 4, groupSize: 64, table: .nf, hasOffsets: false)
        XCTAssertThrowsError(try LUTQuantizer.quantize([Float](repeating: 1, count: 96), rows: 1, cols: 96, format: f, name: "blk.0.ffn_up.weight")) {
            XCTAssertTrue("\($0)".contains("blk.0.ffn_up.weight") && "\($0)".contains("96"), "\($0)")
        }
    }
}
