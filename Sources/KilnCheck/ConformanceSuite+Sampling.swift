import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnCUDA
import KilnTune

/// The sampling kernel against the CPU `Sampler` (KilnCore), the one definition of sampling: greedy rows equal the
/// CPU's argmax; the kept set (its size and lowest-ranked id, which the kernel reports) equals the CPU distribution's
/// support; the frequencies of many draws fit the CPU probabilities (chi-square); log-probabilities, penalties and
/// the per-row state match; a captured graph takes new settings from device memory and a draw is reproducible from
/// (seed, step). Logits are random normals (never zeros), with a few NaNs that must never be chosen.
extension ConformanceSuite {
    static let samplingVocabularies = [1000, 32_000, 128_256]

    /// Every combination the issue names: top-k 0/1/40/vocab × top-p 0.5/0.9/1 × min-p 0/0.05/0.3 × T 0/0.7/1.5.
    public static func samplingGrid(vocab: Int) -> [SamplingOptions] {
        var out: [SamplingOptions] = []
        for k in [0, 1, 40, vocab] { for p: Float in [0.5, 0.9, 1] { for mp: Float in [0, 0.05, 0.3] { for t: Float in [0, 0.7, 1.5] {
            var o = SamplingOptions()
            o.topK = k; o.topP = p; o.minP = mp; o.temperature = t; o.repeatPenalty = 1
            o.seed = UInt64(out.count) &* 0x9E37_79B9 &+ 17
            out.append(o)
        } } } }
        return out
    }

    /// Random logits: normal with a spread that varies by row (peaked and flat rows), a tie at the maximum in every
    /// fourth row, and NaNs in every third row (one at index 0).
    func samplingLogits(rows: Int, vocab: Int) -> [Float] {
        var x: [Float] = []
        x.reserveCapacity(rows * vocab)
        for r in 0..<rows {
            var row = rng.normal(vocab, sigma: [1.5, 3, 5][r % 3])
            for i in row.indices where row[i] == 0 { row[i] = 0.5 }
            if r % 4 == 0, vocab > 2, let m = row.indices.max(by: { row[$0] < row[$1] }) {
                row[(m + 1 + Int.random(in: 0..<(vocab - 1), using: &rng)) % vocab] = row[m]
            }
            if r % 3 == 1, vocab > 10 { for i in [0, vocab / 2, vocab - 1] { row[i] = .nan } }
            x += row
        }
        return x
    }

    func checkSampling() {
        checkArgmax()
        for vocab in ConformanceSuite.samplingVocabularies {
            check("sample support, greedy and logprobs vocab=\(vocab) (108 settings, one launch)") {
                try samplingSupportMismatch(Sampling(library), vocab: vocab, grid: ConformanceSuite.samplingGrid(vocab: vocab))
            }
            for o in ConformanceSuite.frequencySettings(vocab: vocab) {
                check("sample frequencies vocab=\(vocab) k=\(o.topK) p=\(o.topP) min_p=\(o.minP) T=\(o.temperature)") {
                    try samplingFrequencyMismatch(vocab: vocab, options: o, penalties: false)
                }
            }
        }
        for vocab in [1000, 32_000] {
            var o = SamplingOptions()
            o.topK = 0; o.topP = 0.95; o.minP = 0.02; o.temperature = 0.9
            o.repeatPenalty = 1.3; o.repeatLastN = 16; o.presencePenalty = 0.6; o.frequencyPenalty = 0.3
            check("sample penalties and state vocab=\(vocab)") { try samplingPenaltyMismatch(vocab: vocab, options: o) }
        }
        var o = SamplingOptions()
        o.topK = 0; o.topP = 0.9; o.minP = 0.05; o.temperature = 0.7; o.repeatPenalty = 1.3; o.repeatLastN = 8; o.presencePenalty = 0.5; o.frequencyPenalty = 0.25
        check("sample frequencies with penalties vocab=1000") { try samplingFrequencyMismatch(vocab: 1000, options: o, penalties: true) }
        check("sample in a CUDA graph: settings from device memory, draws reproducible from (seed, step)") { try samplingGraphMismatch() }
    }

