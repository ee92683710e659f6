import XCTest
import KilnCore
@testable import KilnCUDA
import KilnKernels
@testable import KilnTune
@testable import KilnCheck

/// `kiln tune --weights FORMAT` on the CPU side: the gemm_lut and FP8 candidate lists, the table entries they write next
/// to the bf16 ones and how the dispatch reads them back, and the tuner's host read of the LUT device layout.
final class FormatTunerTests: XCTestCase {
    let h200 = GemmSearch.Limits.hopperGPU
    let lut4 = WeightFormat.LUTFormat(bits: 4, groupSize: 64, table: .nf, hasOffsets: false)
    let lut3Affine = WeightFormat.LUTFormat(bits: 3, groupSize: 128, table: .int, hasOffsets: true)
    let fp8 = GPUMatrix.fp8Format

    /// Every (instance, split) pair expected at M: instances of exactly this width and offsets that hold M rows, × 1, 2, 4, 8.
    func expectedLUT(_ f: WeightFormat.LUTFormat, m: Int) -> Set<String> {
        Set(GemmLUT.configs.filter { $0.bits == f.bits && $0.affine == f.hasOffsets && 8 * $0.nt >= m }
            .flatMap { c in [1, 2, 4, 8].map { "\(c.name)/\($0)" } })
    }
    func keys(_ cs: [GemmCandidate]) -> Set<String> { Set(cs.map { "\($0.name)/\($0.split)" }) }

    func testLUTCandidatesAreTheFormatsInstancesTimesSplits() {
        for (f, m) in [(lut4, 1), (lut4, 16), (lut3Affine, 1), (lut3Affine, 9),
                       (WeightFormat.LUTFormat(bits: 2, groupSize: 32, table: .nf, hasOffsets: false), 4)] {
            let s = GemmShape(op: "down", format: .lut(f), n: 4096, k: 14336)
            XCTAssertTrue(GemmSearch.tunable(s, m: m, limits: h200))
            let (valid, filtered) = GemmSearch.candidates(s, m: m, limits: h200)
            XCTAssertFalse(valid.isEmpty, "\(f) M=\(m)")
            XCTAssertEqual(keys(valid), expectedLUT(f, m: m), "\(f) M=\(m)")
            XCTAssertEqual(valid.count, Set(valid).count)
            XCTAssertEqual(valid.count + filtered.count, GemmLUT.configs.count * 4 + GemmLUTHopper.configs.count,
                           "every instance × split (and every prefill instance) is listed or filtered")
            for c in valid {
                guard case .lut(let cfg) = c.kernel else { return XCTFail("\(c) is not a gemm_lut candidate") }
                XCTAssertEqual(cfg.bits, f.bits, "nothing of another width")
                XCTAssertEqual(cfg.affine, f.hasOffsets)
                XCTAssertTrue((1...8).contains(c.split))
            }
            // The default first (it becomes the trusted output): chooseLUT's default instance and split.
            let d = GemmLUT.defaultConfig(m: m, affine: f.hasOffsets, bits: f.bits)
            XCTAssertEqual(valid.first, GemmCandidate(.lut(d), split: GemmLUT.defaultSplit(d, n: 4096, k: 14336, multiprocessors: 132, maxSplit: 8)))
            XCTAssertTrue(filtered.contains { $0.1.contains("-bit instance for") } || GemmLUT.bitWidths.count == 1)
        }
        // The 4-bit table rows of gemm_lut.cu: symmetric ones exist at NT 1 and 2.
        XCTAssertTrue(GemmLUT.configs.contains { $0.bits == 4 && !$0.affine && $0.nt == 2 })
        XCTAssertEqual(expectedLUT(lut4, m: 16).count, 4 * GemmLUT.configs.filter { $0.bits == 4 && !$0.affine && $0.nt == 2 }.count)
    }

