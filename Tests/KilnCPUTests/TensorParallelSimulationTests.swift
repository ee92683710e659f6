import Foundation
import XCTest
import KilnCore
import KilnModels
@testable import KilnCPU

/// Tensor parallelism simulated on the CPU (N ranks in one process, the all-reduce a plain sum) against the unsharded
/// CPU model, teacher-forced over several positions so attention reads a KV cache written by earlier steps.
///
/// Tolerance: the sharded pass computes the same products except that o and down sum their K terms in N partial
/// sums joined by the all-reduce, a different f32 summation order. Each such sum differs by a few ulps (f32 unit
/// roundoff 6e-8 times K ≤ 96 terms of magnitude ≤ 1: ≤ 1e-5 absolute, well under that in practice). The CPU
/// keeps its KV cache in f16: a difference of one f32 ulp before the store can flip an f16 rounding (one f16 ulp,
/// 4.9e-4 relative, in one key or value), and through attention, two layers and the output projection that moves
/// logits (of magnitude ~1-3 here) by up to ~1e-4. Measured: 2e-7 to 1e-6 without a flip, 1.1e-4 at most (qwen3, 2
/// ranks). The bound 1e-3 on the largest logit difference is ten times the worst case; a wrong split (the tests
/// below) moves logits by ~0.1 or more, and each rank's partial sum is ~1 away from the full product.
final class TensorParallelSimulationTests: XCTestCase {
    static let tolerance: Float = 1e-3

    static func config(_ arch: Architecture = .llama, heads: Int, kvHeads: Int, headDim: Int = 16, tied: Bool = false,
                       style: RopeStyle = .halves, vocab: Int = 80) -> ModelConfig {
        ModelConfig(architecture: arch, vocabSize: vocab, hiddenSize: 64, intermediateSize: 96, numLayers: 2, numHeads: heads,
                    numKVHeads: kvHeads, headDim: headDim, contextLength: 64, rmsNormEps: 1e-5, ropeTheta: 10000,
                    ropeStyle: style, tieWordEmbeddings: tied, attentionBias: arch == .qwen2, qkNorm: arch == .qwen3,
                    embeddingMultiplier: arch == .granite ? 3 : 1, attentionMultiplier: arch == .granite ? 0.2 : nil,
                    residualMultiplier: arch == .granite ? 0.5 : 1, logitsScaling: arch == .granite ? 4 : 1)
    }

    /// Teacher-forced logits `[step][rows × vocab]`: a 5-token prompt (every row's logits), then 4 single-token steps.
    static let prompt: [Int32] = [3, 71, 12, 45, 60]
    /// The decode steps; with a larger vocabulary its last token (80 of 81: the last real row before the padding).
    static func steps(_ c: ModelConfig) -> [Int32] { [7, Int32(c.vocabSize - 1), 0, 41] }

    static func unsharded(_ w: WeightSource) throws -> [[Float]] {
        let m = try CPUModel(weights: w, threads: 1)
        let cache = try m.makeCache()
        return try [m.forward(prompt, cache: cache, logits: .all)] + steps(m.config).map { try m.forward([$0], cache: cache, logits: .all) }
    }

    static func sharded(_ tp: SimulatedTensorParallel) throws -> [[Float]] {
        let caches = try tp.makeCaches()
        return try [tp.forward(prompt, caches: caches, logits: .all)] + steps(tp.plan.config).map { try tp.forward([$0], caches: caches, logits: .all) }
    }

    /// Largest |a − b| over all steps; also checks the shapes agree.
    func maxDifference(_ a: [[Float]], _ b: [[Float]]) -> Float {
        XCTAssertEqual(a.map(\.count), b.map(\.count))
        var d: Float = 0
        for (x, y) in zip(a, b) { for (u, v) in zip(x, y) { d = max(d, abs(u - v)) } }
        return d
    }

