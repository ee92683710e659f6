import XCTest
import KilnCore
@testable import KilnCUDA
import KilnKernels
@testable import KilnTune
@testable import KilnCheck

/// The tuner's CPU-side logic: candidate rules, verification bounds, device key, progress text, report.
final class GemmTunerTests: XCTestCase {
    let h200 = GemmSearch.Limits.hopperGPU
    let qkv = GemmShape(op: "qkv", n: 6144, k: 4096)
    let logits = GemmShape(op: "logits", n: 128_256, k: 4096, outF32: true)

    func testCandidatesComeFromTheInstanceListTimesSplits() {
        XCTAssertFalse(GemmSplitK.configs.isEmpty, "instance table parsed")
        let (valid, filtered) = GemmSearch.candidates(qkv, m: 1, limits: h200)
        // At M = 1 every gemm_splitk instance serves (NT=1 and NT=2): the general ones with every split, the
        // whole-block ones (qkv's N and K fit their tiling) without split-K; no Hopper instance does.
        let general = GemmSplitK.configs.filter { !$0.whole }.count, whole = GemmSplitK.configs.count - general
        XCTAssertGreaterThan(whole, 0, "whole-block instance table parsed")
        XCTAssertFalse(GemmStream.configs.isEmpty, "gemm_stream instance table parsed")
        XCTAssertEqual(valid.count, general * GemmSearch.splits.count + whole, "gemm_stream is not offered at M ≤ 8")
        XCTAssertEqual(valid.count + filtered.count,
                       GemmSplitK.configs.count * GemmSearch.splits.count + GemmStream.configs.count
                           + GemmSwapAB.configs.count * GemmSearch.splits.count + GemmHopper.configs.count)
        XCTAssertEqual(valid.first, GemmSearch.defaultCandidate(qkv, m: 1, limits: h200), "default first: it becomes the trusted output")
        XCTAssertEqual(Set(valid).count, valid.count)
    }

    func testNT1InstancesAreFilteredAboveM8() {
        let (valid, filtered) = GemmSearch.candidates(qkv, m: 16, limits: h200)
        XCTAssertTrue(valid.allSatisfy {
            switch $0.kernel { case .splitK(let c): return c.nt == 2; case .stream, .swapAB: return true; case .hopper, .lut, .lutHopper, .fp8, .fp8Hopper: return false }
        })
        XCTAssertTrue(filtered.contains { $0.1.contains("NT=1") })
        XCTAssertEqual(GemmSearch.defaultCandidate(qkv, m: 16, limits: h200).name, GemmSplitK.defaultConfig(m: 16).name)
    }

    func testWholeBlockInstancesNeedTheirTiling() {
        let w = GemmSplitK.configs.first { $0.whole && $0.unroll == 4 }!
        XCTAssertNil(GemmSearch.rule(w, split: 1, shape: qkv, m: 1, limits: h200))
        XCTAssertNotNil(GemmSearch.rule(w, split: 2, shape: qkv, m: 1, limits: h200), "no split-K")
        XCTAssertNotNil(GemmSearch.rule(w, split: 1, shape: GemmShape(op: "t", n: 6152, k: 4096), m: 1, limits: h200), "N % 16")
        XCTAssertNotNil(GemmSearch.rule(w, split: 1, shape: GemmShape(op: "t", n: 6144, k: 4160), m: 1, limits: h200), "K % 128")
        XCTAssertNil(GemmSearch.rule(w, split: 1, shape: GemmShape(op: "t", n: 48, k: 256), m: 1, limits: h200))
        XCTAssertTrue(w.name.hasPrefix("kiln_gemm_splitk_whole_"))
        XCTAssertFalse(GemmSplitK.defaultConfig(m: 1).whole, "the default serves every shape")
    }

