import Foundation
import KilnTokenizer
import XCTest

/// 300 random strings of awkward characters (combining marks, ZWJ, Unicode spaces, other scripts' digits, contractions
/// in both cases) against the ids of the Hugging Face `tokenizers` library for the same vocabularies
/// (Fixtures/make_fixtures.py). Guards the hand-written pre-tokenizers against the real regexes.
final class RandomUnicodeTests: XCTestCase {
    func testAgainstHuggingFace() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/random-unicode.expected.json")
        let expected = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let texts = try XCTUnwrap(expected["texts"] as? [String])
        XCTAssertEqual(texts.count, 300)
        for name in ["llama-bpe", "qwen2", "starcoder"] {
            let tok = try TestData.tokenizer(name)
            let ids = try XCTUnwrap(expected[name] as? [[Int]])
            var failures = 0
            for (text, want) in zip(texts, ids) {
                let got = tok.encode(text, addSpecial: false, parseSpecial: false)
                if got != want {
                    failures += 1
                    if failures <= 3 { XCTFail("\(name): \(text.debugDescription) -> \(got), expected \(want)") }
                }
                XCTAssertEqual(tok.decode(got), text, "\(name): round trip")
            }
            XCTAssertEqual(failures, 0, "\(name): \(failures) of \(texts.count) differ")
        }
    }
}
