import Foundation
import KilnCore
import KilnModels

/// Tensor parallelism simulated in one process: N CPU models, each holding one rank's shard of the weights
/// (`RankWeights`: the `TensorParallelPlan`'s slices of the full checkpoint), driven in lockstep through the one
/// `Transformer` definition, with the collectives as plain loops: an all-reduce is a sum over the ranks in rank order,
/// the gather of logits a copy of each rank's vocabulary columns. It exists to test the sharding against the
/// unsharded model on the CPU (issue 23, "without the machines").
///
/// The same object is the pattern for the GPU engine (not built yet). `SimulatedTensorParallel` implements
/// `DecoderOperations` by calling every rank's operation, so `Transformer.forward(self, batch)` is the whole
/// multi-rank step and the model is not written a second time. On N GPUs each rank is a `GPUModel` on its own GPU
/// (own context, stream and CUDA graph, loaded from `RankWeights` and tuned for `plan.gemmShapes`), driven by one
/// thread per GPU that runs the same `Transformer.forward` over a wrapper like this one:
/// - qkv and gate_up are column-parallel GEMMs on each GPU's shard: no communication; attention runs over the GPU's
///   own heads and its own KV cache (kvDim / N wide).
/// - after o and down (`plan.allReducesAfter`), an `ncclAllReduce` (sum, in place on the bf16 `branch` buffer, on
///   the rank's stream, so CUDA graph capture records it). The residual add stays in the next RMSNorm kernel, which
///   already reads `branch` and adds it to the residual: the all-reduce adds no pass of its own over the hidden state.
/// - the embedding lookup writes the ids in the rank's vocabulary range and zeros elsewhere; an all-reduce of the
///   residual joins them (one per step, not per layer).
/// - the logits GEMM gives each GPU `[rows × V/N]`; `ncclAllGather` joins them on every GPU, whose sampler then
///   sees the whole vocabulary (rank-major columns = vocabulary order, because rank r holds rows r·V/N ..< (r+1)·V/N).
/// Here, the ranks run one after another on the caller's thread; the all-reduce overwrites every rank's buffer with
/// the one sum, as NCCL leaves the same result on every GPU.
public final class SimulatedTensorParallel {
    public let plan: TensorParallelPlan
    /// Rank r's model, on `RankWeights` rank r.
    public let ranks: [CPUModel]
    /// The full model's definition; each rank's CPUModel carries the rank's.
    public let transformer: Transformer
    /// Called with each rank's copy of a row-parallel layer's output just before the all-reduce sums them (tests
    /// check that the ranks really hold partial sums): `[rank][rows × hidden]`.
    public var observePartials: ((WeightName, [[Float]]) -> Void)?
    private let gathered: UnsafeMutablePointer<Float>   // [maxBatch × vocab] logits joined over the ranks
    private var logitRows = 0

    /// Loads the N ranks from the full checkpoint `weights`. `slices`, if given, replaces the plan's slices of each
    /// rank (tests use it to load a deliberately wrong split). `threads` per rank.
    public init(weights: WeightSource, ranks n: Int, threads: Int = 1, maxBatch: Int = 64,
                slices: [[TensorParallelPlan.Slice]]? = nil) throws {
        let p = try TensorParallelPlan(config: weights.config, ranks: n)
        plan = p
        transformer = Transformer(config: p.config)
        ranks = try (0..<n).map { r in
            try CPUModel(weights: try RankWeights(weights, plan: p, rank: r, slices: slices?[r]), threads: threads,
                         maxBatch: maxBatch, floatWeights: false)
        }
        try weights.checkAllUsed()
        gathered = .allocate(capacity: max(1, ranks[0].maxBatch * p.config.vocabSize))
        gathered.initialize(repeating: 0, count: max(1, ranks[0].maxBatch * p.config.vocabSize))
    }

    deinit { gathered.deallocate() }

    /// One KV cache per rank (each holds the rank's KV heads), for one sequence.
    public func makeCaches(capacity: Int? = nil) throws -> [KVCache] { try ranks.map { try $0.makeCache(capacity: capacity) } }

    /// Runs `tokens` (at most `maxBatch`) at the caches' next positions, as `CPUModel.forward(_:cache:logits:)` does for
    /// one model; `caches` holds the sequence's cache on each rank. Returns the gathered logits (`[rows × vocab]`).
    public func forward(_ tokens: [Int32], caches: [KVCache], logits request: LogitsRequest) throws -> [Float] {
        guard let first = caches.first else { throw KilnError("no KV caches given") }
        return try forward(tokens, batch: .single(start: first.count, count: tokens.count, logits: request), caches: caches.map { [$0] })
    }

