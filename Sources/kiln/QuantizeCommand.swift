import ArgumentParser
import Foundation
import KilnCore
import KilnModels
import KilnTokenizer
import KilnTune

/// `kiln quantize -m MODEL --to fp8 -o DIR`: writes a Hugging Face fine-grained FP8 folder (F8_E4M3 weights, F32
/// 128×128 block scales, `quantization_config`) that transformers and Kiln load, from a Hugging Face folder or a GGUF
/// file (whose config and tokenizer are written as Hugging Face files). `--to lut4|lut3|lut2 [--group 64]
/// [--table nf|int|fp4|learned|FILE] [--offsets]` writes Kiln's lookup-table folder instead (`kiln-lut`, read by Kiln),
/// reporting each matrix's relative reconstruction error. A `learned` table is learned once per fused group (q/k/v of a
/// layer, gate/up), which the GPU stacks into one matrix read with one table; o and down learn their own.
struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Write a model as a fine-grained FP8 checkpoint (e4m3, 128×128 block scales) or as lookup-table codes (lut4/3/2).")

    @Option(name: .shortAndLong, help: "Hugging Face folder or GGUF file to quantize; default: SmolLM2-135M-Instruct (GGUF).") var model: String?
    @Option(name: .long, help: "Target format: fp8, lut4, lut3, lut2.") var to: String
    @Option(name: .shortAndLong, help: "Output folder (must not exist yet or be empty).") var output: String
    @Flag(name: .long, help: "Quantize lm_head too (embeddings always stay in source precision).") var quantizeOutput = false
    @Option(name: .long, help: "lut*: input elements per group scale (32, 64, 128).") var group = 64
    @Option(name: .long, help: "lut*: table: nf, int, fp4 (4-bit), learned (one per q/k/v and per gate/up group), or a file of 2^bits numbers.") var table = "nf"
    @Flag(name: .long, help: "lut*: one offset per group besides the scale (affine).") var offsets = false

    /// The lookup-table format of `--to lutB` with `--group`, `--table` and `--offsets` (and the table of a table file),
    /// nil for other targets.
    static func lutTarget(_ to: String, group: Int, table: String, offsets: Bool) throws -> (format: WeightFormat.LUTFormat, table: [Float]?)? {
        guard to.hasPrefix("lut") else { return nil }
        guard let bits = Int(to.dropFirst(3)), [2, 3, 4].contains(bits) else {
            if to == "lut8" {   // 8-bit codes exist on the GPU only as GGUF Q8_0's member, not as a Kiln checkpoint
                throw KilnError("--to lut8: Kiln writes no 8-bit lookup-table checkpoints (lookup-table targets are lut4, lut3 and lut2); a GGUF Q8_0 model already runs in 8 bits on the GPU, and --to fp8 writes 8-bit weights")
            }
            throw KilnError("--to \(to.prefix(40)): lookup-table targets are lut4, lut3 and lut2")
        }
        guard HFQuantizationConfig.lutGroupSizes.contains(group) else { throw KilnError("--group \(group): supported 32, 64, 128") }
        if let kind = WeightFormat.LUTFormat.Table(rawValue: table), kind != .custom {
            let f = WeightFormat.LUTFormat(bits: bits, groupSize: group, table: kind, hasOffsets: offsets)
            _ = try LUTTables.fixed(f)   // fp4 at 2 or 3 bits fails here
            return (f, nil)
        }
        guard let text = try? String(contentsOfFile: table, encoding: .utf8) else {
            throw KilnError("--table \(table.prefix(80)): neither nf, int, fp4, learned nor a readable file")
        }
        let fields = text.split(whereSeparator: { $0.isWhitespace || $0 == "," })
        let values = fields.compactMap { Float($0) }
        guard values.count == fields.count, values.count == 1 << bits, values.allSatisfy(\.isFinite) else {
            throw KilnError("\(table): a \(bits)-bit table file holds \(1 << bits) finite numbers (whitespace or comma separated), found \(fields.count) fields")
        }
        return (WeightFormat.LUTFormat(bits: bits, groupSize: group, table: .custom, hasOffsets: offsets), values)
    }

    /// Files of a Hugging Face folder that travel with the weights unchanged.
    static let companionFiles = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                                 "chat_template.jinja", "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt",
                                 "added_tokens.json"]

    func run() throws {
        let lut = try Self.lutTarget(to, group: group, table: table, offsets: offsets)
        guard to == "fp8" || lut != nil else { throw KilnError("--to \(to.prefix(40)): unsupported target (supported: fp8, lut4, lut3, lut2)") }
        let path = try model ?? ModelStore.defaultModelPath()
        var bar: ProgressBar?   // made on the first tensor, when the count is known
        var errors: [(String, Double)] = []
        try Self.quantize(path, to: output, quantizeOutput: quantizeOutput, lut: lut?.format, lutTable: lut?.table,
                          progress: { done, total in
                              if bar == nil { bar = ProgressBar(total: total, label: "tensors") }
                              bar?.update(done: done)
                          }, matrixError: { errors.append(($0, $1)) })
        bar?.finish()
        if let l = lut?.format {
            print("relative reconstruction error ‖W − Ŵ‖/‖W‖ per matrix:")
            for (name, e) in errors { print("  " + name.padding(toLength: max(32, name.count), withPad: " ", startingAt: 0) + String(format: " %.5f", e)) }
            let mean = errors.map(\.1).reduce(0, +) / Double(max(1, errors.count))
            print(String(format: "mean %.5f over %d matrices", mean, errors.count))
            print("wrote \(output): \(WeightFormat.lut(l).name) layers\(quantizeOutput ? " and lm_head" : ""), embeddings\(quantizeOutput ? "" : " and lm_head") in source precision")
            return
        }
        print("wrote \(output): fp8_e4m3_b128x128 layers\(quantizeOutput ? " and lm_head" : ""), embeddings\(quantizeOutput ? "" : " and lm_head") in source precision")
    }

    /// Writes the model at `path` (a Hugging Face folder or a GGUF file) into `output` as a fine-grained FP8 folder.
    /// A folder keeps its `config.json` (less `quantization_config`) and companion files; a GGUF file gets a
    /// `config.json` from its metadata and its tokenizer as Hugging Face files. Either way each weight is read through
    /// its format's one CPU reference and quantized by `CheckpointExport`. `progress(done, total)` counts tensors;
    /// `matrixError(name, ‖W − Ŵ‖/‖W‖)` is called per lookup-table matrix.
    static func quantize(_ path: String, to output: String, quantizeOutput: Bool, lut: WeightFormat.LUTFormat? = nil,
                         lutTable: [Float]? = nil, progress: (Int, Int) -> Void = { _, _ in },
                         matrixError: ((String, Double) -> Void)? = nil) throws {
        let files = try ModelFiles.locate(path)
        let fm = FileManager.default
        if let existing = try? fm.contentsOfDirectory(atPath: output), !existing.isEmpty {
            throw KilnError("\(output): output folder exists and is not empty")
        }
        let source = try files.open()
        var options = CheckpointExport.Options()
        options.quantizeOutput = quantizeOutput
        options.lut = lut; options.lutTable = lutTable; options.matrixError = matrixError
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