    func checkMatches(_ c: ModelConfig, ranks: Int, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) throws {
        let w = TinyModelTests.weights(c, dtype: .f32, seed: seed)
        let reference = try Self.unsharded(w)
        let tp = try SimulatedTensorParallel(weights: w, ranks: ranks)
        let got = try Self.sharded(tp)
        let v = c.vocabSize
        XCTAssertEqual(got.map(\.count), [5 * v, v, v, v, v], file: file, line: line)
        // Independent sanity: the logits are not degenerate (random non-zero weights give a spread of values).
        XCTAssertGreaterThan(reference.flatMap { $0 }.map(abs).max() ?? 0, 0.1, file: file, line: line)
        let d = maxDifference(reference, got)
        XCTAssertLessThanOrEqual(d, Self.tolerance, "\(c.architecture) --tp \(ranks): max logit difference \(d)", file: file, line: line)
    }

    func testTwoRanksLlama() throws { try checkMatches(Self.config(heads: 4, kvHeads: 2), ranks: 2, seed: 11) }
    func testTwoRanksLlamaInterleavedTied() throws {
        try checkMatches(Self.config(heads: 4, kvHeads: 2, tied: true, style: .interleaved), ranks: 2, seed: 12)
    }
    func testTwoRanksQwen2Biases() throws { try checkMatches(Self.config(.qwen2, heads: 4, kvHeads: 2), ranks: 2, seed: 13) }
    func testTwoRanksQwen3HeadNorms() throws { try checkMatches(Self.config(.qwen3, heads: 4, kvHeads: 2, headDim: 24, tied: true), ranks: 2, seed: 14) }
    func testTwoRanksGraniteMultipliers() throws { try checkMatches(Self.config(.granite, heads: 4, kvHeads: 2), ranks: 2, seed: 15) }
    /// 8 heads of 8 over 4 KV heads: four ranks of two q heads and one KV head each.
    func testFourRanksLlama() throws { try checkMatches(Self.config(heads: 8, kvHeads: 4, headDim: 8), ranks: 4, seed: 16) }
    func testFourRanksQwen2Tied() throws { try checkMatches(Self.config(.qwen2, heads: 8, kvHeads: 4, headDim: 8, tied: true), ranks: 4, seed: 17) }
    /// A vocabulary of 81 over 2 and 4 ranks: padded to 82 and 84, the padded logits dropped at the gather; token 80
    /// (the last, held by the last rank next to its padding) is one of the steps.
    func testPaddedVocabularyTwoRanks() throws { try checkMatches(Self.config(heads: 4, kvHeads: 2, vocab: 81), ranks: 2, seed: 19) }
    func testPaddedVocabularyFourRanksTied() throws {
        try checkMatches(Self.config(heads: 8, kvHeads: 4, headDim: 8, tied: true, vocab: 81), ranks: 4, seed: 20)
    }
    /// Two sequences of different lengths in one pass (each with its cache on every rank), then a decode step of both:
    /// the same logits as the unsharded model's batched passes.
    func testBatchOfTwoSequences() throws {
        let c = Self.config(heads: 8, kvHeads: 4, headDim: 8)
        let w = TinyModelTests.weights(c, dtype: .f32, seed: 22)
        let a: [Int32] = [5, 17, 33], b: [Int32] = [60, 2, 9, 71, 44]
        let prefill = StepBatch(sequences: [.init(id: 0, start: 0, count: 3), .init(id: 1, start: 0, count: 5)], logits: .all)
        let decode = StepBatch(sequences: [.init(id: 0, start: 3, count: 1), .init(id: 1, start: 5, count: 1)], logits: .all)
        let full = try CPUModel(weights: w, threads: 1)
        let fullCaches = [try full.makeCache(), try full.makeCache()]
        let expected = [Array(try (a + b).withUnsafeBufferPointer { try full.forward($0, batch: prefill, caches: fullCaches) }),
                        Array(try [Int32(8), 30].withUnsafeBufferPointer { try full.forward($0, batch: decode, caches: fullCaches) })]
        let tp = try SimulatedTensorParallel(weights: w, ranks: 4)
        let caches = try tp.ranks.map { [try $0.makeCache(), try $0.makeCache()] }
        let got = [try tp.forward(a + b, batch: prefill, caches: caches), try tp.forward([8, 30], batch: decode, caches: caches)]
        XCTAssertEqual(got.map(\.count), [8 * 80, 2 * 80])
        XCTAssertLessThanOrEqual(maxDifference(expected, got), Self.tolerance)
    }

