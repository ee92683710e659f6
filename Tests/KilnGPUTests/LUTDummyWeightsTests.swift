import XCTest
import KilnCore
@testable import KilnKernels
@testable import KilnCUDA

/// `--dummy-weights … --weights lut4-g64`: the format parser and the host generator of random LUT planes.
final class LUTDummyWeightsTests: XCTestCase {
    func testParsingWeightsOption() throws {
        XCTAssertEqual(try DummyLinearFormat(parsing: "bf16"), .bf16)
        XCTAssertEqual(try DummyLinearFormat(parsing: "fp8"), .fp8)
        XCTAssertEqual(try DummyLinearFormat(parsing: "lut4-g64"), .lut(.init(bits: 4, groupSize: 64, table: .nf, hasOffsets: false)))
        XCTAssertEqual(try DummyLinearFormat(parsing: "lut4-g32"), .lut(.init(bits: 4, groupSize: 32, table: .nf, hasOffsets: false)))
        XCTAssertEqual(try DummyLinearFormat(parsing: "lut4-g128-fp4"), .lut(.init(bits: 4, groupSize: 128, table: .fp4, hasOffsets: false)))
        XCTAssertEqual(try DummyLinearFormat(parsing: "lut4-g32-int-affine"), .lut(.init(bits: 4, groupSize: 32, table: .int, hasOffsets: true)))
        XCTAssertEqual(try DummyLinearFormat(parsing: "lut4-g64-affine"), .lut(.init(bits: 4, groupSize: 64, table: .nf, hasOffsets: true)))
        XCTAssertEqual(try DummyLinearFormat(parsing: "q4_0"), .lut(.init(bits: 4, groupSize: 32, table: .int, hasOffsets: false)))
        XCTAssertEqual(try DummyLinearFormat(parsing: "q4_1"), .lut(.init(bits: 4, groupSize: 32, table: .int, hasOffsets: true)))
        XCTAssertEqual(try DummyLinearFormat(parsing: "lut3-g64"), .lut(.init(bits: 3, groupSize: 64, table: .nf, hasOffsets: false)))
        XCTAssertEqual(try DummyLinearFormat(parsing: "lut2-g32-int-affine"), .lut(.init(bits: 2, groupSize: 32, table: .int, hasOffsets: true)))
        XCTAssertEqual(try DummyLinearFormat(parsing: "lut3-g128-affine"), .lut(.init(bits: 3, groupSize: 128, table: .nf, hasOffsets: true)))
        for bad in ["lut4", "lut4-g16", "lut4-g96", "lut5-g64", "lut1-g64", "lut3-g64-fp4", "lut2-g64-fp4", "lut03-g64", "lut+3-g64", "lut4-g64-learned",
                    "lut4-g64-nf-affine-x", "lut4-64", "LUT4-g64", "lut4-g64-", "q8_1", "lut8-g32-int", "iq4_nl", ""] {
            XCTAssertThrowsError(try DummyLinearFormat(parsing: bad), bad)
        }
        for name in DummyLinearFormat.examples { XCTAssertNoThrow(try DummyLinearFormat(parsing: name), name) }
        XCTAssertEqual(try DummyLinearFormat(parsing: "lut4-g64").name, "lut4_g64_nf")
        XCTAssertEqual(try DummyLinearFormat(parsing: "lut2-g64").name, "lut2_g64_nf")
    }

    /// 3 and 2 bits: the device layout's sizes (128·bits bytes per 16 × 64 record), uniformly random codes in every
    /// record bit, and the width's fixed table.
    func testLowBitDummyPlanes() throws {
        for bits in [3, 2] {
            let f = WeightFormat.LUTFormat(bits: bits, groupSize: 64, table: .nf, hasOffsets: false)
            let (n, k) = (40, 4096 + 64)
            let a = try LUTDevicePlanes(dummyRows: n, cols: k, format: f, seed: 5)
            XCTAssertEqual(a.codes.count, 3 * 65 * 128 * bits)
            XCTAssertEqual(a.layout.codeBytes, a.codes.count)
            XCTAssertEqual(a.scales.count, GemmLUT.DeviceLayout(rows: n, cols: k, group: 64, bits: bits).scaleWords)
            XCTAssertEqual(a.table, LUTTables.normalFloat(bits: bits))
            XCTAssertEqual(a.table.count, 1 << bits)
            var ones = 0
            for b in a.codes { ones += b.nonzeroBitCount }
            XCTAssertEqual(Double(ones), Double(a.codes.count * 4), accuracy: 0.02 * Double(a.codes.count * 4))
            XCTAssertEqual(try LUTDevicePlanes(dummyRows: 16, cols: 64, format: .init(bits: bits, groupSize: 32, table: .int, hasOffsets: true), seed: 1).table,
                           (0..<(1 << bits)).map { Float($0) })
        }
    }

