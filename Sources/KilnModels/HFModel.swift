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
    /// `quantization_config` (fine-grained FP8 or kiln-lut), nil for unquantized folders.
    public let quantization: HFQuantizationConfig?
    public var sourcePath: String { folder }
    var used = Set<String>()

    /// Opens `folder`; fails on a bad `config.json` or any bad safetensors file before returning.
    public init(folder: String) throws {
        self.folder = folder
        configPath = folder + "/config.json"
        guard FileManager.default.fileExists(atPath: configPath) else {
            throw KilnError("\(folder): no config.json in the folder")
        }
        hfConfig = try HFConfig.load(path: configPath)
        config = try hfConfig.modelConfig(path: configPath)
        quantization = try HFQuantizationConfig.parse(config: try JSONFile.object(path: configPath), path: configPath)
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
        return checkpoint.tensors[hf] != nil || checkpoint.tensors[hf + "_codes"] != nil   // lookup-table planes
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

    /// A matrix as stored: one tensor, or for fine-grained FP8 the F8_E4M3 `weight` with its F32 `weight_scale_inv`
    /// `[ceil(N/128), ceil(K/128)]` as one `fp8_e4m3_b128x128` matrix. A scale without an FP8 weight, an FP8 weight
    /// without its scale or without `quantization_config`, and scales of another type or shape are errors naming the tensor.
    public func matrix(_ name: String, rows: Int, cols: Int) throws -> QuantizedMatrix {
        if let hf = HFModel.hfName(canonical: name), hf.hasSuffix(".weight"), !isIgnored(hf: hf),
           let lut = try lutMatrix(name, hf: hf, rows: rows, cols: cols) { return lut }   // HFQuantization+LUT.swift
        guard let hf = HFModel.hfName(canonical: name), hf.hasSuffix(".weight"), let found = checkpoint.info(hf), !isIgnored(hf: hf) else {
            return try defaultMatrix(name, rows: rows, cols: cols)
        }
        let scaleName = String(hf.dropLast(".weight".count)) + ".weight_scale_inv"
        let scale = checkpoint.info(scaleName)
        guard found.info.dtype == .f8_e4m3 else {
            if scale != nil {
                throw KilnError("\(found.file.path): tensor \(scaleName) scales \(hf), which is \(found.info.dtype.rawValue), not F8_E4M3")
            }
            return try defaultMatrix(name, rows: rows, cols: cols)
        }
        guard let q = quantization else {
            throw KilnError("\(found.file.path): tensor \(hf) is F8_E4M3 but \(configPath) has no quantization_config")
        }
        guard let scale else {
            throw KilnError("\(found.file.path): F8_E4M3 tensor \(hf) has no \(scaleName) (its block scales)")
        }
        guard found.info.shape == [rows, cols] else {
            throw KilnError("\(found.file.path): tensor \(hf) has shape \(found.info.shape), expected \([rows, cols])")
        }
        guard scale.info.dtype == .f32 else {
            throw KilnError("\(scale.file.path): tensor \(scaleName) is \(scale.info.dtype.rawValue); only F32 block scales are supported")
        }
        let layout = try q.format.planes(rows: rows, cols: cols, what: "tensor \(hf)")
        guard scale.info.shape == layout[1].shape else {
            throw KilnError("\(scale.file.path): tensor \(scaleName) has shape \(scale.info.shape), expected \(layout[1].shape) (one scale per 128×128 block of \(hf) \([rows, cols]))")
        }
        used.insert(hf); used.insert(scaleName)
        do {
            return try QuantizedMatrix(name: name, rows: rows, cols: cols, format: q.format, planes: [
                .init(.codes, shape: layout[0].shape, dtype: .u8, bytes: try found.file.data(found.info)),
                .init(.scales, shape: layout[1].shape, dtype: .f32, bytes: try scale.file.data(scale.info))])
        } catch let e as KilnError { throw KilnError("\(folder): \(e.message)") }
    }

    /// The protocol's one-tensor matrix (dense elements or GGUF blocks).
    private func defaultMatrix(_ name: String, rows: Int, cols: Int) throws -> QuantizedMatrix {
        let t = try tensor(name, shape: [rows, cols])
        do { return try QuantizedMatrix(t) } catch let e as KilnError { throw KilnError("\(folder): \(e.message)") }
    }

    public func checkAllUsed() throws {
        let unused = checkpoint.tensors.keys.filter { !used.contains($0) && !isIgnored(hf: $0) }.sorted()
        if !unused.isEmpty {
            throw KilnError("\(folder): \(unused.count) unused tensor(s): \(unused.prefix(5).joined(separator: ", "))\(unused.count > 5 ? ", ..." : "")")
        }
    }
}