    /// One rank goes through the same simulation (no all-reduce at all).
    func testOneRankIsTheModel() throws { try checkMatches(Self.config(heads: 4, kvHeads: 2), ranks: 1, seed: 18) }

    /// The collectives leave the same bits on every rank: each rank's thread ends with the same full-vocabulary logits.
    func testEveryRankGathersTheSameLogits() throws {
        let c = Self.config(heads: 8, kvHeads: 4, headDim: 8, vocab: 81)
        let tp = try SimulatedTensorParallel(weights: TinyModelTests.weights(c, dtype: .f32, seed: 23), ranks: 4)
        let caches = try tp.ranks.map { [try $0.makeCache()] }
        let perRank = try tp.forwardEveryRank(Self.prompt, batch: .single(start: 0, count: Self.prompt.count, logits: .all), caches: caches)
        XCTAssertEqual(perRank.count, 4)
        XCTAssertEqual(perRank[0].count, Self.prompt.count * 81)
        for r in 1..<4 { XCTAssertEqual(perRank[r], perRank[0], "rank \(r)'s logits differ from rank 0's") }
    }

    /// Each collective the wrapper calls is needed: the same rank wrapper with one call skipped (on every rank, so no
    /// rank waits for the others) must fail the comparison with the unsharded model. Calls of the first pass, in order:
    /// 0 the embedding's all-reduce, 1-4 after o and down of layers 0 and 1, 5 the logits' gather.
    func testSkippingAnyCollectiveBreaksEquality() throws {
        let c = Self.config(heads: 4, kvHeads: 2, vocab: 81)
        let w = TinyModelTests.weights(c, dtype: .f32, seed: 24)
        let reference = try Self.unsharded(w)
        // The same wrapper without a skip matches (so the failures below come from the skip alone).
        let intact = try SimulatedTensorParallel(weights: w, ranks: 2) { SkippingCollectives(base: $0, skip: -1) }
        XCTAssertLessThanOrEqual(maxDifference(reference, try Self.sharded(intact)), Self.tolerance)
        for skip in 0..<6 {
            let tp = try SimulatedTensorParallel(weights: w, ranks: 2) { SkippingCollectives(base: $0, skip: skip) }
            let d = maxDifference(reference, try Self.sharded(tp))
            XCTAssertGreaterThan(d, 100 * Self.tolerance, "collective call \(skip) skipped, yet the logits match (difference \(d))")
        }
    }

    /// A rank that throws releases the others from the barrier (no hang), and its own error, not the others'
    /// "another rank failed", reaches the caller; a second pass fails the same way instead of hanging.
    func testFailingRankReleasesTheOthers() throws {
        let c = Self.config(heads: 4, kvHeads: 2)
        let w = TinyModelTests.weights(c, dtype: .f32, seed: 25)
        let tp = try SimulatedTensorParallel(weights: w, ranks: 2) { FailingCollectives(base: $0, failOnRank: 1) }
        for _ in 0..<2 {
            XCTAssertThrowsError(try Self.sharded(tp)) { XCTAssertTrue("\($0)".contains("rank 1 fails"), "\($0)") }
        }
    }

