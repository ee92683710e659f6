import Foundation
import XCTest
import KilnCore
import KilnModels

/// End-to-end checks of the `kiln` executable: `info` and `tokenize` on the default model and on a small Hugging Face
/// folder the test writes, and bad input giving one clear line and a non-zero exit.
/// The binary is the one `swift build` put beside the test bundle (scripts/test.sh builds it first).
final class CLITests: XCTestCase {
    static var kilnBinary: String? {
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [dir, dir.deletingLastPathComponent()] {
            let p = candidate.appendingPathComponent("kiln").path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    func runKiln(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        guard let bin = CLITests.kilnBinary else {
            XCTFail("kiln binary not found beside \(CommandLine.arguments[0]); run `swift build --product kiln` first (scripts/test.sh does)")
            throw KilnError("no kiln binary")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin)
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    /// A tiny HF folder: random llama weights from TinyCheckpoint and the tokenizer.json fixture trained with HF `tokenizers`.
    func makeHFFolder() throws -> String {
        let folder = NSTemporaryDirectory() + "kiln-cli-hf-\(UUID().uuidString)"
        _ = try TinyCheckpoint.writeHF(folder: folder, architecture: .llama, dtype: .bf16, seed: 7)
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("KilnTokenizerTests/Fixtures/tiny-llama3.json").path
        try FileManager.default.copyItem(atPath: fixtures, toPath: folder + "/tokenizer.json")
        let tc = #"{"bos_token": "<|begin_of_text|>", "eos_token": "<|eot|>", "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}"#
        try tc.write(toFile: folder + "/tokenizer_config.json", atomically: true, encoding: .utf8)
        return folder
    }

    func testInfoAndTokenizeOnHuggingFaceFolder() throws {
        let folder = try makeHFFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let info = try runKiln(["info", "-m", folder])
        XCTAssertEqual(info.status, 0, info.err)
        XCTAssertTrue(info.out.contains("architecture:   llama"), info.out)
        XCTAssertTrue(info.out.contains("Hugging Face safetensors"), info.out)
        XCTAssertTrue(info.out.contains("BOS = 1000"), info.out)
        XCTAssertTrue(info.out.contains("chat template:  present"), info.out)
        // Expected ids from the Hugging Face `tokenizers` library (Fixtures/tiny-llama3.expected.json, "with_special").
        let tok = try runKiln(["tokenize", "-m", folder, "--ids", "Hello world"])
        XCTAssertEqual(tok.status, 0, tok.err)
        XCTAssertEqual(tok.out.trimmingCharacters(in: .whitespacesAndNewlines), "1000 39 68 432 78 912")
    }

    func testInfoAndTokenizeOnDefaultModel() throws {
        let info = try runKiln(["info"])
        XCTAssertEqual(info.status, 0, info.err)
        XCTAssertTrue(info.out.contains("layers:         30, hidden 576"), info.out)
        XCTAssertTrue(info.out.contains("vocabulary:     49152 tokens"), info.out)
        // llama.cpp's ids for prompt "a" of shared/golden/smollm2-llamacpp.json (no BOS: SmolLM2 sets add_bos_token=false).
        let tok = try runKiln(["tokenize", "--ids", "The capital of France is"])
        XCTAssertEqual(tok.status, 0, tok.err)
        XCTAssertEqual(tok.out.trimmingCharacters(in: .whitespacesAndNewlines), "504 3575 282 4649 314")
    }

    func testChatWithoutTemplateIsAClearError() throws {
        let folder = try makeHFFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        // The same folder with a tokenizer_config.json that has no chat_template.
        try #"{"bos_token": "<|begin_of_text|>", "eos_token": "<|eot|>"}"#.write(toFile: folder + "/tokenizer_config.json", atomically: true, encoding: .utf8)
        let r = try runKiln(["run", "-m", folder, "--device", "cpu", "--chat", "-p", "hello", "-n", "2"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("no chat template"), r.err)
        XCTAssertTrue(r.err.contains(folder), r.err)
    }

    func testBadInputGivesOneLineAndNonZeroExit() throws {
        let garbage = NSTemporaryDirectory() + "kiln-cli-garbage-\(UUID().uuidString).gguf"
        try Data([0x47, 0x47, 0x55, 0x46, 3, 0, 0, 0, 0xff]).write(to: URL(fileURLWithPath: garbage))
        defer { try? FileManager.default.removeItem(atPath: garbage) }
        for args in [["info", "-m", garbage], ["tokenize", "-m", garbage, "hi"], ["info", "-m", "/nonexistent/model.gguf"]] {
            let r = try runKiln(args)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            let lines = r.err.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, "expected one error line for \(args), got: \(r.err)")
            XCTAssertTrue(r.err.contains(args[2]), "error should name the file: \(r.err)")
        }
    }
}
