import KilnCore

/// What a full KV block holds, as the prefix cache keys it: the hash of every block before it (the chain) and its own
/// tokens. Two blocks with equal keys hold the same keys and values, because attention at a position depends only on
/// the tokens up to it. The tokens are compared exactly, so only a collision of the 64-bit chain hash could alias.
public struct BlockKey: Hashable, Sendable {
    /// `chainHash` of the previous block, or `BlockKey.root` for a sequence's first block.
    public var parent: UInt64
    /// The block's `blockSize` tokens.
    public var tokens: [Int32]

    public static let root: UInt64 = 0x6b69_6c6e_5f6b_7631  // "kiln_kv1"

    public init(parent: UInt64, tokens: [Int32]) { self.parent = parent; self.tokens = tokens }

    /// The hash the next block's key chains from: FNV-1a over the parent hash and the tokens, then SplitMix64's
    /// finalizer. Deterministic across processes (unlike `Hasher`), so a later persistent or shared cache can use it.
    public var chainHash: UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ v: UInt64) { h = (h ^ v) &* 0x0000_0100_0000_01b3 }
        mix(parent)
        for t in tokens { mix(UInt64(UInt32(bitPattern: t))) }
        h ^= h >> 30; h = h &* 0xbf58_476d_1ce4_e5b9
        h ^= h >> 27; h = h &* 0x94d0_49bb_1331_11eb
        return h ^ (h >> 31)
    }
}

/// One pool of `count` KV blocks of `blockSize` token positions each, with reference counts and the prefix cache.
///
/// As vLLM v1's block pool: a block is *in use* (reference count > 0, held by one or more block tables) or *free*
/// (count 0, in the free queue). A free block may still carry a `BlockKey` — its contents stay valid and a later request
/// with the same prefix takes it back out of the queue ("cached"). Allocation takes the free queue's head, so the
/// least recently freed block is reused (and its key evicted) first; freed blocks go to the tail.
public final class KVBlockPool {
    public let blockSize: Int
    public let count: Int
    /// [count] tables holding each block.
    public private(set) var referenceCounts: [Int]
    /// [count] the key of each full, computed block that is in the prefix cache.
    public private(set) var keys: [BlockKey?]
    /// key → block, for every block whose key is set.
    private var cached: [BlockKey: Int] = [:]
    // The free queue: a doubly linked list over block ids (-1 ends), so a cache hit leaves it in O(1).
    private var next: [Int], previous: [Int]
    private var head = -1, tail = -1
    public private(set) var freeCount = 0
    /// Prefix-cache statistics for the server's metrics: blocks a table took from the cache (whether another table
    /// still held them or they were free), and cached blocks reused for other contents.
    public private(set) var cacheHits = 0, evictions = 0

    public init(blockSize: Int, count: Int) throws {
        guard blockSize > 0 else { throw KilnError("KV block size must be positive, got \(blockSize)") }
        guard count > 0 else { throw KilnError("KV block pool needs at least one block, got \(count)") }
        self.blockSize = blockSize; self.count = count
        referenceCounts = Array(repeating: 0, count: count)
        keys = Array(repeating: nil, count: count)
        next = Array(repeating: -1, count: count); previous = Array(repeating: -1, count: count)
        for b in 0..<count { pushTail(b) }
    }

    /// Blocks a request of `tokens` positions occupies.
    public func blocks(for tokens: Int) -> Int { (tokens + blockSize - 1) / blockSize }

    /// Free blocks that hold a cached prefix (evictable), kept up to date rather than counted: the server reads it
    /// after every step.
    public private(set) var cachedFreeCount = 0
    /// Blocks currently held by a table.
    public var usedCount: Int { count - freeCount }

    /// Takes the least recently freed block, evicting its cached key; nil when every block is in use.
    public func allocate() -> Int? {
        guard head >= 0 else { return nil }
        let b = head
        unlink(b)
        if let k = keys[b] { cached[k] = nil; keys[b] = nil; evictions += 1; cachedFreeCount -= 1 }
        referenceCounts[b] = 1
        return b
    }

    /// The cached block holding `key`, if any (not yet retained).
    public func lookup(_ key: BlockKey) -> Int? { cached[key] }

    /// One more table holds `block` (a prefix-cache hit, counted whether or not another table holds it); a free cached
    /// block leaves the free queue.
    public func retain(_ block: Int) {
        precondition(keys[block] != nil, "KV block \(block) is shared but holds no cached prefix")
        if referenceCounts[block] == 0 { unlink(block); cachedFreeCount -= 1 }
        referenceCounts[block] += 1
        cacheHits += 1
    }

    /// A table lets go of `block`; at zero it joins the free queue's tail, keeping its key (still cached).
    public func release(_ block: Int) {
        precondition(referenceCounts[block] > 0, "KV block \(block) released more often than it was held")
        referenceCounts[block] -= 1
        if referenceCounts[block] == 0 {
            pushTail(block)
            if keys[block] != nil { cachedFreeCount += 1 }
        }
    }

    /// Publishes a full block whose keys and values are computed. If another block already holds the same content
    /// (two requests computed one prefix at once) the first stays the cached one and this block stays private.
    public func register(_ block: Int, as key: BlockKey) {
        precondition(key.tokens.count == blockSize, "only a full block can be cached")
        guard keys[block] == nil, cached[key] == nil else { return }
        keys[block] = key
        cached[key] = block
        if referenceCounts[block] == 0 { cachedFreeCount += 1 }
    }

    /// The free queue from head (next to be reused) to tail, for tests and invariant checks.
    public var freeQueue: [Int] {
        var out: [Int] = [], b = head
        while b >= 0 { out.append(b); b = next[b] }
        return out
    }

    /// Checks the pool's own invariants; returns a description of each violation (empty when consistent).
    public func violations() -> [String] {
        var problems: [String] = []
        let queue = freeQueue
        let inQueue = Set(queue)
        if queue.count != freeCount || inQueue.count != queue.count { problems.append("free queue has \(queue.count) entries (\(inQueue.count) distinct), freeCount \(freeCount)") }
        for b in 0..<count {
            if referenceCounts[b] < 0 { problems.append("block \(b) has reference count \(referenceCounts[b])") }
            if (referenceCounts[b] == 0) != inQueue.contains(b) { problems.append("block \(b): reference count \(referenceCounts[b]) but in free queue: \(inQueue.contains(b))") }
            if let k = keys[b], cached[k] != b { problems.append("block \(b) has a key the cache maps elsewhere") }
        }
        for (k, b) in cached where keys[b] != k { problems.append("cache entry points at block \(b) whose key differs") }
        let cachedFree = cached.values.reduce(0) { $0 + (referenceCounts[$1] == 0 ? 1 : 0) }
        if cachedFree != cachedFreeCount { problems.append("\(cachedFree) free cached blocks but cachedFreeCount \(cachedFreeCount)") }
        return problems
    }

    private func pushTail(_ b: Int) {
        previous[b] = tail; next[b] = -1
        if tail >= 0 { next[tail] = b } else { head = b }
        tail = b
        freeCount += 1
    }

    private func unlink(_ b: Int) {
        if previous[b] >= 0 { next[previous[b]] = next[b] } else { head = next[b] }
        if next[b] >= 0 { previous[next[b]] = previous[b] } else { tail = previous[b] }
        next[b] = -1; previous[b] = -1
        freeCount -= 1
    }
}
