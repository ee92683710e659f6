import XCTest
import KilnCore

/// Weight formats as data: names, plane layouts, and the CPU dequantization reference on hand-built bytes whose
/// values are worked out by hand in the comments (never by the code under test).
final class WeightFormatTests: XCTestCase {
    private func matrix(_ bytes: [UInt8], rows: Int, cols: Int, _ format: WeightFormat, name: String = "w") throws -> [Float] {
        try bytes.withUnsafeBytes { try QuantizedMatrix(name: name, rows: rows, cols: cols, format: format, data: $0).dequantized() }
    }

    private func halves(_ hs: [UInt16]) -> [UInt8] { hs.flatMap { [UInt8($0 & 0xff), UInt8($0 >> 8)] } }

    func testDenseDequantization() throws {
        // f32: the bit patterns of 1.5, -0.125, 3e-8 and 1e6.
        let f: [Float] = [1.5, -0.125, 3e-8, 1e6]
        XCTAssertEqual(try matrix(f.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }, rows: 2, cols: 2, .dense(.f32)), f)
        // f16: 0x3C00 = 1, 0xC000 = -2, 0x3555 = 1.0101010101b × 2^-2 = 1365/4096, 0x0001 = 2^-24 (the smallest subnormal).
        XCTAssertEqual(try matrix(halves([0x3C00, 0xC000, 0x3555, 0x0001]), rows: 1, cols: 4, .dense(.f16)),
                       [1, -2, 1365.0 / 4096, 1.0 / 16_777_216])
        // bf16: the high halves of f32: 0x3F80 = 1, 0xC0A0 = -5, 0x4049 = 1.5703125 × 2 = 3.140625, 0x3E80 = 0.25.
        XCTAssertEqual(try matrix(halves([0x3F80, 0xC0A0, 0x4049, 0x3E80]), rows: 2, cols: 2, .dense(.bf16)), [1, -5, 3.140625, 0.25])
    }

    func testQ8_0Dequantization() throws {
        // Two rows of one block each. Row 0: d = 0.25 (half 0x3400), q[j] = j - 16 -> 0.25·(j - 16).
        // Row 1: d = -2 (half 0xC000), q[j] = 127 for even j, -128 for odd j -> -254, 256.
        var bytes = halves([0x3400]) + (0..<32).map { UInt8(bitPattern: Int8($0 - 16)) }
        bytes += halves([0xC000]) + (0..<32).map { $0 % 2 == 0 ? UInt8(127) : UInt8(0x80) }
        let out = try matrix(bytes, rows: 2, cols: 32, .gguf(.q8_0))
        for j in 0..<32 {
            XCTAssertEqual(out[j], 0.25 * Float(j - 16), "row 0 element \(j)")
            XCTAssertEqual(out[32 + j], j % 2 == 0 ? -254 : 256, "row 1 element \(j)")
        }
    }

    func testQ4_0Dequantization() throws {
        // d = 0.5 (half 0x3800); byte j holds element j in its low nibble (j) and element j+16 in its high nibble (15-j):
        // element j = 0.5·(j - 8), element j+16 = 0.5·(7 - j).
        let bytes = halves([0x3800]) + (0..<16).map { UInt8($0) | UInt8(15 - $0) << 4 }
        let out = try matrix(bytes, rows: 1, cols: 32, .gguf(.q4_0))
        for j in 0..<16 {
            XCTAssertEqual(out[j], 0.5 * Float(j - 8))
            XCTAssertEqual(out[j + 16], 0.5 * Float(7 - j))
        }
        XCTAssertEqual(out[0], -4); XCTAssertEqual(out[16], 3.5)
    }

    func testQ4_1Dequantization() throws {
        // Two blocks in one row. Block 0: d = 0.25 (0x3400), m = 1.5 (0x3E00), nibbles j | (15-j) << 4:
        // element j = 0.25·j + 1.5, element j+16 = 0.25·(15 - j) + 1.5. Block 1: d = 1 (0x3C00), m = -8 (0xC800),
        // every byte 0xF0: low nibbles 0 -> -8, high nibbles 15 -> 7.
        var bytes = halves([0x3400, 0x3E00]) + (0..<16).map { UInt8($0) | UInt8(15 - $0) << 4 }
        bytes += halves([0x3C00, 0xC800]) + [UInt8](repeating: 0xF0, count: 16)
        let out = try matrix(bytes, rows: 1, cols: 64, .gguf(.q4_1))
        for j in 0..<16 {
            XCTAssertEqual(out[j], 0.25 * Float(j) + 1.5)
            XCTAssertEqual(out[j + 16], 0.25 * Float(15 - j) + 1.5)
            XCTAssertEqual(out[32 + j], -8)
            XCTAssertEqual(out[48 + j], 7)
        }
    }

    func testRowRangeDequantizesOnlyThoseRows() throws {
        // Three Q8_0 rows with d = 1 (0x3C00) and every code equal to the row index + 1.
        let bytes = (0..<3).flatMap { r in halves([0x3C00]) + [UInt8](repeating: UInt8(r + 1), count: 32) }
        var out = [Float](repeating: .nan, count: 32)
        try bytes.withUnsafeBytes { raw in
            let m = try QuantizedMatrix(name: "w", rows: 3, cols: 32, format: .gguf(.q8_0), data: raw)
            XCTAssertEqual(m.rowBytes, 34)
            try out.withUnsafeMutableBufferPointer { try m.dequantize(rows: 2..<3, into: $0.baseAddress!) }
            XCTAssertThrowsError(try out.withUnsafeMutableBufferPointer { try m.dequantize(rows: 2..<4, into: $0.baseAddress!) })
        }
        XCTAssertEqual(out, [Float](repeating: 3, count: 32))
    }

    func testWrongPlaneSizeIsAnErrorNamingTheTensor() {
        // A [4, 64] Q4_1 matrix is 4 rows × 2 blocks × 20 bytes = 160 bytes; one byte short, or one over, is an error.
        for count in [159, 161] {
            let bytes = [UInt8](repeating: 0, count: count)
            XCTAssertThrowsError(try bytes.withUnsafeBytes {
                try QuantizedMatrix(name: "blk.3.ffn_up.weight", rows: 4, cols: 64, format: .gguf(.q4_1), data: $0)
            }) { e in
                let text = "\(e)"
                XCTAssertTrue(text.contains("blk.3.ffn_up.weight") && text.contains("blocks") && text.contains("160"), text)
            }
        }
        // A dense bf16 [3, 5] matrix needs 30 bytes.
        XCTAssertThrowsError(try [UInt8](repeating: 0, count: 28).withUnsafeBytes {
            try QuantizedMatrix(name: "output.weight", rows: 3, cols: 5, format: .dense(.bf16), data: $0)
        }) { XCTAssertTrue("\($0)".contains("output.weight") && "\($0)".contains("30"), "\($0)") }
        // Rows that are not whole blocks.
        XCTAssertThrowsError(try [UInt8](repeating: 0, count: 40).withUnsafeBytes {
            try QuantizedMatrix(name: "blk.0.attn_q.weight", rows: 1, cols: 48, format: .gguf(.q8_0), data: $0)
        }) { XCTAssertTrue("\($0)".contains("blk.0.attn_q.weight") && "\($0)".contains("32-element blocks"), "\($0)") }
    }

    func testMultiPlaneFormatsHaveTheirPlaces() throws {
        // FP8 with 128×128 blocks, N = 300, K = 200: codes [300, 200] bytes, scales [ceil(300/128), ceil(200/128)] = [3, 2] f32.
        let fp8 = WeightFormat.fp8E4M3(blockRows: 128, blockCols: 128)
        XCTAssertEqual(try fp8.planes(rows: 300, cols: 200), [PlaneLayout(.codes, shape: [300, 200], dtype: .u8),
                                                              PlaneLayout(.scales, shape: [3, 2], dtype: .f32)])
        XCTAssertEqual(fp8.byteCount(rows: 300, cols: 200), 300 * 200 + 3 * 2 * 4)
        // LUT 3-bit, groups of 64, affine: K = 192 -> 576 bits = 72 bytes per row; 3 groups per row; a table of 8.
        let lut = WeightFormat.lut(.init(bits: 3, groupSize: 64, table: .learned, hasOffsets: true))
        XCTAssertEqual(try lut.planes(rows: 5, cols: 192).map(\.shape), [[5, 72], [5, 3], [5, 3], [8]])
        XCTAssertEqual(try lut.planes(rows: 5, cols: 192).map(\.role), [.codes, .scales, .offsets, .table])
        // 3-bit rows of K = 64 hold 192 bits = 24 bytes; K = 96 with g 32 is 288 bits = 36 bytes (whole bytes per row).
        XCTAssertEqual(try WeightFormat.lut(.init(bits: 3, groupSize: 32, table: .nf, hasOffsets: false)).planes(rows: 1, cols: 96)[0].shape, [1, 36])
        XCTAssertThrowsError(try lut.planes(rows: 5, cols: 100, what: "tensor blk.0.ffn_down.weight")) {
            XCTAssertTrue("\($0)".contains("blk.0.ffn_down.weight") && "\($0)".contains("group size 64"), "\($0)")
        }

        // A multi-plane matrix is checked plane by plane (the FP8 reference itself: testFP8Dequantization).
        let codes = [UInt8](repeating: 0x38, count: 300 * 200), scales = [UInt8](repeating: 0, count: 3 * 2 * 4)
        try codes.withUnsafeBytes { c in
            try scales.withUnsafeBytes { s in
                let m = try QuantizedMatrix(name: "blk.0.attn_q.weight", rows: 300, cols: 200, format: fp8, planes: [
                    .init(.codes, shape: [300, 200], dtype: .u8, bytes: c), .init(.scales, shape: [3, 2], dtype: .f32, bytes: s)])
                XCTAssertEqual(m.byteCount, 60_024)
                XCTAssertNil(m.rowBytes)
                XCTAssertEqual(try m.dequantized()[0], 0)   // code 0x38 = 1 times a scale of 0
                // A scale plane of the wrong shape (per-tensor instead of per-block) names the tensor and the plane.
                XCTAssertThrowsError(try QuantizedMatrix(name: "blk.0.attn_q.weight", rows: 300, cols: 200, format: fp8, planes: [
                    .init(.codes, shape: [300, 200], dtype: .u8, bytes: c),
                    .init(.scales, shape: [1], dtype: .f32, bytes: UnsafeRawBufferPointer(rebasing: s[0..<4]))])) {
                    XCTAssertTrue("\($0)".contains("blk.0.attn_q.weight: plane scales is [1]"), "\($0)")
                }
                XCTAssertThrowsError(try QuantizedMatrix(name: "x", rows: 300, cols: 200, format: fp8, planes: [
                    .init(.codes, shape: [300, 200], dtype: .u8, bytes: c)])) { XCTAssertTrue("\($0)".contains("codes"), "\($0)") }
            }
        }
    }

    func testFP8Dequantization() throws {
        // N = 3, K = 5 with 2×2 blocks (partial edge blocks both ways): scale_inv [2, 3] =
        //   [[0.5, 2, -4], [0.25, 1, 3]]; block (r/2, c/2).
        // Codes (value): 0x38 (1), 0x40 (2), 0xB8 (-1), 0x01 (2⁻⁹), 0x7E (448), 0x30 (0.5), 0x44 (3), 0x00 (0), 0x80 (-0), 0x3C (1.5)
        let codes: [UInt8] = [0x38, 0x40, 0xB8, 0x01, 0x7E,
                              0x30, 0x44, 0x00, 0x80, 0x3C,
                              0x40, 0x38, 0x44, 0x30, 0xB8]
        let scaleInv: [Float] = [0.5, 2, -4, 0.25, 1, 3]
        let want: [Float] = [0.5, 1, -2, 2.0 / 512, -1792,
                             0.25, 1.5, 0, 0, -6,
                             0.5, 0.25, 3, 0.5, -3]
        let fp8 = WeightFormat.fp8E4M3(blockRows: 2, blockCols: 2)
        try codes.withUnsafeBytes { c in
            try scaleInv.withUnsafeBytes { s in
                let m = try QuantizedMatrix(name: "blk.0.ffn_down.weight", rows: 3, cols: 5, format: fp8, planes: [
                    .init(.codes, shape: [3, 5], dtype: .u8, bytes: c), .init(.scales, shape: [2, 3], dtype: .f32, bytes: s)])
                XCTAssertEqual(try m.dequantized(), want)
                // A row range starts at its own row (row 2 reads the second scale row).
                var tail = [Float](repeating: .nan, count: 5)
                try tail.withUnsafeMutableBufferPointer { try m.dequantize(rows: 2..<3, into: $0.baseAddress!) }
                XCTAssertEqual(tail, Array(want[10..<15]))
            }
        }
        // NaN codes stay NaN.
        let nanCodes: [UInt8] = [0x7F, 0xFF], one: [Float] = [1]
        try nanCodes.withUnsafeBytes { c in
            try one.withUnsafeBytes { s in
                let m = try QuantizedMatrix(name: "w", rows: 1, cols: 2, format: .fp8E4M3(blockRows: 128, blockCols: 128), planes: [
                    .init(.codes, shape: [1, 2], dtype: .u8, bytes: c), .init(.scales, shape: [1, 1], dtype: .f32, bytes: s)])
                XCTAssertTrue(try m.dequantized().allSatisfy(\.isNaN))
            }
        }
    }

    func testFP8WeightQuantizerMatchesHandWork() {
        // One 2×2 block [1, -3.5; 0.7, 2] (absmax 3.5: scale = 448/3.5 = 128, scale_inv = 1/128) and one all-zero
        // block (scale 1). 1·128 = 128 = 0x70 (e=14, m=0); -3.5·128 = -448 = 0xFE; 0.7·128 = 89.6 -> between 88
        // (1.375·2⁶, 0x6B) and 96 (1.5·2⁶, 0x6C): 89.6 is nearer 88 -> 0x6B; 2·128 = 256 = 0x78.
        let w: [Float] = [1, -3.5, 0, 0.7, 2, 0]
        var codes = [UInt8](repeating: 0xAA, count: 6), scaleInv = [Float](repeating: .nan, count: 2)
        FP8BlockQuantizer.quantize(w, rows: 2, cols: 3, blockRows: 2, blockCols: 2, codes: &codes, scaleInv: &scaleInv)
        XCTAssertEqual(codes, [0x70, 0xFE, 0x00, 0x6B, 0x78, 0x00])
        XCTAssertEqual(scaleInv, [1.0 / 128, 1])
        // Activations, blocks of 2: [0.25, -0.5 | 0, 0 | 7]: s = 0.5/448 -> 0.25/s = 224 (0x76), -0.5/s = -448 (0xFE);
        // an all-zero block: scale 0, codes 0; 7 alone: s = 7/448 -> 448 (0x7E).
        let x: [Float] = [0.25, -0.5, 0, 0, 7]
        var xc = [UInt8](repeating: 0xAA, count: 5), xs = [Float](repeating: .nan, count: 3)
        FP8BlockQuantizer.quantizeActivations(x, count: 5, block: 2, codes: &xc, scales: &xs)
        XCTAssertEqual(xc, [0x76, 0xFE, 0x00, 0x00, 0x7E])
        XCTAssertEqual(xs, [0.5 / 448, 0, 7 / 448])
    }

    func testNamesRoundTrip() {
        let all: [WeightFormat] = WeightFormat.DenseElement.allCases.map { .dense($0) } + WeightFormat.GGUFBlock.allCases.map { .gguf($0) }
            + [.fp8E4M3(blockRows: 128, blockCols: 128), .lut(.init(bits: 4, groupSize: 64, table: .nf, hasOffsets: false)),
               .lut(.init(bits: 2, groupSize: 32, table: .int, hasOffsets: true))]
        XCTAssertEqual(all.map(\.name), ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k",
                                        "iq4_nl", "iq4_xs", "fp8_e4m3_b128x128", "lut4_g64_nf", "lut2_g32_int_affine"])
        for f in all { XCTAssertEqual(WeightFormat(name: f.name), f) }
        for bad in ["", "Q4_1", "iq2_xxs", "Q4_K", "fp8_e4m3", "fp8_e4m3_b0x128", "lut4_g64", "lut4_g64_nf_x", "lutx_g64_nf"] {
            XCTAssertNil(WeightFormat(name: bad), bad)
        }
        XCTAssertEqual(WeightFormat(stored: .q4_1), .gguf(.q4_1))
        XCTAssertEqual(WeightFormat(stored: .bf16), .bf16)
        XCTAssertNil(WeightFormat(stored: .i32))
    }
}
