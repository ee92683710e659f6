import XCTest
import KilnCore
@testable import KilnKernels
@testable import KilnCUDA
@testable import KilnCheck

/// An independent model of what one gemm_lut.cu launch computes, lane by lane: each lane reads its 16 code bytes and
/// its scale word at the kernel's addresses, builds its A registers (byte i of word j → register a_i of mma j, looked
/// up as a bf16 pair and put through the bf16 fma) and its B registers (activation pairs 2j, 2j+1 of its 16 columns),
/// and the mma is evaluated from the PTX ISA's m16n8k16 fragment layouts (A: a0 = (g, 2t…2t+1), a1 = (g+8, 2t…),
/// a2 = (g, 2t+8…), a3 = (g+8, 2t+8…); B: b0 = (2t…2t+1, g), b1 = (2t+8…2t+9, g); C: c0,c1 = (g, 2t…), c2,c3 = (g+8, 2t…)).
/// Nothing here calls GemmLUT.DeviceLayout: if the host restructuring and the kernel's reading disagree, this fails.
enum GemmLUTWarpModel {
    static func bf16(_ v: Float) -> Float { bf16ToFloat(floatToBF16(v)) }
    static func lo(_ w: UInt32) -> Float { bf16ToFloat(UInt16(w & 0xffff)) }
    static func hi(_ w: UInt32) -> Float { bf16ToFloat(UInt16(w >> 16)) }

    /// One 16-row tile's A operand for k step j of `chunk` as the 32 lanes hold it (4 bits): [row][k-slot], 16 × 16, from
    /// mma.m16n8k16's A fragment (a0 = (g, 2t…), a1 = (g+8, 2t…), a2 = (g, 2t+8…), a3 = (g+8, 2t+8…)); lane (g, t)'s byte i
    /// of word j is register a_i. With `scalesAfterMMA` the registers are the bf16 table values (the POST path), else
    /// bf16(bf16(table)·scale + offset). Also each row's scale as its lane reads it.
    static func aTile(_ p: LUTDevicePlanes, tile: Int, chunk: Int, j: Int, scalesAfterMMA: Bool = false) -> (a: [[Float]], rowScale: [Float]) {
        let group = p.format.groupSize, chunks = (p.cols + 63) / 64, paddedGroups = (chunks * 64 + group - 1) / group
        var a = [[Float]](repeating: [Float](repeating: .nan, count: 16), count: 16)
        var rowScale = [Float](repeating: .nan, count: 16)
        for lane in 0..<32 {
            let g = lane / 4, t = lane % 4
            let base = ((tile * chunks + chunk) * 32 + lane) * 16 + 4 * j
            let sIndex = (tile * paddedGroups + (chunk * 64 + 16 * t) / group) * 8 + g
            let sw = p.scales[sIndex], ow = p.offsets?[sIndex] ?? 0x8000_8000
            func reg(_ i: Int) -> (Float, Float) {
                let byte = Int(p.codes[base + i]), bottom = i % 2 == 1
                if scalesAfterMMA { return (bf16(p.table[byte & 15]), bf16(p.table[byte >> 4])) }
                let s = bottom ? hi(sw) : lo(sw), o = bottom ? hi(ow) : lo(ow)
                return (bf16(bf16(p.table[byte & 15]) * s + o), bf16(bf16(p.table[byte >> 4]) * s + o))
            }
            (rowScale[g], rowScale[g + 8]) = (lo(sw), hi(sw))
            (a[g][2 * t], a[g][2 * t + 1]) = reg(0)
            (a[g + 8][2 * t], a[g + 8][2 * t + 1]) = reg(1)
            (a[g][2 * t + 8], a[g][2 * t + 9]) = reg(2)
            (a[g + 8][2 * t + 8], a[g + 8][2 * t + 9]) = reg(3)
        }
        return (a, rowScale)
    }

    /// y [m, n] (f64 sums) of x [m, k] (bf16 values) and the device planes. `scalesAfterMMA`: the kernel's POST path —
    /// the A registers are the bf16 table values, and each mma's sum is multiplied by its row's scale afterwards.
    static func run(_ p: LUTDevicePlanes, x: [Float], m: Int, epilogueRows n: Int, scalesAfterMMA: Bool = false) -> [Double] {
        product(x: x, m: m, n: n, k: p.cols) { tile, chunk, j in
            let t = aTile(p, tile: tile, chunk: chunk, j: j, scalesAfterMMA: scalesAfterMMA)
            return (t.a, scalesAfterMMA ? t.rowScale : nil)
        }
    }

