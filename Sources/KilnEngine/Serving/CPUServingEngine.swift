import KilnCore
import KilnCPU

/// The scheduler driving the CPU backend: each step is one `CPUModel.forward` over every scheduled sequence's rows
/// (decode rows and prefill chunks together, so concurrent requests share the weight reads).
///
/// The KV cache is paged: one `KVBlockStorage` holds the scheduler's whole block pool, and each scheduler handle is a
/// `KVCache` view whose table is set to the scheduler's block table before every pass. With prefix caching on, a request
/// whose prompt starts with full blocks another request computed (a system prompt, the earlier turns of a chat) gets
/// those blocks in its table and prefills only the rest. Only full blocks are shared and a sequence only writes
/// positions from its first uncached one, so a shared block is never written (no copy-on-write); the scheduler caches
/// at most `prompt - 1` positions, so every request computes at least its last prompt token's logits.
public final class CPUServingEngine: ServingEngine {
    public let model: CPUModel
    public let scheduler: Scheduler
    /// The keys and values of every block of the scheduler's pool.
    public let storage: KVBlockStorage
    /// [maxSequences] one cache view per scheduler handle (`StepBatch.Sequence.id`).
    private let caches: [KVCache]
    private var book = RequestBook()
    /// Each running request's sampler (its random stream).
    private var samplers: [RequestID: Sampler] = [:]
    /// The log-probabilities of the tokens the last `step()` sampled, for the requests that asked for them.
    public private(set) var stepLogprobs: [RequestID: TokenLogprobs] = [:]
    /// Prompt and generated rows run through the model so far (cached prefixes are not run).
    public private(set) var computedRows = 0

    /// `tokenBudget` rows per forward pass (at most the model's `maxBatch`, its default). `kvBlocks` sizes the pool
    /// (default: enough for every sequence to reach `contextLength`; blocks beyond what running sequences hold keep
    /// cached prefixes).
    public init(model: CPUModel, maxSequences: Int, contextLength: Int, maxWaiting: Int, tokenBudget: Int? = nil, blockSize: Int = 16,
                kvBlocks: Int? = nil, prefixCaching: Bool = true) throws {
        guard maxSequences > 0 else { throw KilnError("the CPU serving engine needs at least one sequence, got \(maxSequences)") }
        let budget = min(tokenBudget ?? model.maxBatch, model.maxBatch)
        let blocksPerSequence = (contextLength + blockSize - 1) / blockSize
        let blocks = kvBlocks ?? maxSequences * blocksPerSequence
        scheduler = try Scheduler(SchedulerConfig(blockSize: blockSize, blocks: blocks, maxRunning: maxSequences,
                                                  maxWaiting: maxWaiting, tokenBudget: budget, contextLength: contextLength,
                                                  prefixCaching: prefixCaching))
        let storage = try KVBlockStorage(config: model.config, blockSize: blockSize, blockCount: blocks)
        self.storage = storage
        caches = (0..<maxSequences).map { _ in KVCache(storage: storage) }
        self.model = model
    }

    /// Queues a request with its sampling settings. `logprobs`: report each sampled token's log-probability and its
    /// `logprobs` most likely alternatives (at most `TokenLogprobs.maxTop`) in `stepLogprobs`; nil reports none.
    public var deviceDescription: String { "the CPU" }

    public func submit(_ request: GenerationRequest, sampling: SamplingOptions = .greedy, logprobs: Int? = nil) -> EnqueueResult {
        let result = book.submit(request, sampling: sampling, logprobs: logprobs, vocabularySize: model.config.vocabSize, to: scheduler)
        if case .accepted(let id) = result { samplers[id] = Sampler(options: sampling) }
        return result
    }

    /// Plans and runs one forward pass; returns its sampled tokens and finished requests.
    public func step() throws -> [SchedulerEvent] {
        stepLogprobs.removeAll(keepingCapacity: true)
        let plan = try scheduler.step()
        var events = plan.finished
        guard !plan.isEmpty else { forget(events); return events }
        // Each handle reads and writes through this step's table; positions before `start` were computed by this
        // sequence in earlier steps or, for a cached prefix, by another.
        for (j, s) in plan.batch.sequences.enumerated() {
            try caches[s.id].assign(blocks: plan.blockTables[j], count: s.start)
        }
        var sampled: [Int32] = []
        let vocab = model.config.vocabSize
        try plan.tokens.withUnsafeBufferPointer { tokens in
            let logits = try model.forward(tokens, batch: plan.batch, caches: caches)
            // `.last`: one row per sequence, in batch order; only sequences that reached their last token sample.
            for (j, id) in plan.requests.enumerated() where plan.samples[j] {
                let row = UnsafeBufferPointer(rebasing: logits[j * vocab..<(j + 1) * vocab])
                let prompt = book[id]!.prompt
                let token = samplers[id]!.sample(row, history: prompt + (scheduler.generated(id) ?? []), promptLength: prompt.count)
                sampled.append(token)
                if let top = book[id]!.logprobs { stepLogprobs[id] = TokenLogprobs.compute(row, token: token, top: top) }
            }
        }
        computedRows += plan.batch.rows
        let done = try scheduler.complete(plan, sampled: sampled)
        forget(done)
        events += done
        return events
    }

    private func forget(_ events: [SchedulerEvent]) {
        book.forget(events)
        for case .finished(let id, _) in events { samplers[id] = nil }
    }
}