    /// Whole-block rows carry their launch bound (X(NT, WARPS_K, UNROLL, MINB)); two rows that differ only in it
    /// must still name different kernels.
    func testInstanceNamesAreUniqueAndCarryTheLaunchBound() {
        let names = GemmSplitK.configs.map(\.name)
        XCTAssertEqual(Set(names).count, names.count, "duplicate kernel names")
        let bounded = GemmSplitK.configs.filter { $0.whole && $0.minBlocks > 1 }
        XCTAssertFalse(bounded.isEmpty, "MINB column parsed")
        for c in bounded { XCTAssertTrue(c.name.hasSuffix("_b\(c.minBlocks)"), c.name) }
        XCTAssertTrue(GemmSplitK.configs.contains { $0.whole && $0.nt == 2 && $0.wk == 4 && $0.unroll == 4 && $0.minBlocks == 1 })
        XCTAssertTrue(GemmSplitK.configs.contains { $0.whole && $0.nt == 2 && $0.wk == 4 && $0.unroll == 4 && $0.minBlocks == 3 })
    }

    /// gemm_stream: Hopper only, M ≤ 16, K % 64 == 0 (its 3-D tensor-map view), any N, the ring within shared memory.
    func testStreamRules() {
        let c = GemmStream.configs[0]
        XCTAssertNil(GemmSearch.rule(c, shape: qkv, m: 16, limits: h200))
        XCTAssertNil(GemmSearch.rule(c, shape: qkv, m: 9, limits: h200))
        XCTAssertNotNil(GemmSearch.rule(c, shape: qkv, m: 8, limits: h200), "M ≤ 8 stays with gemm_whole (decode step)")
        XCTAssertNil(GemmSearch.rule(c, shape: GemmShape(op: "t", n: 77, k: 64), m: 12, limits: h200), "any N: rows past N are zero-filled")
        XCTAssertNotNil(GemmSearch.rule(c, shape: qkv, m: 17, limits: h200))
        XCTAssertNotNil(GemmSearch.rule(c, shape: GemmShape(op: "t", n: 6144, k: 4160 - 32), m: 16, limits: h200), "K % 64")
        XCTAssertNotNil(GemmSearch.rule(c, shape: qkv, m: 16, limits: GemmSearch.Limits(hopper: false, sharedOptIn: 166 * 1024)))
        XCTAssertNotNil(GemmSearch.rule(c, shape: qkv, m: 16, limits: GemmSearch.Limits(hopper: true, sharedOptIn: 16 * 1024)), "ring > shared memory")
        XCTAssertNil(GemmSearch.rule(c, shape: logits, m: 16, limits: h200), "fp32 output is an epilogue")
        let names = GemmStream.configs.map(\.name)
        XCTAssertEqual(Set(names).count, names.count)
        XCTAssertTrue(names.allSatisfy { $0.hasPrefix("kiln_gemm_stream_nb") })
        // The decode forward pass computes SwiGLU in the gate_up GEMM's epilogue only where the kernel has one.
        XCTAssertTrue(GemmCandidate(.stream(c)).hasSwiGLUEpilogue)
        XCTAssertTrue(GemmCandidate(.splitK(GemmSplitK.defaultConfig(m: 1)), split: 2).hasSwiGLUEpilogue)
        XCTAssertFalse(GemmCandidate(.hopper(GemmHopper.configs[0])).hasSwiGLUEpilogue)
    }

