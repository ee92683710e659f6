import Foundation
import KilnCore
import KilnModels
import KilnTokenizer
import XCTest

/// The default model's tokenizer against llama.cpp: prompt ids recorded by llama.cpp (commit 0c1e57098bba) in
/// /work/shared/golden/smollm2-llamacpp.json, copied here so the test runs wherever the model is cached.
final class SmolLM2Tests: XCTestCase {
    static func tokenizer(file: StaticString = #filePath, line: UInt = #line) throws -> Tokenizer {
        let path = KilnHome.path + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
        guard FileManager.default.fileExists(atPath: path) else {
            let message = "missing \(path): run `kiln info` once (it fetches the default model into $KILN_HOME, default ~/.cache/kiln)"
            XCTFail(message, file: file, line: line)
            throw KilnError(message)
        }
        return try Tokenizer(gguf: GGUFFile(path: path))
    }

    func testRawPromptsWithoutBOS() throws {
        let tok = try SmolLM2Tests.tokenizer()
        XCTAssertEqual(tok.preTokenizer, .starcoder)
        XCTAssertFalse(tok.addsBOS, "SmolLM2's GGUF sets tokenizer.ggml.add_bos_token = false")
        XCTAssertEqual(tok.encode("The capital of France is", addSpecial: true, parseSpecial: false), [504, 3575, 282, 4649, 314])
        XCTAssertEqual(tok.encode("def fibonacci(n):", addSpecial: true, parseSpecial: false), [1604, 3987, 46477, 24, 94, 727])
    }

    func testChatPromptWithSpecialTokens() throws {
        let tok = try SmolLM2Tests.tokenizer()
        let prompt = "<|im_start|>user\nWhat is the tallest mountain in the world?<|im_end|>\n<|im_start|>assistant\n"
        let expected = [1, 4093, 198, 1780, 314, 260, 31469, 6740, 281, 260, 905, 47, 2, 198, 1, 520, 9531, 198]
        XCTAssertEqual(tok.encode(prompt, addSpecial: true, parseSpecial: true), expected)
        // Without special parsing the markers are plain text.
        let plain = tok.encode(prompt, addSpecial: false, parseSpecial: false)
        XCTAssertFalse(plain.contains(1) || plain.contains(2))
        XCTAssertEqual(tok.decode(plain), prompt)
        XCTAssertEqual(tok.decode(expected, renderSpecial: true), prompt)
        XCTAssertEqual(tok.decode(expected), "user\nWhat is the tallest mountain in the world?\nassistant\n")
    }

    func testSpecialIds() throws {
        let tok = try SmolLM2Tests.tokenizer()
        XCTAssertEqual(tok.vocabSize, 49152)
        XCTAssertEqual(tok.bosId, 1)
        XCTAssertEqual(tok.eosId, 2)
        XCTAssertEqual(tok.tokenText(2), "<|im_end|>")
        XCTAssertTrue(tok.eogIds.contains(2) && tok.eogIds.contains(0), "\(tok.eogIds)")
        XCTAssertFalse(tok.eogIds.contains(1))
    }
}
