import Foundation
import KilnCore

/// Architectures Kiln runs. Chosen from `architectures`/`model_type` (HF) or `general.architecture` (GGUF).
public enum Architecture: String, Sendable, CaseIterable {
    case llama, granite, qwen2, qwen3
}

/// How RoPE pairs the dimensions of a head.
/// - `interleaved`: pairs (x[2i], x[2i+1]) — llama.cpp's GGUF llama/granite (Q/K rows were permuted by the converter).
/// - `halves`: pairs (x[i], x[i + d/2]) — Hugging Face checkpoints (`rotate_half`), and GGUF qwen2 (NeoX style).
public enum RopeStyle: String, Sendable { case interleaved, halves }

/// Everything a backend needs to know about a model's shape, independent of the file it came from.
public struct ModelConfig: Equatable, Sendable {
    public var architecture: Architecture
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numLayers: Int
    public var numHeads: Int
    public var numKVHeads: Int
    public var headDim: Int
    public var contextLength: Int
    public var rmsNormEps: Float
    public var ropeTheta: Float
    public var ropeScaling: Llama3RopeScaling?
    public var ropeStyle: RopeStyle
    public var tieWordEmbeddings: Bool
    /// Q/K/V projections carry biases (qwen2).
    public var attentionBias: Bool
    /// Each head of q and k is RMS-normalized (its own [headDim] weight, shared by the heads) before RoPE (qwen3).
    public var qkNorm: Bool
    /// Granite: embeddings are multiplied by this.
    public var embeddingMultiplier: Float
    /// Attention score scale; nil means 1/sqrt(headDim). Granite sets it explicitly.
    public var attentionMultiplier: Float?
    /// Granite: each residual branch is multiplied by this before it is added.
    public var residualMultiplier: Float
    /// Granite: logits are divided by this.
    public var logitsScaling: Float

    public init(architecture: Architecture, vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numLayers: Int,
                numHeads: Int, numKVHeads: Int, headDim: Int? = nil, contextLength: Int, rmsNormEps: Float, ropeTheta: Float,
                ropeScaling: Llama3RopeScaling? = nil, ropeStyle: RopeStyle = .halves, tieWordEmbeddings: Bool = false,
                attentionBias: Bool = false, qkNorm: Bool = false, embeddingMultiplier: Float = 1, attentionMultiplier: Float? = nil,
                residualMultiplier: Float = 1, logitsScaling: Float = 1) {
        self.architecture = architecture; self.vocabSize = vocabSize; self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize; self.numLayers = numLayers; self.numHeads = numHeads
        self.numKVHeads = numKVHeads; self.headDim = headDim ?? (hiddenSize / max(numHeads, 1))
        self.contextLength = contextLength; self.rmsNormEps = rmsNormEps; self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling; self.ropeStyle = ropeStyle; self.tieWordEmbeddings = tieWordEmbeddings
        self.attentionBias = attentionBias; self.qkNorm = qkNorm; self.embeddingMultiplier = embeddingMultiplier
        self.attentionMultiplier = attentionMultiplier; self.residualMultiplier = residualMultiplier
        self.logitsScaling = logitsScaling
    }

    public var attentionScale: Float { attentionMultiplier ?? 1 / Float(headDim).squareRoot() }
    public var qDim: Int { numHeads * headDim }
    public var kvDim: Int { numKVHeads * headDim }
    /// Width of the fused q | k | v rows.
    public var qkvDim: Int { qDim + 2 * kvDim }

    /// The factor a linear layer's output carries (Granite's residual multiplier on both residual branches).
    /// Backends apply it the way they prefer: folded into the weights at load, or on the product.
    public func outputScale(_ layer: LinearLayer) -> Float {
        switch layer {
        case .o, .down: return residualMultiplier
        case .qkv, .gateUp: return 1
        }
    }
    /// The factor the logits carry (1 / Granite's logits scaling).
    public var logitsScale: Float { 1 / logitsScaling }

    /// Throws, naming the first offender, when a token id is outside the vocabulary (the CPU engine's forward passes,
    /// one model or the tensor-parallel ranks together).
    public func checkTokenIDs<S: Sequence>(_ tokens: S) throws where S.Element == Int32 {
        for t in tokens where t < 0 || Int(t) >= vocabSize { throw KilnError("token id \(t) is outside the vocabulary (\(vocabSize) tokens)") }
    }

    /// Checks the numbers make sense together; `source` names the file in the error.
    public func validate(source: String) throws {
        func bad(_ what: String) -> KilnError { KilnError("\(source): invalid config: \(what)") }
        for (name, v) in [("vocab size", vocabSize), ("hidden size", hiddenSize), ("intermediate size", intermediateSize),
                          ("layer count", numLayers), ("head count", numHeads), ("kv head count", numKVHeads),
                          ("head dim", headDim), ("context length", contextLength)] {
            if v <= 0 || v > 1 << 24 { throw bad("\(name) = \(v)") }
        }
        if numHeads % numKVHeads != 0 { throw bad("head count \(numHeads) is not a multiple of kv head count \(numKVHeads)") }
        if headDim % 2 != 0 { throw bad("head dim \(headDim) is odd") }
        if !(rmsNormEps > 0) { throw bad("rms_norm_eps = \(rmsNormEps)") }
        if !(ropeTheta > 0) { throw bad("rope theta = \(ropeTheta)") }
    }
}
