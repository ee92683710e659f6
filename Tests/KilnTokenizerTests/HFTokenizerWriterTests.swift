import Foundation
import KilnCore
import KilnModels
import KilnTokenizer
import KilnTestSupport
import XCTest

/// The Hugging Face tokenizer files Kiln writes from a GGUF vocabulary, checked against an external reference: Hugging
/// Face's `tokenizers` library (installed into $KILN_HOME/python by scripts/fetch-test-data.sh) loads the written
/// tokenizer.json and must encode llama.cpp's conformance texts to llama.cpp's expected ids (which HF's tokenizers
/// produced from the models' own files) — for every vocabulary file Kiln's GGUF tokenizer supports. Kiln's own
/// tokenizer.json loader must then agree with Kiln's GGUF tokenizer on the same texts.
final class HFTokenizerWriterTests: XCTestCase {
    /// Vocabularies the conformance suite covers; every one must be written (a file Kiln stops supporting fails here).
    static let mustSupport: Set<String> = ["llama-bpe", "llama-spm", "starcoder", "gpt-2", "qwen2", "command-r", "refact", "mpt", "phi-3"]

    struct Job: Encodable { var tokenizer: String; var texts: [String]; var add_special: Bool }
    struct Result: Decodable { var ids: [[Int]]; var decoded: [String] }

    /// Runs the `tokenizers` reference on `jobs` in one Python process.
    func runReference(_ jobs: [Job], in dir: String) throws -> [Result] {
        try ReferencePython.require("tokenizers", hint: "run scripts/fetch-test-data.sh (it installs Hugging Face's tokenizers into $KILN_HOME/python)")
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/hf_tokenizers_encode.py").path
        let input = dir + "/jobs.json", output = dir + "/results.json"
        try JSONEncoder().encode(jobs).write(to: URL(fileURLWithPath: input))
        try ReferencePython.run(script, [input, output])
        return try JSONDecoder().decode([Result].self, from: Data(contentsOf: URL(fileURLWithPath: output)))
    }

