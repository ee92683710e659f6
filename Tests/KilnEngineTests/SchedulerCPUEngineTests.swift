import XCTest
import KilnCore
import KilnCPU
import KilnModels
import KilnTokenizer
import KilnEngine

/// The scheduler driving the CPU backend on SmolLM2: batching must not change what a request generates.
final class SchedulerCPUEngineTests: XCTestCase {
    /// Greedy output of each of 8 requests of different lengths, run together (decode rows and prefill chunks in the
    /// same passes, a token budget that splits the longer prompts), equals that request run alone by `Generator`.
    func testGreedyOutputIsTheSameAloneOrBatchedWithSevenOthers() throws {
        let (model, gguf) = try EngineSmolLM2Tests.model()
        let tok = try Tokenizer(gguf: gguf.gguf)
        let texts = [
            "Hi",
            "The capital of France is",
            "Once upon a time, in a small village by the sea,",
            "Name the three primary colours of light, please:",
            "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
            "Water boils at a temperature of",
            "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. Then the fox",
            "In 1969, the first humans landed on",
        ]
        let prompts = texts.map { tok.encode($0, addSpecial: true, parseSpecial: false).map { Int32($0) } }
        XCTAssertEqual(Set(prompts.map(\.count)).count, prompts.count, "the prompts should differ in length: \(prompts.map(\.count))")
        let maxTokens = 10
        let eog = Set(tok.eogIds.map { Int32($0) })

        var alone: [[Int32]] = []
        for p in prompts {
            let gen = try Generator(model: model, contextLength: 256)
            var sampler = Sampler(options: .greedy), stats = GenerationStats()
            var out: [Int32] = []
            try gen.generate(prompt: p, maxTokens: maxTokens, sampler: &sampler, endOfGeneration: eog, stats: &stats) { out.append($0); return true }
            alone.append(out)
        }

        let engine = try CPUServingEngine(model: model, maxSequences: 8, contextLength: 256, maxWaiting: 8, tokenBudget: 24)
        var ids: [RequestID] = []
        for p in prompts {
            guard case .accepted(let id) = engine.submit(GenerationRequest(prompt: p, maxTokens: maxTokens, endOfGeneration: eog)) else {
                return XCTFail("request refused")
            }
            ids.append(id)
        }
        var outputs: [RequestID: [Int32]] = [:]
        var widest = 0, steps = 0
        while engine.hasWork {
            for e in try engine.step() { if case .token(let id, let t) = e { outputs[id, default: []].append(t) } }
            steps += 1
            widest = max(widest, engine.scheduler.runningCount)
        }
        XCTAssertEqual(widest, 8, "all eight should have run together")
        for (i, id) in ids.enumerated() { XCTAssertEqual(outputs[id], alone[i], "request \(i): \(texts[i])") }
        XCTAssertEqual(engine.scheduler.cache.pool.usedCount, 0)
    }
}