    /// The ranks' outputs of a row-parallel layer are partial sums: none alone is the unsharded layer's output, and
    /// their sum (taken here) is. Checked on the last layer's down projection, whose output the unsharded model
    /// leaves in its `branch` buffer.
    func testRowParallelRanksHoldPartialSums() throws {
        let c = Self.config(heads: 8, kvHeads: 4, headDim: 8)
        let w = TinyModelTests.weights(c, dtype: .f32, seed: 21)
        let full = try CPUModel(weights: w, threads: 1)
        _ = try full.forward(Self.prompt, cache: full.makeCache(), logits: .none)
        let expected = Array(UnsafeBufferPointer(start: full.buffers.branch, count: Self.prompt.count * c.hiddenSize))

        let tp = try SimulatedTensorParallel(weights: w, ranks: 4)
        var partials: [[Float]] = []
        var reduced: [WeightName] = []
        tp.observePartials = { name, p in
            reduced.append(name)
            if name == .linear(layer: c.numLayers - 1, .down) { partials = p }
        }
        _ = try tp.forward(Self.prompt, caches: tp.makeCaches(), logits: .none)
        XCTAssertEqual(reduced, [.linear(layer: 0, .o), .linear(layer: 0, .down), .linear(layer: 1, .o), .linear(layer: 1, .down)])
        XCTAssertEqual(partials.count, 4)
        let sum = expected.indices.map { i in partials.reduce(Float(0)) { $0 + $1[i] } }
        let sumError = zip(sum, expected).map { abs($0 - $1) }.max() ?? .infinity
        // The last layer's input already went through two all-reduces and the f16 caches: the same bound as the logits.
        XCTAssertLessThanOrEqual(sumError, Self.tolerance, "the ranks' partial sums add up to the full down projection")
        for (r, p) in partials.enumerated() {
            let gap = zip(p, expected).map { abs($0 - $1) }.max() ?? 0
            XCTAssertGreaterThan(gap, 1e-2, "rank \(r)'s partial must not be the whole product")
        }
    }

    /// Gate rows of one rank paired with another rank's up rows: the SwiGLU multiplies the wrong features, and the
    /// comparison must fail by far more than the tolerance.
    func testMisorderedGateUpSplitFails() throws {
        try checkWrongSplitFails(ranks: 2) { slice, rank, plan in
            guard slice.name.hasSuffix("ffn_up.weight") else { return slice }
            var s = slice
            let n = plan.rankConfig.intermediateSize, other = (rank + 1) % plan.ranks
            s.rows = (other * n)..<((other + 1) * n)
            return s
        }
    }

    /// KV heads that do not belong to the rank's q heads.
    func testMismatchedKVHeadsFail() throws {
        try checkWrongSplitFails(ranks: 2) { slice, rank, plan in
            guard slice.name.hasSuffix("attn_k.weight") || slice.name.hasSuffix("attn_v.weight") else { return slice }
            var s = slice
            let n = plan.rankConfig.kvDim, other = (rank + 1) % plan.ranks
            s.rows = (other * n)..<((other + 1) * n)
            return s
        }
    }

    func checkWrongSplitFails(ranks: Int, file: StaticString = #filePath, line: UInt = #line,
                              _ change: (TensorParallelPlan.Slice, Int, TensorParallelPlan) -> TensorParallelPlan.Slice) throws {
        let c = Self.config(heads: 4, kvHeads: 2)
        let w = TinyModelTests.weights(c, dtype: .f32, seed: 31)
        let plan = try TensorParallelPlan(config: c, ranks: ranks)
        let wrong = (0..<ranks).map { r in plan.slices(rank: r, tiedOutput: false).map { change($0, r, plan) } }
        let reference = try Self.unsharded(w)
        let d = maxDifference(reference, try Self.sharded(try SimulatedTensorParallel(weights: w, ranks: ranks, slices: wrong)))
        XCTAssertGreaterThan(d, 100 * Self.tolerance, "a wrong split must not pass the comparison", file: file, line: line)
    }

