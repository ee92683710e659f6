import XCTest
import KilnCore
import KilnModels
@testable import KilnEngine

/// The engine's generation loop against a scripted backend: what it feeds, when it rewinds, how it stops.
final class GeneratorTests: XCTestCase {
    /// A backend whose next token is always (last fed token + 1) mod vocab; it records every call.
    final class ScriptedBackend: SequenceBackend {
        let config = ModelConfig(architecture: .llama, vocabSize: 50, hiddenSize: 8, intermediateSize: 8, numLayers: 1, numHeads: 1,
                                 numKVHeads: 1, contextLength: 64, rmsNormEps: 1e-5, ropeTheta: 10000)
        let capacity: Int
        var cached: [Int32] = []
        var feeds: [[Int32]] = []
        var truncations: [Int] = []
        init(capacity: Int) { self.capacity = capacity }
        var count: Int { cached.count }
        var deviceDescription: String { "scripted" }
        func truncate(to n: Int) throws { truncations.append(n); cached.removeLast(cached.count - min(n, cached.count)) }
        func feed(_ tokens: [Int32]) throws {
            guard cached.count + tokens.count <= capacity else { throw KilnError("context limit reached") }
            feeds.append(tokens); cached += tokens
        }
        func lastLogits() throws -> [Float] {
            var l = [Float](repeating: 0, count: config.vocabSize)
            l[Int((cached.last! + 1) % Int32(config.vocabSize))] = 10
            return l
        }
        var prepared: [(SamplingOptions, [Int32], Int)] = []
        func prepareSampling(_ options: SamplingOptions, history: [Int32], promptLength: Int) throws { prepared.append((options, history, promptLength)) }
        func sample(_ sampler: inout Sampler, history: [Int32], promptLength: Int) throws -> Int32 {
            try lastLogits().withUnsafeBufferPointer { sampler.sample($0, history: history, promptLength: promptLength) }
        }
    }

    func testFeedsOnlyWhatThePromptDoesNotShareAndStops() throws {
        let backend = ScriptedBackend(capacity: 64)
        let gen = Generator(backend: backend)
        var sampler = Sampler(options: .greedy), stats = GenerationStats()
        var out: [Int32] = []
        let r1 = try gen.generate(prompt: [1, 2, 3], maxTokens: 3, sampler: &sampler, endOfGeneration: [], stats: &stats) { out.append($0); return true }
        XCTAssertEqual(r1, .tokenLimit)
        XCTAssertEqual(out, [4, 5, 6])
        XCTAssertEqual(backend.feeds, [[1, 2, 3], [4], [5], [6]])
        XCTAssertEqual(backend.prepared.count, 1)
        XCTAssertEqual(backend.prepared[0].1, [1, 2, 3])
        XCTAssertEqual(backend.prepared[0].2, 3)
        // The next turn shares [1, 2, 3, 4] with the cache: the cache is rewound to 4 and only [9, 10] is fed.
        out = []
        let r2 = try gen.generate(prompt: [1, 2, 3, 4, 9, 10], maxTokens: 5, sampler: &sampler, endOfGeneration: [12], stats: &stats) { out.append($0); return true }
        XCTAssertEqual(r2, .endOfGeneration)
        XCTAssertEqual(out, [11])
        XCTAssertEqual(backend.truncations, [4])
        XCTAssertEqual(Array(backend.feeds.suffix(2)), [[9, 10], [11]])
        XCTAssertEqual(gen.tokens, [1, 2, 3, 4, 9, 10, 11])
        XCTAssertEqual(stats.promptTokens, 5)
        // The same prompt again re-runs only its last token so its logits are fresh.
        _ = try gen.generate(prompt: [1, 2, 3, 4, 9, 10, 11], maxTokens: 0, sampler: &sampler, endOfGeneration: [], stats: &stats) { _ in true }
        XCTAssertEqual(backend.feeds.last, [11])
        XCTAssertEqual(backend.truncations.last, 6)
    }

    func testContextFullAndTooLongPrompt() throws {
        let backend = ScriptedBackend(capacity: 5)
        let gen = Generator(backend: backend)
        var sampler = Sampler(options: .greedy), stats = GenerationStats()
        XCTAssertThrowsError(try gen.generate(prompt: [1, 2, 3, 4, 5, 6], maxTokens: 1, sampler: &sampler, endOfGeneration: [], stats: &stats) { _ in true }) {
            XCTAssertTrue("\($0)".contains("6 tokens"), "\($0)")
        }
        var out: [Int32] = []
        let r = try gen.generate(prompt: [1, 2, 3], maxTokens: 10, sampler: &sampler, endOfGeneration: [], stats: &stats) { out.append($0); return true }
        XCTAssertEqual(r, .contextFull)
        XCTAssertEqual(out, [4, 5, 6])
        XCTAssertEqual(backend.count, 5)
    }
}
