import KilnCore

/// What the server's loop drives, one engine per backend: requests in, one `step()` at a time (a forward pass over every
/// scheduled sequence: decode rows and prompt chunks together), events out. `CPUServingEngine` and `GPUServingEngine`.
public protocol ServingEngine: AnyObject {
    var scheduler: Scheduler { get }
    /// Queues a request with its sampling settings; `logprobs`: report each sampled token's log-probability and that
    /// many alternatives (at most `TokenLogprobs.maxTop`) in `stepLogprobs`.
    func submit(_ request: GenerationRequest, sampling: SamplingOptions, logprobs: Int?) -> EnqueueResult
    @discardableResult func cancel(_ id: RequestID) -> Bool
    /// Cancels every waiting and running request (a server shutting down); they end at the next step.
    func cancelAll()
    var hasWork: Bool { get }
    /// Plans and runs one forward pass; returns its sampled tokens and finished requests.
    func step() throws -> [SchedulerEvent]
    /// The log-probabilities of the tokens the last `step()` sampled, for the requests that asked for them.
    var stepLogprobs: [RequestID: TokenLogprobs] { get }
    /// Prompt and generated rows run through the model so far (cached prefixes are not run).
    var computedRows: Int { get }
    /// Where it runs, for logs ("the CPU", "NVIDIA H200").
    var deviceDescription: String { get }
    /// Called once on the thread that will call `step()` (the server's serving loop has one of its own), before the first
    /// step: the GPU engine makes its CUDA context current there (a context is current per thread).
    func attachToCurrentThread() throws
}

extension ServingEngine {
    public func attachToCurrentThread() throws {}
    public func cancelAll() {
        for id in scheduler.waitingIDs + scheduler.runningIDs { scheduler.cancel(id) }
    }
    @discardableResult public func cancel(_ id: RequestID) -> Bool { scheduler.cancel(id) }
    public var hasWork: Bool { scheduler.hasWork }

    /// Steps until every request has finished, handing each event to `onEvent` as it happens.
    public func runUntilIdle(_ onEvent: (SchedulerEvent) -> Void = { _ in }) throws {
        while hasWork { for e in try step() { onEvent(e) } }
    }
}

/// What a serving engine keeps per accepted request besides the scheduler's state: its prompt, sampling settings and
/// the log-probability alternatives it asked for. Both engines admit requests through it, so they refuse the same bad
/// input the same way.
struct RequestBook {
    struct Entry {
        var prompt: [Int32]
        var sampling: SamplingOptions
        /// Alternatives per token (0: the chosen token's only); nil: no log-probabilities.
        var logprobs: Int?
    }
    private var entries: [RequestID: Entry] = [:]

    subscript(id: RequestID) -> Entry? { entries[id] }

    /// Checks what the scheduler does not (log-probability alternatives, token ids within `vocabularySize`), enqueues,
    /// and records the accepted request.
    mutating func submit(_ request: GenerationRequest, sampling: SamplingOptions, logprobs: Int?, vocabularySize: Int,
                         to scheduler: Scheduler) -> EnqueueResult {
        if let logprobs, !(0...TokenLogprobs.maxTop).contains(logprobs) {
            return .rejected("log-probability alternatives must be 0…\(TokenLogprobs.maxTop), got \(logprobs)")
        }
        if request.prompt.contains(where: { $0 < 0 || Int($0) >= vocabularySize }) {
            return .rejected("a prompt token is outside the vocabulary (0…\(vocabularySize - 1))")
        }
        let result = scheduler.enqueue(request)
        if case .accepted(let id) = result { entries[id] = Entry(prompt: request.prompt, sampling: sampling, logprobs: logprobs) }
        return result
    }

    /// Drops the finished requests of `events`.
    mutating func forget(_ events: [SchedulerEvent]) {
        for case .finished(let id, _) in events { entries[id] = nil }
    }
}
