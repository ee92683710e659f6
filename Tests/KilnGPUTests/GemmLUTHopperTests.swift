import XCTest
import KilnCore
@testable import KilnKernels
@testable import KilnCUDA
@testable import KilnCheck

/// gemm_lut_hopper.cu without a GPU: a model of its consumer warps over the restructured planes (A registers read as
/// gemm_lut's lanes read them, B from X' = the permuted activations, the product by wgmma's k-slot rule: A slot s of step
/// j meets X' column 16j + s), checked against x·Wᵀ with W from (row, column) directly. If the permutation and the
/// restructuring disagree on a single column, the model's product is wrong.
final class GemmLUTHopperTests: XCTestCase {
    /// y [m, n] (f64) of the model: per 16-row tile, chunk and k step j, the tile's A [16 rows × 16 slots] as the lanes
    /// hold it (`GemmLUTWarpModel.aTile`: 4 bits, non-POST, bf16(bf16(table)·scale + offset)), times X' columns
    /// 64·chunk + 16j … + 15. `source(c)`: the column of x that X' column c holds (the kernel's permutation unless a test
    /// swaps it).
    static func model(_ p: LUTDevicePlanes, x: [Float], m: Int, n: Int, source: (Int) -> Int = LUTPermute.sourceColumn) -> [Double] {
        let k = p.cols, kp = LUTPermute.paddedCols(k), chunks = kp / 64, tiles = (n + 15) / 16
        var xp = [Float](repeating: 0, count: m * kp)
        for i in 0..<m { for c in 0..<kp { let s = source(c); if s < k { xp[i * kp + c] = x[i * k + s] } } }
        var y = [Double](repeating: 0, count: m * n)
        for tile in 0..<tiles {
            for chunk in 0..<chunks {
                for j in 0..<4 {
                    let a = GemmLUTWarpModel.aTile(p, tile: tile, chunk: chunk, j: j).a   // [row][slot]
                    for row in 0..<16 where tile * 16 + row < n {
                        for tok in 0..<m {
                            var s = 0.0
                            for slot in 0..<16 { s += Double(a[row][slot]) * Double(xp[tok * kp + chunk * 64 + 16 * j + slot]) }
                            y[tok * n + tile * 16 + row] += s
                        }
                    }
                }
            }
        }
        return y
    }

    func testModelOverPermutedActivationsIsTheProduct() throws {
        var rng = SplitMix64(seed: 23)
        for (n, k, group, affine) in [(37, 96, 32, false), (40, 192, 64, true), (20, 384, 128, false), (3, 160, 32, true)] {
            let f = try LUTFixture(rows: n, cols: k, format: .init(bits: 4, groupSize: group, table: .learned, hasOffsets: affine), rng: &rng)
            let planes = try LUTDevicePlanes(parts: [f.matrix], interleaveHalves: false, scale: 1)
            let m = 19
            let x = roundTo(rng.uniform(m * k, -1, 1), .bf16)
            GemmLUTWarpModel.assertIsProduct(GemmLUTHopperTests.model(planes, x: x, m: m, n: n), x: x, m: m, fixture: f, n: n,
                                             "N=\(n) K=\(k) g=\(group)")
        }
    }

    /// The same model with X' in plain column order (no permutation) misses the product: the test above can fail.
    func testUnpermutedActivationsGiveAnotherProduct() throws {
        var rng = SplitMix64(seed: 5)
        let (n, k) = (16, 64)
        let f = try LUTFixture(rows: n, cols: k, format: .init(bits: 4, groupSize: 64, table: .learned, hasOffsets: false), rng: &rng)
        let planes = try LUTDevicePlanes(parts: [f.matrix], interleaveHalves: false, scale: 1)
        let x = roundTo(rng.uniform(k, -1, 1), .bf16)
        let got = GemmLUTHopperTests.model(planes, x: x, m: 1, n: n, source: { $0 })
        var wrong = 0
        for r in 0..<n {
            var want = 0.0
            for c in 0..<k { want += Double(x[c]) * Double(f.kernelValue(r, c)) }
            if abs(got[r] - want) > 1e-6 * max(1, abs(want)) { wrong += 1 }
        }
        XCTAssertGreaterThan(wrong, n / 2)
    }

