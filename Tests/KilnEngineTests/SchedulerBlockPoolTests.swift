import XCTest
import KilnEngine

/// The KV block pool and the prefix cache on their own: counts, sharing, and the order blocks are reused in.
final class SchedulerBlockPoolTests: XCTestCase {
    private func manager(blockSize: Int = 4, blocks: Int = 8, prefixCaching: Bool = true) throws -> KVCacheManager {
        KVCacheManager(pool: try KVBlockPool(blockSize: blockSize, count: blocks), prefixCaching: prefixCaching)
    }

    func testAllocationAndFreeingCounts() throws {
        let m = try manager()
        XCTAssertTrue(m.allocate(0, positions: 10))          // ⌈10/4⌉ = 3 blocks
        XCTAssertEqual(m.tables[0]?.count, 3)
        XCTAssertEqual(m.pool.freeCount, 5)
        XCTAssertTrue(m.allocate(1, positions: 20))          // 5 blocks: the pool is full
        XCTAssertEqual(m.pool.freeCount, 0)
        XCTAssertFalse(m.allocate(2, positions: 1))
        XCTAssertNil(m.tables[2], "a failed allocation leaves nothing behind")
        XCTAssertTrue(m.allocate(0, positions: 12), "12 positions still fit 3 blocks")
        XCTAssertFalse(m.allocate(0, positions: 13))
        XCTAssertEqual(m.tables[0]?.count, 3)
        m.free(1)
        XCTAssertEqual(m.pool.freeCount, 5)
        XCTAssertTrue(m.allocate(0, positions: 13))
        XCTAssertEqual(m.pool.freeCount, 4)
        XCTAssertEqual(Set(m.tables[0]!).count, 4)
        XCTAssertEqual(m.violations(), [])
        m.free(0)
        XCTAssertEqual(m.pool.freeCount, 8)
        XCTAssertEqual(m.pool.referenceCounts, Array(repeating: 0, count: 8))
        XCTAssertEqual(m.violations(), [])
    }