    /// Several sequences in one pass, as `CPUModel.forward(_:batch:caches:)`: `caches[r][i]` is sequence i's cache on rank
    /// r. Returns the gathered logits of every sequence's requested rows.
    public func forward(_ tokens: [Int32], batch: StepBatch, caches: [[KVCache]]) throws -> [Float] {
        guard caches.count == ranks.count else { throw KilnError("KV caches for \(caches.count) ranks, but there are \(ranks.count) ranks") }
        try plan.config.checkTokenIDs(tokens)
        return try tokens.withUnsafeBufferPointer { ids in
            for (m, rankCaches) in zip(ranks, caches) {
                m.pass.caches = rankCaches
                try m.beginPass(ids, batch: batch)
            }
            logitRows = 0
            try transformer.forward(self, batch)
            for m in ranks { _ = m.finishPass(batch) }
            return Array(UnsafeBufferPointer(start: gathered, count: logitRows * plan.config.vocabSize))
        }
    }

    /// The all-reduce: every rank's `buffer` (first `count` floats) becomes the sum over the ranks, added in rank order.
    private func allReduce(_ buffer: KeyPath<ForwardBuffers, UnsafeMutablePointer<Float>>, count: Int) {
        let sum = ranks[0].buffers[keyPath: buffer]
        for m in ranks.dropFirst() {
            let part = m.buffers[keyPath: buffer]
            for i in 0..<count { sum[i] += part[i] }
        }
        for m in ranks.dropFirst() { m.buffers[keyPath: buffer].update(from: sum, count: count) }
    }
}

extension SimulatedTensorParallel: DecoderOperations {
    /// Vocabulary-parallel lookup: each rank writes the rows of the ids in its range (zeros elsewhere), then the
    /// residual is all-reduced (exact: each element is one rank's value plus zeros).
    public func embed(_ batch: StepBatch) throws {
        let h = plan.config.hiddenSize
        for (r, m) in ranks.enumerated() {
            let vocab = plan.vocabRange(rank: r)
            for (t, id) in m.pass.ids.enumerated() {
                let row = m.buffers.x + t * h
                if vocab.contains(Int(id)) { m.embedRow(Int(id) - vocab.lowerBound, into: row) } else { row.update(repeating: 0, count: h) }
            }
        }
        allReduce(\.x, count: batch.rows * h)
    }

    public func rmsNorm(_ weight: WeightName, addingBranch: Bool, _ batch: StepBatch) throws {
        for m in ranks { try m.rmsNorm(weight, addingBranch: addingBranch, batch) }
    }

    public func linear(_ weight: WeightName, from input: Activation, to output: Activation, epilogue: LinearEpilogue, _ batch: StepBatch) throws {
        for m in ranks { try m.linear(weight, from: input, to: output, epilogue: epilogue, batch) }
        guard case .linear(_, let layer) = weight, plan.allReducesAfter(layer) else { return }
        let count = batch.rows * plan.config.hiddenSize
        if let observePartials {
            observePartials(weight, ranks.map { Array(UnsafeBufferPointer(start: $0.buffers.branch, count: count)) })
        }
        allReduce(\.branch, count: count)
    }

    public func positionalEncoding(layer: Int, _ batch: StepBatch) throws {
        for m in ranks { try m.positionalEncoding(layer: layer, batch) }
    }

    public func attention(layer: Int, _ batch: StepBatch) throws {
        for m in ranks { try m.attention(layer: layer, batch) }
    }

    /// Each rank's logits over its vocabulary slice, gathered into `[rows × vocab]` (rank r's columns at r·⌈V/N⌉; the
    /// padded columns of the last rank are dropped).
    public func logits(_ batch: StepBatch) throws {
        let vocab = plan.config.vocabSize, slice = plan.rankConfig.vocabSize
        logitRows = ranks[0].pass.logitRows
        for (r, m) in ranks.enumerated() {
            try m.logits(batch)
            let mine = plan.vocabRange(rank: r)
            for row in 0..<logitRows {
                (gathered + row * vocab + mine.lowerBound).update(from: m.buffers.logits + row * slice, count: mine.count)
            }
        }
    }
}
