import Foundation
import KilnCore

/// `rope_scaling` of a Hugging Face `config.json`, or transformers 5's `rope_parameters` (the same fields plus
/// `rope_theta`). Only `llama3` (Llama 3.1+) and `default` are supported.
public struct HFRopeScaling: Decodable, Equatable, Sendable {
    /// `rope_type` (newer transformers) or `type` (older).
    public var ropeType: String?
    public var factor: Double?
    public var lowFreqFactor: Double?
    public var highFreqFactor: Double?
    public var originalMaxPositionEmbeddings: Int?
    /// Only in `rope_parameters` (transformers 5 moved `rope_theta` there).
    public var ropeTheta: Double?

    enum CodingKeys: String, CodingKey {
        case ropeType = "rope_type", type, factor, ropeTheta = "rope_theta"
        case lowFreqFactor = "low_freq_factor", highFreqFactor = "high_freq_factor"
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        ropeType = try c.decodeIfPresent(String.self, forKey: .ropeType) ?? c.decodeIfPresent(String.self, forKey: .type)
        factor = try c.decodeIfPresent(Double.self, forKey: .factor)
        lowFreqFactor = try c.decodeIfPresent(Double.self, forKey: .lowFreqFactor)
        highFreqFactor = try c.decodeIfPresent(Double.self, forKey: .highFreqFactor)
        originalMaxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .originalMaxPositionEmbeddings)
        ropeTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta)
    }
}

/// A Hugging Face `config.json` for the decoder-only families Kiln runs (llama, granite, qwen2),
/// decoded with the checkpoint's own key names. Fields not listed are ignored.
public struct HFConfig: Decodable, Sendable {
    public var architectures: [String]?
    public var modelType: String?
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    /// Absent in older llama configs: then equal to `numAttentionHeads` (no grouped-query attention).
    public var numKeyValueHeads: Int?
    /// Absent in most configs: then `hiddenSize / numAttentionHeads`.
    public var headDim: Int?
    public var maxPositionEmbeddings: Int?
    public var rmsNormEps: Double?
    public var ropeTheta: Double?
    public var ropeScaling: HFRopeScaling?
    /// transformers 5 writes `rope_theta` and the scaling fields here instead of at the top level.
    public var ropeParameters: HFRopeScaling?
    public var tieWordEmbeddings: Bool?
    public var hiddenAct: String?
    /// Llama's optional Q/K/V/O biases; qwen2 always has Q/K/V biases and does not write the key.
    public var attentionBias: Bool?
    public var mlpBias: Bool?
    public var useSlidingWindow: Bool?
    // Granite
    public var embeddingMultiplier: Double?
    public var attentionMultiplier: Double?
    public var residualMultiplier: Double?
    public var logitsScaling: Double?
    // Token ids some configs carry (generation_config.json is preferred).
    public var bosTokenId: Int?
    public var eosTokenId: TokenIDs?

    enum CodingKeys: String, CodingKey {
        case architectures, modelType = "model_type", vocabSize = "vocab_size", hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size", numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads", numKeyValueHeads = "num_key_value_heads", headDim = "head_dim"
        case maxPositionEmbeddings = "max_position_embeddings", rmsNormEps = "rms_norm_eps", ropeTheta = "rope_theta"
        case ropeScaling = "rope_scaling", ropeParameters = "rope_parameters", tieWordEmbeddings = "tie_word_embeddings", hiddenAct = "hidden_act"
        case attentionBias = "attention_bias", mlpBias = "mlp_bias", useSlidingWindow = "use_sliding_window"
        case embeddingMultiplier = "embedding_multiplier", attentionMultiplier = "attention_multiplier"
        case residualMultiplier = "residual_multiplier", logitsScaling = "logits_scaling"
        case bosTokenId = "bos_token_id", eosTokenId = "eos_token_id"
    }

    /// Loads and decodes `path` (a `config.json`).
    public static func load(path: String) throws -> HFConfig { try JSONFile.load(HFConfig.self, path: path) }

    /// Decodes `config.json` text (tests build tiny models from inline JSON this way).
    public static func decode(_ json: String, path: String = "config.json") throws -> HFConfig {
        try JSONFile.decode(HFConfig.self, from: Data(json.utf8), path: path)
    }

    /// HF class names Kiln runs, and the architecture each maps to.
    public static let supportedClasses: [String: Architecture] = [
        "LlamaForCausalLM": .llama, "GraniteForCausalLM": .granite, "Qwen2ForCausalLM": .qwen2, "Qwen3ForCausalLM": .qwen3,
    ]