    /// A rank's slice holds the full tensor's rows and columns the plan names (read back value by value).
    func testRankWeightsCutTheNamedRowsAndColumns() throws {
        let c = Self.config(heads: 4, kvHeads: 2)
        let w = TinyModelTests.weights(c, dtype: .f32, seed: 41)
        let plan = try TensorParallelPlan(config: c, ranks: 2)
        let rank1 = try RankWeights(w, plan: plan, rank: 1)
        func floats(_ t: WeightTensor) -> [Float] { Array(t.data.bindMemory(to: Float.self)) }
        let q = floats(try w.tensor("blk.1.attn_q.weight", shape: [64, 64]))
        let o = floats(try w.tensor("blk.1.attn_output.weight", shape: [64, 64]))
        // rank 1 of 2: q heads 2, 3 → rows 32..<64; o columns 32..<64.
        XCTAssertEqual(floats(try rank1.tensor("blk.1.attn_q.weight", shape: [32, 64])), Array(q[(32 * 64)..<(64 * 64)]))
        let oCut = floats(try rank1.tensor("blk.1.attn_output.weight", shape: [64, 32]))
        XCTAssertEqual(oCut, (0..<64).flatMap { r in o[(r * 64 + 32)..<(r * 64 + 64)] })
        XCTAssertThrowsError(try rank1.tensor("blk.1.attn_q.weight", shape: [64, 64])) {
            XCTAssertTrue("\($0)".contains("is cut to [32, 64], expected [64, 64]"), "\($0)")
        }
    }

    /// Block formats are cut on block boundaries only: down's 96 FFN columns in two halves of 48 split a Q4_0 block
    /// (rank 0's half 0..<48 is the first to fail).
    func testBlockFormatCutOffBlockBoundaryIsAnError() throws {
        let c = Self.config(heads: 4, kvHeads: 2)
        let w = TinyModelTests.weights(c, dtype: .q4_0, seed: 51)
        XCTAssertThrowsError(try SimulatedTensorParallel(weights: w, ranks: 2)) {
            XCTAssertTrue("\($0)".contains("ffn_down.weight (q4_0, blocks of 32) cannot be cut at columns 0..<48"), "\($0)")
        }
    }

    /// Q8_0 weights where every cut falls on a block (ffn 128: 64 columns per rank): the ranks quantize the same
    /// activation blocks as the unsharded model, so the logits agree within the same bound.
    func testTwoRanksQ8_0() throws {
        var c = Self.config(heads: 4, kvHeads: 2)
        c.intermediateSize = 128
        let w = TinyModelTests.weights(c, dtype: .q8_0, seed: 61)
        let d = maxDifference(try Self.unsharded(w), try Self.sharded(try SimulatedTensorParallel(weights: w, ranks: 2)))
        XCTAssertLessThanOrEqual(d, Self.tolerance)
    }
}

/// Barrier collectives that skip the call numbered `skip` (counting every all-reduce and gather of this rank), on every
/// rank alike.
final class SkippingCollectives: TensorParallelCollectives {
    let base: CPUCollectives, skip: Int
    private var calls = 0
    init(base: CPUCollectives, skip: Int) { self.base = base; self.skip = skip }
    private func next() -> Bool { defer { calls += 1 }; return calls != skip }
    func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, _ reason: TensorParallelReduction) throws {
        if next() { try base.allReduceSum(buffer, count: count, reason) }
    }
    func gatherVocabulary(_ slice: UnsafeMutablePointer<Float>, rows: Int, into full: UnsafeMutablePointer<Float>) throws {
        if next() { try base.gatherVocabulary(slice, rows: rows, into: full) }
    }
}

/// Barrier collectives of which rank `failOnRank` throws at its first branch all-reduce while the others wait in it.
struct FailingCollectives: TensorParallelCollectives {
    let base: CPUCollectives, failOnRank: Int
    func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, _ reason: TensorParallelReduction) throws {
        if base.rank == failOnRank, reason != .embedding { throw KilnError("rank \(failOnRank) fails") }
        try base.allReduceSum(buffer, count: count, reason)
    }
    func gatherVocabulary(_ slice: UnsafeMutablePointer<Float>, rows: Int, into full: UnsafeMutablePointer<Float>) throws {
        try base.gatherVocabulary(slice, rows: rows, into: full)
    }
}
