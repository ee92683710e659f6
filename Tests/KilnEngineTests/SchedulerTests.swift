import XCTest
import KilnCore
import KilnEngine

/// A stand-in model over a paged cache: the "keys and values" of a position are its token id, written into the plan's
/// blocks, and the next token is a hash of the history read back through the block table. A wrongly shared block, a
/// held block evicted and rewritten, or a stale table makes the history (and so the output) wrong.
final class FakePagedBackend {
    static let vocabulary: Int32 = 50
    let blockSize: Int
    private var contents: [[Int32]]
    /// Problems seen while running plans (a write into a shared or published block, a history that differs).
    var problems: [String] = []

    init(pool: KVBlockPool) {
        blockSize = pool.blockSize
        contents = Array(repeating: Array(repeating: -1, count: pool.blockSize), count: pool.count)
    }

    /// The model: deterministic in the whole history.
    static func next(after history: [Int32]) -> Int32 {
        var h: UInt64 = 1469598103934665603
        for t in history { h = (h ^ UInt64(UInt32(bitPattern: t))) &* 1099511628211 }
        h ^= h >> 29
        return Int32(truncatingIfNeeded: h % UInt64(vocabulary))
    }

    /// Greedy output of `prompt` run alone, with the scheduler's stopping rules.
    static func reference(_ r: GenerationRequest, context: Int) -> (tokens: [Int32], reason: FinishReason) {
        var history = r.prompt, out: [Int32] = []
        while true {
            let t = next(after: history)
            history.append(t); out.append(t)
            if r.endOfGeneration.contains(t) { return (out, .endOfGeneration) }
            if out.count >= r.maxTokens { return (out, .maxTokens) }
            if history.count >= context { return (out, .contextLength) }
        }
    }

    /// Runs `plan`; `expected(request)` is the request's tokens so far (prompt and generated), to check the history.
    func run(_ plan: StepPlan, pool: KVBlockPool, expected: (RequestID) -> [Int32]) -> [Int32] {
        var sampled: [Int32] = []
        var row = 0
        for (j, s) in plan.batch.sequences.enumerated() {
            let table = plan.blockTables[j]
            for p in s.start..<s.start + s.count {
                let block = table[p / blockSize]
                if pool.referenceCounts[block] != 1 || pool.keys[block] != nil {
                    problems.append("request \(plan.requests[j]) writes position \(p) into shared or published block \(block)")
                }
                contents[block][p % blockSize] = plan.tokens[row]
                row += 1
            }
            let history = (0..<s.start + s.count).map { contents[table[$0 / blockSize]][$0 % blockSize] }
            let want = expected(plan.requests[j])
            if want.count < history.count || Array(want[0..<history.count]) != history {
                problems.append("request \(plan.requests[j]) reads history \(history), expected a prefix of \(want)")
            }
            if plan.samples[j] { sampled.append(Self.next(after: history)) }
        }
        return sampled
    }
}

/// Drives a scheduler with the fake backend and records what happened.
final class SchedulerHarness {
    let scheduler: Scheduler
    let backend: FakePagedBackend
    var prompts: [RequestID: GenerationRequest] = [:]
    var outputs: [RequestID: [Int32]] = [:]
    var finished: [RequestID: FinishReason] = [:]
    var plans: [StepPlan] = []

    init(_ config: SchedulerConfig) throws {
        scheduler = try Scheduler(config)
        backend = FakePagedBackend(pool: scheduler.cache.pool)
    }

    @discardableResult
    func enqueue(_ prompt: [Int32], maxTokens: Int, eog: Set<Int32> = []) -> RequestID? {
        let r = GenerationRequest(prompt: prompt, maxTokens: maxTokens, endOfGeneration: eog)
        guard case .accepted(let id) = scheduler.enqueue(r) else { return nil }
        prompts[id] = r; outputs[id] = []
        return id
    }

    /// One step: plan, run, complete. Returns the plan.
    @discardableResult
    func step(cancelBeforeCompleting: [RequestID] = []) throws -> StepPlan {
        let plan = try scheduler.step()
        record(plan.finished)
        let sampled = backend.run(plan, pool: scheduler.cache.pool) { self.prompts[$0]!.prompt + self.outputs[$0]! }
        for id in cancelBeforeCompleting { scheduler.cancel(id) }
        record(try scheduler.complete(plan, sampled: sampled))
        plans.append(plan)
        return plan
    }