    func testLUTRules() {
        let small = GemmShape(op: "t", format: .lut(lut4), n: 100, k: 128)   // two 64-column chunks
        let (valid, filtered) = GemmSearch.candidates(small, m: 1, limits: h200)
        XCTAssertEqual(Set(valid.map(\.split)), [1, 2])
        XCTAssertTrue(filtered.contains { $0.0.split == 4 && $0.1.contains("64-column chunks") })
        let bad = GemmShape(op: "t", format: .lut(lut4), n: 100, k: 96)   // K not a multiple of the group
        XCTAssertTrue(GemmSearch.candidates(bad, m: 1, limits: h200).valid.isEmpty)
        XCTAssertNotNil(GemmTuner.unsupported(bad))
        let down = GemmShape(op: "down", format: .lut(lut4), n: 4096, k: 14336)
        XCTAssertFalse(GemmSearch.tunable(down, m: 17, limits: h200))
        // Prefill (M ≥ 64, Hopper): gemm_lut_hopper's instances of the format's width and kind, the default first.
        XCTAssertTrue(GemmSearch.tunable(down, m: 64, limits: h200))
        let prefill = GemmSearch.candidates(down, m: 64, limits: h200)
        XCTAssertEqual(Set(prefill.valid.map(\.name)), Set(GemmLUTHopper.configs.filter { $0.bits == 4 && !$0.affine }.map(\.name)))
        XCTAssertEqual(prefill.valid.first, GemmCandidate(.lutHopper(GemmLUTHopper.defaultConfig(m: 64, bits: 4, affine: false)!)))
        XCTAssertTrue(prefill.filtered.contains { $0.1.contains("serves M ≤ 16") })
        var ampere = h200; ampere.hopper = false
        XCTAssertFalse(GemmSearch.tunable(down, m: 64, limits: ampere), "no LUT prefill kernel off Hopper: prefill dequantizes")
        var tight = h200; tight.workspaceFloats = 4096 * 2
        XCTAssertEqual(Set(GemmSearch.candidates(down, m: 1, limits: tight).valid.map(\.split)), [1, 2], "split·M·N within the workspace")
        XCTAssertNil(GemmTuner.unsupported(down))
        XCTAssertNotNil(GemmTuner.unsupported(GemmShape(op: "t", format: .gguf(.q4_k), n: 256, k: 256)))
    }

    func testFP8CandidatesByMRange() {
        let qkv = GemmShape(op: "qkv", format: fp8, n: 6144, k: 4096)
        for m in [1, 8, 16] {
            let (valid, filtered) = GemmSearch.candidates(qkv, m: m, limits: h200)
            let want = Set(GemmFP8.configs.filter { 8 * $0.nt >= m }.flatMap { c in [1, 2, 4, 8].map { "\(c.name)/\($0)" } })
            XCTAssertEqual(keys(valid), want, "M=\(m): every gemm_fp8 instance that holds M rows × splits, no prefill kernel")
            XCTAssertEqual(valid.first, GemmCandidate(.fp8(GemmFP8.defaultConfig(m: m))), "chooseFP8's default, split 1")
            XCTAssertEqual(valid.count + filtered.count, GemmFP8.configs.count * 4 + GemmFP8Hopper.configs.count)
        }
        let (prefill, _) = GemmSearch.candidates(qkv, m: 512, limits: h200)
        XCTAssertEqual(keys(prefill), Set(GemmFP8Hopper.configs.map { "\($0.name)/1" }), "M ≥ 64: gemm_fp8_hopper only, no split")
        XCTAssertEqual(prefill.first, GemmCandidate(.fp8Hopper(GemmFP8Hopper.defaultConfig(m: 512, n: 6144, multiprocessors: 132))))
        XCTAssertFalse(prefill.contains { $0.name.contains("nopromote") }, "check-only instances are never candidates")
        XCTAssertFalse(GemmSearch.tunable(qkv, m: 32, limits: h200))
        XCTAssertTrue(GemmSearch.candidates(qkv, m: 32, limits: h200).valid.isEmpty)
        // Ada (e4m3, no Hopper): decode only. Ampere: nothing.
        let ada = GemmSearch.Limits(hopper: false, sharedOptIn: 101_376, multiprocessors: 128, e4m3: true)
        XCTAssertFalse(GemmSearch.candidates(qkv, m: 1, limits: ada).valid.isEmpty)
        XCTAssertFalse(GemmSearch.tunable(qkv, m: 512, limits: ada))
        let ampere = GemmSearch.Limits(hopper: false, sharedOptIn: 166 * 1024)
        XCTAssertFalse(GemmSearch.tunable(qkv, m: 1, limits: ampere))
        XCTAssertTrue(GemmSearch.candidates(qkv, m: 1, limits: ampere).valid.isEmpty)
        XCTAssertNotNil(GemmSearch.rule(GemmFP8.configs[0], split: 1, shape: GemmShape(op: "t", format: fp8, n: 64, k: 40), m: 1, limits: h200), "K % 16")
    }

