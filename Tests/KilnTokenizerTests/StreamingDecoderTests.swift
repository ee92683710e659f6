import Foundation
import KilnModels
import KilnTokenizer
import XCTest

final class StreamingDecoderTests: XCTestCase {
    /// Multibyte characters split over several byte-level tokens come out whole, once, in order.
    func testMultibyteCharactersSplitOverTokens() throws {
        let tok = try TestData.tokenizer("llama-bpe")
        let text = "🦙 Äpfel — 我想在apple工作 😶‍🌫️ កាន់តែ done"
        let ids = tok.encode(text, addSpecial: false)
        // Independent check that the case is real: some token is not valid UTF-8 on its own.
        let partial = ids.filter { String(validating: tok.tokenBytes($0), as: UTF8.self) == nil }
        XCTAssertFalse(partial.isEmpty, "no token splits a character; the test would prove nothing")
        var stream = StreamingDecoder(tokenizer: tok)
        var pieces: [String] = []
        for id in ids { pieces.append(stream.push(id)) }
        pieces.append(stream.flush())
        XCTAssertEqual(pieces.joined(), text)
        XCTAssertTrue(pieces.contains(""), "a character split over tokens should hold output back")
        for piece in pieces { XCTAssertFalse(piece.contains("\u{FFFD}"), "half a character emitted: \(pieces)") }
    }

    /// SentencePiece byte-fallback tokens (<0xNN>) and the prefix space.
    func testSentencePieceByteFallback() throws {
        let tok = try TestData.tokenizer("llama-spm")
        let text = "Hello 🦙 world"
        let ids = tok.encode(text, addSpecial: true)
        XCTAssertEqual(ids.first, tok.bosId)
        XCTAssertTrue(ids.contains { tok.tokenType($0) == .byte }, "the llama emoji should need byte tokens")
        var stream = StreamingDecoder(tokenizer: tok)
        var out = ""
        for id in ids {
            let piece = stream.push(id)
            XCTAssertFalse(piece.contains("\u{FFFD}"))
            out += piece
        }
        out += stream.flush()
        XCTAssertEqual(out, text)
        XCTAssertEqual(tok.decode(ids), text)
    }

    func testIncompleteTailIsFlushedAsReplacement() throws {
        let tok = try TestData.tokenizer("gpt-2")
        // "é" is 0xC3 0xA9: feed the byte token of 0xC3 alone.
        let ids = tok.encode("é", addSpecial: false)
        let lead = ids.first { tok.tokenBytes($0) == [0xC3] }
        var stream = StreamingDecoder(tokenizer: tok)
        if let lead {
            XCTAssertEqual(stream.push(lead), "")
            XCTAssertEqual(stream.flush(), "\u{FFFD}")
        } else {
            XCTAssertEqual(ids.count, 1)   // the vocabulary has "é" whole; use the raw byte token instead
            let byteToken = (0..<tok.vocabSize).first { tok.tokenBytes($0) == [0xC3] }
            XCTAssertNotNil(byteToken)
            XCTAssertEqual(stream.push(byteToken ?? 0), "")
            XCTAssertEqual(stream.flush(), "\u{FFFD}")
        }
    }
}