    func runToEnd(limit: Int = 10_000) throws {
        var n = 0
        while scheduler.hasWork, n < limit { try step(); n += 1 }
    }

    private func record(_ events: [SchedulerEvent]) {
        for e in events {
            switch e {
            case .token(let id, let t): outputs[id]!.append(t)
            case .finished(let id, let reason): finished[id] = reason
            }
        }
    }
}

final class SchedulerTests: XCTestCase {
    private func config(blockSize: Int = 4, blocks: Int = 64, maxRunning: Int = 8, maxWaiting: Int = 16, budget: Int = 32,
                        context: Int = 256, prefixCaching: Bool = true) -> SchedulerConfig {
        SchedulerConfig(blockSize: blockSize, blocks: blocks, maxRunning: maxRunning, maxWaiting: maxWaiting, tokenBudget: budget,
                        contextLength: context, prefixCaching: prefixCaching)
    }

    private func rows(_ plan: StepPlan) -> [[Int]] { plan.batch.sequences.map { [$0.start, $0.count] } }

    func testALongPromptIsChunkedWithinTheTokenBudget() throws {
        let h = try SchedulerHarness(config(budget: 8))
        let long = h.enqueue(Array(1...20), maxTokens: 3)!
        let short = h.enqueue([7, 8, 9], maxTokens: 3)!
        var p = try h.step()
        XCTAssertEqual(p.requests, [long]); XCTAssertEqual(rows(p), [[0, 8]]); XCTAssertEqual(p.samples, [false])
        XCTAssertEqual(p.batch.logits, .none)
        p = try h.step()
        XCTAssertEqual(p.requests, [long]); XCTAssertEqual(rows(p), [[8, 8]])
        p = try h.step()
        XCTAssertEqual(p.requests, [long, short]); XCTAssertEqual(rows(p), [[16, 4], [0, 3]]); XCTAssertEqual(p.samples, [true, true])
        XCTAssertEqual(p.batch.logits, .last)
        p = try h.step()
        XCTAssertEqual(rows(p), [[20, 1], [3, 1]])
        try h.runToEnd()
        XCTAssertTrue(h.plans.allSatisfy { $0.batch.rows <= 8 && $0.batch.rows == $0.tokens.count })
        for id in [long, short] { XCTAssertEqual(h.outputs[id], FakePagedBackend.reference(h.prompts[id]!, context: 256).tokens) }
        XCTAssertEqual(h.backend.problems, [])
    }

    func testRunningDecodesAreNotStalledByALongPrefill() throws {
        let h = try SchedulerHarness(config(budget: 6))
        let a = h.enqueue([1, 2, 3], maxTokens: 20)!
        try h.step()
        let long = h.enqueue(Array(repeating: 5, count: 30), maxTokens: 1)!
        var chunks = 0
        while h.finished[long] == nil {
            let p = try h.step()
            XCTAssertEqual(p.requests.first, a, "the decode row comes first")
            XCTAssertEqual(p.batch.sequences.first?.count, 1)
            XCTAssertLessThanOrEqual(p.batch.rows, 6)
            if p.requests.contains(long) { chunks += 1 }
        }
        XCTAssertEqual(chunks, 6, "30 prompt tokens in chunks of 5")
        XCTAssertEqual(h.backend.problems, [])
    }

    func testRequestsAreAdmittedFirstComeFirstServed() throws {
        // 4 blocks of 2: the second request needs 3 blocks and must wait for the first; the third (1 block) must not
        // overtake it.
        let h = try SchedulerHarness(config(blockSize: 2, blocks: 4))
        let first = h.enqueue([1, 2, 3], maxTokens: 3)!
        let second = h.enqueue([4, 5, 6, 7, 8], maxTokens: 1)!
        let third = h.enqueue([9], maxTokens: 1)!
        var order: [RequestID] = []
        while h.scheduler.hasWork {
            let p = try h.step()
            for id in p.requests where !order.contains(id) { order.append(id) }
            if h.finished[first] == nil { XCTAssertEqual(p.requests, [first]) }
        }
        XCTAssertEqual(order, [first, second, third])
        XCTAssertEqual(h.finished, [first: .maxTokens, second: .maxTokens, third: .maxTokens])
        XCTAssertEqual(h.backend.problems, [])
    }