    /// The decode kernels' product, y [m, n] (f64 sums), over the A operands a width's lane model gives: per 16-row tile,
    /// 64-column chunk and k step j, `aTile` returns the tile's [row][k-slot] registers (and, for the POST path, each row's
    /// scale applied to the mma's sum); the B side is the lanes' activations — token 8n + g, columns chunk·64 + 16t + 4j
    /// + {0, 1} (b0) and + {2, 3} (b1) — evaluated by the m16n8k16 fragment layouts (b0 = (2t…2t+1, g), b1 = (2t+8…, g)).
    static func product(x: [Float], m: Int, n: Int, k: Int, aTile: (_ tile: Int, _ chunk: Int, _ j: Int) -> (a: [[Float]], rowScale: [Float]?)) -> [Double] {
        let chunks = (k + 63) / 64, tiles = (n + 15) / 16
        var y = [Double](repeating: 0, count: m * n)
        for tile in 0..<tiles {
            for chunk in 0..<chunks {
                for j in 0..<4 {
                    let (a, rowScale) = aTile(tile, chunk, j)   // [row][k-slot]
                    var b = [[[Float]]](repeating: [[Float]](repeating: [Float](repeating: .nan, count: 8), count: 16), count: 2)   // [n][k-slot][col]
                    for lane in 0..<32 {
                        let g = lane / 4, t = lane % 4
                        for nn in 0..<2 {
                            let token = 8 * nn + g, col = chunk * 64 + 16 * t + 4 * j
                            func xv(_ c: Int) -> Float { token < m && c < k ? x[token * k + c] : 0 }
                            (b[nn][2 * t][g], b[nn][2 * t + 1][g]) = (xv(col), xv(col + 1))
                            (b[nn][2 * t + 8][g], b[nn][2 * t + 9][g]) = (xv(col + 2), xv(col + 3))
                        }
                    }
                    for row in 0..<16 where tile * 16 + row < n {
                        for nn in 0..<2 {
                            for col in 0..<8 where 8 * nn + col < m {
                                var s = 0.0
                                for slot in 0..<16 { s += Double(a[row][slot]) * Double(b[nn][slot][col]) }
                                y[(8 * nn + col) * n + tile * 16 + row] += rowScale.map { s * Double($0[row]) } ?? s
                            }
                        }
                    }
                }
            }
        }
        return y
    }

    /// Asserts y [m, n] (a model's f64 sums) equals x·Wᵀ with W the fixture's rounded values (`kernelValue`, from (row,
    /// column) directly), to f64 summation order.
    static func assertIsProduct(_ y: [Double], x: [Float], m: Int, fixture f: LUTFixture, n: Int, _ what: String,
                                file: StaticString = #filePath, line: UInt = #line) {
        let k = f.cols
        for i in 0..<m {
            for r in 0..<n {
                var want = 0.0, mag = 0.0
                for c in 0..<k { let p = Double(x[i * k + c]) * Double(f.kernelValue(r, c)); want += p; mag += abs(p) }
                XCTAssertEqual(y[i * n + r], want, accuracy: 1e-9 * max(1, mag), "\(what) token \(i) row \(r)", file: file, line: line)
            }
        }
    }
}

final class GemmLUTLayoutTests: XCTestCase {
    func format(_ group: Int, affine: Bool) -> WeightFormat.LUTFormat { .init(bits: 4, groupSize: group, table: .learned, hasOffsets: affine) }

    /// The model of the kernel's lanes over the restructured planes equals x·Wᵀ with W the rounded values of the
    /// canonical planes (`LUTFixture.kernelValue`, computed from (row, column) directly), to f64 summation order —
    /// for odd N, K a multiple of 32 but not 64, every group size, with and without offsets, M = 1, 5, 16.
    func testWarpModelOverRestructuredPlanesIsTheProduct() throws {
        var rng = SplitMix64(seed: 19)
        for (n, k, group, affine) in [(37, 96, 32, false), (40, 192, 64, true), (20, 384, 128, false), (16, 64, 64, true), (3, 160, 32, true)] {
            let f = try LUTFixture(rows: n, cols: k, format: format(group, affine: affine), rng: &rng)
            let planes = try LUTDevicePlanes(parts: [f.matrix], interleaveHalves: false, scale: 1)
            for m in [1, 5, 16] {
                let x = roundTo(rng.uniform(m * k, -1, 1), .bf16)
                GemmLUTWarpModel.assertIsProduct(GemmLUTWarpModel.run(planes, x: x, m: m, epilogueRows: n), x: x, m: m, fixture: f, n: n,
                                                 "N=\(n) K=\(k) g=\(group) affine=\(affine) M=\(m)")
            }
        }
    }

