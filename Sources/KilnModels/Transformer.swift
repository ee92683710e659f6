import KilnCore

/// The Llama-family decoder (Llama, Granite, Qwen2, Qwen3), defined once. Every backend runs this definition by
/// implementing `DecoderOperations`; architecture differences are data in `ModelConfig` (biases, q/k norms,
/// multipliers, RoPE style and scaling, tied embeddings), never a second forward pass.
public struct Transformer: Sendable {
    public let config: ModelConfig
    public init(config: ModelConfig) { self.config = config }

    /// One forward pass over `batch`: appends its keys and values to each sequence's cache and leaves the logits the
    /// batch asks for in the backend.
    public func forward<Ops: DecoderOperations>(_ ops: Ops, _ batch: StepBatch) throws {
        try ops.embed(batch)                                                             // residual = E[ids]
        for l in 0..<config.numLayers {
            // Attention: x += branch (the previous MLP's); xn = RMSNorm(x)
            try ops.rmsNorm(.norm(layer: l, .attention), addingBranch: l > 0, batch)
            try ops.linear(.linear(layer: l, .qkv), from: .normed, to: .qkv, epilogue: .none, batch)    // [q|k|v] = xn·Wqkvᵀ
            try ops.positionalEncoding(layer: l, batch)               // + bias; q, k = RMSNorm per head; RoPE; k, v → cache
            try ops.attention(layer: l, batch)                        // attn = softmax(q·kᵀ·scale, causal)·v
            try ops.linear(.linear(layer: l, .o), from: .attention, to: .branch, epilogue: .none, batch)   // branch = attn·Woᵀ
            // MLP (SwiGLU): x += branch; xn = RMSNorm(x)
            try ops.rmsNorm(.norm(layer: l, .ffn), addingBranch: true, batch)
            try ops.linear(.linear(layer: l, .gateUp), from: .normed, to: .mlp, epilogue: .swiglu, batch)  // silu(xn·Wgᵀ)·(xn·Wuᵀ)
            try ops.linear(.linear(layer: l, .down), from: .mlp, to: .branch, epilogue: .none, batch)      // branch = mlp·Wdᵀ
        }
        guard batch.logits != .none else { return }
        try ops.rmsNorm(.outputNorm, addingBranch: true, batch)                          // x += branch; xn = RMSNorm(x)
        try ops.logits(batch)                                                            // logits = xn·W_outᵀ
    }

    // MARK: the checkpoint's tensors (canonical llama.cpp names), shared by every backend's loader

    /// One tensor of a checkpoint that makes up (part of) a decoder weight.
    public struct Part: Sendable, Equatable {
        public var name: String
        /// Row-major shape: [rows, cols] for matrices, [n] for vectors.
        public var shape: [Int]
    }

    /// Input features of a linear layer (the K of its GEMM).
    public func inputs(_ layer: LinearLayer) -> Int {
        switch layer {
        case .qkv, .gateUp: return config.hiddenSize
        case .o: return config.qDim
        case .down: return config.intermediateSize
        }
    }

    /// Output features of a linear layer (the N of its GEMM): fused layers stack their parts' rows.
    public func outputs(_ layer: LinearLayer) -> Int { parts(layer, layer: 0).reduce(0) { $0 + $1.shape[0] } }

    /// The checkpoint matrices a linear layer stacks, in row order: q, k, v for qkv; gate, up for gate_up.
    public func parts(_ linear: LinearLayer, layer l: Int) -> [Part] {
        let c = config, p = "blk.\(l)."
        let k = inputs(linear)
        switch linear {
        case .qkv:
            return [Part(name: p + "attn_q.weight", shape: [c.qDim, k]), Part(name: p + "attn_k.weight", shape: [c.kvDim, k]),
                    Part(name: p + "attn_v.weight", shape: [c.kvDim, k])]
        case .o: return [Part(name: p + "attn_output.weight", shape: [c.hiddenSize, k])]
        case .gateUp:
            return [Part(name: p + "ffn_gate.weight", shape: [c.intermediateSize, k]), Part(name: p + "ffn_up.weight", shape: [c.intermediateSize, k])]
        case .down: return [Part(name: p + "ffn_down.weight", shape: [c.hiddenSize, k])]
        }
    }

    /// The q, k, v bias vectors (in qkv's row order) when the model has them.
    public func qkvBiasParts(layer l: Int) -> [Part]? {
        guard config.attentionBias else { return nil }
        let c = config, p = "blk.\(l)."
        return [Part(name: p + "attn_q.bias", shape: [c.qDim]), Part(name: p + "attn_k.bias", shape: [c.kvDim]),
                Part(name: p + "attn_v.bias", shape: [c.kvDim])]
    }

    /// A norm's weight vector, or nil when the model has no such norm (q/k norms outside qwen3).
    public func norm(_ n: NormLayer, layer l: Int) -> Part? {
        let c = config, p = "blk.\(l)."
        switch n {
        case .attention: return Part(name: p + "attn_norm.weight", shape: [c.hiddenSize])
        case .ffn: return Part(name: p + "ffn_norm.weight", shape: [c.hiddenSize])
        case .query: return c.qkNorm ? Part(name: p + "attn_q_norm.weight", shape: [c.headDim]) : nil
        case .key: return c.qkNorm ? Part(name: p + "attn_k_norm.weight", shape: [c.headDim]) : nil
        }
    }

    public var embedding: Part { Part(name: "token_embd.weight", shape: [config.vocabSize, config.hiddenSize]) }
    public var outputNorm: Part { Part(name: "output_norm.weight", shape: [config.hiddenSize]) }
    /// The output projection's own tensor; with tied embeddings the checkpoint has none and `embedding` serves.
    public var output: Part { Part(name: "output.weight", shape: [config.vocabSize, config.hiddenSize]) }
    /// llama.cpp's optional RoPE frequency factors (Llama 3.1 GGUF files).
    public var ropeFreqs: Part { Part(name: "rope_freqs.weight", shape: [config.headDim / 2]) }

    /// Every tensor a checkpoint of this model holds, in checkpoint order (without llama.cpp's optional `rope_freqs`).
    public func checkpointTensors(tiedOutput: Bool) -> [Part] {
        var out = [embedding]
        for l in 0..<config.numLayers {
            out.append(norm(.attention, layer: l)!)
            out += parts(.qkv, layer: l) + (qkvBiasParts(layer: l) ?? [])
            out += [norm(.query, layer: l), norm(.key, layer: l)].compactMap { $0 }
            out += parts(.o, layer: l) + [norm(.ffn, layer: l)!] + parts(.gateUp, layer: l) + parts(.down, layer: l)
        }
        out.append(outputNorm)
        if !tiedOutput { out.append(output) }
        return out
    }

    /// Every GEMM of a decode step as (op, N, K): the decoder's linear layers and the output projection. Benches and the
    /// tuner measure exactly these shapes.
    public var gemmShapes: [(op: String, n: Int, k: Int)] {
        LinearLayer.allCases.map { ($0.rawValue, outputs($0), inputs($0)) } + [("logits", config.vocabSize, config.hiddenSize)]
    }
}
