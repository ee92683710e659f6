import Foundation
import XCTest
import KilnCore
import KilnCUDA
import KilnGPU
import KilnKernels
@testable import KilnTune
@testable import KilnCheck

/// A serial transcription of sampling.cu's `sample` (same keys, cuts, fixed-point weights, bucket walks, tie rules and
/// counter-based Gumbel draw; threads become loops) checked against the CPU Sampler, so the kernel's algorithm is
/// tested on this machine; the device check (`kiln check`) tests the CUDA code itself against the same references.
struct SamplingKernelModel {
    struct Cut { var key: UInt32; var index: Int }
    static let keepAll = Cut(key: 0, index: Int.max)
    static let weightOne: Float = 1_099_511_627_776   // 2^40

    let x: [Float]                 // the row's effective logits (penalties applied, NaN as −∞)
    var n: Int { x.count }
    /// `cutScale` 1 is the kernel; 1/T is its KILN_BREAK variant.
    var brokenCuts = false

    init(logits: [Float], counts: [Int32]? = nil, window: [Int32]? = nil, options o: SamplingOptions) {
        x = logits.indices.map { c in
            var v = logits[c]
            if v.isNaN { return -.infinity }
            if let window, o.repeatPenalty != 1, o.repeatLastN != 0, window[c] > 0 { v = v > 0 ? v / o.repeatPenalty : v * o.repeatPenalty }
            if let counts, o.presencePenalty != 0 || o.frequencyPenalty != 0, counts[c] > 0 {
                v = v - (o.presencePenalty + o.frequencyPenalty * Float(counts[c]))
            }
            return v
        }
    }

    static func sortKey(_ v: Float) -> UInt32 {
        let b = v == 0 ? 0 : v.bitPattern
        return b & 0x8000_0000 != 0 ? ~b : b | 0x8000_0000
    }
    static func keyValue(_ k: UInt32) -> Float { Float(bitPattern: k & 0x8000_0000 != 0 ? k & 0x7fff_ffff : ~k) }
    static func kept(_ key: UInt32, _ c: Int, _ t: Cut) -> Bool { key > t.key || (key == t.key && c <= t.index) }
    static func weight(_ v: Float, _ m: Float, _ scale: Float) -> UInt64 { UInt64((expf((v - m) * scale) * weightOne).rounded()) }

    /// find_bucket: from bucket 255 down, the first d where the running total reaches target; bucket 0 if none.
    static func findBucket<T: FixedWidthInteger>(_ hist: [T], _ target: T) -> (Int, T) {
        var above: T = 0
        for d in stride(from: 255, to: 0, by: -1) {
            if above + hist[d] >= target { return (d, above) }
            above += hist[d]
        }
        return (0, above)
    }

    func tieIndex(_ key: UInt32, _ j: Int, _ limit: Cut) -> Int {
        var taken = 0
        for c in 0..<n where Self.sortKey(x[c]) == key && Self.kept(key, c, limit) {
            taken += 1
            if taken == j { return c }
        }
        preconditionFailure("tie \(j) not found")
    }

    func selectTop(_ k: Int) -> Cut {
        var (prefix, mask, remaining, ties): (UInt32, UInt32, UInt32, UInt32) = (0, 0, UInt32(k), 0)
        for shift in stride(from: 24, through: 0, by: -8) {
            var hist = [UInt32](repeating: 0, count: 256)
            for c in 0..<n { let key = Self.sortKey(x[c]); if key & mask == prefix { hist[Int((key >> UInt32(shift)) & 255)] += 1 } }
            let (d, above) = Self.findBucket(hist, remaining)
            remaining -= above; prefix |= UInt32(d) << UInt32(shift); ties = hist[d]
            mask |= 255 << UInt32(shift)
        }
        return Cut(key: prefix, index: remaining >= ties ? Int.max : tieIndex(prefix, Int(remaining), Self.keepAll))
    }

    func mass(_ m: Float, _ scale: Float, _ limit: Cut) -> UInt64 {
        (0..<n).reduce(0) { s, c in Self.kept(Self.sortKey(x[c]), c, limit) ? s + Self.weight(x[c], m, scale) : s }
    }

