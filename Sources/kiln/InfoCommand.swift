import ArgumentParser
import Foundation
import KilnCore
import KilnModels

/// `kiln info`: what a model file is, without running it.
struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info", abstract: "Show a model's architecture, size, tensor types, context, vocabulary and special tokens.")

    @Option(name: .shortAndLong, help: "Model: a GGUF file or a Hugging Face folder (default: SmolLM2-135M-Instruct, fetched on first use).")
    var model: String?

    func validate() throws { try InputFiles.requireModel(model) }

    func run() throws {
        let path = try model ?? ModelStore.defaultModelPath()
        let summary = try ModelSummary(path: path)
        print(summary.render())
    }
}
