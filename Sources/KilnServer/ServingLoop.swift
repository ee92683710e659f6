import Foundation
import Logging
import KilnCore
import KilnEngine

/// What a request's handler hears from the engine after its request was accepted.
public enum LoopEvent: Sendable {
    /// A sampled token (an end-of-generation id included), with its log-probabilities when they were asked for.
    case token(Int32, TokenLogprobs?)
    case finished(FinishReason)
    /// The engine failed; the request ends with a server error.
    case failed(String)
}

/// A request handed to the loop: the handler keeps it to cancel the request.
public struct Ticket: Hashable, Sendable { let value: UInt64 }

/// Runs a `ServingEngine` (CPU or GPU) on a thread of its own, step after step while there is work (iteration-level batching:
/// requests join and leave between steps), so model work never runs on the server's event loops or its tasks.
/// Handlers talk to it only through `submit` and `cancel`, which queue commands under a lock; the loop applies them
/// between steps and answers through continuations.
public final class ServingLoop: @unchecked Sendable {
    private let engine: any ServingEngine
    private let metrics: ServerMetrics?
    private let logger: Logger
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var commands: [Command] = []
    private var nextTicket: UInt64 = 0
    private var stopping = false
    private var draining = false
    private var busy = false
    private var broken: String?
    // Owned by the loop thread.
    private var sinks: [RequestID: AsyncStream<LoopEvent>.Continuation] = [:]
    private var requestOfTicket: [Ticket: RequestID] = [:]
    private var ticketOfRequest: [RequestID: Ticket] = [:]
    private var thread: Thread?
    private let finishedThread = DispatchSemaphore(value: 0)

    enum Command {
        case submit(Ticket, GenerationRequest, SamplingOptions, Int?, CheckedContinuation<Result<Void, APIError>, Never>,
                    AsyncStream<LoopEvent>.Continuation)
        case cancel(Ticket)
        case cancelAll
    }

    public init(engine: any ServingEngine, metrics: ServerMetrics?, logger: Logger) {
        self.engine = engine; self.metrics = metrics; self.logger = logger
    }

    public func start() {
        let t = Thread { [self] in run(); finishedThread.signal() }
        t.name = "kiln-serving-loop"
        thread = t
        t.start()
    }

    /// Queues `request`; returns once the engine accepted it (with its events and the ticket to cancel it) or refused it
    /// (the queue is full, the prompt is too long, the server is shutting down).
    public func submit(_ request: GenerationRequest, sampling: SamplingOptions, logprobs: Int?) async
        -> Result<(Ticket, AsyncStream<LoopEvent>), APIError> {
        let ticket = enqueueTicket()
        let (events, sink) = AsyncStream<LoopEvent>.makeStream()
        // A handler that goes away (its client disconnected, its task was cancelled) cancels its request.
        sink.onTermination = { [weak self] _ in self?.cancel(ticket) }
        let accepted = await withCheckedContinuation { (answer: CheckedContinuation<Result<Void, APIError>, Never>) in
            send(.submit(ticket, request, sampling, logprobs, answer, sink))
        }
        return accepted.map { (ticket, events) }
    }

    /// Cancels a request (its blocks are freed at the next step); nothing happens if it has finished.
    public func cancel(_ ticket: Ticket) { send(.cancel(ticket)) }

    /// Refuses new requests from now on (503), letting the running ones go on.
    public func beginDraining() { condition.lock(); draining = true; condition.unlock() }

    /// Cancels every waiting and running request.
    public func cancelAll() { send(.cancelAll) }

    /// Whether any request is still waiting or running (or a command is queued).
    public var isBusy: Bool { condition.lock(); defer { condition.unlock() }; return busy || !commands.isEmpty }

    /// nil while healthy; the error that stopped the engine otherwise.
    public var failure: String? { condition.lock(); defer { condition.unlock() }; return broken }
    public var isDraining: Bool { condition.lock(); defer { condition.unlock() }; return draining }

    /// Cancels what is left, lets the loop finish its last step and ends the thread.
    public func stop() {
        condition.lock(); stopping = true; commands.append(.cancelAll); condition.signal(); condition.unlock()
        if thread != nil { finishedThread.wait(); thread = nil }
    }

    private func enqueueTicket() -> Ticket {
        condition.lock(); defer { condition.unlock() }
        nextTicket += 1
        return Ticket(value: nextTicket)
    }

    private func send(_ command: Command) {
        condition.lock()
        commands.append(command)
        condition.signal()
        condition.unlock()
    }

    private func run() {
        do { try engine.attachToCurrentThread() } catch { fail("\(error)") }
        publish()  // the gauges hold the idle pool before the first request
        while true {
            condition.lock()
            while commands.isEmpty && (!engine.hasWork || broken != nil) && !stopping { condition.wait() }
            let batch = commands
            commands.removeAll()
            let refuse: APIError? = broken.map { APIError.server("the engine failed: \($0)") } ?? (draining || stopping ? .shuttingDown : nil)
            condition.unlock()

            for c in batch { apply(c, refuse: refuse) }
            if engine.hasWork && broken == nil {
                do {
                    dispatch(try engine.step())
                } catch {
                    fail("\(error)")
                }
            }
            publish()
            condition.lock()
            busy = !sinks.isEmpty || (engine.hasWork && broken == nil)
            let done = stopping && !busy && commands.isEmpty
            condition.unlock()
            if done { return }
        }
    }

    private func apply(_ command: Command, refuse: APIError?) {
        switch command {
        case .submit(let ticket, let request, let sampling, let logprobs, let answer, let sink):
            if let refuse { answer.resume(returning: .failure(refuse)); sink.finish(); return }
            switch engine.submit(request, sampling: sampling, logprobs: logprobs) {
            case .accepted(let id):
                sinks[id] = sink
                requestOfTicket[ticket] = id; ticketOfRequest[id] = ticket
                answer.resume(returning: .success(()))
            case .queueFull(let limit):
                answer.resume(returning: .failure(.queueFull(limit: limit))); sink.finish()
            case .rejected(let reason):
                answer.resume(returning: .failure(.invalid(reason, code: "context_length_exceeded"))); sink.finish()
            }
        case .cancel(let ticket):
            if let id = requestOfTicket[ticket] { engine.cancel(id) }
        case .cancelAll:
            engine.cancelAll()
        }
    }

    private func dispatch(_ events: [SchedulerEvent]) {
        for e in events {
            switch e {
            case .token(let id, let token):
                sinks[id]?.yield(.token(token, engine.stepLogprobs[id]))
            case .finished(let id, let reason):
                let sink = sinks.removeValue(forKey: id)
                if let ticket = ticketOfRequest.removeValue(forKey: id) { requestOfTicket[ticket] = nil }
                sink?.yield(.finished(reason))
                sink?.finish()
            }
        }
    }

    /// The engine's state is unknown after a failed step: every request ends with the error, new ones are refused.
    private func fail(_ message: String) {
        logger.error("serving engine failed: \(message)")
        condition.lock(); broken = message; condition.unlock()
        for (_, sink) in sinks { sink.yield(.failed(message)); sink.finish() }
        sinks.removeAll(); requestOfTicket.removeAll(); ticketOfRequest.removeAll()
    }

    private func publish() {
        guard let metrics else { return }
        let pool = engine.scheduler.cache.pool
        metrics.engineState(waiting: engine.scheduler.waitingCount, running: engine.scheduler.runningCount,
                            blocksUsed: pool.usedCount, blocksFree: pool.freeCount, blocksCached: pool.cachedFreeCount,
                            prefixCacheHits: pool.cacheHits)
    }
}