    /// gemm_swapab: Hopper only, 9 ≤ M ≤ MT, K % 64 == 0, and split · ⌈N/64⌉ blocks resident at once (a lead waits on
    /// its helpers): on a 132-SM H200 at one block per SM, o (N = 4096) takes split 2 and not 4; qkv (N = 6144) none > 1.
    func testSwapABRules() {
        XCTAssertFalse(GemmSwapAB.configs.isEmpty, "gemm_swapab instance table parsed")
        let c = GemmSwapAB.configs.first { $0.mt == 16 }!
        let o = GemmShape(op: "o", n: 4096, k: 4096)
        XCTAssertEqual(c.blocksPerSM(sharedPerSM: h200.sharedPerSM), 1, "the ring fills the SM")
        XCTAssertNil(GemmSearch.rule(c, split: 2, shape: o, m: 16, limits: h200))
        XCTAssertNil(GemmSearch.rule(c, split: 1, shape: o, m: 16, limits: h200))
        XCTAssertNotNil(GemmSearch.rule(c, split: 4, shape: o, m: 16, limits: h200), "256 blocks do not fit in one wave")
        XCTAssertNotNil(GemmSearch.rule(c, split: 2, shape: qkv, m: 16, limits: h200), "192 blocks do not fit in one wave")
        XCTAssertNotNil(GemmSearch.rule(c, split: 2, shape: o, m: 8, limits: h200), "M ≤ 8 stays with gemm_whole")
        XCTAssertNotNil(GemmSearch.rule(c, split: 2, shape: o, m: 17, limits: h200))
        XCTAssertNotNil(GemmSearch.rule(c, split: 2, shape: GemmShape(op: "t", n: 4096, k: 4096 - 32), m: 16, limits: h200), "K % 64")
        XCTAssertNotNil(GemmSearch.rule(c, split: 2, shape: o, m: 16, limits: GemmSearch.Limits(hopper: false, sharedOptIn: 232_448)))
        XCTAssertNotNil(GemmSearch.rule(c, split: 2, shape: o, m: 16, limits: GemmSearch.Limits(hopper: true, sharedOptIn: 232_448, multiprocessors: 114)),
                        "an H100 PCIe (114 SMs) cannot hold 128 blocks of it")
        XCTAssertNotNil(GemmSearch.rule(c, split: 2, shape: o, m: 16, limits: GemmSearch.Limits(hopper: true, sharedOptIn: 232_448, workspaceFloats: 1000)))
        XCTAssertEqual(c.workspaceFloats(n: 4096, split: 2), 64 * 64 * 16)
        XCTAssertEqual(c.workspaceFloats(n: 4096, split: 1), 0)
        XCTAssertEqual(c.gridX(n: 4097, split: 2), 130, "rows past N are a partial tile")
        let (valid, _) = GemmSearch.candidates(o, m: 16, limits: h200)
        XCTAssertTrue(valid.contains(GemmCandidate(.swapAB(c), split: 2)))
        XCTAssertFalse(valid.contains(GemmCandidate(.swapAB(c), split: 4)))
        let names = GemmSwapAB.configs.map(\.name)
        XCTAssertEqual(Set(names).count, names.count)
        XCTAssertTrue(names.allSatisfy { $0.hasPrefix("kiln_gemm_swapab_mt") })
        XCTAssertTrue(GemmCandidate(.swapAB(c), split: 2).hasSwiGLUEpilogue)
        XCTAssertEqual(GemmCandidate(.swapAB(c), split: 2).description, c.name + " split 2")
    }

    func testSplitRules() {
        let c = GemmSplitK.defaultConfig(m: 1)
        XCTAssertNotNil(GemmSearch.rule(c, split: 16, shape: qkv, m: 1, limits: h200), "split above the dispatch's workspace")
        XCTAssertNotNil(GemmSearch.rule(c, split: 8, shape: GemmShape(op: "t", n: 64, k: 24), m: 1, limits: h200), "empty K chunk")
        XCTAssertNil(GemmSearch.rule(c, split: 2, shape: GemmShape(op: "t", n: 64, k: 24), m: 1, limits: h200))
        XCTAssertNotNil(GemmSearch.rule(c, split: 1, shape: GemmShape(op: "t", n: 64, k: 20), m: 1, limits: h200), "K % 8")
        var tiny = h200; tiny.workspaceFloats = 6144
        XCTAssertNotNil(GemmSearch.rule(c, split: 2, shape: qkv, m: 1, limits: tiny))
    }

