import Foundation
import KilnCore
import KilnModels
import KilnTokenizer
import XCTest

/// Where the shared test data lives, and how to read llama.cpp's tokenizer conformance files.
enum TestData {
    static var vocabDirectory: String { KilnHome.path + "/testdata/vocab" }

    /// The vocab-only GGUF `ggml-vocab-NAME.gguf`; fails the test (and throws) when the test data was not fetched.
    static func vocabPath(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let path = vocabDirectory + "/ggml-vocab-\(name).gguf"
        guard FileManager.default.fileExists(atPath: path) else {
            // A failure, not a skip: CI must not pass without the conformance data.
            let message = "missing \(path): run scripts/fetch-test-data.sh (it fetches llama.cpp's tokenizer conformance files into $KILN_HOME, default ~/.cache/kiln)"
            XCTFail(message, file: file, line: line)
            throw KilnError(message)
        }
        return path
    }

    static func tokenizer(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> Tokenizer {
        try Tokenizer(gguf: GGUFFile(path: vocabPath(name, file: file, line: line)))
    }

    /// The cases of `NAME.gguf.inp` / `.out`, read as llama.cpp's tests/test-tokenizer-0 reads them: inputs separated
    /// by "\n__ggml_vocab_test__\n", one line of space-separated expected ids per input (no BOS, no special parsing).
    static func cases(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> [(input: String, ids: [Int])] {
        let base = try vocabPath(name, file: file, line: line)
        let raw = try Data(contentsOf: URL(fileURLWithPath: base + ".inp"))
        let out = try String(contentsOfFile: base + ".out", encoding: .utf8)
        var inputs: [String] = []
        var rest = Substring(String(decoding: raw, as: UTF8.self))
        let separator = "\n__ggml_vocab_test__\n"
        while !rest.isEmpty {
            if let r = rest.range(of: separator) {
                inputs.append(String(rest[..<r.lowerBound]))
                rest = rest[r.upperBound...]
            } else {
                inputs.append(String(rest))
                break
            }
        }
        var lines = out.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        guard inputs.count == lines.count else {
            XCTFail("\(base): \(inputs.count) inputs but \(lines.count) output lines", file: file, line: line)
            return []
        }
        return zip(inputs, lines).map { input, line in
            (input, line.split(separator: " ").compactMap { Int($0) })
        }
    }
}
