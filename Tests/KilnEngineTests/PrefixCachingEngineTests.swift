import XCTest
import KilnCore
import KilnCPU
import KilnModels
import KilnEngine

/// Prefix caching in the CPU serving engine on a tiny random model (Q8_0, so a row's products do not depend on the
/// batch): every request's greedy output equals the same request run alone through a contiguous cache without any
/// sharing, while the engine skips the cached blocks' rows; the pool ends with no block held.
final class PrefixCachingEngineTests: XCTestCase {
    static let config = ModelConfig(architecture: .llama, vocabSize: 96, hiddenSize: 64, intermediateSize: 96, numLayers: 2, numHeads: 4,
                                    numKVHeads: 2, headDim: 16, contextLength: 256, rmsNormEps: 1e-5, ropeTheta: 10000, ropeStyle: .halves,
                                    tieWordEmbeddings: false, attentionBias: false, qkNorm: false, embeddingMultiplier: 1,
                                    attentionMultiplier: nil, residualMultiplier: 1, logitsScaling: 1)
    nonisolated(unsafe) static var shared: CPUModel?

    /// Random weights, large enough that greedy decoding does not settle into one token.
    static func model() throws -> CPUModel {
        if let m = shared { return m }
        let c = config
        var rng = SplitMix64(seed: 2121)
        let w = InMemoryWeights(config: c, name: "tiny-prefix-cache")
        func mat(_ name: String, _ rows: Int, _ cols: Int) {
            w.add(name, shape: [rows, cols], values: (0..<(rows * cols)).map { _ in (rng.unit() * 2 - 1) * 3.4 / Float(cols).squareRoot() }, as: .q8_0)
        }
        func vec(_ name: String, _ n: Int) { w.add(name, shape: [n], values: (0..<n).map { _ in 0.8 + rng.unit() * 0.4 }) }
        mat("token_embd.weight", c.vocabSize, c.hiddenSize); mat("output.weight", c.vocabSize, c.hiddenSize); vec("output_norm.weight", c.hiddenSize)
        for l in 0..<c.numLayers {
            let p = "blk.\(l)."
            vec(p + "attn_norm.weight", c.hiddenSize); vec(p + "ffn_norm.weight", c.hiddenSize)
            mat(p + "attn_q.weight", c.qDim, c.hiddenSize); mat(p + "attn_k.weight", c.kvDim, c.hiddenSize)
            mat(p + "attn_v.weight", c.kvDim, c.hiddenSize); mat(p + "attn_output.weight", c.hiddenSize, c.qDim)
            mat(p + "ffn_gate.weight", c.intermediateSize, c.hiddenSize); mat(p + "ffn_up.weight", c.intermediateSize, c.hiddenSize)
            mat(p + "ffn_down.weight", c.hiddenSize, c.intermediateSize)
        }
        let m = try CPUModel(weights: w, threads: 2, maxBatch: 64)
        shared = m
        return m
    }

    nonisolated(unsafe) static var aloneMemo: [[Int32]: [Int32]] = [:]

    /// Greedy ids of `prompt` run alone: a fresh contiguous cache, the prompt in one pass, then one token at a time.
    static func alone(_ prompt: [Int32], maxTokens: Int, eog: Set<Int32> = []) throws -> [Int32] {
        let m = try model()
        let full: [Int32]
        if let memo = aloneMemo[prompt] { full = memo } else {
            let cache = try KVCache(config: config, capacity: 256)
            var sampler = Sampler(options: .greedy)
            var logits = try m.forward(prompt, cache: cache, logits: .last)
            var out: [Int32] = []
            for _ in 0..<12 {
                let t = logits.withUnsafeBufferPointer { sampler.sample($0, history: prompt + out, promptLength: prompt.count) }
                out.append(t)
                logits = try m.forward([t], cache: cache, logits: .last)
            }
            aloneMemo[prompt] = out
            full = out
        }
        precondition(maxTokens <= full.count)
        var out: [Int32] = []
        for t in full.prefix(maxTokens) { out.append(t); if eog.contains(t) { break } }
        return out
    }

    func tokens(_ n: Int, seed: Int) -> [Int32] { (0..<n).map { Int32(1 + ($0 * 29 + seed * 13 + ($0 * $0 + seed) % 7) % 95) } }

    /// Submits `prompts` (all at once), runs the engine to idle; the outputs in submission order.
    func run(_ engine: CPUServingEngine, _ prompts: [[Int32]], maxTokens: Int = 6) throws -> [[Int32]] {
        let ids = try prompts.map { p -> RequestID in
            guard case .accepted(let id) = engine.submit(GenerationRequest(prompt: p, maxTokens: maxTokens)) else { throw KilnError("refused") }
            return id
        }
        var out: [RequestID: [Int32]] = [:]
        try engine.runUntilIdle { if case .token(let id, let t) = $0 { out[id, default: []].append(t) } }
        XCTAssertEqual(engine.scheduler.violations(), [])
        return ids.map { out[$0] ?? [] }
    }