    func testDummyPlanes() throws {
        let f = WeightFormat.LUTFormat(bits: 4, groupSize: 64, table: .nf, hasOffsets: true)
        let (n, k) = (40, 4096 + 64)   // a partial last tile, 65 chunks
        let a = try LUTDevicePlanes(dummyRows: n, cols: k, format: f, seed: 5)
        let layout = GemmLUT.DeviceLayout(rows: n, cols: k, group: 64)
        XCTAssertEqual(a.codes.count, layout.codeBytes)
        XCTAssertEqual(a.scales.count, layout.scaleWords)
        XCTAssertEqual(a.offsets?.count, layout.scaleWords)
        XCTAssertEqual(a.table, LUTTables.nf4)
        // Reproducible from the seed; another seed differs.
        let again = try LUTDevicePlanes(dummyRows: n, cols: k, format: f, seed: 5), other = try LUTDevicePlanes(dummyRows: n, cols: k, format: f, seed: 6)
        XCTAssertEqual(a.codes, again.codes); XCTAssertEqual(a.scales, again.scales); XCTAssertEqual(a.offsets, again.offsets)
        XCTAssertNotEqual(a.codes, other.codes); XCTAssertNotEqual(a.scales, other.scales)
        // Every code value appears in both nibbles (uniform: each about 1/16 of the codes).
        var counts = [Int](repeating: 0, count: 16)
        for b in a.codes { counts[Int(b & 15)] += 1; counts[Int(b >> 4)] += 1 }
        let mean = Double(a.codes.count * 2) / 16
        for c in counts { XCTAssertEqual(Double(c), mean, accuracy: 0.05 * mean) }
        // Real rows' scales in ±[0.02, 0.05), offsets ±[0.001, 0.01), both signs; padding rows and groups exactly 0.
        var negative = 0
        for r in 0..<((n + 15) / 16 * 16) {
            for gi in 0..<layout.paddedGroups {
                let w = a.scales[((r / 16) * layout.paddedGroups + gi) * 8 + r % 8], o = a.offsets![((r / 16) * layout.paddedGroups + gi) * 8 + r % 8]
                let shift: UInt32 = r % 16 < 8 ? 0 : 16
                let s = bf16ToFloat(UInt16((w >> shift) & 0xffff)), off = bf16ToFloat(UInt16((o >> shift) & 0xffff))
                if r < n && gi < k / 64 {
                    XCTAssertTrue(abs(s) >= 0.0199 && abs(s) <= 0.0501, "scale \(s) at row \(r) group \(gi)")
                    XCTAssertTrue(abs(off) >= 0.00099 && abs(off) <= 0.01001, "offset \(off)")
                    if s < 0 { negative += 1 }
                } else {
                    XCTAssertEqual(s, 0); XCTAssertEqual(off, 0)
                }
            }
        }
        XCTAssertTrue(negative > n * (k / 64) / 4 && negative < 3 * n * (k / 64) / 4)
        // Fixed tables come from the format; `int` symmetric is −8…7.
        XCTAssertEqual(try LUTDevicePlanes(dummyRows: 16, cols: 64, format: .init(bits: 4, groupSize: 32, table: .int, hasOffsets: false), seed: 1).table,
                       (0..<16).map { Float($0 - 8) })
        XCTAssertThrowsError(try LUTDevicePlanes(dummyRows: 16, cols: 96, format: f, seed: 1))   // K not a multiple of 64
    }

    func testDefaultSplitFillsTheGPU() {
        let c = GemmLUT.defaultConfig(m: 1, affine: false, bits: 4)
        XCTAssertEqual(c.nt, 1); XCTAssertFalse(c.affine)
        XCTAssertEqual(GemmLUT.defaultConfig(m: 9, affine: true, bits: 4).nt, 2)
        XCTAssertTrue(GemmLUT.defaultConfig(m: 9, affine: true, bits: 4).affine)
        // 4096×4096 at one tile per block: 256 blocks, split 2 (a third split would leave each warp one super-step).
        XCTAssertEqual(GemmLUT.defaultSplit(c, n: 4096, k: 4096, multiprocessors: 132, maxSplit: 8), 2)
        XCTAssertEqual(GemmLUT.defaultSplit(c, n: 6144, k: 4096, multiprocessors: 132, maxSplit: 8), 2)
        XCTAssertEqual(GemmLUT.defaultSplit(c, n: 4096, k: 14336, multiprocessors: 132, maxSplit: 8), 4)
        XCTAssertEqual(GemmLUT.defaultSplit(c, n: 4096, k: 14336, multiprocessors: 132, maxSplit: 2), 2)
        // gate_up (57344 rows) needs no split; a short K is never split below two super-steps per warp.
        XCTAssertEqual(GemmLUT.defaultSplit(c, n: 57344, k: 4096, multiprocessors: 132, maxSplit: 8), 1)
        XCTAssertEqual(GemmLUT.defaultSplit(c, n: 64, k: 256, multiprocessors: 132, maxSplit: 8), 1)
    }

