import XCTest
import Foundation
import KilnCore
import KilnTokenizer
import KilnEngine

/// Log-probabilities for the server's `logprobs`, and the serving engine's per-request options.
final class ServingLogprobsTests: XCTestCase {
    /// Logits ln 1, ln 2, ln 3, ln 4 are probabilities 1/10 … 4/10 (independent of the code: softmax by hand).
    func testLogSoftmaxAndTopEntriesMatchAHandComputedDistribution() {
        let logits: [Float] = [log(1), log(2), log(3), log(4)]
        let r = logits.withUnsafeBufferPointer { TokenLogprobs.compute($0, token: 1, top: 3) }
        XCTAssertEqual(r.chosen.token, 1)
        XCTAssertEqual(r.chosen.logprob, Float(log(0.2)), accuracy: 1e-5)
        XCTAssertEqual(r.top.map(\.token), [3, 2, 1])
        for (e, p) in zip(r.top, [0.4, 0.3, 0.2]) { XCTAssertEqual(e.logprob, Float(log(p)), accuracy: 1e-5) }
    }

    func testTopIsBoundedByTheVocabularyAndNaNIsNeverATopEntry() {
        let logits: [Float] = [.nan, 0, -.infinity]
        let r = logits.withUnsafeBufferPointer { TokenLogprobs.compute($0, token: 2, top: 5) }
        XCTAssertEqual(r.top.count, 3)
        XCTAssertEqual(r.top[0].token, 1)
        XCTAssertEqual(r.top[0].logprob, 0, accuracy: 1e-6, "the only finite logit holds all the probability")
        XCTAssertEqual(r.chosen.logprob, -9999, "−∞ is reported as −9999")
        let none = logits.withUnsafeBufferPointer { TokenLogprobs.compute($0, token: 1, top: 0) }
        XCTAssertTrue(none.top.isEmpty)
    }

    /// On SmolLM2: a greedy request's reported token is its own most likely alternative, log-probabilities are
    /// ≤ 0 and sorted; a request without `logprobs` gets none; asking for more than 20 is refused.
    func testServingEngineReportsLogprobsOfTheSampledTokens() throws {
        let (model, gguf) = try EngineSmolLM2Tests.model()
        let tok = try Tokenizer(gguf: gguf.gguf)
        let prompt = tok.encode("The capital of France is", addSpecial: true, parseSpecial: false).map { Int32($0) }
        let engine = try CPUServingEngine(model: model, maxSequences: 2, contextLength: 128, maxWaiting: 4)
        guard case .accepted(let withLP) = engine.submit(GenerationRequest(prompt: prompt, maxTokens: 4), sampling: .greedy, logprobs: 5),
              case .accepted(let without) = engine.submit(GenerationRequest(prompt: prompt, maxTokens: 4), sampling: .greedy) else {
            return XCTFail("requests refused")
        }
        XCTAssertEqual(engine.submit(GenerationRequest(prompt: prompt, maxTokens: 4), logprobs: 21),
                       .rejected("log-probability alternatives must be 0…20, got 21"))
        // Token ids beyond SmolLM2's 49,152 entries (or negative) are refused before they reach the model.
        XCTAssertEqual(engine.submit(GenerationRequest(prompt: prompt + [49_152], maxTokens: 4)),
                       .rejected("a prompt token is outside the vocabulary (0…49151)"))
        XCTAssertEqual(engine.submit(GenerationRequest(prompt: [-1], maxTokens: 4)), .rejected("a prompt token is outside the vocabulary (0…49151)"))
        var reported = 0
        while engine.hasWork {
            for case .token(let id, let t) in try engine.step() {
                if id == without { XCTAssertNil(engine.stepLogprobs[id]); continue }
                XCTAssertEqual(id, withLP)
                guard let lp = engine.stepLogprobs[id] else { XCTFail("no logprobs for token \(t)"); continue }
                reported += 1
                XCTAssertEqual(lp.chosen.token, t)
                XCTAssertEqual(lp.top.count, 5)
                XCTAssertEqual(lp.top.first?.token, t, "greedy picks the most likely token")
                XCTAssertEqual(lp.top.first?.logprob, lp.chosen.logprob)
                XCTAssertLessThanOrEqual(lp.chosen.logprob, 0)
                XCTAssertEqual(lp.top.map(\.logprob), lp.top.map(\.logprob).sorted(by: >))
            }
        }
        XCTAssertEqual(reported, 4)
    }

    /// `cancelAll` ends every request at the next step and frees every block.
    func testCancelAllEndsEveryRequestAndFreesItsBlocks() throws {
        let (model, _) = try EngineSmolLM2Tests.model()
        let engine = try CPUServingEngine(model: model, maxSequences: 2, contextLength: 64, maxWaiting: 4)
        for n in [3, 5, 7] { _ = engine.submit(GenerationRequest(prompt: Array(repeating: 42, count: n), maxTokens: 50)) }
        _ = try engine.step()
        XCTAssertGreaterThan(engine.scheduler.cache.pool.usedCount, 0)
        engine.cancelAll()
        let events = try engine.step()
        XCTAssertEqual(events.filter { if case .finished(_, .cancelled) = $0 { return true }; return false }.count, 3)
        XCTAssertFalse(engine.hasWork)
        XCTAssertEqual(engine.scheduler.cache.pool.usedCount, 0)
    }
}
