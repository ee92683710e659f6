import XCTest
import KilnCore
import KilnCUDA
@testable import KilnEngine

/// How a scheduler plan becomes the GPU's paged step: decode rows first, then the prompt chunks that sample, then the
/// rest; every row's sequence and position, the tables, the sampling slots, and the sampled ids handed back in plan order.
final class PagedPlanLayoutTests: XCTestCase {
    /// Plan order: a chunk that does not finish its prompt (handle 3), a decode row (handle 0), a final chunk (handle 5),
    /// a one-token chunk that does not sample (handle 1), another decode row (handle 7).
    func plan() -> StepPlan {
        var p = StepPlan()
        p.batch = StepBatch(sequences: [.init(id: 3, start: 16, count: 4), .init(id: 0, start: 40, count: 1), .init(id: 5, start: 0, count: 3),
                                        .init(id: 1, start: 7, count: 1), .init(id: 7, start: 99, count: 1)], logits: .last)
        p.tokens = [10, 11, 12, 13, 20, 30, 31, 32, 40, 50]
        p.requests = [103, 100, 105, 101, 107]
        p.blockTables = [[4, 9], [2, 6, 8], [1], [3], [11, 12, 13, 14, 15, 16, 17]]
        p.samples = [false, true, true, false, true]
        return p
    }

    func testDecodeRowsComeFirstThenSamplingChunksThenTheRest() {
        let l = PagedPlanLayout(plan())
        XCTAssertEqual(l.order, [1, 4, 2, 0, 3])
        XCTAssertEqual(l.step.decodeRows, 2)
        XCTAssertEqual(l.step.logitRows, 3, "the two decode rows and the final chunk sample")
        XCTAssertEqual(l.step.chunks, [PagedStep.Chunk(sequence: 2, firstRow: 2, count: 3, start: 0),
                                       PagedStep.Chunk(sequence: 3, firstRow: 5, count: 4, start: 16),
                                       PagedStep.Chunk(sequence: 4, firstRow: 9, count: 1, start: 7)])
        XCTAssertEqual(l.step.rows, 10)
        XCTAssertEqual(l.inputs.ids, [20, 50, 30, 31, 32, 10, 11, 12, 13, 40])
        XCTAssertEqual(l.inputs.rowSequence, [0, 1, 2, 2, 2, 3, 3, 3, 3, 4])
        XCTAssertEqual(l.inputs.rowPosition, [40, 99, 0, 1, 2, 16, 17, 18, 19, 7])
        XCTAssertEqual(l.inputs.lengths, [41, 100, 3, 20, 8])
        XCTAssertEqual(l.inputs.tables, [[2, 6, 8], [11, 12, 13, 14, 15, 16, 17], [1], [4, 9], [3]])
        XCTAssertEqual(l.inputs.slots, [0, 7, 5], "the sampling slot of each logits row is its scheduler handle")
    }

    func testChosenIdsGoBackInPlanOrderForTheSamplingSequencesOnly() {
        let l = PagedPlanLayout(plan())
        // Logits rows: 0 = plan 1 (handle 0), 1 = plan 4 (handle 7), 2 = plan 2 (handle 5).
        XCTAssertEqual(l.planOrder([500, 507, 505]), [500, 505, 507])
    }

    func testADecodeOnlyPlanKeepsItsOrderAndHasNoChunks() {
        var p = StepPlan()
        p.batch = StepBatch(sequences: (0..<3).map { .init(id: 2 - $0, start: 5 + $0, count: 1) }, logits: .last)
        p.tokens = [1, 2, 3]; p.requests = [10, 11, 12]; p.blockTables = [[0], [1], [2]]; p.samples = [true, true, true]
        let l = PagedPlanLayout(p)
        XCTAssertEqual(l.order, [0, 1, 2])
        XCTAssertTrue(l.step.chunks.isEmpty)
        XCTAssertEqual(l.inputs.slots, [2, 1, 0])
        XCTAssertEqual(l.planOrder([7, 8, 9]), [7, 8, 9])
    }
}
