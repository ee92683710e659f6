import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnCUDA
import KilnEngine
import KilnModels

/// The paged engine end to end on a small random model: every request's greedy tokens against the static engine (the
/// one `kiln check`'s kernel checks and the transformers logits test cover), alone and batched with seven others of
/// different lengths, and with its prefix cached by an earlier request. Identical up to the first step whose top-1/top-2
/// logit gap is below 0.05 (where a different summation order may pick the other token).
extension ConformanceSuite {
    static let pagedEngineGap: Float = 0.05

    func checkPagedEngine() {
        check("paged engine vs static engine: 8 prompts alone, batched, prefix-cached (greedy, 12 tokens)") { try pagedEngineMismatch() }
    }

    /// The generated tokens and, per token, the top-1/top-2 logit gap of the step that chose it.
    struct Generation: CustomStringConvertible {
        var tokens: [Int32] = [], gaps: [Float] = []
        var description: String { "\(tokens)" }
        /// Whether `other` agrees with this one up to the first low-gap step of either.
        func agrees(with other: Generation) -> Bool {
            for i in 0..<min(tokens.count, other.tokens.count) {
                if gaps[i] < ConformanceSuite.pagedEngineGap || other.gaps[i] < ConformanceSuite.pagedEngineGap { return true }
                if tokens[i] != other.tokens[i] { return false }
            }
            return tokens.count == other.tokens.count
        }
    }

    func pagedEngineMismatch() throws -> Mismatch? {
        let c = ModelConfig(architecture: .llama, vocabSize: 2000, hiddenSize: 256, intermediateSize: 512, numLayers: 2, numHeads: 4,
                            numKVHeads: 2, contextLength: 1024, rmsNormEps: 1e-5, ropeTheta: 10_000)
        let weights = try GPUWeights.dummy(config: c, context: context, library: library, seed: 7)
        let steps = 12, lengths = [5, 40, 17, 100, 1, 63, 250, 33]
        var prompts = lengths.map { n in (0..<n).map { _ in Int32.random(in: 0..<Int32(c.vocabSize), using: &rng) } }
        // A ninth prompt that starts with the seventh (250 tokens: 15 full blocks cached after the batch ran).
        prompts.append(prompts[6] + (0..<20).map { _ in Int32.random(in: 0..<Int32(c.vocabSize), using: &rng) })

        // The static engine, one prompt at a time.
        let reference = try GPUModel(weights: weights, library: library, maxBatch: 1, maxSeq: 512, maxRows: 256)
        func gap(_ row: [Float]) -> Float {
            var a = -Float.infinity, b = -Float.infinity
            for v in row { if v > a { b = a; a = v } else if v > b { b = v } }
            return a - b
        }
        let want: [Generation] = try prompts.map { p in
            var g = Generation()
            g.tokens.append(try reference.prefill([p])[0]); g.gaps.append(gap(try reference.lastLogits(batch: 1)))
            for _ in 1..<steps {
                g.tokens.append(try reference.decodeStep(batch: 1)[0]); g.gaps.append(gap(try reference.lastLogits(batch: 1)))
            }
            return g
        }

        let model = try GPUModel.paged(weights: weights, library: library, sequences: 8, context: 512, maxRows: 256, kvBlocks: 300)
        let engine = try GPUServingEngine(model: model, maxWaiting: 16)
        func run(_ indices: [Int]) throws -> [Int: Generation] {
            var ids: [RequestID: Int] = [:]
            for i in indices {
                guard case .accepted(let id) = engine.submit(GenerationRequest(prompt: prompts[i], maxTokens: steps), sampling: .greedy, logprobs: 2) else {
                    throw KilnError("paged engine refused prompt \(i)")
                }
                ids[id] = i
            }
            var out: [Int: Generation] = [:]
            while engine.hasWork {
                for case .token(let id, let t) in try engine.step() {
                    guard let i = ids[id], let lp = engine.stepLogprobs[id], lp.top.count == 2 else { throw KilnError("no log-probabilities for request \(id)") }
                    out[i, default: Generation()].tokens.append(t)
                    out[i, default: Generation()].gaps.append(lp.top[0].logprob - lp.top[1].logprob)
                }
            }
            return out
        }
        var failures: [String] = []
        for i in 0..<8 {
            let alone = try run([i])[i] ?? Generation()
            if !alone.agrees(with: want[i]) { failures.append("prompt \(i) (\(lengths[i]) tokens) alone: \(alone) vs static \(want[i])") }
        }
        let batched = try run(Array(0..<8))
        for i in 0..<8 where !(batched[i] ?? Generation()).agrees(with: want[i]) {
            failures.append("prompt \(i) batched: \(batched[i] ?? Generation()) vs static \(want[i])")
        }
        let hitsBefore = engine.scheduler.cache.pool.cacheHits
        let cached = try run([8])[8] ?? Generation()
        if !cached.agrees(with: want[8]) { failures.append("prompt 8 on a cached prefix: \(cached) vs static \(want[8])") }
        if engine.scheduler.cache.pool.cacheHits == hitsBefore { failures.append("prompt 8 found no cached prefix blocks") }
        let problems = engine.scheduler.violations()
        if !problems.isEmpty || engine.scheduler.cache.pool.usedCount != 0 {
            failures.append("after every request: \(engine.scheduler.cache.pool.usedCount) blocks still used; \(problems)")
        }
        guard failures.isEmpty else {
            log(failures.joined(separator: "\n"))
            return Mismatch(badCount: failures.count, total: 17, firstIndex: 0, got: 0, want: 0)
        }
        return nil
    }
}
