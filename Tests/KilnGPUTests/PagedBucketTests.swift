import XCTest
@testable import KilnCUDA

/// The paged cache's decode graphs are captured per batch bucket: every batch maps to the smallest bucket that holds it.
final class PagedBucketTests: XCTestCase {
    func testBucketsArePowersOfTwoToEightThenMultiplesOfEightThenOfThirtyTwo() {
        let want: [(Int, Int)] = [(1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (8, 8), (9, 16), (17, 24), (64, 64), (65, 96), (200, 224), (256, 256)]
        for (rows, bucket) in want { XCTAssertEqual(GPUModel.pagedBucket(for: rows, max: 256), bucket, "rows \(rows)") }
        for rows in 1...256 {
            let b = GPUModel.pagedBucket(for: rows, max: 256)
            XCTAssertGreaterThanOrEqual(b, rows); XCTAssertLessThanOrEqual(b, 256)
        }
        XCTAssertEqual(GPUModel.pagedBucket(for: 100, max: 100), 100, "never beyond the sequences the model holds")
        XCTAssertEqual(Set((1...256).map { GPUModel.pagedBucket(for: $0, max: 256) }).count, 4 + 7 + 6, "graphs to capture at most")
    }

    func testOneBlockHoldsEveryLayersKeysAndValues() {
        // Llama-3-8B: 32 layers × (K + V) × 8 kv heads × 16 positions × 128 × 2 bytes = 2 MiB.
        let c = try! KilnCUDA.DummyModels.config("llama3-8b")
        XCTAssertEqual(PagedKVConfig.bytesPerBlock(c, blockSize: 16), 2 << 20)
        XCTAssertEqual(PagedKVConfig(blocks: 10, maxSequences: 2, contextLength: 4097).tableStride, 257)
    }
}
