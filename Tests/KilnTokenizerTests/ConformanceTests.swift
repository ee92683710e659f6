import Foundation
import KilnModels
import KilnTokenizer
import XCTest

/// llama.cpp's tokenizer conformance suites (expected ids produced by the Hugging Face tokenizers):
/// every case must match exactly, with add-special and parse-special off, as llama.cpp's test-tokenizer-0 runs them.
final class ConformanceTests: XCTestCase {
    func check(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let tok = try TestData.tokenizer(name, file: file, line: line)
        let cases = try TestData.cases(name, file: file, line: line)
        XCTAssertGreaterThan(cases.count, 20, "\(name): too few cases read", file: file, line: line)
        var failures = 0
        for c in cases {
            let got = tok.encode(c.input, addSpecial: false, parseSpecial: false)
            if got != c.ids {
                failures += 1
                if failures <= 5 {
                    XCTFail("\(name): \(c.input.debugDescription.prefix(120)) -> \(got.prefix(40)), expected \(c.ids.prefix(40))", file: file, line: line)
                }
            }
        }
        XCTAssertEqual(failures, 0, "\(name): \(failures) of \(cases.count) cases differ", file: file, line: line)
    }

    func testLlamaBPE() throws { try check("llama-bpe") }
    func testLlamaSPM() throws { try check("llama-spm") }
    func testStarcoder() throws { try check("starcoder") }
    func testGPT2() throws { try check("gpt-2") }
    func testQwen2() throws { try check("qwen2") }
    // Vocabularies that share the pre-tokenizers above.
    func testCommandR() throws { try check("command-r") }
    func testRefact() throws { try check("refact") }
    func testMPT() throws { try check("mpt") }
    func testPhi3() throws { try check("phi-3") }

    /// Decoding the expected ids gives back the input text exactly (byte-level BPE is lossless; SentencePiece drops
    /// only the prefix space it added).
    func testDecodeRoundTrip() throws {
        for name in ["llama-bpe", "llama-spm", "starcoder", "gpt-2", "qwen2"] {
            let tok = try TestData.tokenizer(name)
            for c in try TestData.cases(name) {
                XCTAssertEqual(tok.decode(c.ids), c.input, "\(name): decoding \(c.ids.prefix(20))")
            }
        }
    }

    /// Formats and pre-tokenizers Kiln does not implement are refused with the file and the value named.
    func testUnsupportedVocabulariesAreNamed() throws {
        for (name, value) in [("bert-bge", "tokenizer.ggml.model = \"bert\""), ("deepseek-llm", "tokenizer.ggml.pre = \"deepseek-llm\""),
                              ("gpt-neox", "without tokenizer.ggml.pre")] {
            let path = try TestData.vocabPath(name)
            XCTAssertThrowsError(try Tokenizer(gguf: GGUFFile(path: path))) { error in
                let message = "\(error)"
                XCTAssertTrue(message.contains(path) && message.contains(value), message)
                XCTAssertFalse(message.contains("\n"), message)
            }
        }
    }
}