    func testHopperOnlyForPrefillBF16OnHopper() {
        XCTAssertFalse(GemmHopper.configs.isEmpty)
        let h = GemmHopper.configs[0]
        XCTAssertNil(GemmSearch.rule(h, shape: qkv, m: 512, limits: h200))
        XCTAssertNotNil(GemmSearch.rule(h, shape: qkv, m: 16, limits: h200))
        XCTAssertNotNil(GemmSearch.rule(h, shape: logits, m: 512, limits: h200))
        let ampere = GemmSearch.Limits(hopper: false, sharedOptIn: 166 * 1024)
        XCTAssertNotNil(GemmSearch.rule(h, shape: qkv, m: 512, limits: ampere))
        XCTAssertTrue(GemmSearch.tunable(qkv, m: 512, limits: h200))
        XCTAssertFalse(GemmSearch.tunable(qkv, m: 32, limits: h200), "the dispatch ignores entries between 17 and 63")
        XCTAssertFalse(GemmSearch.tunable(logits, m: 512, limits: h200))
        XCTAssertEqual(GemmSearch.candidates(qkv, m: 512, limits: h200).valid.count, GemmHopper.configs.count)
        XCTAssertTrue(GemmSearch.candidates(qkv, m: 32, limits: h200).valid.isEmpty)
    }

    // A fake GEMM with bf16 data: the verification must accept a correct, bf16-rounded output and reject wrong ones.
    func makeCase(m: Int, n: Int, k: Int) -> (x: [UInt16], w: [UInt16], y: [Float], ref: GemmReference) {
        var rng = SplitMix64(seed: 3)
        func r() -> Float { Float(Double(rng.next() % 2001) / 1000 - 1) }
        let x = (0..<(m * k)).map { _ in floatToBF16(r()) }, w = (0..<(n * k)).map { _ in floatToBF16(0.035 * r()) }
        var y = [Float](repeating: 0, count: m * n)
        for t in 0..<m { for j in 0..<n {
            var acc: Float = 0
            for i in 0..<k { acc += bf16ToFloat(x[t * k + i]) * bf16ToFloat(w[j * k + i]) }
            y[t * n + j] = bf16ToFloat(floatToBF16(acc))     // what a correct bf16-output kernel returns
        } }
        let (rows, tokens) = GemmReference.sample(n: n, maxM: m, ms: [m], random: 8)
        let wRows = rows.flatMap { Array(w[($0 * k)..<($0 * k + k)]) }
        return (x, w, y, GemmReference(x: x, wRows: wRows, k: k, rows: rows, tokens: tokens))
    }

    func testVerificationAcceptsCorrectAndRejectsWrongOutputs() {
        let n = 80, k = 256, m = 4
        let c = makeCase(m: m, n: n, k: k)
        XCTAssertNil(GemmCheck.check(c.y, m: m, n: n, reference: c.ref))
        var nan = c.y; nan[m * n - 1] = .nan
        XCTAssertNotNil(GemmCheck.check(nan, m: m, n: n, reference: c.ref), "NaN fails even outside the sample")
        var tail = c.y; for t in 0..<m { tail[t * n + n - 1] = 0 }
        XCTAssertNotNil(GemmCheck.check(tail, m: m, n: n, reference: c.ref), "a skipped last row is caught")
        var half = c.y; for i in half.indices { half[i] *= 0.5 }   // e.g. a split that drops half of K
        XCTAssertNotNil(GemmCheck.check(half, m: m, n: n, reference: c.ref))
        var swapped = c.y; for j in 0..<n { swapped[j] = c.y[n + j] }   // token 1's row in token 0's place
        XCTAssertNotNil(GemmCheck.check(swapped, m: m, n: n, reference: c.ref))
        XCTAssertNil(GemmCheck.compare(c.y, trusted: c.y, count: m * n))
        var one = c.y; one[37] += 1
        XCTAssertNotNil(GemmCheck.compare(one, trusted: c.y, count: m * n), "full comparison catches a single element")
    }

