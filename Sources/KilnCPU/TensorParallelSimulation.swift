import Foundation
import KilnCore
import KilnModels

/// Tensor parallelism on the CPU: N CPU models in one process, each holding one rank's shard of the weights
/// (`RankWeights`: the `TensorParallelPlan`'s slices of the full checkpoint), each driven by its own thread through the
/// one `Transformer` definition over a `TensorParallelRank` — the same wrapper the GPU engine (`GPUTensorParallel`) runs,
/// with `CPUCollectives` (a thread barrier; the all-reduce a sum in rank order) where the GPUs have NCCL. It exists to
/// test the sharding and the wrapper against the unsharded model on the CPU (issue 23, "without the machines").
///
/// Per pass, every rank thread runs `Transformer.forward(rank, batch)` concurrently; the ranks meet in the collectives:
/// an all-reduce of the residual after the vocabulary-parallel embedding, of the branch after o and down, and a gather
/// of the vocabulary slices after the logits. Every rank ends with the same full-vocabulary logits.
public final class SimulatedTensorParallel {
    public let plan: TensorParallelPlan
    /// Rank r's model, on `RankWeights` rank r.
    public let ranks: [CPUModel]
    /// The full model's definition; each rank's CPUModel carries the rank's.
    public let transformer: Transformer
    public let group: CPUCollectiveGroup
    /// Called with each rank's copy of a row-parallel layer's output just before the all-reduce sums them (tests
    /// check that the ranks really hold partial sums): `[rank][rows × hidden]`.
    public var observePartials: ((WeightName, [[Float]]) -> Void)? {
        didSet {
            let observer = observePartials
            group.observe = observer.map { f in { reason, partials in if case .branch(let w) = reason { f(w, partials) } } }
        }
    }
    /// Each rank's `TensorParallelRank`, as the operations its thread runs.
    private var rankOps: [any DecoderOperations] = []
    private let threads: RankThreads
    /// Rank r's full-vocabulary logits, `[maxBatch × vocab]` (with one rank: the model's own logits buffer).
    private var gathered: [UnsafeMutablePointer<Float>] = []

    /// Loads the N ranks from the full checkpoint `weights`. `slices`, if given, replaces the plan's slices of each
    /// rank (tests use it to load a deliberately wrong split). `threads` per rank (each rank's own pool).
    public convenience init(weights: WeightSource, ranks n: Int, threads: Int = 1, maxBatch: Int = 64,
                            slices: [[TensorParallelPlan.Slice]]? = nil) throws {
        try self.init(weights: weights, ranks: n, threads: threads, maxBatch: maxBatch, slices: slices) { $0 }
    }

    /// As above, with each rank's collectives made by `collectives` from its barrier collectives (tests wrap them to
    /// drop a call and see the comparison fail).
    public init<C: TensorParallelCollectives>(weights: WeightSource, ranks n: Int, threads: Int = 1, maxBatch: Int = 64,
                                              slices: [[TensorParallelPlan.Slice]]? = nil,
                                              collectives: (CPUCollectives) -> C) throws where C.Handle == UnsafeMutablePointer<Float> {
        let p = try TensorParallelPlan(config: weights.config, ranks: n)
        plan = p
        transformer = Transformer(config: p.config)
        ranks = try (0..<n).map { r in
            try CPUModel(weights: try RankWeights(weights, plan: p, rank: r, slices: slices?[r]), threads: threads,
                         maxBatch: maxBatch, floatWeights: false)
        }
        try weights.checkAllUsed()
        group = CPUCollectiveGroup(plan: p, maxRows: ranks[0].maxBatch)
        self.threads = try RankThreads(count: n, name: "cpu rank")
        let g = group
        self.threads.onFailure = { g.abort() }
        let rows = ranks[0].maxBatch, v = p.config.vocabSize
        for (r, m) in ranks.enumerated() {
            let full: UnsafeMutablePointer<Float>
            if n == 1 { full = m.buffers.logits } else {
                full = .allocate(capacity: rows * v)
                full.initialize(repeating: 0, count: rows * v)
            }
            gathered.append(full)
            rankOps.append(try TensorParallelRank(plan: p, rank: r, backend: m, collectives: n > 1 ? collectives(CPUCollectives(group: g, rank: r)) : nil,
                                                  fullLogits: full))
        }
    }

    deinit { if plan.ranks > 1 { for g in gathered { g.deallocate() } } }

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
        try forwardEveryRank(tokens, batch: batch, caches: caches)[0]
    }

    /// `forward`, returning every rank's copy of the gathered logits (`[rank][rows × vocab]`): the collectives leave the
    /// same result on every rank.
    public func forwardEveryRank(_ tokens: [Int32], batch: StepBatch, caches: [[KVCache]]) throws -> [[Float]] {
        guard caches.count == ranks.count else { throw KilnError("KV caches for \(caches.count) ranks, but there are \(ranks.count) ranks") }
        try plan.config.checkTokenIDs(tokens)
        return try tokens.withUnsafeBufferPointer { ids in
            for (m, rankCaches) in zip(ranks, caches) {
                m.pass.caches = rankCaches
                try m.beginPass(ids, batch: batch)
            }
            let (transformer, ops) = (self.transformer, rankOps)
            do {
                _ = try threads.run { r in try transformer.forward(ops[r], batch) }
            } catch {
                group.reset()
                throw error
            }
            let rows = ranks[0].pass.logitRows, v = plan.config.vocabSize
            for m in ranks { _ = m.finishPass(batch) }
            return gathered.map { Array(UnsafeBufferPointer(start: $0, count: rows * v)) }
        }
    }
}

// MARK: the CPU backend of a tensor-parallel rank

extension CPUModel: TensorParallelBackend {
    /// Vocabulary-parallel lookup: the rows of the ids in `vocabulary` (this model's table holds those rows), zeros elsewhere.
    public func embed(_ batch: StepBatch, vocabulary: Range<Int>) throws {
        let h = config.hiddenSize
        for (t, id) in pass.ids.enumerated() {
            let row = buffers.x + t * h
            if vocabulary.contains(Int(id)) { embedRow(Int(id) - vocabulary.lowerBound, into: row) } else { row.update(repeating: 0, count: h) }
        }
    }

    public var residualHandle: UnsafeMutablePointer<Float> { buffers.x }
    public var branchHandle: UnsafeMutablePointer<Float> { buffers.branch }
    public var logitsHandle: UnsafeMutablePointer<Float> { buffers.logits }
    public func logitRowsToGather(_ batch: StepBatch) -> Int { pass.logitRows }
}
