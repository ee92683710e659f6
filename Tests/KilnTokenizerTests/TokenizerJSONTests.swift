import Foundation
import KilnTokenizer
import XCTest

/// Tiny tokenizer.json files trained with the Hugging Face `tokenizers` library, and the ids that library gives:
/// see Fixtures/make_fixtures.py for the command that generated them.
final class TokenizerJSONTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    func expected(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: TokenizerJSONTests.fixtures.appendingPathComponent(name + ".expected.json"))
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    func check(_ name: String, preTokenizer: PreTokenizer) throws {
        let tok = try Tokenizer(tokenizerJSON: TokenizerJSONTests.fixtures.appendingPathComponent(name + ".json").path)
        XCTAssertEqual(tok.preTokenizer, preTokenizer)
        let cases = try XCTUnwrap(try expected(name)["cases"] as? [[String: Any]])
        XCTAssertGreaterThan(cases.count, 10)
        for c in cases {
            let text = try XCTUnwrap(c["text"] as? String)
            let ids = try XCTUnwrap(c["ids"] as? [Int])
            // Hugging Face extracts every added token; llama.cpp's equivalent is parse-special on.
            XCTAssertEqual(tok.encode(text, addSpecial: false, parseSpecial: true), ids, "\(name): \(text.debugDescription)")
            XCTAssertEqual(tok.decode(ids), c["decoded"] as? String, "\(name): decoding \(ids)")
        }
    }

    func testLlama3StyleSplitRegex() throws {
        try check("tiny-llama3", preTokenizer: .llama3)
        let tok = try Tokenizer(tokenizerJSON: TokenizerJSONTests.fixtures.appendingPathComponent("tiny-llama3.json").path)
        let withSpecial = try XCTUnwrap(try expected("tiny-llama3")["with_special"] as? [String: Any])
        // The BOS of the post-processor template.
        XCTAssertEqual(tok.encode(try XCTUnwrap(withSpecial["text"] as? String), addSpecial: true), withSpecial["ids"] as? [Int])
        // The user-defined token is found even without special parsing; the control token is not.
        let ids = tok.encode("a<user_tok>b<|eot|>", addSpecial: false, parseSpecial: false)
        XCTAssertTrue(ids.contains(1002))
        XCTAssertFalse(ids.contains(1001))
        XCTAssertTrue(tok.eogIds.isEmpty || !tok.eogIds.contains(1002))
    }

    func testStarcoderStyleDigitsWithNFC() throws {
        try check("tiny-starcoder", preTokenizer: .starcoder)
    }

    func testUnsupportedPreTokenizerIsNamed() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-tok-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("tokenizer.json").path
        let json = #"{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]},"pre_tokenizer":{"type":"Whitespace"}}"#
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Tokenizer(tokenizerJSON: path)) { error in
            XCTAssertTrue("\(error)".contains(path) && "\(error)".contains("Whitespace"), "\(error)")
        }
        let unigram = #"{"model":{"type":"Unigram","vocab":[]}}"#
        try unigram.write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Tokenizer(tokenizerJSON: path)) { error in
            XCTAssertTrue("\(error)".contains("Unigram"), "\(error)")
        }
    }
}
