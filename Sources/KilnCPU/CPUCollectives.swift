import Foundation
import KilnCore
import KilnModels

/// A barrier for the rank threads of one process that a failing rank can break: `abort` wakes every waiter with an
/// error, so the other ranks return instead of waiting forever for the one that threw.
final class RankBarrier: @unchecked Sendable {
    private let parties: Int
    private let condition = NSCondition()
    private var waiting = 0
    private var generation = 0
    private var aborted = false

    init(parties: Int) { self.parties = parties }

    func wait() throws {
        condition.lock(); defer { condition.unlock() }
        guard !aborted else { throw KilnError("another tensor-parallel rank failed") }
        let mine = generation
        waiting += 1
        if waiting == parties {
            waiting = 0; generation += 1
            condition.broadcast()
            return
        }
        while mine == generation && !aborted { condition.wait() }
        if aborted { throw KilnError("another tensor-parallel rank failed") }
    }

    func abort() { condition.lock(); aborted = true; condition.broadcast(); condition.unlock() }

    /// Ready for the next pass after a failed one (every rank has returned).
    func reset() { condition.lock(); aborted = false; waiting = 0; condition.unlock() }
}

/// The state the CPU ranks share: a barrier, each rank's buffer of the collective in progress, and the scratch the
/// all-reduce sums into.
public final class CPUCollectiveGroup: @unchecked Sendable {
    public let plan: TensorParallelPlan
    let barrier: RankBarrier
    /// Rank r's buffer of the collective in progress, posted before the first barrier.
    fileprivate let posted: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>
    fileprivate let sum: UnsafeMutablePointer<Float>   // [maxRows × hidden]
    let sumCapacity: Int
    /// Called on rank 0's thread with every rank's buffer just before an all-reduce sums them (`[rank][count]`).
    public var observe: ((TensorParallelReduction, [[Float]]) -> Void)?

    /// `maxRows`: the most token rows of a pass (the all-reduce's scratch holds `maxRows × hidden`).
    public init(plan: TensorParallelPlan, maxRows: Int) {
        self.plan = plan
        barrier = RankBarrier(parties: plan.ranks)
        posted = .allocate(capacity: plan.ranks)
        posted.initialize(repeating: nil, count: plan.ranks)
        sumCapacity = max(1, maxRows * plan.config.hiddenSize)
        sum = .allocate(capacity: sumCapacity)
        sum.initialize(repeating: 0, count: sumCapacity)
    }

    deinit { posted.deallocate(); sum.deallocate() }

    /// Releases ranks blocked in a collective after one rank failed (`RankThreads.onFailure`).
    public func abort() { barrier.abort() }
    /// Makes the group usable again once every rank has returned from a failed pass.
    public func reset() { barrier.reset() }
}

/// One rank's collectives on the CPU: the ranks are threads of one process that meet at a barrier. The all-reduce sums
/// the ranks' buffers in rank order (each rank sums its share of the elements into the shared scratch, then every rank
/// copies the whole sum), so every rank ends with the same bits; the gather copies each rank's vocabulary columns.
public struct CPUCollectives: TensorParallelCollectives {
    public let group: CPUCollectiveGroup
    public let rank: Int
    public init(group: CPUCollectiveGroup, rank: Int) { self.group = group; self.rank = rank }

    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, _ reason: TensorParallelReduction) throws {
        let g = group, n = g.plan.ranks
        guard count <= g.sumCapacity else { throw KilnError("all-reduce of \(count) floats exceeds the scratch of \(g.sumCapacity)") }
        g.posted[rank] = buffer
        try g.barrier.wait()                        // every rank's buffer is complete and posted
        if rank == 0, let observe = g.observe {
            observe(reason, (0..<n).map { Array(UnsafeBufferPointer(start: g.posted[$0]!, count: count)) })
        }
        let mine = Self.share(count, rank, n)
        for i in mine {
            var s = g.posted[0]![i]
            for r in 1..<n { s += g.posted[r]![i] }
            g.sum[i] = s
        }
        try g.barrier.wait()                        // the whole sum is in the scratch; no rank reads another's buffer now
        buffer.update(from: g.sum, count: count)
    }

    public func gatherVocabulary(_ slice: UnsafeMutablePointer<Float>, rows: Int, into full: UnsafeMutablePointer<Float>) throws {
        let g = group, plan = g.plan
        g.posted[rank] = slice
        try g.barrier.wait()                        // every rank's slice is complete
        for r in 0..<plan.ranks { plan.placeLogitsSlice(g.posted[r]!, rank: r, rows: rows, into: full) }
        try g.barrier.wait()                        // no rank overwrites its slice while another still reads it
    }

    /// Rank r's contiguous share of `count` elements.
    static func share(_ count: Int, _ r: Int, _ n: Int) -> Range<Int> {
        let base = count / n, extra = count % n, start = r * base + min(r, extra)
        return start..<(start + base + (r < extra ? 1 : 0))
    }
}