    /// Fused layers: q/k/v stacked with a folded output scale, and gate/up interleaved per 16-row tile (8 gate rows,
    /// then their 8 up rows): row r of the kernel's product is the right part's row.
    func testStackedAndInterleavedParts() throws {
        var rng = SplitMix64(seed: 7)
        let k = 128, f = format(64, affine: true)
        let parts = try [48, 16, 32].map { try LUTFixture(rows: $0, cols: k, format: f, table: LUTTables.nf4, rng: &rng) }
        let x = roundTo(rng.uniform(3 * k, -1, 1), .bf16)
        func product(_ fx: LUTFixture, _ r: Int, _ i: Int, scale: Float) -> Double {
            (0..<k).reduce(0.0) { $0 + Double(x[i * k + $1]) * Double(fx.kernelValue(r, $1, scale: scale)) }
        }
        let stacked = try LUTDevicePlanes(parts: parts.map(\.matrix), interleaveHalves: false, scale: 0.25)
        let n = 96
        let ys = GemmLUTWarpModel.run(stacked, x: x, m: 3, epilogueRows: n)
        for i in 0..<3 {
            for r in 0..<n {
                let (p, rr) = r < 48 ? (0, r) : r < 64 ? (1, r - 48) : (2, r - 64)
                XCTAssertEqual(ys[i * n + r], product(parts[p], rr, i, scale: 0.25), accuracy: 1e-9 * Double(k), "stacked row \(r)")
            }
        }
        let gate = try LUTFixture(rows: 40, cols: k, format: f, table: LUTTables.nf4, rng: &rng)
        let up = try LUTFixture(rows: 40, cols: k, format: f, table: LUTTables.nf4, rng: &rng)
        let inter = try LUTDevicePlanes(parts: [gate.matrix, up.matrix], interleaveHalves: true, scale: 1)
        let yi = GemmLUTWarpModel.run(inter, x: x, m: 3, epilogueRows: 80)
        for i in 0..<3 {
            for r in 0..<80 {
                // Tile j = rows 16j…16j+15: gate rows 8j…8j+7, then up rows 8j…8j+7 (written out, not GemmFP8.gateUpSourceRow).
                let j = r / 16, within = r % 16
                let want = within < 8 ? product(gate, 8 * j + within, i, scale: 1) : product(up, 8 * j + within - 8, i, scale: 1)
                XCTAssertEqual(yi[i * 80 + r], want, accuracy: 1e-9 * Double(k), "interleaved row \(r)")
            }
        }
    }

    /// The parts of a layer must share one table (the kernel holds one per launch), one format and, for gate/up, a height.
    func testLayersThatCannotRunNativelyAreRefused() throws {
        var rng = SplitMix64(seed: 3)
        let f = format(64, affine: false)
        let a = try LUTFixture(rows: 16, cols: 128, format: f, rng: &rng), b = try LUTFixture(rows: 16, cols: 128, format: f, rng: &rng)
        XCTAssertNotNil(GPUWeights.lutUnsupported([a.matrix, b.matrix], interleaveHalves: false))   // two random tables
        let c = try LUTFixture(rows: 24, cols: 128, format: f, table: a.table, rng: &rng)
        XCTAssertNil(GPUWeights.lutUnsupported([a.matrix, c.matrix], interleaveHalves: false))
        XCTAssertNotNil(GPUWeights.lutUnsupported([a.matrix, c.matrix], interleaveHalves: true))     // 16 vs 24 rows
        let g32 = try LUTFixture(rows: 16, cols: 128, format: format(32, affine: false), table: a.table, rng: &rng)
        XCTAssertNotNil(GPUWeights.lutUnsupported([a.matrix, g32.matrix], interleaveHalves: false))
        let three = try LUTFixture(rows: 16, cols: 128, format: .init(bits: 3, groupSize: 64, table: .nf, hasOffsets: false), rng: &rng)
        XCTAssertNil(GPUWeights.lutUnsupported([three.matrix], interleaveHalves: false))                  // 3 bits run natively
        XCTAssertNotNil(GPUWeights.lutUnsupported([a.matrix, three.matrix], interleaveHalves: false))     // but not mixed with 4
        XCTAssertThrowsError(try LUTDevicePlanes(parts: [a.matrix, b.matrix], interleaveHalves: false, scale: 1))
    }