    func checkArgmax() {
        for (rows, cols) in [(1, 1), (4, 1000), (16, 128_256), (3, 50)] {
            check("argmax rows=\(rows) cols=\(cols)") {
                var x = rng.normal(rows * cols, sigma: 3)
                for r in 0..<rows where cols > 2 {
                    // A tie at the maximum (the lower index must win) and a NaN that must be ignored.
                    let row = x[(r * cols)..<((r + 1) * cols)]
                    let m = row.indices.max { row[$0] < row[$1] }!
                    let other = r * cols + Int.random(in: 0..<cols, using: &rng)
                    if other != m { x[other] = x[m] }
                    x[r * cols + (m + 1 - r * cols) % cols] = .nan
                }
                let k = try Sampling(library)
                let (dx, dy) = (try upload(x, .f32), try output(rows, .i32))
                try k.argmax(logits: dx.address, out: dy.address, rows: rows, cols: cols, stream: stream)
                try stream.synchronize()
                let got = try dy.download().withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) }
                return Conformance.compare(got, (0..<rows).map { Reference.argmax(x[($0 * cols)..<(($0 + 1) * cols)]) })
            }
        }
    }

    /// The settings whose draws are counted: each grid value at least once, temperature after the cuts included.
    static func frequencySettings(vocab: Int) -> [SamplingOptions] {
        [(0, 0.9, 0.05, 0.7), (40, 1, 0, 1.5), (0, 1, 0, 1.5), (vocab, 0.5, 0, 0.7), (40, 0.9, 0.3, 1.5), (1, 1, 0, 0.7),
         (0, 0.5, 0.05, 1.5), (40, 0.9, 0.05, 0.7)].map { (k: Int, p: Float, mp: Float, t: Float) in
            var o = SamplingOptions()
            o.topK = k; o.topP = p; o.minP = mp; o.temperature = t; o.repeatPenalty = 1
            return o
        }
    }

    func int32s(_ b: DeviceBuffer<UInt8>) throws -> [Int32] {
        try stream.synchronize()
        return try b.download().withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) }
    }

    /// One launch, one row per setting of `grid`, each with its own logits: greedy ids, the kept sets, the chosen
    /// token's and the top-20 log-probabilities against the CPU. `kernel` may be the deliberately wrong variant.
    func samplingSupportMismatch(_ kernel: Sampling, vocab: Int, grid: [SamplingOptions]) throws -> Mismatch? {
        let rows = grid.count, topN = Sampling.maxTopLogprobs
        let x = samplingLogits(rows: rows, vocab: vocab)
        let state = try SamplingState(context: context, rows: rows, vocab: vocab, penalties: false)
        let params = try DeviceBuffer(context, grid.map(Sampling.RowParams.init))
        let (dx, out, support) = (try upload(x, .f32), try output(rows, .i32), try output(2 * rows, .i32))
        let (lpValues, lpIds) = (try output(rows * (1 + topN), .f32), try output(rows * topN, .i32))
        try kernel.sample(logits: dx.address, rows: rows, vocab: vocab, params: params.address, state: state, out: out.address,
                          logprobs: .init(values: lpValues.address, ids: lpIds.address, count: topN), support: support.address, stream: stream)
        let (ids, kept, lp, top) = (try int32s(out), try int32s(support), try read(lpValues, .f32), try int32s(lpIds))
        for r in 0..<rows {
            let row = Array(x[(r * vocab)..<((r + 1) * vocab)])
            let cpu = row.withUnsafeBufferPointer { SamplingCheck.keptRange($0, options: grid[r]) }
            let (n, lastId) = (Int(kept[2 * r]), kept[2 * r + 1])
            func fail(_ what: String, got: Float, want: Float) -> Mismatch {
                log("  sample row \(r) (\(grid[r])): \(what)")
                return Mismatch(badCount: 1, total: rows, firstIndex: r, got: got, want: want)
            }
            if !cpu.range.contains(n) { return fail("kept \(n) tokens, the CPU \(cpu.range)", got: Float(n), want: Float(cpu.range.lowerBound)) }
            if lastId != cpu.ids[n - 1] { return fail("lowest-ranked kept id \(lastId), the CPU's \(cpu.ids[n - 1])", got: Float(lastId), want: Float(cpu.ids[n - 1])) }
            if !cpu.ids.prefix(n).contains(ids[r]) || row[Int(ids[r])].isNaN {
                return fail("drew \(ids[r]) (logit \(row[Int(ids[r])])) outside the kept set", got: Float(ids[r]), want: Float(cpu.ids[0]))
            }
            if grid[r].temperature <= 0, ids[r] != cpu.ids[0] { return fail("greedy \(ids[r]), CPU argmax \(cpu.ids[0])", got: Float(ids[r]), want: Float(cpu.ids[0])) }
            // Log-probabilities: log-softmax of the logits (NaN as −∞) at temperature 1, in f64 on the CPU.
            let logSoftmax = SamplingCheck.logSoftmax(row)
            let best = row.withUnsafeBufferPointer { SamplingCheck.topIds($0, count: topN) }
            let want = [logSoftmax[Int(ids[r])]] + best.map { logSoftmax[Int($0)] }
            let got = Array(lp[(r * (1 + topN))..<((r + 1) * (1 + topN))])
            if let m = Conformance.compare(got, want, tolerance: Tolerance(rtol: 1e-5, atol: 1e-4)) { return fail("log-probabilities: \(m)", got: m.got, want: m.want) }
            let gotTop = Array(top[(r * topN)..<((r + 1) * topN)])
            if gotTop != best { return fail("top ids \(gotTop.prefix(4))…, the CPU's \(best.prefix(4))…", got: 0, want: 0) }
        }
        return nil
    }

    /// Many draws of one logits row (every kernel row reads it: stride 0), seeds differing per row, several steps:
    /// the counts must fit the CPU distribution, and never leave its support. With `penalties`, every row has the same
    /// history (drawn from the row's best tokens, so the penalties reorder them) and draws once.
    func samplingFrequencyMismatch(vocab: Int, options: SamplingOptions, penalties: Bool) throws -> Mismatch? {
        let (rows, launches) = penalties ? (8192, 1) : (4096, 4)
        let x = Array(samplingLogits(rows: 2, vocab: vocab)[vocab...])   // the second row: NaNs at 0, vocab/2, vocab−1
        let best = x.withUnsafeBufferPointer { SamplingCheck.topIds($0, count: 12) }
        let history = penalties ? (0..<40).map { _ in best.randomElement(using: &rng)! } : []
        let promptLength = penalties ? 25 : 0
        let want = x.withUnsafeBufferPointer { SamplingCheck.keptRange($0, options: options, history: history, promptLength: promptLength) }
        let state = try SamplingState(context: context, rows: rows, vocab: vocab, penalties: penalties, recentCapacity: max(0, options.repeatLastN))
        let params = try DeviceBuffer(context, (0..<rows).map { r -> Sampling.RowParams in
            var p = Sampling.RowParams(options)
            p.seed = seed &+ UInt64(r) &* 7919
            return p
        })
        if penalties { for r in 0..<rows { try state.reset(row: r, history: history, promptLength: promptLength, repeatLastN: options.repeatLastN) } }
        let (dx, out, support) = (try upload(x, .f32), try output(rows, .i32), try output(2 * rows, .i32))
        var counts: [Int32: Int] = [:]
        for _ in 0..<launches {
            try Sampling(library).sample(logits: dx.address, rows: rows, vocab: vocab, params: params.address, state: state, out: out.address,
                                         logitsStride: 0, support: support.address, stream: stream)
            for id in try int32s(out) { counts[id, default: 0] += 1 }
        }
        if let drawn = counts.keys.first(where: { x[Int($0)].isNaN }) {
            return Mismatch(badCount: counts[drawn]!, total: rows * launches, firstIndex: Int(drawn), got: .nan, want: 0)
        }
        // The kept size may sit one token off the CPU's at a rounding boundary: compare against the kernel's.
        let kept = try int32s(support)
        let n = Int(kept[0])
        if let r = (0..<rows).first(where: { kept[2 * $0] != kept[0] || kept[2 * $0 + 1] != kept[1] }) {
            return Mismatch(badCount: 1, total: rows, firstIndex: r, got: Float(kept[2 * r]), want: Float(n))
        }
        guard want.range.contains(n), kept[1] == want.ids[n - 1] else { return Mismatch(badCount: 1, total: rows, firstIndex: 0, got: Float(n), want: Float(want.range.lowerBound)) }
        let probabilities: [(id: Int32, probability: Double)] = options.temperature <= 0 ? [(want.ids[0], 1.0)]
            : Sampler.temperedProbabilities(ids: Array(want.ids.prefix(n)), logits: Array(want.values.prefix(n)), temperature: options.temperature)
        let fit = SamplingCheck.chiSquare(counts: counts, probabilities: probabilities)
        if fit.outside > 0 || fit.statistic > fit.threshold {
            log("  \(fit.outside) draws outside the support; chi-square \(fit.statistic) over \(fit.bins) bins, bound \(fit.threshold)")
            return Mismatch(badCount: fit.outside, total: rows * launches, firstIndex: 0, got: Float(fit.statistic), want: Float(fit.threshold))
        }
        return nil
    }

    /// Penalties on the device: rows with different histories against the CPU (support, greedy), then the state the
    /// kernel leaves: step + 1, the chosen token counted, the repetition window moved on by one token.
    func samplingPenaltyMismatch(vocab: Int, options: SamplingOptions) throws -> Mismatch? {
        let rows = 8
        let x = samplingLogits(rows: rows, vocab: vocab)
        var grid: [SamplingOptions] = []
        var histories: [[Int32]] = []
        for r in 0..<rows {
            var o = options
            o.temperature = r % 4 == 0 ? 0 : options.temperature
            o.seed = UInt64(r) &+ seed
            grid.append(o)
            // Histories drawn from each row's best tokens, so the penalties change the ranking.
            let row = x[(r * vocab)..<((r + 1) * vocab)]
            let best = row.indices.filter { !row[$0].isNaN }.sorted { row[$0] > row[$1] }.prefix(12).map { Int32($0 - r * vocab) }
            histories.append((0..<(10 + 3 * r)).map { _ in best.randomElement(using: &rng)! })
        }
        let promptLength = 6
        let state = try SamplingState(context: context, rows: rows, vocab: vocab, penalties: true, recentCapacity: 32)
        for r in 0..<rows { try state.reset(row: r, history: histories[r], promptLength: promptLength, repeatLastN: grid[r].repeatLastN, step: 3) }
        let params = try DeviceBuffer(context, grid.map(Sampling.RowParams.init))
        let (dx, out, support) = (try upload(x, .f32), try output(rows, .i32), try output(2 * rows, .i32))
        try Sampling(library).sample(logits: dx.address, rows: rows, vocab: vocab, params: params.address, state: state, out: out.address,
                                     support: support.address, stream: stream)
        let (ids, kept) = (try int32s(out), try int32s(support))
        let (counts, window, ring, rowState) = (try state.counts!.download(), try state.recentCounts!.download(), try state.recent!.download(),
                                                try state.rowState.download())
        for r in 0..<rows {
            let row = Array(x[(r * vocab)..<((r + 1) * vocab)])
            let cpu = row.withUnsafeBufferPointer { SamplingCheck.keptRange($0, options: grid[r], history: histories[r], promptLength: promptLength) }
            let n = Int(kept[2 * r])
            let bad = !cpu.range.contains(n) || kept[2 * r + 1] != cpu.ids[n - 1] || !cpu.ids.prefix(n).contains(ids[r])
                || (grid[r].temperature <= 0 && ids[r] != cpu.ids[0])
            if bad {
                log("  penalized row \(r): kept \(n) (CPU \(cpu.range)), last \(kept[2 * r + 1]), drew \(ids[r]); CPU best \(cpu.ids.prefix(3))")
                return Mismatch(badCount: 1, total: rows, firstIndex: r, got: Float(ids[r]), want: Float(cpu.ids[0]))
            }
            // The state after the draw, computed here from the history plus the chosen token.
            let after = histories[r] + [ids[r]]
            let wantCounts = SamplingCheck.occurrences(after.dropFirst(promptLength), vocab: vocab)
            let wantWindow = SamplingCheck.occurrences(after.suffix(grid[r].repeatLastN), vocab: vocab)
            let window16 = grid[r].repeatLastN
            let ringRow = Array(ring[(r * 32)..<(r * 32 + window16)])
            let stateOK = Array(counts[(r * vocab)..<((r + 1) * vocab)]) == wantCounts && Array(window[(r * vocab)..<((r + 1) * vocab)]) == wantWindow
                && SamplingCheck.occurrences(ringRow.filter { $0 >= 0 }[...], vocab: vocab) == wantWindow
                && rowState[r].step == 4 && Int(rowState[r].recentPosition) == (min(histories[r].count, window16) % window16 + 1) % window16
            if !stateOK {
                log("  penalized row \(r): the state after the draw differs (step \(rowState[r].step), ring position \(rowState[r].recentPosition))")
                return Mismatch(badCount: 1, total: rows, firstIndex: r, got: Float(rowState[r].step), want: 4)
            }
        }
        return nil
    }

    /// A captured launch replays with the settings in device memory at replay time, and the same (seed, step) gives the
    /// same draws in a graph as outside it.
    func samplingGraphMismatch() throws -> Mismatch? {
        let (rows, vocab) = (64, 32_000)
        var x = rng.normal(vocab, sigma: 2)
        let m = x.indices.max { x[$0] < x[$1] }!
        x[(m + 7) % vocab] = x[m] - 0.05   // two likely tokens, so draws differ from greedy
        var random = SamplingOptions()
        random.topK = 40; random.topP = 0.95; random.minP = 0; random.temperature = 1
        let randomParams = (0..<rows).map { r -> Sampling.RowParams in var p = Sampling.RowParams(random); p.seed = 1000 + UInt64(r); return p }
        let greedyParams = [Sampling.RowParams](repeating: Sampling.RowParams(.greedy), count: rows)
        let kernel = try Sampling(library)
        let state = try SamplingState(context: context, rows: rows, vocab: vocab, penalties: false)
        let params = try DeviceBuffer(context, randomParams)
        let (dx, out) = (try upload(x, .f32), try output(rows, .i32))
        func restart() throws { for r in 0..<rows { try state.reset(row: r, step: 7) } }
        func launch() throws {
            try kernel.sample(logits: dx.address, rows: rows, vocab: vocab, params: params.address, state: state, out: out.address,
                              logitsStride: 0, stream: stream)
        }
        try restart(); try launch()
        let direct = try int32s(out)
        guard Set(direct).count > 1 else { return Mismatch(badCount: rows, total: rows, firstIndex: 0, got: Float(direct[0]), want: -1) }
        let exec = try Graph.capture(on: stream) { try launch() }.instantiate()
        try params.upload(greedyParams); try restart()
        try exec.launch(on: stream)
        if let mm = Conformance.compare(try int32s(out), [Int32](repeating: Int32(m), count: rows)) { return mm }
        try params.upload(randomParams); try restart()
        try exec.launch(on: stream)
        if let mm = Conformance.compare(try int32s(out), direct) { return mm }
        let steps = try state.rowState.download().map { Float($0.step) }
        return Conformance.compare(steps, [Float](repeating: 8, count: rows), tolerance: .exact)
    }

    /// The sampler compiled with KILN_BREAK (top-p and min-p cut at the row's temperature, the old semantics) must fail.
    public func samplingSelfTest() -> Bool {
        do {
            var grid: [SamplingOptions] = []
            for (p, mp) in [(Float(0.9), Float(0)), (1, 0.05), (0.5, 0.3)] {
                var o = SamplingOptions()
                o.topK = 0; o.topP = p; o.minP = mp; o.temperature = 1.5
                grid.append(o)
            }
            if let m = try samplingSupportMismatch(Sampling(library, defines: ["KILN_BREAK": "1"]), vocab: 32_000, grid: grid) {
                log("self-test: broken sampler caught: \(m)")
                return true
            }
            log("self-test FAILED: a sampler cutting top-p at the row's temperature passed the comparison")
        } catch { log("self-test error: \(error)") }
        return false
    }
}