    func testInstanceTableParses() {
        XCTAssertEqual(GemmLUT.configs.filter { $0.bits == 4 }.count, 12)
        XCTAssertEqual(GemmLUT.configs.filter { $0.bits == 3 }.count, 9)
        XCTAssertEqual(GemmLUT.configs.filter { $0.bits == 2 }.count, 10)
        XCTAssertEqual(GemmLUT.configs.filter { $0.bits == 8 }.count, 3)
        XCTAssertEqual(GemmLUT.configs.count, 34)
        XCTAssertEqual(Set(GemmLUT.configs.map(\.name)).count, 34)
        for bits in GemmLUT.bitWidths {
            XCTAssertTrue(GemmLUT.configs.contains { $0.bits == bits && $0.affine } && GemmLUT.configs.contains { $0.bits == bits && !$0.affine })
            for m in 1...16 {
                for a in [false, true] {
                    let c = GemmLUT.defaultConfig(m: m, affine: a, bits: bits)
                    XCTAssertGreaterThanOrEqual(c.maxM, m); XCTAssertEqual(c.bits, bits); XCTAssertEqual(c.affine, a)
                }
            }
        }
        XCTAssertEqual(GemmLUT.configs.first?.name, "kiln_gemm_lut4_nt1_wn1_wk4_t1_u4_a0")
        XCTAssertEqual(GemmLUT.defaultConfig(m: 1, affine: false, bits: 3).name, "kiln_gemm_lut3_nt1_wn1_wk4_t1_u4_a0")
        XCTAssertEqual(GemmLUT.defaultConfig(m: 16, affine: true, bits: 2).name, "kiln_gemm_lut2_nt2_wn1_wk4_t1_u4_a1")
        // Every instance, the POST twins of the symmetric 4/3-bit ones (but NT 2 × UNROLL 4) and the four dequantizers
        // (2, 3, 4 and 8 bits) are compiled and checked for spills: 34 + 11 + 4.
        XCTAssertEqual(GemmLUT.configs.count, 34)
        XCTAssertEqual(GemmLUT.instances.count, 34 + 11 + 4)
        XCTAssertFalse(GemmLUT.configs.contains { $0.bits == 8 && $0.affine }, "Q8_0 is symmetric: no affine 8-bit instance")
    }
}

/// The GPU's per-format decision for lookup tables: 4-, 3- and 2-bit with groups of 32/64/128 native when the LUT
/// kernels are on.
final class LUTWeightPlanTests: XCTestCase {
    func testLUTIsNativeOnlyWithTheKernelsOn() {
        for bits in [4, 3, 2] {
            for g in [32, 64, 128] {
                for table in [WeightFormat.LUTFormat.Table.nf, .learned, .int] {
                    let f = WeightFormat.lut(.init(bits: bits, groupSize: g, table: table, hasOffsets: table == .int))
                    XCTAssertEqual(GPUWeights.plan(f, nativeLUT: true), .native, f.name)
                    XCTAssertEqual(GPUWeights.plan(f), .convert(to: .bf16), f.name)
                }
            }
        }
        for f in [WeightFormat.lut(.init(bits: 3, groupSize: 16, table: .nf, hasOffsets: false)),
                  .lut(.init(bits: 2, groupSize: 256, table: .int, hasOffsets: true)), .gguf(.q5_0)] {
            XCTAssertEqual(GPUWeights.plan(f, nativeLUT: true), .convert(to: .bf16), f.name)
        }
        XCTAssertEqual(GPUWeights.plan(.lut(.init(bits: 4, groupSize: 64, table: .nf, hasOffsets: false)), nativeLUT: true)
            .describe(.lut(.init(bits: 4, groupSize: 64, table: .nf, hasOffsets: false))), "lut4_g64_nf, native")
    }
}
