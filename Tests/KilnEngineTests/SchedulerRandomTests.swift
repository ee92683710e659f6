import XCTest
import KilnCore
import KilnEngine

/// 1,000 random requests (random prompt lengths, shared prefixes, output lengths, end-of-generation, cancellations)
/// through a pool small enough to evict and preempt, with the scheduler's and the cache's invariants checked every step.
final class SchedulerRandomTests: XCTestCase {
    func testThousandRandomRequestsKeepEveryInvariantAndLeakNothing() throws {
        let budget = 24
        let context = 96
        let config = SchedulerConfig(blockSize: 4, blocks: 48, maxRunning: 8, maxWaiting: 12, tokenBudget: budget,
                                     contextLength: context, prefixCaching: true)
        let h = try SchedulerHarness(config)
        let pool = h.scheduler.cache.pool
        var rng = SplitMix64(seed: 21)
        func random(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        // A few "system prompts" many requests start with, of lengths that do and do not end on a block boundary.
        let prefixes: [[Int32]] = [[], Array(1...8), Array(20...32), Array(40...73), [9, 9, 9, 9, 9]]
        let endOfGeneration: Set<Int32> = [0]

        var pending: [GenerationRequest] = []
        var made = 0, cancelled = Set<RequestID>(), queueFull = 0, preemptions = 0, steps = 0
        while made < 1000 || !pending.isEmpty || h.scheduler.hasWork {
            // Arrivals: 0–3 new requests per step, kept in order and retried while the queue is full.
            for _ in 0..<random(4) where made < 1000 {
                let prefix = prefixes[random(prefixes.count)]
                let suffix = (0..<1 + random(20)).map { _ in Int32(1 + random(49)) }
                let prompt = Array((prefix + suffix).prefix(context - 1))
                pending.append(GenerationRequest(prompt: prompt, maxTokens: 1 + random(30), endOfGeneration: endOfGeneration))
                made += 1
            }
            while let r = pending.first {
                guard let id = h.enqueue(r.prompt, maxTokens: r.maxTokens, eog: r.endOfGeneration) else { queueFull += 1; break }
                XCTAssertEqual(h.prompts[id]?.prompt, r.prompt)
                pending.removeFirst()
            }
            // Cancellations of live requests, waiting or running.
            if random(10) == 0 {
                let live = h.scheduler.runningIDs + h.scheduler.waitingIDs
                if let id = live.randomElement(using: &rng) { h.scheduler.cancel(id); cancelled.insert(id) }
            }
            let plan = try h.step()
            steps += 1
            preemptions += plan.preempted.count
            XCTAssertLessThanOrEqual(plan.batch.rows, budget)
            XCTAssertEqual(plan.batch.rows, plan.tokens.count)
            XCTAssertLessThanOrEqual(plan.batch.sequences.count, 8)
            XCTAssertEqual(Set(plan.batch.sequences.map(\.id)).count, plan.batch.sequences.count, "a cache handle twice in one step")
            let problems = h.scheduler.violations()
            XCTAssertEqual(problems, [], "step \(steps)")
            if !problems.isEmpty || !h.backend.problems.isEmpty { break }
            if steps > 100_000 { XCTFail("no progress"); break }
        }
        XCTAssertEqual(h.backend.problems, [])
        XCTAssertEqual(h.finished.count, 1000, "every request ends")
        for (id, r) in h.prompts {
            let want = FakePagedBackend.reference(r, context: context)
            let got = h.outputs[id]!
            if h.finished[id] == .cancelled {
                XCTAssertTrue(cancelled.contains(id), "request \(id) ended as cancelled but was not")
                XCTAssertEqual(got, Array(want.tokens.prefix(got.count)), "request \(id) before its cancellation")
            } else {
                XCTAssertEqual(got, want.tokens, "request \(id)")
                XCTAssertEqual(h.finished[id], want.reason, "request \(id)")
            }
        }
        // No leak: every block is free (cached or not), nothing is referenced.
        XCTAssertEqual(pool.freeCount, pool.count)
        XCTAssertEqual(pool.referenceCounts, Array(repeating: 0, count: pool.count))
        XCTAssertEqual(h.scheduler.cache.tables.count, 0)
        XCTAssertEqual(h.scheduler.violations(), [])
        // The run exercised what it is meant to.
        XCTAssertGreaterThan(pool.cacheHits, 50, "shared prefixes should hit the cache")
        XCTAssertGreaterThan(pool.evictions, 0)
        XCTAssertGreaterThan(preemptions, 0)
        XCTAssertGreaterThan(queueFull, 0)
        XCTAssertGreaterThan(h.finished.values.filter { $0 == .cancelled }.count, 10)
        XCTAssertGreaterThan(h.finished.values.filter { $0 == .endOfGeneration }.count, 10)
        print("random scheduler run: \(steps) steps, \(pool.cacheHits) cache hits, \(pool.evictions) evictions, \(preemptions) preemptions, \(queueFull) queue-full retries")
    }
}