    func testShapesOfAFormat() throws {
        let c = try DummyModels.config("llama3-8b")
        let bf16 = GemmShape.of(c), lut = GemmShape.of(c, weights: .lut(lut4)), f8 = GemmShape.of(c, weights: .fp8)
        XCTAssertEqual(GemmShape.of(c, weights: .bf16), bf16)
        XCTAssertTrue(bf16.contains { $0.op == "logits" })
        XCTAssertEqual(lut.map(\.op), bf16.filter { $0.op != "logits" }.map(\.op), "the logits stay bf16")
        XCTAssertEqual(lut.map(\.n), bf16.filter { $0.op != "logits" }.map(\.n))
        XCTAssertTrue(lut.allSatisfy { $0.format == .lut(lut4) && !$0.outF32 })
        XCTAssertTrue(f8.allSatisfy { $0.format == fp8 })
        XCTAssertEqual(f8.map(\.k), lut.map(\.k))
    }

    /// LUT and FP8 entries are written, saved and loaded next to bf16 entries of the same op, shape and bucket, and the
    /// dispatch's reading of the table (its pure part) picks each format's own entry.
    func testTableRoundTripAndDispatchChoice() throws {
        let key = TuneKey(gpuName: "NVIDIA H100 80GB HBM3", multiprocessors: 132, driverVersion: 13000, nvrtcVersion: "13.0",
                          kernelSourceHash: TuneKey.kernelSourceHash())
        let lutInt = WeightFormat.LUTFormat(bits: 4, groupSize: 64, table: .int, hasOffsets: false)
        let lutA = GemmLUT.configs.first { $0.bits == 4 && !$0.affine && $0.nt == 1 && $0.wk == 8 }!
        let lutB = GemmLUT.configs.first { $0.bits == 4 && !$0.affine && $0.nt == 1 && $0 != lutA }!
        let lut3 = GemmLUT.configs.first { $0.bits == 3 && !$0.affine && $0.nt == 1 }!
        let fp8Small = GemmFP8.configs.first { $0.nt == 1 }!, fp8Large = GemmFP8.configs.first { $0.nt == 2 }!
        let prefill = GemmFP8Hopper.configs.last!
        var t = TuneTable(key: key)
        func entry(_ f: WeightFormat, _ m: Int, _ config: String, _ split: Int, n: Int = 6144) -> TuneEntry {
            TuneEntry(op: "qkv", format: f, n: n, k: 4096, mBucket: m, config: config, split: split, microseconds: 8, defaultMicroseconds: 12)
        }
        t.record(entry(.bf16, 2, GemmSplitK.defaultConfig(m: 1).name, 2))
        t.record(entry(.lut(lut4), 2, lutA.name, 4))
        t.record(entry(.lut(lutInt), 2, lutB.name, 16))
        t.record(entry(.lut(lut4), 4, lut3.name, 1))          // a 3-bit instance under a 4-bit key: never chosen
        t.record(entry(fp8, 16, fp8Large.name, 2))
        t.record(entry(fp8, 8, fp8Small.name, 1))
        t.record(entry(fp8, 1, fp8Large.name, 1))             // NT=2 at M = 1 is valid (M ≤ 16)
        t.record(entry(fp8, 512, prefill.name, 1))
        XCTAssertEqual(t.entries.count, 8, "one entry per (op, format, N, K, bucket): formats do not replace each other")
        let path = NSTemporaryDirectory() + "kiln-tune-formats-\(UInt32.random(in: 0...UInt32.max)).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try t.save(path: path)
        guard case .loaded(let back) = try TuneTable.load(path: path, expecting: key) else { return XCTFail("table not loaded") }
        XCTAssertEqual(back, t)
        XCTAssertEqual(back.lookup(op: "qkv", format: .bf16, n: 6144, k: 4096, m: 2)?.config, GemmSplitK.defaultConfig(m: 1).name)
        XCTAssertEqual(back.lookup(op: "qkv", format: .lut(lut4), n: 6144, k: 4096, m: 2)?.config, lutA.name)

        // gemm_lut: the entry of exactly this format and bucket; splits clamped to 1…8; width and offsets must match.
        let a = GemmDispatch.lutEntry(back, op: "qkv", format: lut4, m: 2, n: 6144, k: 4096)
        XCTAssertEqual(a?.config, lutA); XCTAssertEqual(a?.split, 4)
        let b = GemmDispatch.lutEntry(back, op: "qkv", format: lutInt, m: 2, n: 6144, k: 4096)
        XCTAssertEqual(b?.config, lutB); XCTAssertEqual(b?.split, 8)
        XCTAssertNil(GemmDispatch.lutEntry(back, op: "qkv", format: lut4, m: 1, n: 6144, k: 4096), "bucket 1 has no entry")
        XCTAssertNil(GemmDispatch.lutEntry(back, op: "qkv", format: lut4, m: 3, n: 6144, k: 4096), "3-bit instance for 4-bit codes")
        XCTAssertNil(GemmDispatch.lutEntry(back, op: "qkv", format: .init(bits: 4, groupSize: 64, table: .nf, hasOffsets: true), m: 2, n: 6144, k: 4096))
        XCTAssertNil(GemmDispatch.lutEntry(back, op: "o", format: lut4, m: 2, n: 6144, k: 4096))
        XCTAssertNil(GemmDispatch.lutEntry(nil, op: "qkv", format: lut4, m: 2, n: 6144, k: 4096))

        // gemm_fp8 (M ≤ 16) and gemm_fp8_hopper (prefill buckets) under the one FP8 key.
        XCTAssertEqual(GemmDispatch.fp8Entry(back, op: "qkv", m: 9, n: 6144, k: 4096)?.config, fp8Large)
        XCTAssertEqual(GemmDispatch.fp8Entry(back, op: "qkv", m: 9, n: 6144, k: 4096)?.split, 2)
        XCTAssertEqual(GemmDispatch.fp8Entry(back, op: "qkv", m: 5, n: 6144, k: 4096)?.config, fp8Small)
        XCTAssertEqual(GemmDispatch.fp8Entry(back, op: "qkv", m: 1, n: 6144, k: 4096)?.config, fp8Large)
        XCTAssertNil(GemmDispatch.fp8Entry(back, op: "qkv", m: 2, n: 6144, k: 4096), "bucket 2 has no entry")
        XCTAssertNil(GemmDispatch.fp8Entry(back, op: "qkv", m: 300, n: 6144, k: 4096), "a gemm_fp8_hopper entry is no decode choice")
        XCTAssertEqual(GemmDispatch.fp8PrefillEntry(back, op: "qkv", m: 300, n: 6144, k: 4096), prefill)
        XCTAssertNil(GemmDispatch.fp8PrefillEntry(back, op: "qkv", m: 9, n: 6144, k: 4096), "a gemm_fp8 entry is no prefill choice")
        XCTAssertNil(GemmDispatch.fp8PrefillEntry(back, op: "qkv", m: 4096, n: 6144, k: 4096))
        // What the bf16 path reads is untouched by the other formats' entries.
        XCTAssertNil(back.lookup(op: "qkv", format: .bf16, n: 6144, k: 4096, m: 16))
    }

