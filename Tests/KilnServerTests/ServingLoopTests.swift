import XCTest
import Foundation
import Logging
import KilnCore
import KilnCPU
import KilnModels
import KilnEngine
@testable import KilnServer

/// The serving loop on SmolLM2: requests submitted from concurrent tasks run on the loop's thread and get the same
/// greedy tokens as `Generator` alone; a full queue refuses with 429; a cancelled request frees its blocks.
final class ServingLoopTests: XCTestCase {
    nonisolated(unsafe) static var shared: CPUModel?
    static func model() throws -> CPUModel {
        if let m = shared { return m }
        let m = try CPUModel(weights: try GGUFModel(path: ModelStore.defaultModelPath()), threads: ProcessInfo.processInfo.activeProcessorCount)
        shared = m
        return m
    }

    private static func collect(_ events: AsyncStream<LoopEvent>) async -> ([Int32], FinishReason?) {
        var tokens: [Int32] = [], reason: FinishReason?
        for await e in events {
            switch e {
            case .token(let t, _): tokens.append(t)
            case .finished(let r): reason = r
            case .failed(let m): XCTFail(m)
            }
        }
        return (tokens, reason)
    }

    func testConcurrentSubmissionsMatchGeneratorAlone() async throws {
        let model = try Self.model()
        let prompts: [[Int32]] = [[1, 504, 3458, 282], [1, 2000, 1500, 3000, 4000, 5000, 600], [1, 9999]]
        var alone: [[Int32]] = []
        for p in prompts {
            let gen = try Generator(model: model, contextLength: 128)
            var sampler = Sampler(options: .greedy), stats = GenerationStats()
            var out: [Int32] = []
            try gen.generate(prompt: p, maxTokens: 6, sampler: &sampler, endOfGeneration: [], stats: &stats) { out.append($0); return true }
            alone.append(out)
        }
        let loop = ServingLoop(engine: try CPUServingEngine(model: model, maxSequences: 4, contextLength: 128, maxWaiting: 8),
                               metrics: ServerMetrics(), logger: Logger(label: "test"))
        loop.start()
        defer { loop.stop() }
        let results = try await withThrowingTaskGroup(of: (Int, [Int32], FinishReason?).self) { group in
            for (i, p) in prompts.enumerated() {
                group.addTask {
                    let (_, events) = try await loop.submit(GenerationRequest(prompt: p, maxTokens: 6), sampling: .greedy, logprobs: nil).get()
                    let (tokens, reason) = await Self.collect(events)
                    return (i, tokens, reason)
                }
            }
            var out: [(Int, [Int32], FinishReason?)] = []
            for try await r in group { out.append(r) }
            return out.sorted { $0.0 < $1.0 }
        }
        for (i, tokens, reason) in results {
            XCTAssertEqual(tokens, alone[i], "prompt \(i)")
            XCTAssertEqual(reason, .maxTokens)
        }
    }

    func testAFullQueueIsA429AndCancellingFreesTheBlocks() async throws {
        let model = try Self.model()
        let engine = try CPUServingEngine(model: model, maxSequences: 1, contextLength: 256, maxWaiting: 1)
        let metrics = ServerMetrics()
        let loop = ServingLoop(engine: engine, metrics: metrics, logger: Logger(label: "test"))
        loop.start()
        defer { loop.stop() }
        let long = GenerationRequest(prompt: [1, 504, 3458], maxTokens: 200)
        let (first, firstEvents) = try await loop.submit(long, sampling: .greedy, logprobs: nil).get()
        // Wait for the first to run, so the second waits and the third finds the queue full.
        var iterator = firstEvents.makeAsyncIterator()
        guard case .token? = await iterator.next() else { return XCTFail("no first token") }
        let (_, secondEvents) = try await loop.submit(long, sampling: .greedy, logprobs: nil).get()
        switch await loop.submit(long, sampling: .greedy, logprobs: nil) {
        case .success: XCTFail("a third request should not fit a queue of one")
        case .failure(let e): XCTAssertEqual(e.status, 429); XCTAssertEqual(e.retryAfter, 1)
        }
        loop.cancel(first)
        var reason: FinishReason?
        while let e = await iterator.next() { if case .finished(let r) = e { reason = r } }
        XCTAssertEqual(reason, .cancelled)
        loop.cancelAll()
        let (_, second) = await Self.collect(secondEvents)
        XCTAssertEqual(second, .cancelled)
        for _ in 0..<100 where loop.isBusy { try await Task.sleep(nanoseconds: 10_000_000) }
        XCTAssertFalse(loop.isBusy)
        XCTAssertEqual(engine.scheduler.cache.pool.usedCount, 0)
        XCTAssertTrue(metrics.text().contains("kiln_kv_blocks_used 0"), metrics.text())
    }
}

/// The loop calls `attachToCurrentThread` once, on the thread that then runs every `step()` (a GPU engine's CUDA
/// context is current per thread: a loop that stepped on another thread failed with CUDA_ERROR_INVALID_CONTEXT).
final class ServingLoopThreadTests: XCTestCase {
    final class ThreadRecordingEngine: ServingEngine, @unchecked Sendable {
        let inner: CPUServingEngine
        let lock = NSLock()
        var attachedOn: [Thread] = [], steppedOn: [Thread] = []
        init(_ inner: CPUServingEngine) { self.inner = inner }
        var scheduler: Scheduler { inner.scheduler }
        func submit(_ request: GenerationRequest, sampling: SamplingOptions, logprobs: Int?) -> EnqueueResult {
            inner.submit(request, sampling: sampling, logprobs: logprobs)
        }
        func step() throws -> [SchedulerEvent] {
            lock.lock(); steppedOn.append(Thread.current); lock.unlock()
            return try inner.step()
        }
        var stepLogprobs: [RequestID: TokenLogprobs] { inner.stepLogprobs }
        var computedRows: Int { inner.computedRows }
        var deviceDescription: String { inner.deviceDescription }
        func attachToCurrentThread() throws { lock.lock(); attachedOn.append(Thread.current); lock.unlock() }
        func threads() -> (attached: [Thread], stepped: [Thread]) { lock.withLock { (attachedOn, steppedOn) } }
    }

    func testStepsRunOnTheThreadTheEngineWasAttachedTo() async throws {
        let engine = ThreadRecordingEngine(try CPUServingEngine(model: try ServingLoopTests.model(), maxSequences: 2, contextLength: 64, maxWaiting: 4))
        let loop = ServingLoop(engine: engine, metrics: nil, logger: Logger(label: "test"))
        loop.start()
        let (_, events) = try await loop.submit(GenerationRequest(prompt: [1, 504, 3458], maxTokens: 3), sampling: .greedy, logprobs: nil).get()
        var tokens = 0
        for await e in events { if case .token = e { tokens += 1 } }
        loop.stop()
        XCTAssertEqual(tokens, 3)
        let (attached, stepped) = engine.threads()
        XCTAssertEqual(attached.count, 1)
        XCTAssertFalse(stepped.isEmpty)
        XCTAssertTrue(stepped.allSatisfy { $0 === attached.first })
        XCTAssertFalse(attached.first?.isMainThread ?? true)
    }
}