    /// The architecture, from `architectures[0]` or else `model_type`; never from file names.
    public func architecture(path: String) throws -> Architecture {
        if let classes = architectures, !classes.isEmpty {
            guard classes.count == 1 else {
                throw KilnError("\(path): architectures lists \(classes.count) classes \(classes); expected one")
            }
            guard let arch = HFConfig.supportedClasses[classes[0]] else {
                let known = HFConfig.supportedClasses.keys.sorted().joined(separator: ", ")
                throw KilnError("\(path): unsupported architecture \"\(classes[0].prefix(80))\" (supported: \(known))")
            }
            if let mt = modelType, mt != arch.rawValue {
                throw KilnError("\(path): architectures says \(classes[0]) but model_type says \"\(mt.prefix(80))\"")
            }
            return arch
        }
        guard let mt = modelType else { throw KilnError("\(path): missing field architectures (and model_type)") }
        guard let arch = Architecture(rawValue: mt) else {
            throw KilnError("\(path): unsupported architecture: model_type \"\(mt.prefix(80))\" (supported: \(Architecture.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return arch
    }

    /// The backend-facing config. Hugging Face checkpoints rotate halves (`rotate_half`), so `ropeStyle` is `.halves`.
    public func modelConfig(path: String) throws -> ModelConfig {
        let arch = try architecture(path: path)
        func bad(_ field: String, _ value: Any) -> KilnError { KilnError("\(path): invalid \(field) = \(value)") }
        for (field, v) in [("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
                           ("num_hidden_layers", numHiddenLayers), ("num_attention_heads", numAttentionHeads),
                           ("num_key_value_heads", numKeyValueHeads ?? numAttentionHeads), ("head_dim", headDim ?? 2),
                           ("max_position_embeddings", maxPositionEmbeddings ?? 1)] where v <= 0 || v > 1 << 24 {
            throw bad(field, v)
        }
        if headDim == nil, hiddenSize % numAttentionHeads != 0 {
            throw KilnError("\(path): invalid config: hidden_size \(hiddenSize) is not a multiple of num_attention_heads \(numAttentionHeads) (and no head_dim)")
        }
        if let act = hiddenAct, act != "silu" {
            throw KilnError("\(path): unsupported hidden_act \"\(act.prefix(40))\" (supported: silu)")
        }
        if mlpBias == true { throw KilnError("\(path): unsupported mlp_bias = true") }
        if useSlidingWindow == true { throw KilnError("\(path): unsupported use_sliding_window = true") }
        let scaling = try llama3Scaling(path: path)
        let eps = rmsNormEps ?? 1e-6
        let theta = ropeTheta ?? ropeParameters?.ropeTheta ?? 10000
        guard eps.isFinite, eps > 0 else { throw bad("rms_norm_eps", eps) }
        guard theta.isFinite, theta > 0 else { throw bad("rope_theta", theta) }
        if arch == .granite {
            for (field, v) in [("embedding_multiplier", embeddingMultiplier), ("attention_multiplier", attentionMultiplier),
                               ("residual_multiplier", residualMultiplier), ("logits_scaling", logitsScaling)] {
                if let v, !(v.isFinite && v > 0) { throw bad(field, v) }
            }
        }
        let isGranite = arch == .granite
        let cfg = ModelConfig(
            architecture: arch, vocabSize: vocabSize, hiddenSize: hiddenSize, intermediateSize: intermediateSize,
            numLayers: numHiddenLayers, numHeads: numAttentionHeads, numKVHeads: numKeyValueHeads ?? numAttentionHeads,
            headDim: headDim, contextLength: maxPositionEmbeddings ?? 2048, rmsNormEps: Float(eps), ropeTheta: Float(theta),
            ropeScaling: scaling, ropeStyle: .halves, tieWordEmbeddings: tieWordEmbeddings ?? false,
            attentionBias: arch == .qwen2 || attentionBias == true, qkNorm: arch == .qwen3,
            embeddingMultiplier: isGranite ? Float(embeddingMultiplier ?? 1) : 1,
            attentionMultiplier: isGranite ? attentionMultiplier.map { Float($0) } : nil,
            residualMultiplier: isGranite ? Float(residualMultiplier ?? 1) : 1,
            logitsScaling: isGranite ? Float(logitsScaling ?? 1) : 1)
        try cfg.validate(source: path)
        return cfg
    }

    private func llama3Scaling(path: String) throws -> Llama3RopeScaling? {
        // `rope_parameters` without a rope_type only carries rope_theta: no scaling.
        guard let rs = ropeScaling ?? ropeParameters.flatMap({ $0.ropeType == nil ? nil : $0 }) else { return nil }
        switch rs.ropeType {
        case "default"?: return nil
        case "llama3"?:
            guard let factor = rs.factor, factor.isFinite, factor >= 1 else {
                throw KilnError("\(path): rope_scaling.factor must be a number >= 1, got \(rs.factor.map { "\($0)" } ?? "nothing")")
            }
            let low = rs.lowFreqFactor ?? 1, high = rs.highFreqFactor ?? 4
            guard low.isFinite, high.isFinite, low > 0, high > low else {
                throw KilnError("\(path): rope_scaling low_freq_factor \(low) and high_freq_factor \(high) must satisfy 0 < low < high")
            }
            let orig = rs.originalMaxPositionEmbeddings ?? 8192
            guard orig > 0, orig <= 1 << 24 else { throw KilnError("\(path): invalid rope_scaling.original_max_position_embeddings = \(orig)") }
            return Llama3RopeScaling(factor: factor, lowFreqFactor: low, highFreqFactor: high, originalMaxPositionEmbeddings: orig)
        case let other:
            throw KilnError("\(path): unsupported rope_scaling type \"\((other ?? "none").prefix(40))\" (supported: llama3, default)")
        }
    }
}

/// A token id or a list of them (`eos_token_id` is either in Hugging Face files).
public struct TokenIDs: Decodable, Equatable, Sendable {
    public var ids: [Int]
    public init(_ ids: [Int]) { self.ids = ids }
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let one = try? c.decode(Int.self) { ids = [one] } else { ids = try c.decode([Int].self) }
    }
}