    /// The tuner names what it measured the way the dispatch resolves it: each candidate's name finds its instance.
    func testCandidateNamesResolveToTheirInstances() {
        for c in GemmSearch.candidates(GemmShape(op: "o", format: .lut(lut4), n: 4096, k: 4096), m: 1, limits: h200).valid {
            guard case .lut(let cfg) = c.kernel else { return XCTFail() }
            XCTAssertEqual(GemmLUT.config(named: c.name), cfg)
            XCTAssertTrue(c.hasSwiGLUEpilogue)
            XCTAssertFalse(c.readsBF16)
        }
        for c in GemmSearch.candidates(GemmShape(op: "o", format: fp8, n: 4096, k: 4096), m: 1024, limits: h200).valid {
            guard case .fp8Hopper(let cfg) = c.kernel else { return XCTFail() }
            XCTAssertEqual(GemmFP8Hopper.config(named: c.name), cfg)
            XCTAssertFalse(c.hasSwiGLUEpilogue)
        }
    }

    /// The tuner's reference reads LUT weights back from the device layout; against the canonical planes' kernel values
    /// (LUTFixture.kernelValue, computed without the device layout) for every width, offsets or not, each group size,
    /// rows past one 16-row tile and K not a multiple of the 64-column chunk.
    func testKernelRowReadsTheDeviceLayoutBack() throws {
        var rng = SplitMix64(seed: 5)
        for bits in [4, 3, 2] {
            for (group, cols) in [(32, 96), (64, 192), (128, 128)] {
                for affine in [false, true] {
                    let format = WeightFormat.LUTFormat(bits: bits, groupSize: group, table: .learned, hasOffsets: affine)
                    let f = try LUTFixture(rows: 21, cols: cols, format: format, rng: &rng)
                    let planes = try LUTDevicePlanes(parts: [f.matrix], interleaveHalves: false, scale: 1)
                    for r in 0..<f.rows {
                        let got = planes.kernelRow(r)
                        XCTAssertEqual(got.count, cols)
                        for k in 0..<cols where got[k] != f.kernelValue(r, k) {
                            return XCTFail("\(bits)-bit g\(group) affine=\(affine) (\(r), \(k)): \(got[k]) ≠ \(f.kernelValue(r, k))")
                        }
                    }
                }
            }
        }
    }

    func testRowBytesCountTheFormatsBytes() {
        let s = GemmShape(op: "down", format: .lut(lut4), n: 4096, k: 14336)
        let row = GemmTuner.Row(shape: s, m: 1, candidates: 1, rejected: [], defaultName: "d", defaultMicroseconds: 20, winner: nil, winnerMicroseconds: 10)
        // codes N·K/2, bf16 scales per group of 64, x and y in bf16.
        XCTAssertEqual(row.bytes, Double(4096 * 14336 / 2 + 4096 * (14336 / 64) * 2 + 2 * (14336 + 4096)))
        let f = GemmTuner.Row(shape: GemmShape(op: "down", format: fp8, n: 4096, k: 14336), m: 1, candidates: 1, rejected: [], defaultName: "d",
                              defaultMicroseconds: nil, winner: nil, winnerMicroseconds: nil)
        // e4m3 codes, f32 scales per 8 rows × 128 columns, e4m3 x with its per-128 scales, bf16 y.
        XCTAssertEqual(f.bytes, Double(4096 * 14336 + 4 * 512 * 112 + (14336 + 4 * 112) + 2 * 4096))
    }
}
