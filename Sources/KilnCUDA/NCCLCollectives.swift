import Foundation
import KilnCore
import KilnGPU
import KilnModels

/// One GPU rank's collectives over NCCL, enqueued on the rank's stream (so a decode step's CUDA graph captures them with
/// its kernels; every rank's thread issues its own calls, so no ncclGroupStart/End is needed):
/// - all-reduce: `ncclAllReduce` sum in place, in the buffer's own type (the f32 residual after the embedding, the bf16
///   branch after o and down: each partial sum NCCL forms is rounded to bf16, so N ranks round up to N − 1 times where
///   one GPU rounds the GEMM's output once).
/// - gather: `ncclAllGather` of the `[rows × V/N]` f32 slices, rank-major. One row (bs = 1 decode) is already the
///   padded full row and lands straight in the full-vocabulary buffer; more rows go through `staging`, then one 2-D copy
///   per rank puts its `[rows × |vocabRange(r)|]` block at its columns of `[rows × V]` (the padded columns dropped).
public final class NCCLCollectives: TensorParallelCollectives {
    public let plan: TensorParallelPlan
    public let rank: Int
    let nccl: NCCL
    let comm: NCCLComm
    let stream: GPUStream
    /// [ranks × maxRows × V/N] f32: the all-gather's rank-major result for more than one row.
    let staging: DeviceBuffer<Float>
    let maxRows: Int

    /// `maxRows`: the most logits rows a gather moves (the rank model's logits buffer rows). Allocates on the current
    /// context, which must be `stream`'s (the rank's thread).
    public init(nccl: NCCL, comm: NCCLComm, plan: TensorParallelPlan, rank: Int, stream: GPUStream, maxRows: Int) throws {
        self.nccl = nccl; self.comm = comm; self.plan = plan; self.rank = rank; self.stream = stream; self.maxRows = maxRows
        staging = try DeviceBuffer<Float>(stream.context, count: max(1, plan.ranks * maxRows * plan.rankConfig.vocabSize))
    }

    /// Floats the full-vocabulary logits buffer needs for `rows` rows: the one-row gather writes the padded row.
    public static func fullLogitsCount(plan: TensorParallelPlan, rows: Int) -> Int {
        max(rows * plan.config.vocabSize, plan.paddedVocabSize)
    }

    public func allReduceSum(_ buffer: GPUCollectiveBuffer, count: Int, _ reason: TensorParallelReduction) throws {
        try nccl.allReduce(buffer.address, into: buffer.address, count: count, buffer.type, .sum, comm: comm, stream: stream.handle)
    }

    public func gatherVocabulary(_ slice: GPUCollectiveBuffer, rows: Int, into full: GPUCollectiveBuffer) throws {
        guard rows >= 1, rows <= maxRows else { throw KilnError("logits gather of \(rows) rows outside 1…\(maxRows)") }
        let layout = VocabularyGather(plan: plan, rows: rows)
        let gathered = layout.direct ? full.address : staging.address
        try nccl.allGather(slice.address, into: gathered, count: layout.countPerRank, .float32, comm: comm, stream: stream.handle)
        for c in layout.copies {
            try stream.copy2D(from: staging.address + UInt64(c.srcByte), srcPitch: c.srcPitch, to: full.address + UInt64(c.dstByte),
                              dstPitch: c.dstPitch, widthBytes: c.widthBytes, rows: c.rows)
        }
    }
}

/// How `NCCLCollectives.gatherVocabulary` turns the ranks' `[rows × V/N]` f32 slices into `[rows × V]` rows: the
/// all-gather puts them rank-major (rank r's block at r·rows·V/N); one row is then already the padded vocabulary row and
/// is gathered straight into the full buffer (`direct`), more rows land in the staging buffer and one 2-D copy per rank
/// moves its block to its columns. Plain data, so the layout is tested on the CPU.
struct VocabularyGather: Equatable {
    /// A 2-D copy in bytes: `rows` rows of `widthBytes`, from staging + srcByte (rows srcPitch apart) to full + dstByte.
    struct Copy: Equatable { var srcByte, srcPitch, dstByte, dstPitch, widthBytes, rows: Int }
    /// Floats each rank contributes to the all-gather.
    let countPerRank: Int
    /// The all-gather writes the full buffer itself (one row); else the staging buffer, then `copies`.
    let direct: Bool
    let copies: [Copy]

    init(plan: TensorParallelPlan, rows: Int) {
        let width = plan.rankConfig.vocabSize, vocab = plan.config.vocabSize
        countPerRank = rows * width
        // Rank-major [ranks × V/N] is the padded vocabulary row: the columns past V (the last rank's padding) are never read.
        direct = rows == 1
        copies = direct ? [] : (0..<plan.ranks).compactMap { r in
            let cols = plan.vocabRange(rank: r)
            return cols.isEmpty ? nil : Copy(srcByte: 4 * r * rows * width, srcPitch: 4 * width, dstByte: 4 * cols.lowerBound,
                                             dstPitch: 4 * vocab, widthBytes: 4 * cols.count, rows: rows)
        }
    }
}
