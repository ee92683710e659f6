import KilnCore

/// What a backend gives `TensorParallelRank` beyond the decoder's operations: a vocabulary-range embedding and its
/// buffers as opaque handles that its `TensorParallelCollectives` understands (host pointers on the CPU, device
/// addresses with an element type on the GPU).
public protocol TensorParallelBackend: DecoderOperations {
    associatedtype Handle
    /// residual[t] = embedding row (id − vocabulary.lowerBound) of token t's id when the id lies in `vocabulary`, else a
    /// zero row. The backend's table holds only those rows (a rank's slice); with the whole vocabulary this is `embed`.
    func embed(_ batch: StepBatch, vocabulary: Range<Int>) throws
    /// The residual stream, `[rows × hidden]`.
    var residualHandle: Handle { get }
    /// The branch a row-parallel linear layer writes, `[rows × hidden]`.
    var branchHandle: Handle { get }
    /// The logits `logits(_:)` writes, `[rows × V/N]` f32: the rank's vocabulary slice.
    var logitsHandle: Handle { get }
    /// Rows 0..<n of `logitsHandle` that the last `logits(batch)` left for the gather; 0 when the backend delivered
    /// them elsewhere itself (the GPU's teacher forcing copies each chunk to the host, where they are joined).
    func logitRowsToGather(_ batch: StepBatch) -> Int
}

/// The sums and gathers that join the ranks. One instance per rank; every rank calls the same collectives in the same
/// order, and each call returns (or, on a GPU, is enqueued) with the same result on every rank.
public protocol TensorParallelCollectives {
    associatedtype Handle
    /// buffer[0..<count] = Σ over ranks of each rank's buffer[0..<count], on every rank.
    func allReduceSum(_ buffer: Handle, count: Int, _ reason: TensorParallelReduction) throws
    /// For rows 0..<rows: full[row][plan.vocabRange(r)] = rank r's slice[row][0..<vocabRange(r).count] for every rank r, on
    /// every rank (`slice` is `[rows × ⌈V/N⌉]`, `full` is `[rows × V]`; the last rank's padded columns are dropped).
    func gatherVocabulary(_ slice: Handle, rows: Int, into full: Handle) throws
}

/// Why an all-reduce runs (for tests and traces; the collective itself does not depend on it).
public enum TensorParallelReduction: Sendable, Equatable {
    /// The residual after the vocabulary-parallel embedding.
    case embedding
    /// The branch after a row-parallel linear layer (o, down).
    case branch(WeightName)
}

/// One rank of a tensor-parallel model: its backend (a CPU or GPU model of the plan's `rankConfig`, loaded from
/// `RankWeights`) plus the collectives the plan calls for, as one `DecoderOperations`. Each rank's thread runs
/// `Transformer.forward(rank, batch)`, so the multi-rank model is the one decoder definition, not a second one:
/// - embed: the backend embeds the ids in the rank's vocabulary range (zeros elsewhere); the residual is all-reduced.
/// - after each row-parallel linear layer (`plan.allReducesAfter`: o, down): the branch is all-reduced (summed) before
///   the next RMSNorm adds it to the residual.
/// - after logits: each rank's vocabulary slice is gathered into full-vocabulary rows in `fullLogits`.
/// Column-parallel layers, norms, RoPE and attention are the backend's own (each rank holds whole heads). With one
/// rank every collective is skipped and `collectives` may be nil: no collective library is touched.
public final class TensorParallelRank<Backend: TensorParallelBackend, Collectives: TensorParallelCollectives>: DecoderOperations
where Backend.Handle == Collectives.Handle {
    public let plan: TensorParallelPlan
    public let rank: Int
    public let backend: Backend
    public let collectives: Collectives?
    /// `[rows × V]` full-vocabulary logits the gather writes (with one rank: the backend's own `logitsHandle`).
    public let fullLogits: Backend.Handle
    private let vocabulary: Range<Int>

    public init(plan: TensorParallelPlan, rank: Int, backend: Backend, collectives: Collectives?, fullLogits: Backend.Handle) throws {
        guard rank >= 0, rank < plan.ranks else { throw KilnError("rank \(rank) is outside --tp \(plan.ranks)") }
        guard plan.ranks == 1 || collectives != nil else { throw KilnError("--tp \(plan.ranks): rank \(rank) has no collectives") }
        self.plan = plan; self.rank = rank; self.backend = backend; self.collectives = collectives; self.fullLogits = fullLogits
        vocabulary = plan.vocabRange(rank: rank)
    }

    /// The collectives when there is more than one rank.
    private var joined: Collectives? { plan.ranks > 1 ? collectives : nil }

    public func embed(_ batch: StepBatch) throws {
        try backend.embed(batch, vocabulary: vocabulary)
        try joined?.allReduceSum(backend.residualHandle, count: batch.rows * plan.config.hiddenSize, .embedding)
    }

    public func rmsNorm(_ weight: WeightName, addingBranch: Bool, _ batch: StepBatch) throws {
        try backend.rmsNorm(weight, addingBranch: addingBranch, batch)
    }

    public func linear(_ weight: WeightName, from input: Activation, to output: Activation, epilogue: LinearEpilogue, _ batch: StepBatch) throws {
        try backend.linear(weight, from: input, to: output, epilogue: epilogue, batch)
        guard let joined, case .linear(_, let layer) = weight, plan.allReducesAfter(layer) else { return }
        try joined.allReduceSum(backend.branchHandle, count: batch.rows * plan.config.hiddenSize, .branch(weight))
    }

    public func positionalEncoding(layer: Int, _ batch: StepBatch) throws { try backend.positionalEncoding(layer: layer, batch) }

    public func attention(layer: Int, _ batch: StepBatch) throws { try backend.attention(layer: layer, batch) }

    public func logits(_ batch: StepBatch) throws {
        try backend.logits(batch)
        guard let joined else { return }
        let rows = backend.logitRowsToGather(batch)
        if rows > 0 { try joined.gatherVocabulary(backend.logitsHandle, rows: rows, into: fullLogits) }
    }
}
