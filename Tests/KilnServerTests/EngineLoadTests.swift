import XCTest
import KilnCore
import KilnEngine
@testable import KilnServer

/// `kiln bench serve --engine-only`: the load generator driving a serving engine directly (here the CPU's, on SmolLM2).
final class EngineLoadTests: XCTestCase {
    func testEveryRequestCompletesWithItsLengthAndASharedPrefixIsServedFromTheCache() throws {
        let engine = try CPUServingEngine(model: try ServingLoopTests.model(), maxSequences: 3, contextLength: 256, maxWaiting: 8, tokenBudget: 64)
        let o = LoadGenerator.Options(url: "", model: nil, apiKey: nil, concurrency: 3, requests: 7, promptTokens: 4...9, outputTokens: 2...5,
                                      seed: 3, sharedPrefix: 48)
        let generator = LoadGenerator(options: o)
        let r = try generator.run(engine: engine)
        XCTAssertEqual(r.completed, 7); XCTAssertEqual(r.failed, 0); XCTAssertNil(r.firstError)
        let plans = generator.plans()
        XCTAssertEqual(Set(r.samples.map(\.request)), Set(0..<7))
        for s in r.samples {
            // ignore_eos: every request generates exactly its drawn length.
            XCTAssertEqual(s.outputTokens, plans[s.request].output, "request \(s.request)")
            XCTAssertEqual(s.promptTokens, plans[s.request].prompt.count)
            XCTAssertEqual(s.interTokenLatencies.count, s.outputTokens - 1)
            XCTAssertGreaterThan(s.timeToFirstToken, 0)
        }
        XCTAssertNotNil(r.firstRequestTTFT)
        XCTAssertEqual(r.laterTTFT.count, 6)
        // 48 shared tokens are 3 full blocks: every request after the first ones reuses them.
        XCTAssertGreaterThanOrEqual(engine.scheduler.cache.pool.cacheHits, 3)
        XCTAssertFalse(engine.hasWork)
        XCTAssertEqual(engine.scheduler.cache.pool.usedCount, 0, "no blocks held after the load")
    }

    func testARefusedRequestCountsAsFailedAndTheRestComplete() throws {
        // A context of 32 positions cannot hold a 40-token prompt: every request is refused at submission.
        let engine = try CPUServingEngine(model: try ServingLoopTests.model(), maxSequences: 2, contextLength: 32, maxWaiting: 4, tokenBudget: 32)
        let o = LoadGenerator.Options(url: "", model: nil, apiKey: nil, concurrency: 2, requests: 3, promptTokens: 40...40, outputTokens: 2...2, seed: 1)
        let r = try LoadGenerator(options: o).run(engine: engine)
        XCTAssertEqual(r.completed, 0); XCTAssertEqual(r.failed, 3)
        XCTAssertNotNil(r.firstError)
    }
}