    func testASharedSystemPromptIsComputedOnceAndChangesNoOutput() throws {
        let engine = try CPUServingEngine(model: try Self.model(), maxSequences: 4, contextLength: 256, maxWaiting: 8, tokenBudget: 40)
        let system = tokens(50, seed: 1)                 // three full blocks and two positions
        let first = system + tokens(7, seed: 2)
        XCTAssertEqual(try run(engine, [first]), [try Self.alone(first, maxTokens: 6)])
        let rowsBefore = engine.computedRows
        let others = [system + tokens(5, seed: 3), system + tokens(20, seed: 4), system + tokens(1, seed: 5)]
        let got = try run(engine, others)
        for (i, p) in others.enumerated() { XCTAssertEqual(got[i], try Self.alone(p, maxTokens: 6), "request \(i)") }
        // Each of the three took the system prompt's three full blocks from the cache.
        XCTAssertEqual(engine.scheduler.cache.pool.cacheHits, 9)
        let promptRows = others.map { $0.count - 48 }.reduce(0, +), decodeRows = 3 * 5
        XCTAssertEqual(engine.computedRows - rowsBefore, promptRows + decodeRows)
        XCTAssertEqual(engine.scheduler.cache.pool.usedCount, 0)
    }

    /// A chat's second and third turns repeat everything before them (prompts and answers): each turn computes only
    /// what the previous turn's full blocks do not hold.
    func testMultiTurnReusesTheEarlierTurns() throws {
        let engine = try CPUServingEngine(model: try Self.model(), maxSequences: 2, contextLength: 256, maxWaiting: 4, tokenBudget: 24)
        var conversation = tokens(21, seed: 6)
        var previousComputed = 0
        for turn in 0..<3 {
            let rowsBefore = engine.computedRows, hitsBefore = engine.scheduler.cache.pool.cacheHits
            let answer = try run(engine, [conversation], maxTokens: 8)[0]
            XCTAssertEqual(answer, try Self.alone(conversation, maxTokens: 8), "turn \(turn)")
            // Positions computed by the previous turn (its prompt and all but its last answer token) in full blocks.
            let cachedBlocks = turn == 0 ? 0 : (previousComputed / 16)
            XCTAssertEqual(engine.scheduler.cache.pool.cacheHits - hitsBefore, cachedBlocks, "turn \(turn)")
            XCTAssertEqual(engine.computedRows - rowsBefore, conversation.count - 16 * cachedBlocks + answer.count - 1, "turn \(turn)")
            previousComputed = conversation.count + answer.count - 1
            conversation += answer + tokens(9, seed: 7 + turn)
        }
    }

    /// A prompt whose every block is cached still computes its last block (the last token's logits are needed); one
    /// a token longer than whole blocks computes that token alone.
    func testAnEntirelyCachedPromptStillComputesItsLastToken() throws {
        let engine = try CPUServingEngine(model: try Self.model(), maxSequences: 2, contextLength: 256, maxWaiting: 4)
        let whole = tokens(32, seed: 8), oneMore = tokens(33, seed: 8)
        XCTAssertEqual(try run(engine, [oneMore]), [try Self.alone(oneMore, maxTokens: 6)])
        for (prompt, hits, rows) in [(whole, 1, 16), (oneMore, 2, 1), (whole, 1, 16)] {
            let rowsBefore = engine.computedRows, hitsBefore = engine.scheduler.cache.pool.cacheHits
            XCTAssertEqual(try run(engine, [prompt]), [try Self.alone(prompt, maxTokens: 6)], "\(prompt.count) tokens")
            XCTAssertEqual(engine.scheduler.cache.pool.cacheHits - hitsBefore, hits, "\(prompt.count) tokens")
            XCTAssertEqual(engine.computedRows - rowsBefore, rows + 5, "\(prompt.count) tokens: prompt rows + 5 decode rows")
        }
    }

    /// A pool of 10 blocks for two sequences of up to 4 blocks: cached prefixes are evicted least recently used first
    /// and sequences are preempted, and every output still equals the request alone.
    func testEvictionUnderASmallPool() throws {
        let engine = try CPUServingEngine(model: try Self.model(), maxSequences: 2, contextLength: 64, maxWaiting: 16, tokenBudget: 20, kvBlocks: 10)
        let prefixes = (0..<4).map { tokens(33, seed: 20 + $0) }
        // Each prefix twice in a row (the second usually finds it cached), then all of them again after the others.
        var prompts: [[Int32]] = []
        for round in [0, 1] { for (i, p) in prefixes.enumerated() { for r in 0..<2 { prompts.append(p + tokens(3 + i + round + r, seed: 30 + r)) } } }
        let got = try run(engine, prompts, maxTokens: 10)
        for (i, p) in prompts.enumerated() { XCTAssertEqual(got[i], try Self.alone(p, maxTokens: 10), "request \(i)") }
        let pool = engine.scheduler.cache.pool
        XCTAssertGreaterThan(pool.evictions, 0, "the pool should have been too small to keep every prefix")
        XCTAssertGreaterThan(pool.cacheHits, 0)
        XCTAssertEqual(pool.usedCount, 0); XCTAssertEqual(pool.freeCount, 10)
    }