    /// End to end on the CPU: fake kernels, one fast but wrong, through Autotuner.select with the tuner's check.
    func testWrongFastCandidateNeverWins() {
        let n = 48, k = 128, m = 2
        let c = makeCase(m: m, n: n, k: k)
        let outputs: [String: [Float]] = ["right": c.y, "fast-wrong": c.y.map { $0 * 1.1 }, "fast-nan": c.y.map { _ in .nan }]
        let times = ["right": 10.0, "fast-wrong": 1.0, "fast-nan": 0.5]
        let r = Autotuner.select(["fast-wrong", "right", "fast-nan"], verify: { GemmCheck.check(outputs[$0]!, m: m, n: n, reference: c.ref) },
                                 time: { times[$0]! })
        XCTAssertEqual(r.winner?.candidate, "right")
        XCTAssertEqual(r.all.filter { $0.rejection != nil }.count, 2)
    }

    func testSourcesHashAndDriverNumber() {
        let a = TuneKey.sourcesHash(["a.cu": "x", "b.cu": "y"])
        XCTAssertEqual(a.count, 64)
        XCTAssertEqual(a, TuneKey.sourcesHash(["b.cu": "y", "a.cu": "x"]))
        XCTAssertNotEqual(a, TuneKey.sourcesHash(["a.cu": "x", "b.cu": "y "]))
        XCTAssertNotEqual(a, TuneKey.sourcesHash(["a.cu": "xb.cu", "": "y"]), "names and texts cannot run together")
        XCTAssertEqual(TuneKey.kernelSourceHash(), TuneKey.kernelSourceHash())
        XCTAssertEqual(TuneKey.driverNumber("13.0"), 13000)
        XCTAssertEqual(TuneKey.driverNumber("12.8"), 12080)
    }

    func testIncludeParsing() {
        let text = "#include \"a.cuh\"   // why\n  #  include \"b.cuh\"\n#include <cuda.h>\n// #include \"c.cuh\"\n#define X \"d.cuh\"\n"
        XCTAssertEqual(TuneKey.includedNames(text), ["a.cuh", "b.cuh"])
        // Transitively: g.cu -> x.cuh -> y.cuh; z.cuh is included by nothing in the family.
        let files = ["g.cu": "#include \"x.cuh\"\n", "other.cu": "#include \"z.cuh\"\n"]
        let headers = ["x.cuh": "#include \"y.cuh\"\n", "y.cuh": "int y;", "z.cuh": "int z;"]
        XCTAssertEqual(TuneKey.familySources(["g.cu"], files: files, headers: headers).keys.sorted(), ["g.cu", "x.cuh", "y.cuh"])
    }

    /// The tuning key covers the GEMM kernels the tuner measures and exactly the headers they include.
    func testTuneKeyHashesOnlyTheGemmFamily() {
        let files = KernelSources.files, headers = KernelSources.headers
        let family = TuneKey.familySources(TuneKey.gemmFamilyFiles, files: files, headers: headers)
        XCTAssertEqual(family.keys.sorted(), ["attention_util.cuh", "gemm_fp8.cu", "gemm_fp8_hopper.cu", "gemm_hopper.cu", "gemm_lut.cu",
                                              "gemm_splitk.cu", "gemm_stream.cu", "gemm_swapab.cu", "gemm_util.cuh", "hopper_gemm.cuh",
                                              "hopper_util.cuh", "kiln.cuh", "lut_util.cuh",
                                              "wg_ring.cuh"])
        let base = TuneKey.kernelSourceHash(files: files, headers: headers)
        XCTAssertEqual(base, TuneKey.kernelSourceHash())
        func edited(_ dict: [String: String], _ name: String) -> [String: String] {
            XCTAssertNotNil(dict[name], name)
            var d = dict; d[name, default: ""] += "\n// edited\n"; return d
        }
        // Not a GEMM: the table stays valid.
        XCTAssertEqual(base, TuneKey.kernelSourceHash(files: edited(files, "sampling.cu"), headers: headers))
        XCTAssertEqual(base, TuneKey.kernelSourceHash(files: edited(files, "rmsnorm.cu"), headers: headers))
        // A GEMM, or a header a GEMM includes (directly, or only through wg_ring.cuh's includes): stale.
        XCTAssertNotEqual(base, TuneKey.kernelSourceHash(files: edited(files, "gemm_splitk.cu"), headers: headers))
        XCTAssertNotEqual(base, TuneKey.kernelSourceHash(files: edited(files, "gemm_hopper.cu"), headers: headers))
        // The weight-format GEMMs whose entries share the table (kiln tune --weights).
        for name in ["gemm_lut.cu", "gemm_fp8.cu", "gemm_fp8_hopper.cu"] {
            XCTAssertNotEqual(base, TuneKey.kernelSourceHash(files: edited(files, name), headers: headers), name)
        }
        XCTAssertNotEqual(base, TuneKey.kernelSourceHash(files: files, headers: edited(headers, "attention_util.cuh")))
        XCTAssertNotEqual(base, TuneKey.kernelSourceHash(files: files, headers: edited(headers, "wg_ring.cuh")))
    }