/// The CPU side of the sampling check, free of the GPU (unit-tested on any machine).
public enum SamplingCheck {
    /// The CPU's candidates after penalties and top-k (best first, penalized logits) and the kept sizes a correct kernel
    /// may report: the CPU's, widened where top-p or min-p lies within float rounding (2e-5 relative) of a boundary.
    public static func keptRange(_ logits: UnsafeBufferPointer<Float>, options: SamplingOptions, history: [Int32] = [], promptLength: Int = 0)
        -> (ids: [Int32], values: [Float], range: ClosedRange<Int>) {
        var o = options
        o.topP = 1; o.minP = 0
        var s = Sampler(options: o)
        let c = s.candidates(logits, history: history, promptLength: promptLength)
        let values = c.map(\.logit)
        if options.temperature <= 0 { return (c.map(\.id), values, 1...1) }
        let eps: Float = 2e-5
        let exact = Sampler.filter(values: values, topP: options.topP, minP: options.minP)
        let fewer = Sampler.filter(values: values, topP: options.topP < 1 ? options.topP * (1 - eps) : 1, minP: options.minP * (1 + eps))
        let more = Sampler.filter(values: values, topP: options.topP < 1 ? min(options.topP * (1 + eps), Float(1).nextDown) : 1, minP: options.minP * (1 - eps))
        return (c.map(\.id), values, min(fewer, exact)...max(more, exact))
    }