    /// Cancelling a request that shares its prefix with a running one frees its own blocks at the next step and leaves
    /// the shared ones (and the other's output) alone.
    func testCancellationFreesBlocksAndSparesTheSharedPrefix() throws {
        let engine = try CPUServingEngine(model: try Self.model(), maxSequences: 4, contextLength: 256, maxWaiting: 4, tokenBudget: 64)
        let system = tokens(40, seed: 9)
        let a = system + tokens(4, seed: 10), b = system + tokens(30, seed: 11)
        XCTAssertEqual(try run(engine, [a]), [try Self.alone(a, maxTokens: 6)])
        let pool = engine.scheduler.cache.pool
        guard case .accepted(let keep) = engine.submit(GenerationRequest(prompt: a, maxTokens: 12)),
              case .accepted(let drop) = engine.submit(GenerationRequest(prompt: b, maxTokens: 12)) else { return XCTFail("refused") }
        var out: [RequestID: [Int32]] = [:]
        for _ in 0..<3 { for e in try engine.step() { if case .token(let id, let t) = e { out[id, default: []].append(t) } } }
        // Both hold the two shared blocks: 2 shared + a's own 1 + b's own 3 (70 positions + 2 decoded).
        XCTAssertEqual(pool.usedCount, 2 + 1 + 3)
        XCTAssertEqual(pool.referenceCounts[engine.scheduler.cache.tables.values.first!.first!], 2)
        engine.cancel(drop)
        for e in try engine.step() { if case .token(let id, let t) = e { out[id, default: []].append(t) } }
        XCTAssertEqual(pool.usedCount, 2 + 1, "the cancelled request's own blocks are free after one step")
        try engine.runUntilIdle { if case .token(let id, let t) = $0 { out[id, default: []].append(t) } }
        XCTAssertEqual(out[keep], try Self.alone(a, maxTokens: 12))
        XCTAssertLessThan(out[drop]?.count ?? 0, 12)
        XCTAssertEqual(pool.usedCount, 0)
        XCTAssertEqual(engine.scheduler.violations(), [])
    }

    /// 1,000 random requests over a few shared prefixes, with cancellations, through a pool small enough to evict and
    /// preempt: each finished request's output equals the request alone, and no block is held at the end.
    func testThousandRandomRequestsMatchRunningAloneAndLeakNothing() throws {
        let engine = try CPUServingEngine(model: try Self.model(), maxSequences: 6, contextLength: 128, maxWaiting: 12, tokenBudget: 48, kvBlocks: 30)
        let pool = engine.scheduler.cache.pool
        var rng = SplitMix64(seed: 1000)
        func random(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        let prefixes: [[Int32]] = [[], tokens(16, seed: 40), tokens(37, seed: 41), tokens(64, seed: 42), tokens(5, seed: 43)]
        var requests: [RequestID: GenerationRequest] = [:], outputs: [RequestID: [Int32]] = [:], finished: [RequestID: FinishReason] = [:]
        var made = 0, steps = 0
        let eog: Set<Int32> = [7]
        while made < 1000 || engine.hasWork {
            for _ in 0..<random(4) where made < 1000 {
                let prompt = prefixes[random(prefixes.count)] + (0..<1 + random(12)).map { _ in Int32(1 + random(95)) }
                let r = GenerationRequest(prompt: prompt, maxTokens: 1 + random(8), endOfGeneration: eog)
                guard case .accepted(let id) = engine.submit(r) else { break }   // queue full: this one is dropped, not counted
                requests[id] = r; made += 1
            }
            if random(12) == 0, let id = (engine.scheduler.runningIDs + engine.scheduler.waitingIDs).randomElement(using: &rng) { engine.cancel(id) }
            for e in try engine.step() {
                switch e {
                case .token(let id, let t): outputs[id, default: []].append(t)
                case .finished(let id, let reason): finished[id] = reason
                }
            }
            steps += 1
            let problems = engine.scheduler.violations()
            XCTAssertEqual(problems, [], "step \(steps)")
            if !problems.isEmpty || steps > 50_000 { break }
        }
        XCTAssertEqual(finished.count, 1000)
        var compared = 0
        for (id, r) in requests where finished[id] != .cancelled {
            XCTAssertEqual(outputs[id] ?? [], try Self.alone(r.prompt, maxTokens: r.maxTokens, eog: eog), "request \(id)")
            compared += 1
        }
        XCTAssertGreaterThan(compared, 800)
        XCTAssertGreaterThan(pool.cacheHits, 500, "shared prefixes should hit the cache")
        XCTAssertGreaterThan(pool.evictions, 0)
        XCTAssertEqual(pool.usedCount, 0); XCTAssertEqual(pool.freeCount, pool.count)
        XCTAssertEqual(engine.scheduler.cache.tables.count, 0)
    }
}
