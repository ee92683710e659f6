import Foundation
import KilnCore

/// A GGUF model file as a `WeightSource`: config from `general.architecture` metadata, tensors read in place.
public final class GGUFModel: WeightSource {
    public let gguf: GGUFFile
    public let config: ModelConfig
    public var sourcePath: String { gguf.path }
    private var used = Set<String>()

    public convenience init(path: String) throws { try self.init(gguf: GGUFFile(path: path)) }

    /// Refuses a file with any tensor of a type Kiln cannot run, naming them, before anything is loaded.
    public init(gguf: GGUFFile) throws {
        let unsupported = gguf.unsupportedTensors
        if let first = unsupported.first {
            let types = Set(unsupported.map(\.typeName)).sorted().joined(separator: ", ")
            throw KilnError("\(gguf.path): \(unsupported.count) tensor(s) of types Kiln cannot run (\(types)), first \(first.name) (\(first.typeName)); supported: \(GGMLType.supportedNames)")
        }
        self.gguf = gguf
        config = try GGUFModel.config(of: gguf)
    }

    /// Builds the model config from GGUF metadata; errors name the file and the key.
    public static func config(of g: GGUFFile) throws -> ModelConfig {
        guard let archName = g.architecture else { throw KilnError("\(g.path): missing metadata general.architecture") }
        guard let arch = Architecture(rawValue: archName) else {
            throw KilnError("\(g.path): unsupported architecture \"\(archName)\" (supported: \(Architecture.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        let a = archName
        let hidden = try g.requireInt("\(a).embedding_length")
        let heads = try g.requireInt("\(a).attention.head_count")
        let kvHeads = g["\(a).attention.head_count_kv"]?.int ?? heads
        let vocab = g["\(a).vocab_size"]?.int ?? g["tokenizer.ggml.tokens"]?.array?.count ?? 0
        var headDim = heads > 0 ? hidden / heads : 0
        if let kl = g["\(a).attention.key_length"]?.int { headDim = kl }
        var scaling: Llama3RopeScaling?
        if let factor = g["\(a).rope.scaling.factor"]?.double, g["\(a).rope.scaling.type"]?.string == "llama3" {
            scaling = Llama3RopeScaling(factor: factor,
                                        lowFreqFactor: g["\(a).rope.scaling.low_freq_factor"]?.double ?? 1,
                                        highFreqFactor: g["\(a).rope.scaling.high_freq_factor"]?.double ?? 4,
                                        originalMaxPositionEmbeddings: g["\(a).rope.scaling.original_context_length"]?.int ?? 8192)
        }
        let cfg = ModelConfig(
            architecture: arch, vocabSize: vocab, hiddenSize: hidden,
            intermediateSize: try g.requireInt("\(a).feed_forward_length"),
            numLayers: try g.requireInt("\(a).block_count"), numHeads: heads, numKVHeads: kvHeads, headDim: headDim,
            contextLength: g["\(a).context_length"]?.int ?? 2048,
            rmsNormEps: Float(try g.requireDouble("\(a).attention.layer_norm_rms_epsilon")),
            ropeTheta: Float(g["\(a).rope.freq_base"]?.double ?? 10000),
            ropeScaling: scaling,
            // llama.cpp permutes llama/granite Q/K rows at conversion (interleaved pairs); qwen2 and qwen3 keep NeoX halves.
            ropeStyle: arch == .qwen2 || arch == .qwen3 ? .halves : .interleaved,
            tieWordEmbeddings: g.tensorIndex["output.weight"] == nil,
            attentionBias: arch == .qwen2, qkNorm: arch == .qwen3,
            embeddingMultiplier: Float(g["\(a).embedding_scale"]?.double ?? 1),
            attentionMultiplier: g["\(a).attention.scale"]?.double.map { Float($0) },
            residualMultiplier: Float(g["\(a).residual_scale"]?.double ?? 1),
            logitsScaling: Float(g["\(a).logit_scale"]?.double ?? 1))
        try cfg.validate(source: g.path)
        return cfg
    }

    public func has(_ name: String) -> Bool { gguf.tensorIndex[name] != nil }

    public func tensor(_ name: String, shape: [Int]) throws -> WeightTensor {
        let info = try gguf.info(name)
        let rowMajor = Array(info.shape.reversed())   // ggml lists the contiguous dimension first
        // Drop trailing unit dimensions ggml sometimes stores ([n, 1] for vectors).
        var got = rowMajor
        while got.count > shape.count, got.first == 1 { got.removeFirst() }
        guard got == shape else {
            throw KilnError("\(gguf.path): tensor \(name) has shape \(got), expected \(shape)")
        }
        let dt = try gguf.dtype(of: info)
        used.insert(name)
        return WeightTensor(name: name, shape: shape, dtype: dt, data: try gguf.data(info))
    }

    public func checkAllUsed() throws {
        let unused = gguf.tensors.map(\.name).filter { !used.contains($0) }
        if !unused.isEmpty {
            throw KilnError("\(gguf.path): \(unused.count) unused tensor(s): \(unused.prefix(5).joined(separator: ", "))\(unused.count > 5 ? ", ..." : "")")
        }
    }
}
