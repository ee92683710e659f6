/// The operations a backend implements so that the one decoder definition (KilnModels' `Transformer`) runs on it.
///
/// The granularity is the fast path's: each operation is what a GPU runs as one (fused) kernel, and names *what*
/// is computed; the backend decides *how* (fusing, folding scales into weights, launching on a graph). Activations
/// live in backend-owned buffers named by `Activation`; weights are named by `WeightName` and resolved by the
/// backend from what it loaded (any weight format, possibly a shard).
///
/// A forward pass runs over a `StepBatch`: sequences of different lengths side by side, each addressing its KV cache
/// through its own sequence handle, so a backend can keep the cache in blocks behind a per-sequence table.
public protocol DecoderOperations {
    /// residual[rows, hidden] = embedding[ids] (· the embedding multiplier, as the weight's scale).
    func embed(_ batch: StepBatch) throws
    /// With `addingBranch`: residual += branch first. Then normed = RMSNorm(residual) · weight.
    func rmsNorm(_ weight: WeightName, addingBranch: Bool, _ batch: StepBatch) throws
    /// output = input · Wᵀ (· the weight's scale), then the named epilogue.
    func linear(_ weight: WeightName, from input: Activation, to output: Activation, epilogue: LinearEpilogue, _ batch: StepBatch) throws
    /// On the fused qkv rows of `layer`: + bias (when the model has one), per-head RMSNorm of q and k (when the model has
    /// q/k norms), RoPE on q and k at each row's position, and k, v written into each sequence's KV cache.
    func positionalEncoding(layer: Int, _ batch: StepBatch) throws
    /// attention[rows, qDim] = causal grouped-query softmax(q·kᵀ·scale)·v over each sequence's cache.
    func attention(layer: Int, _ batch: StepBatch) throws
    /// logits of the rows `batch.logits` asks for = normed · W_outᵀ (· the output's scale), in f32.
    func logits(_ batch: StepBatch) throws
}

/// Activation buffers of a forward pass (shapes per token row).
public enum Activation: Sendable {
    /// [hidden] the residual stream.
    case residual
    /// [hidden] RMSNorm output, the next GEMM's input.
    case normed
    /// [qDim + 2·kvDim] fused q | k | v.
    case qkv
    /// [qDim] attention output.
    case attention
    /// [ffn] silu(gate) · up.
    case mlp
    /// [hidden] a residual branch (attention or MLP output) before it is added.
    case branch
}

/// What a linear layer's kernel does with its product before storing it.
public enum LinearEpilogue: Sendable {
    /// Store the product.
    case none
    /// The weight's rows are [gate; up] (2·ffn): store silu(gate) · up (ffn columns).
    case swiglu
}

/// The linear layers of a decoder block, named as the tuner and benches name their GEMMs.
public enum LinearLayer: String, Sendable, CaseIterable {
    case qkv, o, gateUp = "gate_up", down
}

/// The norms of a decoder block.
public enum NormLayer: Sendable { case attention, ffn, query, key }

/// A weight the decoder refers to; backends resolve it to their loaded tensors (no strings on the hot path).
public enum WeightName: Sendable, Equatable {
    case linear(layer: Int, LinearLayer)
    case norm(layer: Int, NormLayer)
    case outputNorm
}

/// Which logits a forward pass produces.
public enum LogitsRequest: Sendable, Equatable {
    /// Only the last token's logits (`[vocab]`) of each sequence: prefill and decode.
    case last
    /// Every token's logits (`[tokens × vocab]`): teacher forcing.
    case all
    /// The last `n` tokens' logits (`[n × vocab]`, clamped to the batch): perplexity scores only part of a chunk,
    /// and the output projection is a large share of the work.
    case lastTokens(Int)
    /// No logits: a prompt chunk that is not the last one (the pass stops after the last layer).
    case none

    /// How many of `n` rows get logits.
    public func count(of n: Int) -> Int {
        switch self {
        case .none: return 0
        case .last: return 1
        case .all: return n
        case .lastTokens(let k): return max(1, min(n, k))
        }
    }
}

/// The token rows of one forward pass: each sequence contributes `count` consecutive positions from `start`,
/// its rows contiguous and in order of `sequences`.
public struct StepBatch: Sendable {
    public struct Sequence: Sendable, Equatable {
        /// The sequence's KV-cache handle (a slot today; a block table's owner in a paged cache).
        public var id: Int
        /// Position of the sequence's first row in this step (= tokens already in its cache).
        public var start: Int
        /// Rows of this sequence in this step.
        public var count: Int
        public init(id: Int, start: Int, count: Int) { self.id = id; self.start = start; self.count = count }
    }
    public var sequences: [Sequence]
    /// Which rows get logits (per sequence for `.last`).
    public var logits: LogitsRequest

    public init(sequences: [Sequence], logits: LogitsRequest = .last) {
        self.sequences = sequences; self.logits = logits
    }

    /// One sequence of `count` rows from `start`.
    public static func single(id: Int = 0, start: Int, count: Int, logits: LogitsRequest = .last) -> StepBatch {
        StepBatch(sequences: [Sequence(id: id, start: start, count: count)], logits: logits)
    }

    /// Total token rows.
    public var rows: Int {
        var n = 0
        for s in sequences { n += s.count }
        return n
    }
}