    /// The layout map is a bijection from the matrix's code bytes onto the device bytes of real rows and columns, and the
    /// restructure leaves every padding byte zero.
    func testDeviceLayoutIsABijectionWithZeroPadding() throws {
        for (n, k) in [(37, 96), (16, 64), (1, 32), (50, 320)] {
            let layout = GemmLUT.DeviceLayout(rows: n, cols: k, group: 32)
            var seen = [Bool](repeating: false, count: layout.codeBytes)
            for r in 0..<n {
                for c in stride(from: 0, to: k, by: 2) {
                    let o = layout.byteOffset(row: r, col: c)
                    XCTAssertFalse(seen[o], "byte \(o) twice"); seen[o] = true
                }
            }
            XCTAssertEqual(seen.filter { $0 }.count, n * k / 2)
            let canonical = [UInt8](repeating: 0xA5, count: n * k / 2)
            let dev = canonical.withUnsafeBufferPointer { p in GemmLUT.restructure(rows: n, cols: k, group: 32) { p.baseAddress! + $0 * (k / 2) } }
            for (i, used) in seen.enumerated() { XCTAssertEqual(dev[i], used ? 0xA5 : 0, "byte \(i)") }
            XCTAssertEqual(layout.codeBytes, ((n + 15) / 16) * ((k + 63) / 64) * 512)
        }
    }

    /// The conformance comparison (ConformanceSuite.lutReferences + compareBounded) accepts the model of a correct
    /// kernel rounded to bf16, and rejects one misplaced code pair, one wrong group scale and a NaN.
    func testConformanceBoundsAcceptTheModelAndCatchSmallErrors() throws {
        var rng = SplitMix64(seed: 11)
        let n = 40, k = 1024, m = 3
        let f = try LUTFixture(rows: n, cols: k, format: format(64, affine: true), rng: &rng)
        let x = roundTo(rng.uniform(m * k, -1, 1), .bf16)
        var planes = try LUTDevicePlanes(parts: [f.matrix], interleaveHalves: false, scale: 1)
        let ref = try ConformanceSuite.lutReferences(x: x, m: m, fixture: f, n: n, out: .bf16)
        func verdicts(_ p: LUTDevicePlanes) -> (exact: Bool, rounded: Bool) {
            let y = roundTo(GemmLUTWarpModel.run(p, x: x, m: m, epilogueRows: n).map { Float($0) }, .bf16)
            return (ConformanceSuite.compareBounded(y, roundTo(ref.exact, .bf16), bound: ref.exactBound) == nil,
                    ConformanceSuite.compareBounded(y, roundTo(ref.rounded, .bf16), bound: ref.roundedBound) == nil)
        }
        XCTAssertTrue(verdicts(planes) == (true, true))
        var swapped = planes
        let o = planes.layout.byteOffset(row: 5, col: 100)
        swapped.codes[o] = swapped.codes[o] ^ 0x77   // both codes of one pair changed
        XCTAssertFalse(verdicts(swapped).rounded, "a changed code pair must fail the rounded-weights comparison")
        planes.scales[(0 * planes.layout.paddedGroups + 3) * 8 + 2] ^= 0x0000_4000   // row 2, group 3: exponent bit flipped
        XCTAssertFalse(verdicts(planes).exact && verdicts(planes).rounded, "a wrong scale must fail")
        var y = roundTo(ref.rounded, .bf16)
        y[7] = .nan
        XCTAssertNotNil(ConformanceSuite.compareBounded(y, roundTo(ref.rounded, .bf16), bound: ref.roundedBound))
        XCTAssertNotNil(ConformanceSuite.compareBounded(roundTo(ref.rounded, .bf16), y, bound: ref.roundedBound))
    }

