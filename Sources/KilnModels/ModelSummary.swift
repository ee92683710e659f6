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
    public var vocabularySize: Int?
    public var tokenizerModel: String?
    public var specialTokens: [(role: String, id: Int, text: String)]
    public var hasChatTemplate: Bool

    public init(path: String) throws {
        self.path = path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw KilnError("\(path): no such file or directory")
        }
        if isDir.boolValue {
            throw KilnError("\(path): Hugging Face folders are not supported by kiln info yet")
        }
        let g = try GGUFFile(path: path)
        format = "GGUF v\(g.version)"
        architectureName = g.architecture ?? "unknown"
        // Vocabulary-only files (no tensors) still describe their tokenizer; only real models need a valid config.
        config = g.tensors.isEmpty ? nil : try GGUFModel.config(of: g)
        parameterCount = g.tensors.reduce(0) { $0 + $1.elementCount }
        var counts: [String: Int] = [:]
        for t in g.tensors { counts[t.typeName, default: 0] += 1 }
        tensorTypes = counts.sorted { $0.value > $1.value }.map { ($0.key, $0.value) }
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

    public func render() -> String {
        var lines = ["model:          \(path)", "format:         \(format)", "architecture:   \(architectureName)"]
        if parameterCount > 0 { lines.append("parameters:     \(Self.human(parameterCount)) (\(parameterCount))") }
        if !tensorTypes.isEmpty { lines.append("tensor types:   " + tensorTypes.map { "\($0.type) ×\($0.count)" }.joined(separator: ", ")) }
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
