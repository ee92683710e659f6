import ArgumentParser
import Foundation
import KilnCore
import KilnModels
import KilnTokenizer

/// `kiln tokenize`: the token ids of a text, as llama.cpp's tokenizer gives them.
struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Show the tokens of a text.",
        discussion: """
            Prints one line per token (`id -> 'piece'`), or with --ids all ids on one line, space-separated, as \
            llama.cpp's tokenizer test files list them. BOS is added when the model's tokenizer asks for it.
            """)

    @Option(name: .shortAndLong, help: "Model: a GGUF file (vocab-only files work), a Hugging Face folder with tokenizer.json, or a tokenizer.json (default: SmolLM2-135M-Instruct).")
    var model: String?
    @Option(name: .shortAndLong, help: "Read the text from this file instead of the argument.")
    var file: String?
    @Flag(name: .long, help: "Print only the ids, space-separated on one line.")
    var ids = false
    @Flag(name: .long, help: "Parse special tokens written in the text (<|im_start|>) into their ids.")
    var special = false
    @Flag(name: .customLong("no-bos"), help: "Do not add BOS/EOS even when the tokenizer asks for them.")
    var noBOS = false
    @Argument(help: "The text to tokenize.")
    var text: String?

    func validate() throws {
        if (text == nil) == (file == nil) { throw ValidationError("give the text either as an argument or with -f FILE") }
        try InputFiles.requireModel(model)
        if let file { _ = try InputFiles.readText(file) }
    }

    func run() throws {
        let tokenizer = try TokenizeCommand.loadTokenizer(path: model ?? ModelStore.defaultModelPath())
        let input: String
        if let file {
            input = try InputFiles.readText(file)
        } else {
            input = text ?? ""
        }
        let tokens = tokenizer.encode(input, addSpecial: !noBOS, parseSpecial: special)
        if ids {
            print(tokens.map(String.init).joined(separator: " "))
            return
        }
        for id in tokens {
            let piece = String(decoding: tokenizer.tokenBytes(id), as: UTF8.self)
            print("\(id) -> '\(piece)'")
        }
    }

    /// A tokenizer from a GGUF file, a tokenizer.json, or a folder holding tokenizer.json (and tokenizer_config.json).
    static func loadTokenizer(path: String) throws -> Tokenizer {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw KilnError("\(path): no such file or folder") }
        if isDirectory.boolValue {
            let json = path + "/tokenizer.json"
            guard FileManager.default.fileExists(atPath: json) else {
                throw KilnError("\(path): folder has no tokenizer.json")
            }
            return try Tokenizer(tokenizerJSON: json, configPath: path + "/tokenizer_config.json")
        }
        if path.hasSuffix(".json") {
            let config = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent("tokenizer_config.json").path
            return try Tokenizer(tokenizerJSON: path, configPath: config)
        }
        return try Tokenizer(gguf: GGUFFile(path: path))
    }
}
