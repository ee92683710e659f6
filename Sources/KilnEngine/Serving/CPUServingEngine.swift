import KilnCore
import KilnCPU

/// The scheduler driving the CPU backend: each step is one `CPUModel.forward` over every scheduled sequence's rows
/// (decode rows and prefill chunks together, so concurrent requests share the weight reads).
///
/// The CPU cache is not paged yet: each scheduler handle owns a contiguous `KVCache` for the whole context, so the
/// block pool only does the accounting (sized so every handle can reach the context) and prefix caching is off — a
/// hit would skip positions this handle's cache never computed.
public final class CPUServingEngine {
    public let model: CPUModel
    public let scheduler: Scheduler
    /// [maxSequences] one cache per scheduler handle (`StepBatch.Sequence.id`).
    private let caches: [KVCache]
    private var samplers: [RequestID: Sampler] = [:]
    private var prompts: [RequestID: [Int32]] = [:]
    /// Requests that asked for log-probabilities → how many alternatives (0: the chosen token's only).
    private var logprobRequests: [RequestID: Int] = [:]
    /// The log-probabilities of the tokens the last `step()` sampled, for the requests that asked for them.
    public private(set) var stepLogprobs: [RequestID: TokenLogprobs] = [:]

    /// `tokenBudget` rows per forward pass (at most the model's `maxBatch`, its default).
    public init(model: CPUModel, maxSequences: Int, contextLength: Int, maxWaiting: Int, tokenBudget: Int? = nil, blockSize: Int = 16) throws {
        guard maxSequences > 0 else { throw KilnError("the CPU serving engine needs at least one sequence, got \(maxSequences)") }
        let budget = min(tokenBudget ?? model.maxBatch, model.maxBatch)
        let blocksPerSequence = (contextLength + blockSize - 1) / blockSize
        scheduler = try Scheduler(SchedulerConfig(blockSize: blockSize, blocks: maxSequences * blocksPerSequence, maxRunning: maxSequences,
                                                  maxWaiting: maxWaiting, tokenBudget: budget, contextLength: contextLength,
                                                  prefixCaching: false))
        caches = try (0..<maxSequences).map { _ in try KVCache(config: model.config, capacity: contextLength) }
        self.model = model
    }

    /// Queues a request with its sampling settings. `logprobs`: report each sampled token's log-probability and its
    /// `logprobs` most likely alternatives (at most `TokenLogprobs.maxTop`) in `stepLogprobs`; nil reports none.
    public func submit(_ request: GenerationRequest, sampling: SamplingOptions = .greedy, logprobs: Int? = nil) -> EnqueueResult {
        if let logprobs, !(0...TokenLogprobs.maxTop).contains(logprobs) {
            return .rejected("log-probability alternatives must be 0…\(TokenLogprobs.maxTop), got \(logprobs)")
        }
        let result = scheduler.enqueue(request)
        if case .accepted(let id) = result {
            samplers[id] = Sampler(options: sampling)
            prompts[id] = request.prompt
            logprobRequests[id] = logprobs
        }
        return result
    }

    /// Cancels every waiting and running request (a server shutting down); they end at the next step.
    public func cancelAll() {
        for id in scheduler.waitingIDs + scheduler.runningIDs { scheduler.cancel(id) }
    }

    @discardableResult
    public func cancel(_ id: RequestID) -> Bool { scheduler.cancel(id) }

    public var hasWork: Bool { scheduler.hasWork }

    /// Plans and runs one forward pass; returns its sampled tokens and finished requests.
    public func step() throws -> [SchedulerEvent] {
        stepLogprobs.removeAll(keepingCapacity: true)
        let plan = try scheduler.step()
        var events = plan.finished
        guard !plan.isEmpty else { forget(events); return events }
        for s in plan.batch.sequences {
            let cache = caches[s.id]
            // A handle reused by a new (or preempted and recomputed) request starts over.
            if s.start == 0 { cache.reset() }
            guard cache.count == s.start else {
                throw KilnError("CPU serving: sequence \(s.id) starts at \(s.start) but its cache holds \(cache.count) positions")
            }
        }
        var sampled: [Int32] = []
        let vocab = model.config.vocabSize
        try plan.tokens.withUnsafeBufferPointer { tokens in
            let logits = try model.forward(tokens, batch: plan.batch, caches: caches)
            // `.last`: one row per sequence, in batch order; only sequences that reached their last token sample.
            for (j, id) in plan.requests.enumerated() where plan.samples[j] {
                let row = UnsafeBufferPointer(rebasing: logits[j * vocab..<(j + 1) * vocab])
                let history = prompts[id]! + (scheduler.generated(id) ?? [])
                let token = samplers[id]!.sample(row, history: history, promptLength: prompts[id]!.count)
                sampled.append(token)
                if let top = logprobRequests[id] { stepLogprobs[id] = TokenLogprobs.compute(row, token: token, top: top) }
            }
        }
        let done = try scheduler.complete(plan, sampled: sampled)
        forget(done)
        events += done
        return events
    }

    /// Steps until every request has finished, handing each event to `onEvent` as it happens.
    public func runUntilIdle(_ onEvent: (SchedulerEvent) -> Void = { _ in }) throws {
        while hasWork { for e in try step() { onEvent(e) } }
    }

    private func forget(_ events: [SchedulerEvent]) {
        for case .finished(let id, _) in events { samplers[id] = nil; prompts[id] = nil; logprobRequests[id] = nil }
    }
}
