import XCTest
import KilnCore
import KilnCPU
import KilnTokenizer
import KilnEngine

/// Prefix caching on SmolLM2 with real chats: greedy answers equal each chat run alone by `Generator` (a contiguous
/// cache, no sharing), while the shared system prompt and earlier turns come from the cache.
final class PrefixCachingSmolLM2Tests: XCTestCase {
    func testChatsSharingASystemPromptAndASecondTurnMatchRunningAlone() throws {
        let (model, gguf) = try EngineSmolLM2Tests.model()
        let tok = try Tokenizer(gguf: gguf.gguf)
        let eog = Set(tok.eogIds.map { Int32($0) })
        func ids(_ s: String) -> [Int32] { tok.encode(s, addSpecial: true, parseSpecial: true).map { Int32($0) } }
        func alone(_ p: [Int32]) throws -> [Int32] {
            let gen = try Generator(model: model, contextLength: 512)
            var sampler = Sampler(options: .greedy), stats = GenerationStats(), out: [Int32] = []
            try gen.generate(prompt: p, maxTokens: 8, sampler: &sampler, endOfGeneration: eog, stats: &stats) { out.append($0); return true }
            return out
        }
        let system = "<|im_start|>system\nYou are a patient assistant for a public library. You answer questions about opening hours, "
            + "borrowing rules, late fees, printing, study rooms and events in short, friendly sentences. When you do not know an "
            + "answer you say so and suggest asking at the front desk; you never invent facts you were not told.<|im_end|>\n"
        let questions = ["When do you open on Saturday?", "How many books can I borrow?", "Is there a story time for children?"]
        let prompts = questions.map { ids(system + "<|im_start|>user\n\($0)<|im_end|>\n<|im_start|>assistant\n") }
        let systemBlocks = ids(system).count / 16
        XCTAssertGreaterThanOrEqual(systemBlocks, 3)

        let engine = try CPUServingEngine(model: model, maxSequences: 4, contextLength: 512, maxWaiting: 8, tokenBudget: 64)
        func serve(_ ps: [[Int32]]) throws -> [[Int32]] {
            let reqs = try ps.map { p -> RequestID in
                guard case .accepted(let id) = engine.submit(GenerationRequest(prompt: p, maxTokens: 8, endOfGeneration: eog)) else { throw KilnError("refused") }
                return id
            }
            var out: [RequestID: [Int32]] = [:]
            try engine.runUntilIdle { if case .token(let id, let t) = $0 { out[id, default: []].append(t) } }
            // The engine reports the end-of-generation token that ended a request; `Generator` stops before it.
            return reqs.map { (out[$0] ?? []).filter { !eog.contains($0) } }
        }
        let first = try serve([prompts[0]])
        XCTAssertEqual(first[0], try alone(prompts[0]))
        let pool = engine.scheduler.cache.pool
        let rowsBefore = engine.computedRows
        let rest = try serve(Array(prompts[1...]))
        for i in 0..<2 { XCTAssertEqual(rest[i], try alone(prompts[i + 1]), questions[i + 1]) }
        XCTAssertGreaterThanOrEqual(pool.cacheHits, 2 * systemBlocks, "both later chats should reuse the system prompt's blocks")
        XCTAssertLessThanOrEqual(engine.computedRows - rowsBefore, prompts[1].count + prompts[2].count + 14 - 2 * 16 * systemBlocks)

        // The first chat's second turn: its whole first exchange is a cached prefix.
        let answer = tok.decode(first[0].map { Int($0) })
        let turn2 = ids(system + "<|im_start|>user\n\(questions[0])<|im_end|>\n<|im_start|>assistant\n\(answer)<|im_end|>\n"
                        + "<|im_start|>user\nAnd on Sunday?<|im_end|>\n<|im_start|>assistant\n")
        let hitsBefore = pool.cacheHits
        XCTAssertEqual(try serve([turn2])[0], try alone(turn2))
        XCTAssertGreaterThan(pool.cacheHits - hitsBefore, systemBlocks, "the second turn should reuse more than the system prompt")
        XCTAssertEqual(pool.usedCount, 0)
        XCTAssertEqual(engine.scheduler.violations(), [])
    }
}
