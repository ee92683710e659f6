import KilnCore
import KilnCUDA

/// A scheduler plan laid out for the GPU's paged step (`GPUModel.runPaged`): the decode sequences (one row that
/// samples) first, so the paged decode kernel reads them as batch 0..<decodeRows; then the prompt chunks that end
/// their prompt (they sample), then those that do not. Logits come for the sampling sequences only, so the sampling
/// kernel never advances the random stream or penalty state of a sequence that does not draw.
public struct PagedPlanLayout: Equatable {
    public var step: PagedStep
    public var inputs: PagedStepInputs
    /// order[k]: the plan's index of the sequence at batch index k.
    public var order: [Int]

    public init(_ plan: StepPlan) {
        let seqs = plan.batch.sequences
        var firstRow: [Int] = []
        var row = 0
        for s in seqs { firstRow.append(row); row += s.count }
        let decode = seqs.indices.filter { seqs[$0].count == 1 && plan.samples[$0] }
        let finalChunks = seqs.indices.filter { seqs[$0].count > 1 && plan.samples[$0] }
        let otherChunks = seqs.indices.filter { !plan.samples[$0] }
        order = decode + finalChunks + otherChunks
        var inputs = PagedStepInputs()
        var chunks: [PagedStep.Chunk] = []
        var newRow = 0
        for (k, j) in order.enumerated() {
            let s = seqs[j]
            inputs.ids += plan.tokens[firstRow[j]..<(firstRow[j] + s.count)]
            inputs.rowSequence += [Int32](repeating: Int32(k), count: s.count)
            inputs.rowPosition += (s.start..<(s.start + s.count)).map { Int32($0) }
            inputs.lengths.append(Int32(s.start + s.count))
            inputs.tables.append(plan.blockTables[j].map { Int32($0) })
            if k >= decode.count { chunks.append(PagedStep.Chunk(sequence: k, firstRow: newRow, count: s.count, start: s.start)) }
            newRow += s.count
        }
        let logitRows = decode.count + finalChunks.count
        inputs.slots = order.prefix(logitRows).map { Int32(seqs[$0].id) }
        self.inputs = inputs
        step = PagedStep(decodeRows: decode.count, chunks: chunks, logitRows: logitRows)
    }

    /// The chosen ids of the step's logits rows (batch order) in the order `Scheduler.complete` takes them: one per
    /// sampling sequence, in plan order.
    public func planOrder(_ chosen: [Int32]) -> [Int32] {
        var batchIndex = [Int](repeating: -1, count: order.count)
        for (k, j) in order.enumerated() { batchIndex[j] = k }
        return batchIndex.filter { $0 >= 0 && $0 < step.logitRows }.map { chosen[$0] }
    }
}