    func selectMass(_ m: Float, _ scale: Float, _ limit: Cut, _ target: UInt64) -> Cut {
        var (prefix, mask, remaining, bucket): (UInt32, UInt32, UInt64, UInt64) = (0, 0, target, 0)
        for shift in stride(from: 24, through: 0, by: -8) {
            var hist = [UInt64](repeating: 0, count: 256)
            for c in 0..<n {
                let key = Self.sortKey(x[c])
                if key & mask == prefix && Self.kept(key, c, limit) { hist[Int((key >> UInt32(shift)) & 255)] += Self.weight(x[c], m, scale) }
            }
            let (d, above) = Self.findBucket(hist, remaining)
            remaining -= above; prefix |= UInt32(d) << UInt32(shift); bucket = hist[d]
            mask |= 255 << UInt32(shift)
        }
        let w = Self.weight(Self.keyValue(prefix), m, scale)
        let ties = w > 0 ? bucket / w : 1
        let need = max(1, w > 0 ? (remaining + w - 1) / w : 1)
        return Cut(key: prefix, index: need >= ties ? Int.max : tieIndex(prefix, Int(need), limit))
    }

    static func splitmix64(_ z0: UInt64) -> UInt64 {
        var z = z0 &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The top element and the kept set (in index order) as the kernel's cuts leave it; greedy keeps the top only.
    func keptSet(_ o: SamplingOptions) -> (top: Int, members: [Int]) {
        var top = 0
        for c in 1..<max(1, n) where Self.sortKey(x[c]) > Self.sortKey(x[top]) { top = c }
        let topKey = Self.sortKey(x[top]), m = x[top]
        guard o.temperature > 0, m > -.infinity else { return (top, [top]) }
        let scale = brokenCuts ? 1 / o.temperature : 1
        var kcut = Self.keepAll, pcut = Self.keepAll
        if o.topK > 0 && o.topK < n { kcut = selectTop(o.topK) }
        if o.topP <= 0 {
            pcut = Cut(key: topKey, index: top)
        } else if o.topP < 1 {
            let z = mass(m, scale, kcut)
            let target = min(z, max(1, UInt64((Double(o.topP) * Double(z)).rounded(.up))))
            pcut = selectMass(m, scale, kcut, target)
        }
        let members = (0..<n).filter { c in
            let key = Self.sortKey(x[c])
            return Self.kept(key, c, kcut) && Self.kept(key, c, pcut) && (expf((x[c] - m) * scale) >= o.minP || c == top)
        }
        return (top, members)
    }

    /// The Gumbel race over `members` for (seed, step): the largest (l − max)/T − log(−log u), ties to the lower id.
    func draw(_ o: SamplingOptions, top: Int, members: [Int], step: UInt64) -> Int {
        guard o.temperature > 0, members.count > 1 else { return members[0] }
        let (m, invT) = (x[top], 1 / o.temperature)
        let mix = Self.splitmix64(o.seed ^ Self.splitmix64(step))
        var (best, bestKey) = (-1, UInt32(0))
        for c in members {
            let h = Self.splitmix64(mix &+ UInt64(c) &* 0x9E37_79B9_7F4A_7C15)
            let u = (Float(h >> 41) + 0.5) * (1 / 8_388_608)
            let key = Self.sortKey((x[c] - m) * invT - logf(-logf(u)))
            if best < 0 || key > bestKey { best = c; bestKey = key }
        }
        return best
    }

    /// (kept count, lowest-ranked kept id, drawn id) as the kernel computes them for one row.
    func sample(_ o: SamplingOptions, step: UInt64) -> (kept: Int, last: Int, chosen: Int) {
        let (top, members) = keptSet(o)
        var last = members[0]
        for c in members {
            let (key, lk) = (Self.sortKey(x[c]), Self.sortKey(x[last]))
            if key < lk || (key == lk && c > last) { last = c }
        }
        return (members.count, last, draw(o, top: top, members: members, step: step))
    }
}

final class SamplingKernelModelTests: XCTestCase {
    var rng = SplitMix64(seed: 2024)

