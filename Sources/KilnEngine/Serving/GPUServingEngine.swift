import KilnCore
import KilnCUDA
import KilnKernels

/// The scheduler driving the GPU backend over its paged KV cache: each step is one `GPUModel.runPaged` over every
/// scheduled sequence (decode rows and prompt chunks together). Steps of decode rows only replay a CUDA graph per batch
/// bucket; steps with prompt chunks run eagerly. The next tokens are chosen on the device with each request's settings
/// (a sampling slot per scheduler handle), so only ids (and asked-for log-probabilities) cross to the host.
///
/// Prefix caching works as on the CPU (`CPUServingEngine`): shared full blocks are never written.
/// Log-probabilities here are the sampling kernel's: log-softmax of the logits after the request's penalties (the CPU
/// engine reports them before penalties; without penalties the two agree).
public final class GPUServingEngine: ServingEngine {
    public let model: GPUModel
    public let scheduler: Scheduler
    private var book = RequestBook()
    /// The request whose settings each sampling slot (scheduler handle) holds.
    private var slotOwner: [RequestID?]
    public private(set) var stepLogprobs: [RequestID: TokenLogprobs] = [:]
    public private(set) var computedRows = 0

    /// `model` must have been made with a paged cache (`GPUModel.paged`); its blocks, sequences and context become the
    /// scheduler's. `tokenBudget`: rows per step (default and maximum: the model's `maxRows`).
    public init(model: GPUModel, maxWaiting: Int, tokenBudget: Int? = nil, prefixCaching: Bool = true) throws {
        guard let paged = model.pagedConfig else { throw KilnError("the GPU serving engine needs a model with the paged KV cache") }
        let budget = min(tokenBudget ?? model.maxRows, model.maxRows)
        guard budget >= 1 else { throw KilnError("token budget \(budget): at least one row per step") }
        scheduler = try Scheduler(SchedulerConfig(blockSize: paged.blockSize, blocks: paged.blocks, maxRunning: paged.maxSequences,
                                                  maxWaiting: maxWaiting, tokenBudget: budget, contextLength: paged.contextLength,
                                                  prefixCaching: prefixCaching))
        slotOwner = Array(repeating: nil, count: paged.maxSequences)
        self.model = model
    }

    public var deviceDescription: String { model.context.info.name }
    public func attachToCurrentThread() throws { try model.context.makeCurrent() }

    public func submit(_ request: GenerationRequest, sampling: SamplingOptions = .greedy, logprobs: Int? = nil) -> EnqueueResult {
        book.submit(request, sampling: sampling, logprobs: logprobs, vocabularySize: model.config.vocabSize, to: scheduler)
    }

    public func step() throws -> [SchedulerEvent] {
        stepLogprobs.removeAll(keepingCapacity: true)
        let plan = try scheduler.step()
        var events = plan.finished
        guard !plan.isEmpty else { forget(events); return events }
        let layout = PagedPlanLayout(plan)
        var samples = false, logprobs = false
        for k in 0..<layout.step.logitRows {
            let j = layout.order[k], id = plan.requests[j], slot = plan.batch.sequences[j].id
            let entry = book[id], options = entry?.sampling ?? .greedy
            if slotOwner[slot] != id {
                // A request's first step in this slot (or its return after preemption to another): its settings, and its
                // random stream and penalties where its draws left them.
                let generated = scheduler.generated(id) ?? []
                let prompt = entry?.prompt ?? []
                try model.configureSlot(slot, options: options, history: prompt + generated, promptLength: prompt.count, step: generated.count)
                slotOwner[slot] = id
            }
            samples = samples || Sampling.RowParams(options).needsSampleKernel
            logprobs = logprobs || entry?.logprobs != nil
        }
        let selection: PagedSelection = logprobs ? .sampleWithLogprobs : samples ? .sample : .argmax
        let chosen = try model.runPaged(layout.step, inputs: layout.inputs, selection: selection)
        if logprobs {
            let rows = try model.pagedLogprobs(rows: layout.step.logitRows, top: TokenLogprobs.maxTop)
            for k in 0..<layout.step.logitRows {
                let id = plan.requests[layout.order[k]]
                guard let top = book[id]?.logprobs else { continue }
                func entry(_ token: Int32, _ v: Float) -> TokenLogprobs.Entry { .init(token: token, logprob: v.isFinite ? max(-9999, v) : -9999) }
                stepLogprobs[id] = TokenLogprobs(chosen: entry(chosen[k], rows[k].chosen),
                                                 top: (0..<top).map { entry(rows[k].topIds[$0], rows[k].topValues[$0]) })
            }
        }
        computedRows += plan.batch.rows
        let done = try scheduler.complete(plan, sampled: layout.planOrder(chosen))
        forget(done)
        events += done
        return events
    }

    private func forget(_ events: [SchedulerEvent]) {
        // A slot keeps a finished request's settings until its next owner configures it (request ids are never reused).
        book.forget(events)
    }
}
