import Foundation
import KilnCore

/// One persistent thread per tensor-parallel rank. `run` hands every rank's thread the same body and waits for all of
/// them: the ranks' forward passes run concurrently and meet in their collectives (a barrier on the CPU, NCCL on GPUs,
/// where each GPU's context is made current on its own thread once, by `setup`).
///
/// With one rank there is no thread: `setup` and every body run on the caller's thread (nothing to wait for, and no
/// hand-off on the decode path of `--tp 1`).
public final class RankThreads: @unchecked Sendable {
    public let count: Int
    private let workers: [Worker]
    private let finished = DispatchSemaphore(value: 0)
    /// Called once when a rank's body throws, before the other ranks are waited for: it must release ranks blocked in a
    /// collective (the CPU barrier's abort), or they would wait forever for the failed one.
    public var onFailure: (() -> Void)?

    private final class Worker: @unchecked Sendable {
        let wake = DispatchSemaphore(value: 0)
        // Written by `run` before `wake` is signalled and read by the worker after it wakes.
        var job: (() -> Void)?
        var stop = false
    }

    /// Starts `count` threads (none for one rank) and runs `setup(rank)` on each; the first error is thrown.
    public init(count: Int, name: String = "rank", setup: @escaping (Int) throws -> Void = { _ in }) throws {
        guard count >= 1 else { throw KilnError("tensor parallelism needs at least 1 rank, got \(count)") }
        self.count = count
        if count == 1 {
            workers = []
            try setup(0)
            return
        }
        workers = (0..<count).map { _ in Worker() }
        for (r, w) in workers.enumerated() {
            let done = finished
            let t = Thread {
                while true {
                    w.wake.wait()
                    if w.stop { return }
                    w.job?()
                    w.job = nil
                    done.signal()
                }
            }
            t.name = "\(name) \(r)"
            t.stackSize = 8 << 20
            t.start()
        }
        _ = try run { try setup($0) }
    }

    deinit {
        for w in workers { w.stop = true; w.wake.signal() }
    }

    /// Runs `body(rank)` on every rank's thread at once and returns the results in rank order; the first error thrown
    /// (in time) is rethrown once every rank has returned.
    public func run<T>(_ body: (Int) throws -> T) throws -> [T] {
        if workers.isEmpty { return [try body(0)] }
        let results = UnsafeMutableBufferPointer<Result<T, Error>?>.allocate(capacity: count)
        results.initialize(repeating: nil)
        defer { results.deinitialize(); results.deallocate() }
        let failureLock = NSLock()
        var firstError: Error? = nil
        let onFailure = self.onFailure
        withoutActuallyEscaping(body) { body in
            for (r, w) in workers.enumerated() {
                w.job = {
                    do { results[r] = .success(try body(r)) } catch {
                        results[r] = .failure(error)
                        failureLock.lock()
                        let first = firstError == nil
                        if first { firstError = error }
                        failureLock.unlock()
                        if first { onFailure?() }
                    }
                }
                w.wake.signal()
            }
            for _ in workers { finished.wait() }
        }
        // The error that started it, not the others' "another rank failed" that it caused.
        if let firstError { throw firstError }
        return results.map { try! $0!.get() }
    }
}
