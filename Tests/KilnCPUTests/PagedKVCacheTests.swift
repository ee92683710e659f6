import XCTest
import KilnCore
import KilnModels
@testable import KilnCPU

/// The paged cache: a sequence whose blocks are scattered over shared storage (in any order, some consecutive) gives
/// the logits of the same tokens in a contiguous cache, bit for bit, and sequences sharing prefix blocks read them.
final class PagedKVCacheTests: XCTestCase {
    let config = TinyModelTests.config(.qwen2, style: .halves)   // kvDim 32: two KV heads of 16

    func model(maxBatch: Int = 48) throws -> CPUModel {
        try CPUModel(weights: TinyModelTests.weights(config, dtype: .q8_0, seed: 41), threads: 2, maxBatch: maxBatch)
    }

    func tokens(_ n: Int, seed: Int) -> [Int32] { (0..<n).map { Int32(($0 * 37 + seed * 11 + 5) % 80) } }

    /// Runs `chunks` of `tokens` through `cache` (a view, given `table` before each chunk); all logits, as rows.
    func runPaged(_ m: CPUModel, _ tokens: [Int32], chunks: [Int], cache: KVCache, table: [Int]) throws -> [Float] {
        var out: [Float] = [], start = 0
        for n in chunks {
            try cache.assign(blocks: table, count: start)
            let batch = StepBatch(sequences: [.init(id: 0, start: start, count: n)], logits: .all)
            out += try Array(tokens[start..<start + n]).withUnsafeBufferPointer { try m.forward($0, batch: batch, caches: [cache]) }
            start += n
        }
        return out
    }

    func testScatteredBlocksGiveTheContiguousLogitsBitForBit() throws {
        let m = try model()
        let seq = tokens(60, seed: 1)
        let contiguous = try m.forward(seq, cache: try KVCache(config: config, capacity: 64), logits: .all)
        let storage = try KVBlockStorage(config: config, blockSize: 8, blockCount: 12)
        // Blocks out of order, 6-7 and 9-10 consecutive: six runs over eight blocks, chunks ending inside blocks.
        let table = [3, 0, 6, 7, 1, 9, 10, 2]
        let paged = try runPaged(m, seq, chunks: [30, 1, 29], cache: KVCache(storage: storage), table: table)
        XCTAssertEqual(paged.count, contiguous.count)
        XCTAssertEqual(paged.map(\.bitPattern), contiguous.map(\.bitPattern), "paged logits differ from the contiguous cache's")
        XCTAssertGreaterThan(contiguous.map(abs).max()!, 0.5)
    }

    /// A second sequence given the first's two full blocks as its table's start computes only its own tokens and gets
    /// the logits of its whole prompt run alone; a wrong block in its table (the test's own negative control) does not.
    func testASharedPrefixIsReadFromTheOtherSequencesBlocks() throws {
        let m = try model()
        let prefix = tokens(32, seed: 2), a = prefix + tokens(9, seed: 3), b = prefix + tokens(12, seed: 4)
        let storage = try KVBlockStorage(config: config, blockSize: 16, blockCount: 8)
        _ = try runPaged(m, a, chunks: [a.count], cache: KVCache(storage: storage), table: [5, 2, 7])
        let alone = try m.forward(b, cache: try KVCache(config: config, capacity: 64), logits: .all)
        let tail = Array(alone[(32 * config.vocabSize)...])
        func suffixLogits(_ table: [Int]) throws -> [Float] {
            let cache = KVCache(storage: storage)
            try cache.assign(blocks: table, count: 32)
            let batch = StepBatch(sequences: [.init(id: 0, start: 32, count: b.count - 32)], logits: .all)
            return try Array(b[32...]).withUnsafeBufferPointer { Array(try m.forward($0, batch: batch, caches: [cache])) }
        }
        XCTAssertEqual(try suffixLogits([5, 2, 4]).map(\.bitPattern), tail.map(\.bitPattern))
        XCTAssertNotEqual(try suffixLogits([5, 6, 4]).map(\.bitPattern), tail.map(\.bitPattern), "the shared blocks were not read")
    }

    func testATableThatDoesNotFitIsAnError() throws {
        let storage = try KVBlockStorage(config: config, blockSize: 16, blockCount: 4)
        let cache = KVCache(storage: storage)
        XCTAssertThrowsError(try cache.assign(blocks: [0, 4], count: 0)) { XCTAssertTrue("\($0)".contains("outside"), "\($0)") }
        XCTAssertThrowsError(try cache.assign(blocks: [0, 1], count: 33)) { XCTAssertTrue("\($0)".contains("do not fit"), "\($0)") }
        try cache.assign(blocks: [2], count: 3)
        let m = try model()
        let batch = StepBatch(sequences: [.init(id: 0, start: 3, count: 14)], logits: .last)
        XCTAssertThrowsError(try tokens(14, seed: 5).withUnsafeBufferPointer { try m.forward($0, batch: batch, caches: [cache]) }) {
            XCTAssertTrue("\($0)".contains("context limit"), "\($0)")
        }
    }

    /// The run-wise head (blocks of 16, 5 and 1 positions, out of order) against the contiguous head, bit for bit.
    func testRunWiseAttentionEqualsContiguous() {
        var rng = SplitMix64(seed: 77)
        let d = 64, stride = 2 * d, positions = 37
        let keys = (0..<(positions * stride)).map { _ in Float16((rng.unit() * 2 - 1) * 3) }
        let values = (0..<(positions * stride)).map { _ in Float16((rng.unit() * 2 - 1) * 2) }
        let qh = (0..<d).map { _ in Float(Float16((rng.unit() * 2 - 1) * 4)) }
        // The same rows moved: logical positions 0..<16 at row 21, 16..<21 at row 0, 21..<37 at row 5.
        let placement = [(0, 21, 16), (16, 0, 5), (21, 5, 16)]
        var movedKeys = keys, movedValues = values
        for (lo, row, n) in placement {
            for j in 0..<n { for e in 0..<stride {
                movedKeys[(row + j) * stride + e] = keys[(lo + j) * stride + e]
                movedValues[(row + j) * stride + e] = values[(lo + j) * stride + e]
            } }
        }
        var want = [Float](repeating: .nan, count: d), got = [Float](repeating: .nan, count: d)
        var factors = [Float](repeating: .nan, count: 2 * positions)
        keys.withUnsafeBufferPointer { k in values.withUnsafeBufferPointer { v in
            attendHead(qh, keys: k.baseAddress! + d, values: v.baseAddress! + d, stride: stride, d, positions: positions, scale: 0.125,
                       factors: &factors, out: &want)
        } }
        let starts = placement.map(\.0) + [Int.max], rows = placement.map(\.1)
        movedKeys.withUnsafeBufferPointer { k in movedValues.withUnsafeBufferPointer { v in
            starts.withUnsafeBufferPointer { s in rows.withUnsafeBufferPointer { r in
                attendHead(qh, keys: k.baseAddress! + d, values: v.baseAddress! + d, runs: KVRuns(starts: s.baseAddress!, rows: r.baseAddress!),
                           stride: stride, d, positions: positions, scale: 0.125, factors: &factors, out: &got)
            } }
        } }
        XCTAssertEqual(got.map(\.bitPattern), want.map(\.bitPattern))
        XCTAssertNotEqual(want.map(abs).max()!, 0)
    }
}