    func makeDirectory(_ name: String) throws -> String {
        let dir = NSTemporaryDirectory() + "kiln-hftok-\(name)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    func testConformanceVocabulariesThroughHuggingFaceTokenizers() throws {
        let dir = try makeDirectory("conformance")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let files = try FileManager.default.contentsOfDirectory(atPath: TestData.vocabDirectory)
        let names = files.filter { $0.hasPrefix("ggml-vocab-") && $0.hasSuffix(".gguf.inp") }
            .map { String($0.dropFirst("ggml-vocab-".count).dropLast(".gguf.inp".count)) }.sorted()
        var written: [(name: String, folder: String, cases: [(input: String, ids: [Int])], gguf: Tokenizer)] = []
        var skipped: [String] = []
        for name in names {
            let gguf = try GGUFFile(path: try TestData.vocabPath(name))
            let ggufTokenizer: Tokenizer
            do {
                ggufTokenizer = try Tokenizer(gguf: gguf)
            } catch {
                // Unsupported by Kiln's GGUF tokenizer: the writer must refuse it with the same value named.
                skipped.append("\(name) (\(error))")
                XCTAssertThrowsError(try HFTokenizerWriter.write(gguf: gguf, to: dir)) { e in
                    XCTAssertTrue("\(e)".contains("\(error)"), "\(name): \(e)")
                }
                continue
            }
            let folder = dir + "/" + name
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            try HFTokenizerWriter.write(gguf: gguf, to: folder)
            written.append((name, folder, try TestData.cases(name), ggufTokenizer))
        }
        print("HF tokenizer writer: conformance vocabularies written: \(written.map(\.name).joined(separator: ", ")); skipped (Kiln's GGUF tokenizer refuses them): \(skipped.joined(separator: "; "))")
        XCTAssertTrue(Self.mustSupport.isSubset(of: Set(written.map(\.name))), "written: \(written.map(\.name))")

        let results = try runReference(written.map { Job(tokenizer: $0.folder + "/tokenizer.json", texts: $0.cases.map(\.input), add_special: false) }, in: dir)
        XCTAssertEqual(results.count, written.count)
        for (w, r) in zip(written, results) {
            let got = r.ids
            let failures = (0..<w.cases.count).filter { got[$0] != w.cases[$0].ids }
            for i in failures.prefix(3) {
                XCTFail("\(w.name): tokenizers on the written tokenizer.json: \(w.cases[i].input.debugDescription.prefix(100)) -> \(got[i].prefix(30)), llama.cpp expects \(w.cases[i].ids.prefix(30))")
            }
            XCTAssertEqual(failures.count, 0, "\(w.name): \(failures.count) of \(w.cases.count) cases differ")
            // The written decoder gives the text back as Kiln's GGUF tokenizer decodes it (SentencePiece: less the prefix space).
            let ggufTokenizer = w.gguf
            for (i, c) in w.cases.enumerated() where r.decoded[i] != ggufTokenizer.decode(c.ids) {
                XCTFail("\(w.name): tokenizers decodes \(c.ids.prefix(20)) to \(r.decoded[i].debugDescription.prefix(80)), Kiln to \(ggufTokenizer.decode(c.ids).debugDescription.prefix(80))")
            }

            // Kiln's tokenizer.json loader on the written file agrees with Kiln's GGUF tokenizer.
            let loaded = try Tokenizer(tokenizerJSON: w.folder + "/tokenizer.json", configPath: w.folder + "/tokenizer_config.json")
            XCTAssertEqual(loaded.model, ggufTokenizer.model, w.name)
            XCTAssertEqual(loaded.preTokenizer, ggufTokenizer.preTokenizer, w.name)
            XCTAssertEqual(loaded.addsSpacePrefix, ggufTokenizer.addsSpacePrefix, w.name)
            XCTAssertEqual(loaded.unknownId, ggufTokenizer.unknownId, w.name)
            XCTAssertEqual(loaded.bosId, ggufTokenizer.bosId, w.name)
            XCTAssertEqual(loaded.eosId, ggufTokenizer.eosId, w.name)
            XCTAssertEqual(loaded.addsBOS, ggufTokenizer.addsBOS, w.name)
            for c in w.cases {
                XCTAssertEqual(loaded.encode(c.input, addSpecial: true), ggufTokenizer.encode(c.input, addSpecial: true),
                               "\(w.name): \(c.input.debugDescription.prefix(80))")
                XCTAssertEqual(loaded.decode(c.ids), ggufTokenizer.decode(c.ids), "\(w.name): decoding \(c.ids.prefix(20))")
            }
        }
    }