    func testSecondRequestSharesTheFirstsFullPrefixBlocks() throws {
        let m = try manager()
        let a: [Int32] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]     // two full blocks and a partial one
        XCTAssertTrue(m.allocate(0, positions: a.count))
        m.commit(0, tokens: a, computed: a.count)
        let b: [Int32] = [1, 2, 3, 4, 5, 6, 7, 8, 42, 43, 44]
        let hit = m.cachedPrefix(of: b)
        XCTAssertEqual(hit, Array(m.tables[0]![0..<2]))
        XCTAssertTrue(m.allocate(1, positions: b.count, prefix: hit))
        XCTAssertEqual(Array(m.tables[1]![0..<2]), Array(m.tables[0]![0..<2]))
        XCTAssertNotEqual(m.tables[1]![2], m.tables[0]![2], "the third block differs in content and is partial")
        for blk in m.tables[0]![0..<2] { XCTAssertEqual(m.pool.referenceCounts[blk], 2) }
        XCTAssertEqual(m.pool.freeCount, 8 - 3 - 1)
        XCTAssertEqual(m.violations(), [])
        // Freeing the first keeps the shared blocks held by the second.
        m.free(0)
        for blk in m.tables[1]![0..<2] { XCTAssertEqual(m.pool.referenceCounts[blk], 1) }
        XCTAssertEqual(m.violations(), [])
    }

    func testPartialAndUncomputedBlocksAreNeverShared() throws {
        let m = try manager()
        let a: [Int32] = [1, 2, 3, 4, 5, 6]                  // one full block, one partial
        XCTAssertTrue(m.allocate(0, positions: a.count))
        m.commit(0, tokens: a, computed: a.count)
        XCTAssertEqual(m.cachedPrefix(of: a + [7, 8, 9]), [m.tables[0]![0]])
        // Same tokens as the partial block, now full in the other request: still only the first block is found.
        XCTAssertEqual(m.cachedPrefix(of: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).count, 1)
        // A block allocated but not yet computed is not published.
        let c: [Int32] = [20, 21, 22, 23, 24, 25, 26, 27, 28]
        XCTAssertTrue(m.allocate(1, positions: c.count))
        m.commit(1, tokens: c, computed: 4)
        XCTAssertEqual(m.cachedPrefix(of: c), [m.tables[1]![0]])
        // A prompt that is entirely cached still leaves its last block to compute (the logits come from it).
        m.commit(1, tokens: c, computed: 8)
        XCTAssertEqual(m.cachedPrefix(of: Array(c[0..<8])), [m.tables[1]![0]])
        XCTAssertEqual(m.cachedPrefix(of: Array(c[0..<9])), Array(m.tables[1]![0..<2]))
    }

    func testBlocksAreKeyedByEverythingBeforeThem() throws {
        let m = try manager()
        let a: [Int32] = [1, 2, 3, 4, 5, 6, 7, 8, 9]
        XCTAssertTrue(m.allocate(0, positions: a.count))
        m.commit(0, tokens: a, computed: a.count)
        XCTAssertEqual(m.cachedPrefix(of: [9, 9, 9, 9, 5, 6, 7, 8, 1]), [], "same second block after a different first")
        XCTAssertEqual(m.cachedPrefix(of: [5, 6, 7, 8, 1]), [], "the second block's tokens at position 0")
    }

    func testFreedCachedBlocksAreEvictedLeastRecentlyUsedFirst() throws {
        let m = try manager(blockSize: 2, blocks: 4)
        let prompts: [[Int32]] = [[1, 2, 0], [3, 4, 0], [5, 6, 0]]
        var first: [Int] = []
        for (s, p) in prompts.enumerated() {
            XCTAssertTrue(m.allocate(s, positions: 2))
            m.commit(s, tokens: p, computed: 2)
            first.append(m.tables[s]![0])
        }
        let neverUsed = Set(0..<4).subtracting(first).first!
        for s in 0..<3 { m.free(s) }                          // freed in the order A, B, C
        XCTAssertEqual(m.pool.freeQueue, [neverUsed] + first)
        for (s, p) in prompts.enumerated() { XCTAssertEqual(m.cachedPrefix(of: p), [first[s]]) }
        // Two new blocks: the never-used one, then A's (least recently freed); A's prefix is gone, B's and C's stay.
        XCTAssertTrue(m.allocate(10, positions: 4))
        XCTAssertEqual(m.tables[10], [neverUsed, first[0]])
        XCTAssertEqual(m.cachedPrefix(of: prompts[0]), [])
        XCTAssertEqual(m.cachedPrefix(of: prompts[1]), [first[1]])
        // A hit on B takes its block back; the next allocation must then evict C's, not B's.
        XCTAssertTrue(m.allocate(11, positions: 3, prefix: m.cachedPrefix(of: prompts[1])))
        XCTAssertEqual(m.tables[11], [first[1], first[2]])
        XCTAssertEqual(m.cachedPrefix(of: prompts[2]), [])
        XCTAssertEqual(m.pool.evictions, 2)
        XCTAssertEqual(m.pool.cacheHits, 1)
        XCTAssertEqual(m.violations(), [])
    }

    func testASequenceIsFreedTailFirst() throws {
        let m = try manager(blockSize: 2, blocks: 3)
        let p: [Int32] = [1, 2, 3, 4, 5, 6, 7]
        XCTAssertTrue(m.allocate(0, positions: 6))
        m.commit(0, tokens: p, computed: 6)
        let table = m.tables[0]!
        m.free(0)
        XCTAssertEqual(m.pool.freeQueue, table.reversed(), "the tail is evicted before the prefix")
        XCTAssertTrue(m.allocate(1, positions: 1))
        XCTAssertEqual(m.cachedPrefix(of: p), Array(table[0..<2]))
    }

    func testAPrefixComputedTwiceAtOnceIsCachedOnce() throws {
        let m = try manager()
        let p: [Int32] = [1, 2, 3, 4, 5]
        XCTAssertTrue(m.allocate(0, positions: 5)); XCTAssertTrue(m.allocate(1, positions: 5))
        m.commit(0, tokens: p, computed: 5); m.commit(1, tokens: p, computed: 5)
        XCTAssertEqual(m.cachedPrefix(of: p), [m.tables[0]![0]])
        XCTAssertEqual(m.pool.keys.compactMap { $0 }.count, 1)
        m.free(0); m.free(1)
        XCTAssertEqual(m.violations(), [])
        XCTAssertEqual(m.pool.freeCount, 8)
    }

    func testWithoutPrefixCachingNothingIsShared() throws {
        let m = try manager(prefixCaching: false)
        let p: [Int32] = [1, 2, 3, 4, 5, 6, 7, 8, 9]
        XCTAssertTrue(m.allocate(0, positions: 9))
        m.commit(0, tokens: p, computed: 9)
        XCTAssertEqual(m.cachedPrefix(of: p), [])
    }

    func testInvalidPoolSizesAreErrors() {
        XCTAssertThrowsError(try KVBlockPool(blockSize: 0, count: 4))
        XCTAssertThrowsError(try KVBlockPool(blockSize: 16, count: 0))
    }
}