    /// A table measured with other kernel sources is ignored by the engine's loader, which then hands back an empty
    /// table with the current key (so the dispatch falls back to defaults and names each shape).
    func testMissingEntriesAndStaleTable() throws {
        let key = TuneKey(gpuName: "NVIDIA H200", multiprocessors: 132, driverVersion: 13000, nvrtcVersion: "13.0",
                          kernelSourceHash: TuneKey.kernelSourceHash())
        var t = TuneTable(key: key)
        t.record(TuneEntry(op: "qkv", format: .bf16, n: 6144, k: 4096, mBucket: 2, config: GemmSplitK.defaultConfig(m: 1).name, split: 2,
                           microseconds: 10, defaultMicroseconds: 12))
        let miss = TuneSession.missing(t, shapes: [qkv], ms: [1, 2, 32, 64], limits: h200)
        XCTAssertEqual(miss.map(\.1), [1, 64], "M=2 is tuned; M=32 is not tunable")
        let path = NSTemporaryDirectory() + "kiln-tune-\(UInt32.random(in: 0...UInt32.max)).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        var old = t; old.key.kernelSourceHash = String(repeating: "0", count: 64)
        try old.save(path: path)
        XCTAssertEqual(try TuneTable.load(path: path, expecting: key), .stale("kernel sources changed"))
    }

    func testProgressBarText() {
        XCTAssertEqual(ProgressBar.render(done: 0, total: 10, elapsed: 0, width: 10), "[..........] 0/10 candidates, 10 left, estimating")
        XCTAssertEqual(ProgressBar.render(done: 5, total: 20, elapsed: 10, width: 4), "[#...] 5/20 candidates, 15 left, ~0:30 left")
        XCTAssertEqual(ProgressBar.render(done: 20, total: 20, elapsed: 75, width: 4), "[####] 20/20 candidates, 0 left, done in 1:15")
    }

    func testReportTable() {
        let row = GemmTuner.Row(shape: qkv, m: 1, candidates: 60, rejected: [], defaultName: "d", defaultMicroseconds: 20,
                                winner: GemmSearch.defaultCandidate(qkv, m: 1, limits: h200), winnerMicroseconds: 16)
        let lines = GemmTuner.report([row], copyGBps: 4000)
        XCTAssertEqual(lines.count, 3)
        XCTAssertTrue(lines[2].contains("| 20.00 |") && lines[2].contains("| 16.00 |") && lines[2].contains("1.25×"), lines[2])
        // 6144·4096·2 + 2·4096 + 2·6144 bytes in 16 µs at 4000 GB/s of copy bandwidth ≈ 79%.
        XCTAssertTrue(lines[2].hasSuffix("| 79% |"), lines[2])
    }
}