    /// The default model's GGUF (SmolLM2-135M-Instruct): chat-formatted text with special tokens, added BOS / EOS as
    /// the file asks, and the companion files' fields; plus Llama 3's and Llama 2's BOS through the written post-processor.
    func testSmolLM2AndSpecialTokens() throws {
        let dir = try makeDirectory("smollm2")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var texts = ["<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
                     "Hello world", " Hello  world\n\n\tfoo123456 bar", "naïve café — 日本語のテキスト 🙂", "<|endoftext|>tail", ""]
        if let license = FileManager.default.contents(atPath: "/usr/share/common-licenses/Apache-2.0") {
            texts.append(String(decoding: license.prefix(6000), as: UTF8.self))
        }
        let sources: [(name: String, path: String)] = [("smollm2", try ModelStore.defaultModelPath()),
                                                        ("llama-bpe", try TestData.vocabPath("llama-bpe")),
                                                        ("llama-spm", try TestData.vocabPath("llama-spm"))]
        var tokenizers: [Tokenizer] = []
        for s in sources {
            let gguf = try GGUFFile(path: s.path)
            try FileManager.default.createDirectory(atPath: dir + "/" + s.name, withIntermediateDirectories: true)
            try HFTokenizerWriter.write(gguf: gguf, to: dir + "/" + s.name)
            tokenizers.append(try Tokenizer(gguf: gguf))
        }
        let results = try runReference(sources.map { Job(tokenizer: dir + "/\($0.name)/tokenizer.json", texts: texts, add_special: true) }, in: dir)
        for (i, s) in sources.enumerated() {
            for (j, text) in texts.enumerated() {
                // HF's tokenizers always splits out added tokens, as Kiln does with special-token parsing on.
                XCTAssertEqual(results[i].ids[j], tokenizers[i].encode(text, addSpecial: true, parseSpecial: true),
                               "\(s.name): \(text.debugDescription.prefix(80))")
            }
        }
        XCTAssertEqual(results[1].ids[1].first, 128000, "Llama 3 adds <|begin_of_text|>")
        XCTAssertEqual(results[2].ids[1].first, 1, "Llama 2 adds <s>")

        // SmolLM2's companion files, against the GGUF metadata read here directly.
        let gguf = try GGUFFile(path: try ModelStore.defaultModelPath())
        let config = try HFTokenizerConfig.load(path: dir + "/smollm2/tokenizer_config.json")
        let tokens = try XCTUnwrap(gguf["tokenizer.ggml.tokens"]?.strings)
        let bos = try XCTUnwrap(gguf["tokenizer.ggml.bos_token_id"]?.int), eos = try XCTUnwrap(gguf["tokenizer.ggml.eos_token_id"]?.int)
        XCTAssertEqual(config.chatTemplate, gguf["tokenizer.chat_template"]?.string)
        XCTAssertNotNil(config.chatTemplate)
        XCTAssertEqual(config.bosToken, tokens[bos])
        XCTAssertEqual(config.eosToken, tokens[eos])
        XCTAssertEqual(config.addBosToken, gguf["tokenizer.ggml.add_bos_token"]?.bool ?? false)
        let generation = try HFGenerationConfig.load(path: dir + "/smollm2/generation_config.json")
        XCTAssertEqual(generation.bosTokenId, bos)
        XCTAssertEqual(generation.eosTokenIds.first, eos)
        // Kiln reads the written folders' tokenizers back as the GGUF ones.
        for (i, s) in sources.enumerated() {
            let loaded = try Tokenizer(tokenizerJSON: dir + "/\(s.name)/tokenizer.json", configPath: dir + "/\(s.name)/tokenizer_config.json")
            for text in texts {
                XCTAssertEqual(loaded.encode(text, addSpecial: true, parseSpecial: true), tokenizers[i].encode(text, addSpecial: true, parseSpecial: true),
                               "\(s.name): \(text.debugDescription.prefix(80))")
            }
            XCTAssertEqual(loaded.eogIds, tokenizers[i].eogIds, s.name)
            XCTAssertEqual(loaded.bosId, tokenizers[i].bosId, s.name)
            XCTAssertEqual(loaded.addsBOS, tokenizers[i].addsBOS, s.name)
        }
    }

    /// Kiln's tokenizer.json loader takes byte-fallback BPE only in the Llama 2 form it can run exactly; Metaspace with
    /// prepend_scheme "first" (a "▁" before the first segment only) is refused, naming the value.
    func testSentencePieceJSONWithFirstOnlyPrefixIsRefused() throws {
        let dir = try makeDirectory("metaspace")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let json = #"{"model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>", "vocab": {"<unk>": 0, "a": 1, "b": 2, "ab": 3}, "merges": [["a", "b"]]}, "normalizer": null, "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}}"#
        try json.write(toFile: dir + "/tokenizer.json", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Tokenizer(tokenizerJSON: dir + "/tokenizer.json")) { error in
            XCTAssertTrue("\(error)".contains(dir + "/tokenizer.json") && "\(error)".contains("\"prepend_scheme\":\"first\""), "\(error)")
        }
        // The same vocabulary in Llama 2's form loads and merges.
        let llama2 = json.replacingOccurrences(of: #""normalizer": null, "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}"#,
                                               with: #""normalizer": {"type": "Sequence", "normalizers": [{"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}, "pre_tokenizer": null"#)
        try llama2.write(toFile: dir + "/tokenizer.json", atomically: true, encoding: .utf8)
        XCTAssertEqual(try Tokenizer(tokenizerJSON: dir + "/tokenizer.json").encode("abba", addSpecial: false), [3, 2, 1])
    }
}
