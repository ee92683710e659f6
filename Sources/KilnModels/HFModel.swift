import Foundation
import KilnCore

/// A Hugging Face checkpoint folder (`config.json` + safetensors) as a `WeightSource`.
///
/// Tensors are asked for by llama.cpp's canonical names and looked up under Hugging Face names
/// (`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`). HF stores linear weights
/// as `[out, in]` row-major, which is already the canonical layout, so data is used in place.
public final class HFModel: WeightSource {
    public let folder: String
    public let configPath: String
    public let hfConfig: HFConfig
    public let config: ModelConfig
    public let checkpoint: SafetensorsCheckpoint
    public var sourcePath: String { folder }
    private var used = Set<String>()

    /// Opens `folder`; fails on a bad `config.json` or any bad safetensors file before returning.
    public init(folder: String) throws {
        self.folder = folder
        configPath = folder + "/config.json"
        guard FileManager.default.fileExists(atPath: configPath) else {
            throw KilnError("\(folder): no config.json in the folder")
        }
        hfConfig = try HFConfig.load(path: configPath)
        config = try hfConfig.modelConfig(path: configPath)
        checkpoint = try SafetensorsCheckpoint(folder: folder)
    }

    // MARK: name mapping

    private static let layerParts: [(canonical: String, hf: String)] = [
        ("attn_norm", "input_layernorm"), ("ffn_norm", "post_attention_layernorm"),
        ("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"), ("attn_v", "self_attn.v_proj"),
        ("attn_output", "self_attn.o_proj"), ("attn_q_norm", "self_attn.q_norm"), ("attn_k_norm", "self_attn.k_norm"),
        ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"), ("ffn_down", "mlp.down_proj"),
    ]
    private static let globalNames: [(canonical: String, hf: String)] = [
        ("token_embd.weight", "model.embed_tokens.weight"), ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ]

    /// The Hugging Face name of a canonical tensor name, or nil for a name outside the scheme.
    public static func hfName(canonical name: String) -> String? {
        if let g = globalNames.first(where: { $0.canonical == name }) { return g.hf }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "blk", let layer = Int(parts[1]), layer >= 0, String(layer) == parts[1],
              parts[3] == "weight" || parts[3] == "bias",
              let part = layerParts.first(where: { $0.canonical == parts[2] }) else { return nil }
        return "model.layers.\(layer).\(part.hf).\(parts[3])"
    }

    /// The canonical name of a Hugging Face tensor name, or nil for a name outside the scheme.
    public static func canonicalName(hf name: String) -> String? {
        if let g = globalNames.first(where: { $0.hf == name }) { return g.canonical }
        guard name.hasPrefix("model.layers.") else { return nil }
        let rest = name.dropFirst("model.layers.".count)
        guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]), String(layer) == rest[..<dot] else { return nil }
        let tail = rest[rest.index(after: dot)...]
        for p in layerParts {
            for suffix in ["weight", "bias"] where tail == "\(p.hf).\(suffix)" { return "blk.\(layer).\(p.canonical).\(suffix)" }
        }
        return nil
    }

    /// With tied embeddings the output projection is `token_embd.weight`; a copy saved as
    /// `lm_head.weight` is ignored rather than used, so both sources behave the same.
    private func isIgnored(hf name: String) -> Bool {
        if name.hasSuffix(".rotary_emb.inv_freq") { return true }   // a buffer older exports saved; recomputed from rope_theta
        return config.tieWordEmbeddings && name == "lm_head.weight"
    }

    // MARK: WeightSource

    public func has(_ name: String) -> Bool {
        guard let hf = HFModel.hfName(canonical: name), !isIgnored(hf: hf) else { return false }
        return checkpoint.tensors[hf] != nil
    }

    public func tensor(_ name: String, shape: [Int]) throws -> WeightTensor {
        guard let hf = HFModel.hfName(canonical: name) else {
            throw KilnError("\(folder): unknown tensor name \(name) (not a canonical llama.cpp name)")
        }
        guard !isIgnored(hf: hf), let found = checkpoint.info(hf) else {
            let why = isIgnored(hf: hf) ? " (tie_word_embeddings is true: use token_embd.weight)" : ""
            throw KilnError("\(folder): missing tensor \(hf) (canonical \(name))\(why)")
        }
        guard found.info.shape == shape else {
            throw KilnError("\(found.file.path): tensor \(hf) has shape \(found.info.shape), expected \(shape)")
        }
        used.insert(hf)
        return WeightTensor(name: name, shape: shape, dtype: found.info.dtype, data: try found.file.data(found.info))
    }

    public func checkAllUsed() throws {
        let unused = checkpoint.tensors.keys.filter { !used.contains($0) && !isIgnored(hf: $0) }.sorted()
        if !unused.isEmpty {
            throw KilnError("\(folder): \(unused.count) unused tensor(s): \(unused.prefix(5).joined(separator: ", "))\(unused.count > 5 ? ", ..." : "")")
        }
    }
}