    func testTheWaitingQueueIsBounded() throws {
        let s = try Scheduler(config(maxRunning: 1, maxWaiting: 2))
        XCTAssertEqual(s.enqueue(GenerationRequest(prompt: [1], maxTokens: 1)), .accepted(0))
        XCTAssertEqual(s.enqueue(GenerationRequest(prompt: [1], maxTokens: 1)), .accepted(1))
        XCTAssertEqual(s.enqueue(GenerationRequest(prompt: [1], maxTokens: 1)), .queueFull(limit: 2))
        let p = try s.step()                                  // admits one: room for one more
        XCTAssertEqual(p.requests, [0])
        XCTAssertEqual(s.enqueue(GenerationRequest(prompt: [1], maxTokens: 1)), .accepted(2))
        XCTAssertEqual(s.enqueue(GenerationRequest(prompt: [1], maxTokens: 1)), .queueFull(limit: 2))
    }

    func testRequestsThatCanNeverRunAreRejected() throws {
        let s = try Scheduler(config(blocks: 4, context: 64))
        func rejected(_ r: EnqueueResult) -> Bool { if case .rejected = r { return true }; return false }
        XCTAssertTrue(rejected(s.enqueue(GenerationRequest(prompt: [], maxTokens: 1))))
        XCTAssertTrue(rejected(s.enqueue(GenerationRequest(prompt: [1], maxTokens: 0))))
        XCTAssertTrue(rejected(s.enqueue(GenerationRequest(prompt: Array(repeating: 1, count: 64), maxTokens: 1))))
        XCTAssertTrue(rejected(s.enqueue(GenerationRequest(prompt: Array(repeating: 1, count: 10), maxTokens: 10))), "needs 5 of 4 blocks")
        XCTAssertEqual(s.enqueue(GenerationRequest(prompt: Array(repeating: 1, count: 10), maxTokens: 6)), .accepted(0))
        XCTAssertThrowsError(try Scheduler(config(budget: 0)))
    }

    func testGenerationStopsAtEndOfGenerationMaxTokensAndTheContext() throws {
        let prompt: [Int32] = [3, 1, 4, 1, 5]
        let free = FakePagedBackend.reference(GenerationRequest(prompt: prompt, maxTokens: 10), context: 1000).tokens
        let h = try SchedulerHarness(config(context: 12))
        let eog = h.enqueue(prompt, maxTokens: 10, eog: [free[2]])!
        let short = h.enqueue(prompt, maxTokens: 4)!
        let long = h.enqueue(prompt, maxTokens: 10)!
        try h.runToEnd()
        XCTAssertEqual(h.outputs[eog], Array(free.prefix(through: free.firstIndex(of: free[2])!)))
        XCTAssertEqual(h.finished[eog], .endOfGeneration)
        XCTAssertEqual(h.outputs[short], Array(free.prefix(4))); XCTAssertEqual(h.finished[short], .maxTokens)
        XCTAssertEqual(h.outputs[long], Array(free.prefix(12 - 5))); XCTAssertEqual(h.finished[long], .contextLength)
        XCTAssertEqual(h.scheduler.cache.pool.usedCount, 0)
    }

    func testCancellationFreesBlocksAtTheNextStep() throws {
        let h = try SchedulerHarness(config(blocks: 16, maxRunning: 2, prefixCaching: false))
        let running = h.enqueue(Array(1...10), maxTokens: 50)!     // 3 blocks, 4 after a few tokens
        let other = h.enqueue(Array(1...5), maxTokens: 50)!        // 2 blocks
        let waiting = h.enqueue([1, 2], maxTokens: 50)!
        try h.step(); try h.step()
        XCTAssertEqual(h.scheduler.runningIDs, [running, other]); XCTAssertEqual(h.scheduler.waitingIDs, [waiting])
        XCTAssertEqual(h.scheduler.cache.pool.usedCount, 3 + 2)    // 12 and 7 positions
        XCTAssertTrue(h.scheduler.cancel(running)); XCTAssertTrue(h.scheduler.cancel(waiting))
        XCTAssertEqual(h.scheduler.cache.pool.usedCount, 5, "nothing is freed before the next step")
        let p = try h.step()
        XCTAssertEqual(Set(p.finished), [.finished(running, .cancelled), .finished(waiting, .cancelled)])
        XCTAssertEqual(p.requests, [other])
        XCTAssertEqual(h.scheduler.cache.pool.usedCount, 2)
        XCTAssertFalse(h.scheduler.cancel(running), "already gone")
        // Cancelled while its step runs: the sampled token is not reported.
        let before = h.outputs[other]!.count
        try h.step(cancelBeforeCompleting: [other])
        XCTAssertEqual(h.outputs[other]!.count, before)
        try h.step()
        XCTAssertEqual(h.finished[other], .cancelled)
        XCTAssertEqual(h.scheduler.cache.pool.freeCount, 16)
        XCTAssertFalse(h.scheduler.hasWork)
    }

