import Foundation
import XCTest
import KilnCore
import KilnModels
import KilnCPU
import KilnTokenizer
import KilnEngine
import KilnTemplates

/// The engine on SmolLM2-135M (Q4_1) against llama.cpp: greedy generation and perplexity.
final class EngineSmolLM2Tests: XCTestCase {
    nonisolated(unsafe) static var shared: (CPUModel, GGUFModel)?
    static func model() throws -> (CPUModel, GGUFModel) {
        if let s = shared { return s }
        let g = try GGUFModel(path: ModelStore.defaultModelPath())
        let m = try CPUModel(weights: g, threads: ProcessInfo.processInfo.activeProcessorCount)
        shared = (m, g)
        return (m, g)
    }

    static func golden() throws -> [String: Any] {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/smollm2-llamacpp.json").path
        guard let d = FileManager.default.contents(atPath: path) else { throw KilnError("no golden data at \(path)") }
        return try JSONSerialization.jsonObject(with: d) as! [String: Any]
    }

    /// Greedy generation through `Generator` reproduces llama.cpp's ids up to the first near-tie, for every golden prompt,
    /// and a second turn appended to the same generator reuses the cache (only new tokens are fed).
    func testGreedyGenerationMatchesLlamaCpp() throws {
        let (model, _) = try Self.model()
        let root = try Self.golden()
        var entries = root["prompts"] as! [[String: Any]]
        entries.append(root["chat_no_system"] as! [String: Any])
        let eog: Set<Int32> = [0, 2]
        for e in entries {
            let prompt = (e["prompt_token_ids"] as! [NSNumber]).map { Int32($0.intValue) }
            let expected = (e["generated_token_ids"] as! [NSNumber]).map { Int32($0.intValue) }
            let steps = (e["steps_before_first_gap_below_0.5"] as! NSNumber).intValue
            let gen = try Generator(model: model, contextLength: 512)
            var sampler = Sampler(options: .greedy)
            var stats = GenerationStats()
            var out: [Int32] = []
            let reason = try gen.generate(prompt: prompt, maxTokens: steps, sampler: &sampler, endOfGeneration: eog, stats: &stats) {
                out.append($0); return true
            }
            XCTAssertEqual(reason, .tokenLimit)
            XCTAssertEqual(out, Array(expected.prefix(steps)), "\(e["id"]!)")
            XCTAssertEqual(stats.promptTokens, prompt.count)
            // Continue the same conversation: only the appended tokens are new.
            var more: [Int32] = []
            try gen.generate(prompt: prompt + out, maxTokens: 2, sampler: &sampler, endOfGeneration: eog, stats: &stats) { more.append($0); return true }
            XCTAssertEqual(stats.promptTokens, prompt.count + 1, "the cached prefix must not be recomputed")
            XCTAssertEqual(gen.tokens.count, prompt.count + out.count + more.count)
        }
    }

    /// A two-turn chat through TextGenerator: the second turn prefills only what follows the cached conversation, and
    /// its greedy reply equals that of a fresh sequence fed the whole rendered conversation.
    func testChatTurnsReuseTheCacheAndMatchAFreshRun() throws {
        let (model, g) = try Self.model()
        let tok = try Tokenizer(gguf: g.gguf)
        let source = try XCTUnwrap(g.gguf["tokenizer.chat_template"]?.string)
        let text = try TextGenerator(backend: try CPUSequence(model: model, capacity: 512), tokenizer: tok, chatTemplate: source,
                                     templateName: "smollm2", sampling: .greedy)
        let request = TextGenerator.Request(maxTokens: 12)
        text.startConversation(system: "You are terse.")
        let first = try text.chat("Name a colour.", request) { _ in }
        XCTAssertFalse(first.text.isEmpty)
        let second = try text.chat("Another one?", request) { _ in }
        XCTAssertEqual(text.messages.map(\.role), ["system", "user", "assistant", "user", "assistant"])
        // Render the same conversation from scratch and generate on a fresh sequence.
        let template = try ChatTemplate(source: source, name: "smollm2")
        let rendered = try template.render(messages: Array(text.messages.dropLast()), addGenerationPrompt: true,
                                           bosToken: tok.bosId.map { tok.tokenText($0) } ?? "", eosToken: tok.eosId.map { tok.tokenText($0) } ?? "")
        let ids = tok.encode(rendered, addSpecial: false, parseSpecial: true)
        XCTAssertLessThan(second.stats.promptTokens, ids.count / 2, "the second turn should feed only its new tokens")
        let fresh = try TextGenerator(backend: try CPUSequence(model: model, capacity: 512), tokenizer: tok, chatTemplate: nil,
                                      templateName: "smollm2", sampling: .greedy)
        var out: [Int32] = []
        var sampler = Sampler(options: .greedy), stats = GenerationStats()
        try fresh.generator.generate(prompt: ids.map { Int32($0) }, maxTokens: 12, sampler: &sampler,
                                     endOfGeneration: Set(tok.eogIds.map { Int32($0) }), stats: &stats) { out.append($0); return true }
        var decoder = StreamingDecoder(tokenizer: tok)
        XCTAssertEqual(out.map { decoder.push(Int($0)) }.joined() + decoder.flush(), second.text)
    }

    func testContextLimitIsAnErrorNotACrash() throws {
        let (model, _) = try Self.model()
        let gen = try Generator(model: model, contextLength: 8)
        var sampler = Sampler(options: .greedy)
        var stats = GenerationStats()
        XCTAssertThrowsError(try gen.generate(prompt: Array(repeating: 504, count: 9), maxTokens: 1, sampler: &sampler,
                                              endOfGeneration: [], stats: &stats) { _ in true })
        let reason = try gen.generate(prompt: [504, 3575, 282], maxTokens: 100, sampler: &sampler, endOfGeneration: [], stats: &stats) { _ in true }
        XCTAssertEqual(reason, .contextFull)
    }

    /// llama-perplexity -c 512 on the Apache-2.0 license text gives 15.9289 ± 1.42219 (4 chunks); Kiln must be within 1%.
    func testPerplexityMatchesLlamaCpp() throws {
        let path = "/usr/share/common-licenses/Apache-2.0"
        guard let data = FileManager.default.contents(atPath: path) else { throw KilnError("\(path) missing (Debian's base-files package ships it)") }
        let (model, gguf) = try Self.model()
        let tok = try Tokenizer(gguf: gguf.gguf)
        var text = String(decoding: data, as: UTF8.self)
        if text.hasSuffix("\n") { text.removeLast() }
        let tokens = tok.encode(text, addSpecial: true, parseSpecial: false).map { Int32($0) }
        var running: [Double] = []
        let r = try Perplexity.evaluate(model: model, tokens: tokens, context: 512) { _, p in running.append(p) }
        XCTAssertEqual(r.chunks, 4)
        XCTAssertEqual(r.scoredTokens, 4 * 255)
        XCTAssertEqual(running.count, 4)
        XCTAssertEqual(r.ppl, 15.9289, accuracy: 15.9289 * 0.01)
        XCTAssertEqual(r.error, 1.42219, accuracy: 1.42219 * 0.05)
    }
}
