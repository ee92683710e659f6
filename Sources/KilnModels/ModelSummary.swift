import Foundation
import KilnCore

/// The facts `kiln info` prints about a model file or folder.
public struct ModelSummary {
    public var path: String
    public var format: String
    public var config: ModelConfig?
    /// Architecture name as written in the file, even when Kiln cannot run it (vocabulary-only files).
    public var architectureName: String
    public var parameterCount: Int
    public var tensorTypes: [(type: String, count: Int)]
    /// Tensor types in the file that Kiln cannot run (GGUF), with counts; `kiln run` refuses such a file.
    public var unsupportedTensorTypes: [(type: String, count: Int)] = []
    public var vocabularySize: Int?
    public var tokenizerModel: String?
    public var specialTokens: [(role: String, id: Int, text: String)]
    public var hasChatTemplate: Bool

    public init(path: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw KilnError("\(path): no such file or directory")
        }
        if isDir.boolValue { self = try ModelSummary(huggingFaceFolder: path) } else { self = try ModelSummary(ggufPath: path) }
    }

    init(ggufPath path: String) throws {
        self.path = path
        let g = try GGUFFile(path: path)
        format = "GGUF v\(g.version)"
        architectureName = g.architecture ?? "unknown"
        // Vocabulary-only files (no tensors) still describe their tokenizer; only real models need a valid config.
        config = g.tensors.isEmpty ? nil : try GGUFModel.config(of: g)
        parameterCount = g.tensors.reduce(0) { $0 + $1.elementCount }
        var counts: [String: Int] = [:]
        for t in g.tensors { counts[t.typeName, default: 0] += 1 }
        tensorTypes = counts.sorted { $0.value > $1.value }.map { ($0.key, $0.value) }
        var unsupported: [String: Int] = [:]
        for t in g.unsupportedTensors { unsupported[t.typeName, default: 0] += 1 }
        unsupportedTensorTypes = unsupported.sorted { $0.value > $1.value }.map { ($0.key, $0.value) }
        let tokens = g["tokenizer.ggml.tokens"]?.strings
        vocabularySize = tokens?.count
        tokenizerModel = g["tokenizer.ggml.model"]?.string.map { m in g["tokenizer.ggml.pre"]?.string.map { "\(m) (pre-tokenizer \($0))" } ?? m }
        var specials: [(String, Int, String)] = []
        for (role, key) in [("BOS", "bos"), ("EOS", "eos"), ("EOT", "eot"), ("UNK", "unknown"), ("PAD", "padding"), ("SEP", "seperator")] {
            if let id = g["tokenizer.ggml.\(key)_token_id"]?.int {
                let text = (tokens != nil && id < tokens!.count) ? tokens![id] : "?"
                specials.append((role, id, text))
            }
        }
        specialTokens = specials
        hasChatTemplate = g["tokenizer.chat_template"]?.string != nil
    }

    /// A Hugging Face folder: config.json, safetensors, tokenizer.json, tokenizer_config.json, generation_config.json.
    init(huggingFaceFolder path: String) throws {
        self.path = path
        let files = try ModelFiles.locate(path)
        let model = try HFModel(folder: path)
        format = "Hugging Face safetensors (\(model.checkpoint.files.count) file\(model.checkpoint.files.count == 1 ? "" : "s"))"
        config = model.config
        architectureName = model.config.architecture.rawValue
        parameterCount = model.checkpoint.tensors.values.reduce(0) { $0 + $1.info.elementCount }
        var counts: [String: Int] = [:]
        for t in model.checkpoint.tensors.values { counts[t.info.dtype.rawValue.uppercased(), default: 0] += 1 }
        tensorTypes = counts.sorted { $0.value > $1.value }.map { ($0.key, $0.value) }
        // Vocabulary and special tokens come from tokenizer.json when present.
        var vocab: [String: Int] = [:]
        tokenizerModel = nil
        if let tj = files.tokenizerJSONPath {
            let root = try JSONFile.object(path: tj)
            if let model = root["model"] as? [String: Any] {
                tokenizerModel = (model["type"] as? String).map { "\($0) (tokenizer.json)" }
                for (k, v) in (model["vocab"] as? [String: Any]) ?? [:] { if let i = v as? Int { vocab[k] = i } }
            }
            for t in (root["added_tokens"] as? [[String: Any]]) ?? [] {
                if let c = t["content"] as? String, let i = t["id"] as? Int { vocab[c] = i }
            }
        }
        vocabularySize = vocab.isEmpty ? nil : (vocab.values.max() ?? 0) + 1
        let tc = try files.loadTokenizerConfig()
        var specials: [(String, Int, String)] = []
        for (role, text) in [("BOS", tc?.bosToken), ("EOS", tc?.eosToken), ("UNK", tc?.unkToken), ("PAD", tc?.padToken)] {
            if let text { specials.append((role, vocab[text] ?? -1, text)) }
        }
        specialTokens = specials
        hasChatTemplate = tc?.chatTemplate != nil || !(tc?.chatTemplates.isEmpty ?? true)
    }

    public func render() -> String {
        var lines = ["model:          \(path)", "format:         \(format)", "architecture:   \(architectureName)"]
        if parameterCount > 0 { lines.append("parameters:     \(Self.human(parameterCount)) (\(parameterCount))") }
        if !tensorTypes.isEmpty { lines.append("tensor types:   " + tensorTypes.map { "\($0.type) ×\($0.count)" }.joined(separator: ", ")) }
        if !unsupportedTensorTypes.isEmpty {
            lines.append("cannot run:     " + unsupportedTensorTypes.map { "\($0.type) ×\($0.count)" }.joined(separator: ", ")
                         + " (Kiln runs \(GGMLType.supportedNames))")
        }
        if let c = config {
            lines.append("layers:         \(c.numLayers), hidden \(c.hiddenSize), ffn \(c.intermediateSize), heads \(c.numHeads) (kv \(c.numKVHeads)), head dim \(c.headDim)")
            lines.append("context length: \(c.contextLength)")
            lines.append("rope:           theta \(c.ropeTheta), \(c.ropeStyle.rawValue)\(c.ropeScaling.map { ", llama3 scaling ×\($0.factor)" } ?? "")")
            lines.append("embeddings:     \(c.tieWordEmbeddings ? "tied to the output" : "separate output matrix")")
        }
        if let v = vocabularySize { lines.append("vocabulary:     \(v) tokens\(tokenizerModel.map { ", \($0)" } ?? "")") }
        for s in specialTokens { lines.append("special token:  \(s.role) = \(s.id) \(s.text.debugDescription)") }
        lines.append("chat template:  \(hasChatTemplate ? "present" : "none")")
        return lines.joined(separator: "\n")
    }

    static func human(_ n: Int) -> String {
        if n >= 1_000_000_000 { return String(format: "%.2fB", Double(n) / 1e9) }
        if n >= 1_000_000 { return String(format: "%.1fM", Double(n) / 1e6) }
        if n >= 1_000 { return String(format: "%.1fK", Double(n) / 1e3) }
        return "\(n)"
    }
}