    /// Formats whose scales the decode kernel applies after the mmas (gemm_lut.cu's POST path): which ones, and that the
    /// model of that kernel passes both conformance comparisons against references built for it while one changed code
    /// pair still fails the rounded one (and the references of the fma path do not describe it).
    func testScalesAfterMMAConformance() throws {
        XCTAssertTrue(GemmLUT.scalesAfterMMA(format(64, affine: false)))
        XCTAssertTrue(GemmLUT.scalesAfterMMA(format(128, affine: false)))
        XCTAssertTrue(GemmLUT.scalesAfterMMA(.init(bits: 3, groupSize: 64, table: .nf, hasOffsets: false)))
        XCTAssertFalse(GemmLUT.scalesAfterMMA(format(32, affine: false)), "g = 32: two groups in a 64-column chunk")
        XCTAssertFalse(GemmLUT.scalesAfterMMA(format(64, affine: true)), "offsets add o·Σx")
        XCTAssertFalse(GemmLUT.scalesAfterMMA(.init(bits: 2, groupSize: 64, table: .nf, hasOffsets: false)), "2 bits: scaled tables in registers")
        // The POST twins: every symmetric 4/3-bit instance but two token groups × 4 chunks per step; the launcher runs
        // one exactly for groups of 64 and 128.
        for c in GemmLUT.configs {
            let twin = !c.affine && (c.bits == 4 || c.bits == 3) && !(c.nt == 2 && c.unroll >= 4)
            XCTAssertEqual(c.postName, twin ? c.name + "_post" : nil, c.name)
            XCTAssertEqual(c.scalesAfterMMA(group: 32), false, c.name)
            XCTAssertEqual(c.scalesAfterMMA(group: 64), twin, c.name)
            XCTAssertEqual(GemmLUT.instances.contains { $0.nameExpression == c.name + "_post" }, twin, c.name)
        }
        XCTAssertGreaterThanOrEqual(GemmLUT.configs.filter { $0.postName != nil }.count, 10)
        var rng = SplitMix64(seed: 12)
        let n = 40, k = 1024, m = 5
        let f = try LUTFixture(rows: n, cols: k, format: format(64, affine: false), rng: &rng)
        let x = roundTo(rng.uniform(m * k, -1, 1), .bf16)
        let planes = try LUTDevicePlanes(parts: [f.matrix], interleaveHalves: false, scale: 1)
        let post = try ConformanceSuite.lutReferences(x: x, m: m, fixture: f, n: n, out: .bf16, scalesAfterMMA: true)
        func verdicts(_ p: LUTDevicePlanes) -> (exact: Bool, rounded: Bool) {
            let y = roundTo(GemmLUTWarpModel.run(p, x: x, m: m, epilogueRows: n, scalesAfterMMA: true).map { Float($0) }, .bf16)
            return (ConformanceSuite.compareBounded(y, roundTo(post.exact, .bf16), bound: post.exactBound) == nil,
                    ConformanceSuite.compareBounded(y, roundTo(post.rounded, .bf16), bound: post.roundedBound) == nil)
        }
        XCTAssertTrue(verdicts(planes) == (true, true))
        var changed = planes
        let o = planes.layout.byteOffset(row: 9, col: 300)
        changed.codes[o] = changed.codes[o] ^ 0x55
        XCTAssertFalse(verdicts(changed).rounded, "a changed code pair must fail the rounded-weights comparison")
        let fma = try ConformanceSuite.lutReferences(x: x, m: m, fixture: f, n: n, out: .bf16)
        let y = roundTo(GemmLUTWarpModel.run(planes, x: x, m: m, epilogueRows: n, scalesAfterMMA: true).map { Float($0) }, .bf16)
        XCTAssertNotEqual(y, roundTo(fma.rounded, .bf16), "the two paths round differently")
    }

    /// Scales as the kernel reads them: bf16 of row g in the low half, row g+8 in the high half, per tile and group.
    func testScaleWords() {
        let n = 20, k = 128, group = 32
        let words = GemmLUT.restructureScales(rows: n, cols: k, group: group) { r, gi in Float(r * 10 + gi) }
        let layout = GemmLUT.DeviceLayout(rows: n, cols: k, group: group)
        XCTAssertEqual(words.count, 2 * 4 * 8)
        for r in 0..<n {
            for gi in 0..<4 {
                let w = words[((r / 16) * layout.paddedGroups + gi) * 8 + r % 8]
                XCTAssertEqual(r % 16 < 8 ? GemmLUTWarpModel.lo(w) : GemmLUTWarpModel.hi(w), Float(r * 10 + gi))
            }
        }
        // Rows 20…31 of the second tile are padding: their halves are zero.
        for g in 4..<8 { XCTAssertEqual(words[(1 * layout.paddedGroups + 0) * 8 + g] >> 16, 0) }
    }
}
