import XCTest
import KilnCore
@testable import KilnEngine
@testable import kiln

/// Prompt progress (issue 22, item 3): the generator feeds a prompt in chunks and reports each; the CLI's line appears
/// only on a terminal and only after 2 s.
final class PromptProgressTests: XCTestCase {
    func testPromptIsFedInChunksWithProgressAndTheSameTokens() throws {
        let backend = GeneratorTests.ScriptedBackend(capacity: 64)
        let gen = Generator(backend: backend)
        var reports: [[Int]] = []
        gen.promptChunk = 4
        gen.promptProgress = { reports.append([$0, $1]) }
        var sampler = Sampler(options: .greedy), stats = GenerationStats()
        var out: [Int32] = []
        let prompt: [Int32] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
        _ = try gen.generate(prompt: prompt, maxTokens: 3, sampler: &sampler, endOfGeneration: [], stats: &stats) { out.append($0); return true }
        XCTAssertEqual(reports, [[0, 10], [4, 10], [8, 10], [10, 10]])
        XCTAssertEqual(Array(backend.feeds.prefix(3)), [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]])
        XCTAssertEqual(out, [11, 12, 13], "the same tokens as one feed (the scripted model: last + 1)")
        XCTAssertEqual(gen.tokens, prompt + [11, 12, 13])
        XCTAssertEqual(stats.promptTokens, 10)
    }

    func testProgressLineOnlyOnATerminalAfterTwoSeconds() {
        var clock = 0.0
        var written: [String] = []
        let piped = PromptProgress(interactive: false, write: { written.append($0) }, now: { clock })
        piped.update(done: 0, total: 256)
        clock = 5; piped.update(done: 128, total: 256)
        piped.update(done: 256, total: 256)
        XCTAssertEqual(written, [], "nothing when stderr is not a terminal")

        clock = 100
        let tty = PromptProgress(interactive: true, write: { written.append($0) }, now: { clock })
        tty.update(done: 0, total: 256)
        clock = 101; tty.update(done: 64, total: 256)
        XCTAssertEqual(written, [], "nothing before 2 s")
        clock = 102.5; tty.update(done: 128, total: 256)
        XCTAssertEqual(written.count, 1)
        // 128 tokens in 2.5 s: 51.2 tokens/s.
        XCTAssertTrue(written[0].hasPrefix("\rprompt: 128/256 tokens (50%), 51.2 tokens/s"), written[0])
        clock = 102.55; tty.update(done: 192, total: 256)
        XCTAssertEqual(written.count, 1, "at most ten redraws a second")
        clock = 103; tty.update(done: 256, total: 256)
        XCTAssertEqual(written.last, "\r\u{1B}[K", "the line is cleared when the prompt is done")
    }
}
