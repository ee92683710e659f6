import Foundation
import XCTest
import KilnCore
import KilnTokenizer
import KilnTemplates
@testable import KilnEngine

/// A chat longer than the context (issue 22, item 2): TextGenerator drops the oldest turns, keeps the system message,
/// says so once and goes on; a prompt the context cannot hold names the context length and -c.
/// The scripted backend of GeneratorTests (next token = last fed + 1, no end of generation) with the tiny BPE fixture.
final class LongConversationTests: XCTestCase {
    static let template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"

    func makeText(capacity: Int) throws -> (TextGenerator, GeneratorTests.ScriptedBackend) {
        let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("KilnTokenizerTests/Fixtures/tiny-llama3.json").path
        let tokenizer = try Tokenizer(tokenizerJSON: fixture, configPath: nil)
        let backend = GeneratorTests.ScriptedBackend(capacity: capacity)
        let text = try TextGenerator(backend: backend, tokenizer: tokenizer, chatTemplate: Self.template, templateName: "test",
                                     sampling: .greedy)
        return (text, backend)
    }

    func testOldestTurnsAreDroppedKeepingTheSystemMessage() throws {
        let (text, backend) = try makeText(capacity: 64)
        var notices: [String] = []
        text.onNotice = { notices.append($0) }
        text.startConversation(system: "be brief")
        let turns = 10
        for i in 0..<turns {
            let reply = try text.chat("message number \(i)", .init(maxTokens: 6)) { _ in }
            XCTAssertEqual(reply.reason, .tokenLimit, "turn \(i)")
            XCTAssertLessThanOrEqual(backend.count, 64)
        }
        // Ten turns of ~12 prompt tokens and 6 reply tokens cannot fit in 64 positions together.
        XCTAssertGreaterThan(text.droppedMessages, 0)
        XCTAssertEqual(text.droppedMessages % 2, 0, "turns are dropped as user/assistant pairs")
        XCTAssertEqual(text.messages.count + text.droppedMessages, 1 + 2 * turns)
        XCTAssertEqual(text.messages.first, ChatMessage(role: "system", content: "be brief"))
        XCTAssertEqual(text.messages[1], ChatMessage(role: "user", content: "message number \(text.droppedMessages / 2)"),
                       "the oldest turns go first")
        XCTAssertEqual(text.messages[text.messages.count - 2], ChatMessage(role: "user", content: "message number \(turns - 1)"))
        XCTAssertEqual(notices.count, 1, "said once: \(notices)")
        XCTAssertTrue(notices[0].contains("64 tokens") && notices[0].contains("system message"), notices[0])
    }

    /// A reply that fills the context continues after the oldest turns are dropped, until only the system message and
    /// the newest turn are left.
    func testAReplyThatFillsTheContextContinuesAfterDropping() throws {
        let (text, backend) = try makeText(capacity: 64)
        var notices: [String] = []
        text.onNotice = { notices.append($0) }
        text.startConversation(system: "be brief")
        _ = try text.chat("first", .init(maxTokens: 4)) { _ in }
        let before = backend.prepared.count
        var streamed = ""
        let reply = try text.chat("second", .init(maxTokens: Int.max)) { streamed += $0 }
        XCTAssertEqual(reply.reason, .contextFull)
        XCTAssertEqual(backend.prepared.count - before, 2, "one generation, then one more after the first turn was dropped")
        let firstPromptLength = backend.prepared[before].2
        XCTAssertGreaterThan(reply.stats.generatedTokens, 64 - firstPromptLength, "generation went on past the first full context")
        XCTAssertEqual(text.messages.map(\.role), ["system", "user", "assistant"])
        XCTAssertEqual(text.messages[1].content, "second")
        XCTAssertEqual(text.messages[2].content, streamed)
        XCTAssertEqual(text.droppedMessages, 2)
        XCTAssertEqual(notices.count, 1)
    }

    func testTooLongPromptNamesTheContextAndDashC() throws {
        let long = String(repeating: "word ", count: 100)
        let (full, _) = try makeText(capacity: 64)   // the scripted model's context length is 64
        XCTAssertThrowsError(try full.complete(long, .init(maxTokens: 1)) { _ in }) {
            XCTAssertTrue("\($0)".contains("model's context length of 64 tokens") && "\($0)".contains("-c"), "\($0)")
        }
        let (small, _) = try makeText(capacity: 32)
        XCTAssertThrowsError(try small.chat(long, .init(maxTokens: 1)) { _ in }) {
            XCTAssertTrue("\($0)".contains("the context holds 32") && "\($0)".contains("raise it with -c"), "\($0)")
            XCTAssertTrue("\($0)".contains("64 tokens"), "\($0)")
        }
    }
}
