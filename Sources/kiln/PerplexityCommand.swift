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
    @Option(name: [.customShort("c"), .customLong("ctx-size")], help: "Chunk (context) size.") var ctxSize: Int = 512
    @Option(name: [.customShort("b"), .customLong("batch-size")], help: "Tokens per forward pass (speed only).") var batchSize: Int?
    @Option(name: .shortAndLong, help: "Threads (default: all cores).") var threads: Int?
    @Option(name: .long, help: "Device: cpu.") var device: String = "cpu"

    func run() throws {
        let logger = makeLogger()
        let loaded = try LoadedModel.load(path: model, threads: threads, device: device, logger: logger)
        guard let data = FileManager.default.contents(atPath: file) else { throw KilnError("\(file): cannot read") }
        var text = String(decoding: data, as: UTF8.self)
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
