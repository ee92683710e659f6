import ArgumentParser
import Foundation
import KilnCore
import KilnModels
import KilnTune

/// `kiln quantize -m MODEL --to fp8 -o DIR`: writes a Hugging Face fine-grained FP8 folder (F8_E4M3 weights, F32
/// 128×128 block scales, `quantization_config`) that transformers and Kiln load.
struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Write a model as a Hugging Face fine-grained FP8 checkpoint (e4m3 weights, 128×128 block scales).")

    @Option(name: .shortAndLong, help: "Hugging Face folder to quantize; default: SmolLM2-135M-Instruct.") var model: String?
    @Option(name: .long, help: "Target format: fp8.") var to: String
    @Option(name: .shortAndLong, help: "Output folder (must not exist yet or be empty).") var output: String
    @Flag(name: .long, help: "Quantize lm_head too (embeddings always stay in source precision).") var quantizeOutput = false

    /// Files of a Hugging Face folder that travel with the weights unchanged.
    static let companionFiles = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                                 "chat_template.jinja", "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt",
                                 "added_tokens.json"]

    func run() throws {
        guard to == "fp8" else { throw KilnError("--to \(to.prefix(40)): unsupported target (supported: fp8)") }
        let path = try model ?? ModelStore.defaultModelPath()
        let files = try ModelFiles.locate(path)
        guard files.kind == .huggingFace, let configPath = files.configPath else {
            throw KilnError("\(path): GGUF sources are not supported yet (their tokenizer cannot be written as Hugging Face files); quantize a Hugging Face folder")
        }
        let fm = FileManager.default
        if let existing = try? fm.contentsOfDirectory(atPath: output), !existing.isEmpty {
            throw KilnError("\(output): output folder exists and is not empty")
        }
        let source = try files.open()
        var options = CheckpointExport.Options()
        options.quantizeOutput = quantizeOutput
        var base = try JSONFile.object(path: configPath)
        base["torch_dtype"] = base["torch_dtype"] ?? "bfloat16"
        options.baseConfig = base
        let bar = ProgressBar(total: source.config.canonicalTensorShapes.count, label: "tensors")
        try CheckpointExport.write(source, to: output, options: options) { done, _ in bar.update(done: done) }
        bar.finish()
        for name in Self.companionFiles where fm.fileExists(atPath: path + "/" + name) {
            try? fm.removeItem(atPath: output + "/" + name)
            try fm.copyItem(atPath: path + "/" + name, toPath: output + "/" + name)
        }
        print("wrote \(output): fp8_e4m3_b128x128 layers\(quantizeOutput ? " and lm_head" : ""), embeddings\(quantizeOutput ? "" : " and lm_head") in source precision")
    }
}
