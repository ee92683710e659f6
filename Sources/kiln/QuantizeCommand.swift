import ArgumentParser
import Foundation
import KilnCore
import KilnModels
import KilnTokenizer
import KilnTune

/// `kiln quantize -m MODEL --to fp8 -o DIR`: writes a Hugging Face fine-grained FP8 folder (F8_E4M3 weights, F32
/// 128×128 block scales, `quantization_config`) that transformers and Kiln load, from a Hugging Face folder or a GGUF
/// file (whose config and tokenizer are written as Hugging Face files).
struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Write a model as a Hugging Face fine-grained FP8 checkpoint (e4m3 weights, 128×128 block scales).")

    @Option(name: .shortAndLong, help: "Hugging Face folder or GGUF file to quantize; default: SmolLM2-135M-Instruct (GGUF).") var model: String?
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
        var bar: ProgressBar?   // made on the first tensor, when the count is known
        try Self.quantize(path, to: output, quantizeOutput: quantizeOutput) { done, total in
            if bar == nil { bar = ProgressBar(total: total, label: "tensors") }
            bar?.update(done: done)
        }
        bar?.finish()
        print("wrote \(output): fp8_e4m3_b128x128 layers\(quantizeOutput ? " and lm_head" : ""), embeddings\(quantizeOutput ? "" : " and lm_head") in source precision")
    }

    /// Writes the model at `path` (a Hugging Face folder or a GGUF file) into `output` as a fine-grained FP8 folder.
    /// A folder keeps its `config.json` (less `quantization_config`) and companion files; a GGUF file gets a
    /// `config.json` from its metadata and its tokenizer as Hugging Face files. Either way each weight is read through
    /// its format's one CPU reference and quantized by `CheckpointExport`. `progress(done, total)` counts tensors.
    static func quantize(_ path: String, to output: String, quantizeOutput: Bool, progress: (Int, Int) -> Void = { _, _ in }) throws {
        let files = try ModelFiles.locate(path)
        let fm = FileManager.default
        if let existing = try? fm.contentsOfDirectory(atPath: output), !existing.isEmpty {
            throw KilnError("\(output): output folder exists and is not empty")
        }
        let source = try files.open()
        var options = CheckpointExport.Options()
        options.quantizeOutput = quantizeOutput
        switch files.kind {
        case .huggingFace:
            guard let configPath = files.configPath else { throw KilnError("\(path): no config.json") }
            var base = try JSONFile.object(path: configPath)
            base["torch_dtype"] = base["torch_dtype"] ?? "bfloat16"
            options.baseConfig = base
        case .gguf:
            guard let gguf = source as? GGUFModel else { throw KilnError("\(path): not opened as a GGUF model") }
            options.baseConfig = try gguf.huggingFaceConfig()
            // The tokenizer first: an unsupported one fails before minutes of weight conversion.
            try fm.createDirectory(atPath: output, withIntermediateDirectories: true)
            try HFTokenizerWriter.write(gguf: gguf.gguf, to: output)
        }
        try CheckpointExport.write(source, to: output, options: options, progress: progress)
        guard files.kind == .huggingFace else { return }
        for name in Self.companionFiles where fm.fileExists(atPath: path + "/" + name) {
            try? fm.removeItem(atPath: output + "/" + name)
            try fm.copyItem(atPath: path + "/" + name, toPath: output + "/" + name)
        }
    }
}