    func testPermutationIsABijectionPerChunk() {
        for chunk in 0..<3 {
            let cols = (0..<64).map { LUTPermute.sourceColumn(64 * chunk + $0) }
            XCTAssertEqual(Set(cols), Set((64 * chunk)..<(64 * chunk + 64)))
            // Pairs stay pairs (the kernel moves 4-byte words): even columns map to even sources, the next to the next.
            for c in stride(from: 0, to: 64, by: 2) { XCTAssertEqual(cols[c] % 2, 0); XCTAssertEqual(cols[c + 1], cols[c] + 1) }
        }
        XCTAssertEqual(LUTPermute.paddedCols(96), 128)
        XCTAssertEqual(LUTPermute.paddedCols(4096), 4096)
    }

    func testInstancesFitAndCoverEveryFormat() {
        XCTAssertFalse(GemmLUTHopper.configs.isEmpty)
        for c in GemmLUTHopper.configs {
            XCTAssertLessThanOrEqual(c.sharedBytes, 227 * 1024, "\(c.name): shared memory above Hopper's 227 KB opt-in")
            XCTAssertTrue(c.tokens == 128 || c.tokens == 256, c.name)
        }
        for bits in GemmLUT.bitWidths {
            for affine in [false, true] {
                for m in [17, 512, 513, 4096] {
                    let c = GemmLUTHopper.defaultConfig(m: m, bits: bits, affine: affine)
                    XCTAssertEqual(c?.bits, bits); XCTAssertEqual(c?.affine, affine)
                }
                XCTAssertTrue(GemmLUTHopper.supports(.init(bits: bits, groupSize: 64, table: .nf, hasOffsets: affine)))
            }
        }
        XCTAssertNotNil(GemmLUTHopper.defaultConfig(m: 100, bits: 8, affine: false))
        XCTAssertFalse(GemmLUTHopper.supports(.init(bits: 8, groupSize: 32, table: .int, hasOffsets: true)))
    }

    /// The dispatch's reading of a tuned table (its pure part): a gemm_lut_hopper entry of the format's width and kind at
    /// a prefill bucket; an instance of another width, a decode bucket or a gemm_lut name is never chosen.
    func testTunedPrefillEntry() {
        let key = TuneKey(gpuName: "NVIDIA H200", multiprocessors: 132, driverVersion: 13000, nvrtcVersion: "13.0",
                          kernelSourceHash: TuneKey.kernelSourceHash())
        let lut4 = WeightFormat.LUTFormat(bits: 4, groupSize: 64, table: .nf, hasOffsets: false)
        let wide = GemmLUTHopper.configs.first { $0.bits == 4 && !$0.affine && $0.tokens == 256 }!
        let other = GemmLUTHopper.configs.first { $0.bits == 3 && !$0.affine }!
        var t = TuneTable(key: key)
        func entry(_ m: Int, _ config: String) -> TuneEntry {
            TuneEntry(op: "down", format: .lut(lut4), n: 4096, k: 14336, mBucket: m, config: config, split: 1, microseconds: 100, defaultMicroseconds: 120)
        }
        t.record(entry(512, wide.name))
        t.record(entry(1024, other.name))
        t.record(entry(2, GemmLUT.defaultConfig(m: 2, affine: false, bits: 4).name))
        XCTAssertEqual(GemmDispatch.lutPrefillEntry(t, op: "down", format: lut4, m: 512, n: 4096, k: 14336), wide)
        XCTAssertNil(GemmDispatch.lutPrefillEntry(t, op: "down", format: lut4, m: 1024, n: 4096, k: 14336), "3-bit instance for 4-bit codes")
        XCTAssertNil(GemmDispatch.lutPrefillEntry(t, op: "down", format: lut4, m: 2, n: 4096, k: 14336), "decode rows are gemm_lut's")
        XCTAssertNil(GemmDispatch.lutPrefillEntry(nil, op: "down", format: lut4, m: 512, n: 4096, k: 14336))
    }

    /// With the prefill kernel the LUT scratch is the permuted activations (rows × padded K), not the largest matrix.
    func testMemoryPlanCountsThePermutedActivations() {
        let c = try! DummyModels.config("llama3-8b")
        let lut = WeightFormat.lut(.init(bits: 4, groupSize: 64, table: .nf, hasOffsets: false))
        let dense = GPUMemoryPlan.denseScratch(c, linearFormat: { _ in lut }, fp8PrefillKernel: true)
        XCTAssertEqual(dense, 2 * c.intermediateSize * c.hiddenSize)   // gate_up, the largest
        let permuted = GPUMemoryPlan.denseScratch(c, linearFormat: { _ in lut }, fp8PrefillKernel: true, lutPrefillRows: 1024)
        XCTAssertEqual(permuted, 1024 * c.intermediateSize)            // 14336 is a multiple of 64
    }
}