    func testTheNewestSequenceIsPreemptedAndRecomputedWhenBlocksRunOut() throws {
        // 4 blocks of 2 positions; two requests of 3 prompt tokens take 2 blocks each, and the first to grow
        // past 4 positions forces the newer one out.
        let h = try SchedulerHarness(config(blockSize: 2, blocks: 4))
        let older = h.enqueue([1, 2, 3], maxTokens: 4)!
        let newer = h.enqueue([4, 5, 6], maxTokens: 4)!
        try h.step(); try h.step()
        XCTAssertEqual(h.scheduler.runningIDs, [older, newer])
        let p = try h.step()
        XCTAssertEqual(p.preempted, [newer])
        XCTAssertEqual(p.requests, [older])
        XCTAssertEqual(h.scheduler.waitingIDs, [newer])
        XCTAssertEqual(h.scheduler.generated(newer), Array(h.outputs[newer]!), "generated tokens are kept for the recompute")
        try h.runToEnd()
        for id in [older, newer] {
            XCTAssertEqual(h.outputs[id], FakePagedBackend.reference(h.prompts[id]!, context: 256).tokens)
            XCTAssertEqual(h.finished[id], .maxTokens)
        }
        let after = h.plans[3...]
        let recompute = after.first { $0.requests.contains(newer) }.map { $0.batch.sequences[$0.requests.firstIndex(of: newer)!] }
        XCTAssertEqual(recompute?.count, 5 - (recompute?.start ?? 0), "the preempted request is prefilled again: 3 prompt + 2 generated")
        XCTAssertEqual(h.backend.problems, [])
        XCTAssertEqual(h.scheduler.violations(), [])
    }

    func testAPromptSharingACachedPrefixStartsAfterIt() throws {
        let h = try SchedulerHarness(config())
        let system: [Int32] = Array(100..<113)               // 3 full blocks and one token
        let a = h.enqueue(system + [1, 2], maxTokens: 2)!
        try h.runToEnd()
        let b = h.enqueue(system + [7, 8, 9], maxTokens: 2)!
        let p = try h.step()
        XCTAssertEqual(rows(p), [[12, 4]], "the first 12 positions come from the cache")
        let aBlocks = h.plans.first!.blockTables[0]
        XCTAssertEqual(Array(p.blockTables[0][0..<3]), Array(aBlocks[0..<3]))
        try h.runToEnd()
        XCTAssertEqual(h.outputs[b], FakePagedBackend.reference(h.prompts[b]!, context: 256).tokens)
        XCTAssertNotNil(h.finished[a])
        XCTAssertEqual(h.backend.problems, [])
    }

    func testAPlanMustBeCompletedOnceWithOneIdPerSampledSequence() throws {
        let s = try Scheduler(config())
        _ = s.enqueue(GenerationRequest(prompt: [1, 2, 3], maxTokens: 2))
        _ = s.enqueue(GenerationRequest(prompt: Array(1...40), maxTokens: 2))
        let plan = try s.step()
        XCTAssertEqual(plan.samples, [true, false], "the second prompt is chunked at the 32-token budget")
        XCTAssertThrowsError(try s.step(), "a second plan before the first is completed")
        XCTAssertThrowsError(try s.complete(plan, sampled: []))
        XCTAssertThrowsError(try s.complete(plan, sampled: [4, 5]))
        XCTAssertEqual(try s.complete(plan, sampled: [4]), [.token(0, 4)])
        XCTAssertThrowsError(try s.complete(plan, sampled: [4]), "completed twice")
        XCTAssertEqual(s.violations(), [])
    }
}