    /// Logits on a coarse grid (many ties), a few NaNs, never exactly zero.
    func tiedLogits(_ n: Int) -> [Float] {
        (0..<n).map { i in
            if n > 5 && i % 97 == 3 { return .nan }
            let v = (Float.random(in: -6..<6, using: &rng) * 2).rounded() / 2
            return v == 0 ? 0.25 : v
        }
    }

    func testKeptSetEqualsTheCPUSupportWithTiesAndNaN() {
        for vocab in [1, 2, 7, 50, 1000] {
            for options in ConformanceSuite.samplingGrid(vocab: vocab) {
                let x = tiedLogits(vocab)
                let model = SamplingKernelModel(logits: x, options: options)
                let got = model.sample(options, step: 3)
                let cpu = x.withUnsafeBufferPointer { SamplingCheck.keptRange($0, options: options) }
                XCTAssertTrue(cpu.range.contains(got.kept), "vocab \(vocab) \(options): kept \(got.kept), CPU \(cpu.range)")
                guard cpu.range.contains(got.kept) else { return }
                XCTAssertEqual(Int32(got.last), cpu.ids[got.kept - 1], "vocab \(vocab) \(options)")
                XCTAssertTrue(cpu.ids.prefix(got.kept).contains(Int32(got.chosen)))
                if options.temperature <= 0 { XCTAssertEqual(Int32(got.chosen), x.withUnsafeBufferPointer { Sampler.argmax($0) }) }
            }
        }
    }

    func testPenalizedRowsMatchTheCPU() {
        var o = SamplingOptions()
        o.topK = 0; o.topP = 0.9; o.minP = 0.05; o.temperature = 0.8
        o.repeatPenalty = 1.3; o.repeatLastN = 6; o.presencePenalty = 0.5; o.frequencyPenalty = 0.25
        for trial in 0..<20 {
            let vocab = 300
            let x = tiedLogits(vocab)
            let history = (0..<(12 + trial)).map { _ in Int32.random(in: 0..<Int32(vocab), using: &rng) }
            let promptLength = 5
            let counts = SamplingCheck.occurrences(history.dropFirst(promptLength), vocab: vocab)
            let window = SamplingCheck.occurrences(history.suffix(o.repeatLastN), vocab: vocab)
            let got = SamplingKernelModel(logits: x, counts: counts, window: window, options: o).sample(o, step: 0)
            let cpu = x.withUnsafeBufferPointer { SamplingCheck.keptRange($0, options: o, history: history, promptLength: promptLength) }
            XCTAssertTrue(cpu.range.contains(got.kept), "trial \(trial): kept \(got.kept), CPU \(cpu.range)")
            if cpu.range.contains(got.kept) { XCTAssertEqual(Int32(got.last), cpu.ids[got.kept - 1]) }
        }
    }

    func testGumbelDrawsFitTheCPUDistributionAndTheWrongCutIsCaught() {
        let vocab = 500
        let x = (0..<vocab).map { _ in Float.random(in: -4..<4, using: &rng) * 1.5 }
        var o = SamplingOptions()
        o.topK = 0; o.topP = 0.9; o.minP = 0.02; o.temperature = 1.5; o.seed = 77
        let model = SamplingKernelModel(logits: x, options: o)
        let cpu = x.withUnsafeBufferPointer { Sampler.distribution($0, options: o) }
        let (top, members) = model.keptSet(o)
        var counts: [Int32: Int] = [:]
        for step in 0..<20_000 { counts[Int32(model.draw(o, top: top, members: members, step: UInt64(step))), default: 0] += 1 }
        let fit = SamplingCheck.chiSquare(counts: counts, probabilities: cpu)
        XCTAssertEqual(fit.outside, 0)
        XCTAssertLessThan(fit.statistic, fit.threshold, "bins \(fit.bins)")
        // The same draws with the temperature left out must fail the fit.
        var cold = o
        cold.temperature = 1
        var wrong: [Int32: Int] = [:]
        for step in 0..<20_000 { wrong[Int32(model.draw(cold, top: top, members: members, step: UInt64(step))), default: 0] += 1 }
        XCTAssertGreaterThan(SamplingCheck.chiSquare(counts: wrong, probabilities: cpu).statistic, fit.threshold)
        // The KILN_BREAK variant (cuts at the row's temperature) keeps a different set.
        var broken = model
        broken.brokenCuts = true
        let range = x.withUnsafeBufferPointer { SamplingCheck.keptRange($0, options: o) }.range
        XCTAssertFalse(range.contains(broken.sample(o, step: 0).kept))
        // Same (seed, step), same draw; another step, another stream.
        XCTAssertEqual(model.sample(o, step: 5).chosen, model.sample(o, step: 5).chosen)
        XCTAssertNotEqual((0..<20).map { model.sample(o, step: $0).chosen }, (20..<40).map { model.sample(o, step: $0).chosen })
    }

