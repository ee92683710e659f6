import ArgumentParser
import Foundation
import KilnCore
import KilnEngine

/// `kiln perplexity`: llama.cpp's `llama-perplexity`, number for number.
struct PerplexityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "perplexity", abstract: "Perplexity of a text file, computed as llama-perplexity does.")

    @Option(name: .shortAndLong, help: "Model file (GGUF) or Hugging Face folder; default: SmolLM2-135M-Instruct.") var model: String?
    @Option(name: .shortAndLong, help: "Text file.") var file: String
    @Option(name: [.customShort("c"), .customLong("ctx-size")], parsing: .unconditional, help: "Chunk (context) size, at least 2.")
    var ctxSize: Int = 512
    @Option(name: [.customShort("b"), .customLong("batch-size")], parsing: .unconditional, help: "Tokens per forward pass, at least 1 (speed only).")
    var batchSize: Int?
    @Option(name: .shortAndLong, parsing: .unconditional, help: "Threads (default: all cores).") var threads: Int?
    @Option(name: .long, help: "Device: cpu.") var device: String = "cpu"
    @Flag(name: .shortAndLong, help: "Debug logs: load time per phase.") var verbose = false

    func validate() throws {
        // A chunk scores its second half, so it needs two tokens at least.
        try OptionCheck.range(ctxSize, "-c/--ctx-size", 2...1 << 24)
        if let batchSize { try OptionCheck.range(batchSize, "-b/--batch-size", 1...1 << 24) }
        try OptionCheck.threads(threads)
        try OptionCheck.oneOf(device, "--device", ["cpu"])
        try InputFiles.requireModel(model)
        _ = try InputFiles.readText(file)
    }

    func run() throws {
        let logger = makeLogger(verbose: verbose)
        var text = try InputFiles.readText(file)
        let loaded = try LoadedModel.load(path: model, threads: threads, device: device, logger: logger)
        if text.hasSuffix("\n") { text.removeLast() }   // llama.cpp's file loader strips one trailing newline
        let tok = loaded.tokenizer
        let tokens = tok.encode(text, addSpecial: true, parseSpecial: false).map { Int32($0) }
        logger.info("\(file): \(tokens.count) tokens, \(tokens.count / max(ctxSize, 1)) chunks of \(ctxSize)")
        let start = Date()
        let result = try Perplexity.evaluate(model: loaded.model, tokens: tokens, context: ctxSize, batch: batchSize,
                                             bos: tok.addsBOS ? tok.bosId.map { Int32($0) } : nil) { i, ppl in
            print(String(format: "[%d]%.4f,", i, ppl), terminator: "")
        }
        print("")
        print(String(format: "Final estimate: PPL = %.4f +/- %.5f", result.ppl, result.error))
        logger.info("\(result.scoredTokens) tokens scored in \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
    }
}
