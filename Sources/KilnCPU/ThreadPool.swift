import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A persistent pool of worker threads with a cheap spinning barrier.
///
/// A decode step runs ~200 small parallel sections (one per matrix-vector product or attention pass);
/// waking threads through the kernel for each would cost more than the work itself, so workers spin on a
/// generation counter for a while after each job and only then park on a condition variable
/// (so an idle pool, e.g. while a chat waits for input, costs no CPU).
public final class ThreadPool: @unchecked Sendable {
    /// Number of threads taking part in a job, the caller included.
    public var threadCount: Int { state.threadCount }
    private let state: PoolState

    /// Creates a pool of `threads` threads in all (the caller counts as one; values below 1 mean 1).
    public init(threads: Int) {
        state = PoolState(threadCount: max(1, threads))
        for index in 1..<state.threadCount {
            // Workers hold the shared state (not the pool), so dropping the pool stops them.
            let s = state
            let t = Thread { s.workerLoop(index) }
            t.stackSize = 1 << 20
            t.start()
        }
    }

    deinit { state.stop() }

    /// Runs `body(threadIndex, threadCount)` on every thread of the pool (index 0 on the caller) and returns when all are done.
    public func run(_ body: (Int, Int) -> Void) { state.run(body) }

    /// Splits `0..<count` into `parts` nearly equal contiguous ranges and returns the one for `index`.
    @inline(__always)
    public static func slice(_ count: Int, _ index: Int, _ parts: Int) -> Range<Int> {
        let base = count / parts, extra = count % parts
        let start = index * base + min(index, extra)
        return start..<(start + base + (index < extra ? 1 : 0))
    }
}

private final class PoolState: @unchecked Sendable {
    let threadCount: Int
    private let generation = Atomic<Int>(0)
    private let remaining = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    // Written by the caller before the generation bump and read by workers after they see it.
    private var job: ((Int, Int) -> Void)?

    init(threadCount: Int) {
        self.threadCount = threadCount
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
    }

    func stop() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        pthread_mutex_lock(&mutex)
        pthread_cond_broadcast(&cond)
        pthread_mutex_unlock(&mutex)
    }

    func run(_ body: (Int, Int) -> Void) {
        if threadCount == 1 { body(0, 1); return }
        withoutActuallyEscaping(body) { escaping in
            job = escaping
            remaining.store(threadCount - 1, ordering: .sequentiallyConsistent)
            generation.add(1, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                pthread_mutex_lock(&mutex)
                pthread_cond_broadcast(&cond)
                pthread_mutex_unlock(&mutex)
            }
            escaping(0, threadCount)
            var spins = 0
            while remaining.load(ordering: .acquiring) > 0 {
                spins += 1
                if spins & 255 == 0 { sched_yield() }
            }
            job = nil
        }
    }

    func workerLoop(_ index: Int) {
        // Generation 0 is the state at creation: a thread that starts late must still see the first job.
        var seen = 0
        while true {
            var spins = 0
            var current = generation.load(ordering: .acquiring)
            // Spin (yielding now and then, since the cores may be shared) before parking.
            while current == seen && spins < 100_000 {
                spins += 1
                if spins & 255 == 0 { sched_yield() }
                current = generation.load(ordering: .acquiring)
            }
            if current == seen {
                pthread_mutex_lock(&mutex)
                sleepers.add(1, ordering: .sequentiallyConsistent)
                current = generation.load(ordering: .sequentiallyConsistent)
                while current == seen {
                    pthread_cond_wait(&cond, &mutex)
                    current = generation.load(ordering: .sequentiallyConsistent)
                }
                sleepers.subtract(1, ordering: .sequentiallyConsistent)
                pthread_mutex_unlock(&mutex)
            }
            seen = current
            if stopping.load(ordering: .sequentiallyConsistent) { return }
            job?(index, threadCount)
            remaining.subtract(1, ordering: .releasing)
        }
    }
}