    func testChiSquareOnKnownCounts() {
        let p: [(id: Int32, probability: Double)] = [(4, 0.5), (2, 0.25), (9, 0.25)]
        // Exactly the expected counts: statistic 0; a draw outside the support is counted.
        XCTAssertEqual(SamplingCheck.chiSquare(counts: [4: 500, 2: 250, 9: 250], probabilities: p).statistic, 0, accuracy: 1e-12)
        XCTAssertEqual(SamplingCheck.chiSquare(counts: [4: 500, 2: 250, 9: 249, 7: 1], probabilities: p).outside, 1)
        // (600−500)²/500 + (200−250)²/250 + (200−250)²/250 = 20 + 10 + 10, on 3 bins.
        let f = SamplingCheck.chiSquare(counts: [4: 600, 2: 200, 9: 200], probabilities: p, bins: 4)
        XCTAssertEqual(f.statistic, 40, accuracy: 1e-9)
        XCTAssertEqual(f.bins, 3)
        // The bound at 2 degrees of freedom, p = 3e-7: −2·ln(3e-7) ≈ 30.0 exactly for chi-square(2); Wilson–Hilferty is close.
        XCTAssertEqual(f.threshold, -2 * log(2.87e-7), accuracy: 4)
    }
}

/// NVRTC only (skipped without it): the self-test's deliberately wrong sampler must compile, or `kiln check --self-test`
/// would report a compile error instead of a caught kernel.
final class SamplingCompileTests: XCTestCase {
    /// The Swift mirrors have the byte layout of SampleRowParams (40 bytes) and SampleRowState (16) in sampling.cu.
    func testRowStructsHaveTheKernelsLayout() {
        XCTAssertEqual(MemoryLayout<Sampling.RowParams>.size, 40)
        XCTAssertEqual(MemoryLayout<Sampling.RowParams>.offset(of: \Sampling.RowParams.seed), 32)
        XCTAssertEqual(MemoryLayout<Sampling.RowParams>.offset(of: \Sampling.RowParams.frequencyPenalty), 28)
        XCTAssertEqual(MemoryLayout<Sampling.RowState>.stride, 16)
        var o = SamplingOptions()
        o.topK = -1; o.repeatLastN = -1; o.presencePenalty = 0.5; o.seed = 9
        let p = Sampling.RowParams(o)
        XCTAssertEqual([p.topK, p.repeatLastN], [-1, -1])
        XCTAssertEqual(p.seed, 9)
        XCTAssertTrue(p.hasPenalties)
        XCTAssertFalse(Sampling.RowParams(SamplingOptions()).hasPenalties)
    }

    func testBrokenVariantCompilesWithoutSpills() throws {
        guard case .success = NVRTC.loaded else { throw XCTSkip("no NVRTC") }
        let library = try KernelLibrary(compileOnlyArch: "sm_90a", cacheDirectory: nil)
        let module = try library.compile(Sampling.file, defines: ["KILN_BREAK": "1"], useCache: false)
        XCTAssertEqual(module.resources.filter(\.spills).map(\.mangledName), [])
        XCTAssertEqual(Set(Sampling.instances.map(\.nameExpression)), Set(module.loweredNames.keys))
    }
}