    /// The `count` best ids of `logits` in the CPU's order (logit desc, id asc; NaN last).
    public static func topIds(_ logits: UnsafeBufferPointer<Float>, count: Int) -> [Int32] {
        var o = SamplingOptions()
        o.topK = count; o.topP = 1; o.minP = 0; o.temperature = 1
        var s = Sampler(options: o)
        return s.candidates(logits).map(\.id)
    }

    /// log-softmax in f64 (NaN as −∞).
    public static func logSoftmax(_ row: [Float]) -> [Float] {
        let m = Double(row.filter { !$0.isNaN }.max() ?? 0)
        let z = row.reduce(0.0) { $1.isNaN ? $0 : $0 + exp(Double($1) - m) }
        return row.map { $0.isNaN ? -.infinity : Float(Double($0) - m - log(z)) }
    }

    public static func occurrences(_ tokens: ArraySlice<Int32>, vocab: Int) -> [Int32] {
        var n = [Int32](repeating: 0, count: vocab)
        for t in tokens { n[Int(t)] += 1 }
        return n
    }

    public struct Fit { public var statistic: Double, threshold: Double, bins: Int, outside: Int }

    /// Pearson's chi-square of draw counts against `probabilities` (best first), on bins of about equal expected mass
    /// (about 32 of them, a heavy token alone in its bin), so rows of any flatness are tested over their whole
    /// range; `outside` counts draws of ids not in the distribution. The bound is the chi-square quantile at
    /// p ≈ 3·10⁻⁷ (Wilson–Hilferty, z = 5): a correct kernel fails about once in three million checks.
    public static func chiSquare(counts: [Int32: Int], probabilities: [(id: Int32, probability: Double)], bins target: Int = 32) -> Fit {
        let total = counts.values.reduce(0, +)
        let index = Dictionary(probabilities.enumerated().map { ($1.id, $0) }, uniquingKeysWith: { a, _ in a })
        let outside = counts.filter { index[$0.key] == nil }.values.reduce(0, +)
        // Bin edges: close a bin once it holds 1/target of the mass.
        var binOf = [Int](repeating: 0, count: probabilities.count)
        var expected: [Double] = [0]
        for (i, p) in probabilities.enumerated() {
            if expected[expected.count - 1] >= 1 / Double(target) { expected.append(0) }
            binOf[i] = expected.count - 1
            expected[expected.count - 1] += p.probability
        }
        // A last bin too light for the statistic joins the one before.
        if expected.count > 1, expected[expected.count - 1] * Double(total) < 5 {
            let last = expected.removeLast()
            expected[expected.count - 1] += last
            for i in binOf.indices where binOf[i] == expected.count { binOf[i] = expected.count - 1 }
        }
        var observed = [Double](repeating: 0, count: expected.count)
        for (id, n) in counts { if let i = index[id] { observed[binOf[i]] += Double(n) } }
        var statistic = 0.0
        for b in expected.indices where expected[b] > 0 {
            let e = expected[b] * Double(total)
            statistic += (observed[b] - e) * (observed[b] - e) / e
        }
        let dof = Double(max(1, expected.count - 1))
        let h = 2 / (9 * dof)
        let threshold = dof * pow(1 - h + 5 * h.squareRoot(), 3)
        return Fit(statistic: statistic, threshold: threshold, bins: expected.count, outside: outside)
    }
}
