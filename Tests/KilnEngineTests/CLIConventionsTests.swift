import Foundation
import XCTest
import ArgumentParser
import KilnCore
@testable import kiln

/// Issue 22's CLI conventions: negative numbers, range checks before the model loads, --version, -v, one log format,
/// `run -f` and `--system`, input checked before loading, UTF-8 text files, and the README's command table.
extension CLITests {
    /// A file that is not a model: any command that got as far as loading it would fail with a GGUF error instead.
    func makeGarbageModel() throws -> String {
        let path = NSTemporaryDirectory() + "kiln-cli-garbage-\(UUID().uuidString).gguf"
        try Data([0x47, 0x47, 0x55, 0x46, 3, 0, 0, 0, 0xff]).write(to: URL(fileURLWithPath: path))
        return path
    }

    func makeTextFile(_ bytes: [UInt8]) throws -> String {
        let path = NSTemporaryDirectory() + "kiln-cli-text-\(UUID().uuidString).txt"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    func testNegativeNumbersParseAsValues() throws {
        let run = try XCTUnwrap(try Kiln.parseAsRoot(["run", "-p", "Hi", "-n", "-1"]) as? RunCommand)
        XCTAssertEqual(run.n, -1)
        let penalty = try XCTUnwrap(try Kiln.parseAsRoot(["run", "-p", "Hi", "--presence-penalty", "-0.5", "--frequency-penalty=-1"]) as? RunCommand)
        XCTAssertEqual(penalty.presencePenalty, -0.5)
        XCTAssertEqual(penalty.frequencyPenalty, -1)
        // A prompt may start with a dash.
        let dash = try XCTUnwrap(try Kiln.parseAsRoot(["run", "-p", "-x is a flag", "-n", "1"]) as? RunCommand)
        XCTAssertEqual(dash.prompt, "-x is a flag")
    }

    /// Every bad number is a range error naming the option and its valid range, raised before the model is opened
    /// (the model here is garbage: opening it would be a GGUF error instead).
    func testNumericOptionsAreRangeCheckedBeforeTheModelLoads() throws {
        let garbage = try makeGarbageModel()
        defer { try? FileManager.default.removeItem(atPath: garbage) }
        let cases: [([String], String)] = [
            (["run", "-m", garbage, "-p", "Hi", "-n=-5"], "-n must be at least -1"),
            (["run", "-m", garbage, "-p", "Hi", "-n", "-2"], "-n must be at least -1"),
            (["run", "-m", garbage, "-p", "Hi", "--temp", "-1"], "--temp must be at least 0"),
            (["run", "-m", garbage, "-p", "Hi", "--temp=-1"], "--temp must be at least 0"),
            (["run", "-m", garbage, "-p", "Hi", "--top-p", "2"], "--top-p must be between 0.0 and 1.0"),
            (["run", "-m", garbage, "-p", "Hi", "--min-p", "5"], "--min-p must be between 0.0 and 1.0"),
            (["run", "-m", garbage, "-p", "Hi", "--top-k=-3"], "--top-k must be at least 0"),
            (["run", "-m", garbage, "-p", "Hi", "-t", "0"], "--threads must be between 1 and"),
            (["run", "-m", garbage, "-p", "Hi", "-c", "0"], "--ctx-size must be between 1 and"),
            (["run", "-m", garbage, "-p", "Hi", "--repeat-penalty", "0"], "--repeat-penalty must be above 0"),
            (["run", "-m", garbage, "-p", "Hi", "--presence-penalty", "3"], "--presence-penalty must be between -2.0 and 2.0"),
            (["run", "-m", garbage, "-p", "Hi", "--frequency-penalty", "-2.5"], "--frequency-penalty must be between -2.0 and 2.0"),
            (["run", "-m", garbage, "-p", "Hi", "--temp", "nan"], "--temp must be a finite number"),
            (["bench", "-m", garbage, "-p", "-1"], "-p must be at least 0"),
            (["bench", "-m", garbage, "-r", "0"], "-r must be at least 1"),
            (["bench", "-m", garbage, "-b", "9"], "--batch must be between 1 and 8"),
            (["bench", "-m", garbage, "-t", "0"], "--threads must be between 1 and"),
            (["perplexity", "-m", garbage, "-f", garbage, "-c", "1"], "--ctx-size must be between 2 and"),
            (["perplexity", "-m", garbage, "-f", garbage, "-b", "0"], "--batch-size must be between 1 and"),
            (["bench-gpu", "-m", garbage, "-b", "0"], "--batch must be between 1 and 8"),
            (["tune", "-m", garbage, "--runs", "5"], "--runs must be between 20 and"),
            (["tune", "-m", garbage, "--bench-batch", "-1"], "--bench-batch must be between 0 and 8"),
        ]
        for (args, expected) in cases {
            let r = try runKiln(args)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            XCTAssertTrue(r.err.contains(expected), "\(args): expected \"\(expected)\" in: \(r.err)")
            XCTAssertTrue(r.err.contains("got "), "\(args): the message should echo the value: \(r.err)")
            XCTAssertFalse(r.err.contains("truncated"), "\(args) opened the model: \(r.err)")
        }
    }

    /// Empty prompts, missing files and non-UTF-8 text fail before the model is opened, naming the file.
    func testInputIsCheckedBeforeTheModelLoads() throws {
        let garbage = try makeGarbageModel()
        let latin1 = try makeTextFile(Array("caf".utf8) + [0xE9, 0x0A])   // "café" in Latin-1: 0xE9 is not UTF-8
        defer { for p in [garbage, latin1] { try? FileManager.default.removeItem(atPath: p) } }
        let missing = "/nonexistent/prompt-\(UUID().uuidString).txt"
        let cases: [([String], [String])] = [
            (["run", "-m", garbage, "-p", ""], ["prompt (-p) is empty"]),
            (["run", "-m", garbage, "-f", missing], [missing, "no such file"]),
            (["run", "-m", "/nonexistent/model.gguf", "-p", "Hi"], ["/nonexistent/model.gguf", "no such file"]),
            (["run", "-m", garbage], ["-p TEXT or -f FILE"]),
            (["run", "-m", garbage, "-f", latin1], [latin1, "not UTF-8", "byte 3"]),
            (["tokenize", "-f", latin1], [latin1, "not UTF-8", "byte 3"]),
            (["perplexity", "-m", garbage, "-f", latin1], [latin1, "not UTF-8"]),
            (["perplexity", "-m", garbage, "-f", missing], [missing]),
        ]
        for (args, expected) in cases {
            let r = try runKiln(args)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            for e in expected { XCTAssertTrue(r.err.contains(e), "\(args): expected \"\(e)\" in: \(r.err)") }
            XCTAssertFalse(r.err.contains("truncated"), "\(args) opened the model: \(r.err)")
        }
    }

    /// `kiln --version` names the version, the commit this checkout is at (git asked independently) and the configuration.
    func testVersionNamesTheCommitAndConfiguration() throws {
        let r = try runKiln(["--version"])
        XCTAssertEqual(r.status, 0, r.err)
        let line = r.out.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(line.hasPrefix("kiln 0."), line)
        XCTAssertTrue(line.contains("debug build") || line.contains("release build"), line)
        let git = Process()
        git.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        git.arguments = ["git", "-C", root, "rev-parse", "--short=12", "HEAD"]
        let out = Pipe()
        git.standardOutput = out
        git.standardError = Pipe()
        try git.run()
        let commit = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        git.waitUntilExit()
        if git.terminationStatus == 0, !commit.isEmpty {
            XCTAssertTrue(line.contains("(commit \(commit)"), "expected commit \(commit) in: \(line)")
        } else {
            XCTAssertTrue(line.contains("(commit unknown"), line)
        }
    }

    /// Log lines share one format (time, level, message; no repeated label), -v adds debug lines with load timings and
    /// tokens per phase, `-f` reads the prompt from a file and `--system` starts the chat with a system message.
    /// On the default model (SmolLM2-135M-Instruct), whose ChatML template puts a default system message in when none
    /// is given.
    func testVerboseLogsPromptFileAndSystemMessage() throws {
        // The ChatML rendering of a system message and one user turn, written out here; its token count from `kiln tokenize`.
        let rendered = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
        let tok = try runKiln(["tokenize", "--ids", "--no-bos", "--special", rendered])
        XCTAssertEqual(tok.status, 0, tok.err)
        let chatTokens = tok.out.split(separator: " ").count
        let chat = try runKiln(["run", "--device", "cpu", "--system", "Be brief.", "-p", "hello", "-n", "1", "--temp", "0", "-v"])
        XCTAssertEqual(chat.status, 0, chat.err)
        XCTAssertTrue(chat.err.contains("prompt: \(chatTokens) tokens fed"), "expected \(chatTokens) prompt tokens: \(chat.err)")
        XCTAssertTrue(chat.err.contains("tokenizer: 49152 tokens"), chat.err)
        XCTAssertTrue(chat.err.contains("CPU model: "), chat.err)
        let format = try NSRegularExpression(pattern: #"^\d\d:\d\d:\d\d\.\d{3} (debug|info|notice|warning|error) +\S"#)
        for line in chat.err.split(separator: "\n").map(String.init) {
            XCTAssertNotNil(format.firstMatch(in: line, range: NSRange(line.startIndex..., in: line)), "log line format: \(line)")
            XCTAssertFalse(line.contains("[kiln]"), line)
        }
        // A prompt file is the prompt: llama.cpp's 5 tokens for this text (as in testInfoAndTokenizeOnDefaultModel).
        let file = try makeTextFile(Array("The capital of France is".utf8))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let fromFile = try runKiln(["run", "--device", "cpu", "-f", file, "-n", "1", "--temp", "0", "-v"])
        XCTAssertEqual(fromFile.status, 0, fromFile.err)
        XCTAssertTrue(fromFile.err.contains("prompt: 5 tokens fed"), fromFile.err)
        // Without -v: no debug lines.
        let quiet = try runKiln(["run", "--device", "cpu", "-f", file, "-n", "1", "--temp", "0"])
        XCTAssertEqual(quiet.status, 0, quiet.err)
        XCTAssertFalse(quiet.err.contains(" debug "), quiet.err)
    }

    /// Every command line of the README's command table parses with the real argument parser (placeholders replaced by
    /// sample values, optional parts included, the first of each set of alternatives taken).
    func testEveryReadmeCommandLineParses() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let model = try makeGarbageModel(), text = try makeTextFile(Array("some text\n".utf8))
        defer { for p in [model, text] { try? FileManager.default.removeItem(atPath: p) } }
        let samples = ["MODEL": model, "FILE": text, "PATH": text, "PROMPT": "hello", "TEXT": "hello", "N": "16", "T": "0.7",
                       "K": "40", "P": "0.9", "M": "0.05", "R": "1.1", "F": "0.5", "S": "42", "BATCH": "2", "CFG": "llama3-8b"]
        var parsed = 0
        for row in readme.split(separator: "\n") where row.hasPrefix("| `kiln") {
            let template = String(row.dropFirst(3).prefix { $0 != "`" }).replacingOccurrences(of: #"\|"#, with: "|")
            let args = try Self.concreteArguments(template, samples: samples)
            XCTAssertEqual(args.first, "kiln", template)
            do {
                _ = try Kiln.parseAsRoot(Array(args.dropFirst()))
            } catch {
                // --version and --help end parsing with a clean exit; anything else is a README line the binary rejects.
                if Kiln.exitCode(for: error) != .success { XCTFail("README line \(template) → \(args): \(Kiln.message(for: error))") }
            }
            parsed += 1
        }
        XCTAssertGreaterThanOrEqual(parsed, 12, "the command table should have been found")
    }

    /// `[a | b]` and `(a | b)` keep their first alternative, `x|y` inside a word keeps `x`, brackets go, placeholders
    /// (upper-case words) become sample values.
    static func concreteArguments(_ template: String, samples: [String: String]) throws -> [String] {
        var line = template
        let group = try NSRegularExpression(pattern: #"[\[(]([^\[\]()]*)[\])]"#)
        while let m = group.firstMatch(in: line, range: NSRange(line.startIndex..., in: line)) {
            let inner = String(line[Range(m.range(at: 1), in: line)!])
            let first = inner.split(separator: "|", omittingEmptySubsequences: false)[0].trimmingCharacters(in: .whitespaces)
            line.replaceSubrange(Range(m.range, in: line)!, with: first)
        }
        return line.split(separator: " ").map { word in
            let w = String(word.split(separator: "|")[0])
            return samples[w] ?? w
        }
    }
}
