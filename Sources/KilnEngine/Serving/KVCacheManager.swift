import KilnCore

/// Block tables of the sequences in a `KVBlockPool`, and the prefix cache's policy over them: which blocks a new
/// sequence can share, and which of its blocks become shareable once their keys and values are computed.
///
/// A sequence is named by its cache handle (the `StepBatch.Sequence.id` the scheduler gives it). Only full blocks
/// whose every position has been computed are published; the block a sequence is still writing is never shared.
public final class KVCacheManager {
    public let pool: KVBlockPool
    /// Off for backends whose cache is not paged yet (each sequence's cache starts empty, so a hit would skip work
    /// the backend never did).
    public let prefixCaching: Bool
    /// sequence → its blocks, position p in block `table[p / blockSize]`.
    public private(set) var tables: [Int: [Int]] = [:]
    /// sequence → chain hash of each leading block already published (or taken from the cache).
    private var chains: [Int: [UInt64]] = [:]

    public init(pool: KVBlockPool, prefixCaching: Bool = true) {
        self.pool = pool; self.prefixCaching = prefixCaching
    }

    public var blockSize: Int { pool.blockSize }

    /// The cached blocks holding the longest prefix of `tokens` in whole blocks, at most `tokens.count - 1` positions
    /// so that at least one token is computed and yields the logits to sample from. Not retained yet.
    public func cachedPrefix(of tokens: [Int32]) -> [Int] {
        guard prefixCaching else { return [] }
        var blocks: [Int] = []
        var parent = BlockKey.root
        let usable = (tokens.count - 1) / blockSize
        for i in 0..<max(0, usable) {
            let key = BlockKey(parent: parent, tokens: Array(tokens[i * blockSize..<(i + 1) * blockSize]))
            guard let b = pool.lookup(key) else { break }
            blocks.append(b)
            parent = key.chainHash
        }
        return blocks
    }

    /// Grows `sequence`'s table to hold `positions` positions; a new sequence first takes `prefix` (from
    /// `cachedPrefix`, shared). All or nothing: false, with nothing changed, when the pool lacks the blocks.
    public func allocate(_ sequence: Int, positions: Int, prefix: [Int] = []) -> Bool {
        let existing = tables[sequence]
        precondition(existing == nil || prefix.isEmpty, "a cached prefix can only start a new sequence")
        let have = existing?.count ?? prefix.count
        let needed = max(0, pool.blocks(for: positions) - have)
        // A cache hit on a free block takes it out of the free queue too.
        let revived = prefix.reduce(0) { $0 + (pool.referenceCounts[$1] == 0 ? 1 : 0) }
        guard needed + revived <= pool.freeCount else { return false }
        var table = existing ?? []
        if existing == nil {
            var chain: [UInt64] = []
            var parent = BlockKey.root
            for b in prefix {
                pool.retain(b)
                table.append(b)
                parent = pool.keys[b]!.chainHash
                chain.append(parent)
            }
            chains[sequence] = chain
        }
        for _ in 0..<needed { table.append(pool.allocate()!) }
        tables[sequence] = table
        return true
    }

    /// After a forward pass: `sequence`'s first `computed` positions hold the keys and values of `tokens`' first
    /// `computed` tokens. Publishes each block that has become full.
    public func commit(_ sequence: Int, tokens: [Int32], computed: Int) {
        guard prefixCaching, let table = tables[sequence] else { return }
        var chain = chains[sequence] ?? []
        while chain.count < table.count, (chain.count + 1) * blockSize <= computed {
            let i = chain.count
            let key = BlockKey(parent: i == 0 ? BlockKey.root : chain[i - 1], tokens: Array(tokens[i * blockSize..<(i + 1) * blockSize]))
            pool.register(table[i], as: key)
            chain.append(key.chainHash)
        }
        chains[sequence] = chain
    }

    /// Releases `sequence`'s blocks, last first: the free queue then evicts a sequence's tail before the prefix
    /// others are likelier to share (vLLM frees in the same order).
    public func free(_ sequence: Int) {
        guard let table = tables.removeValue(forKey: sequence) else { return }
        chains[sequence] = nil
        for b in table.reversed() { pool.release(b) }
    }

    /// The pool's invariants plus: each block's reference count equals the number of tables holding it, and no
    /// table holds a block twice.
    public func violations() -> [String] {
        var problems = pool.violations()
        var holders = Array(repeating: 0, count: pool.count)
        for (s, table) in tables {
            if Set(table).count != table.count { problems.append("sequence \(s) holds a block twice") }
            for b in table { holders[b] += 1 }
        }
        for b in 0..<pool.count where holders[b] != pool.referenceCounts[b] {
            problems.append("block \(b): reference count \(pool.referenceCounts[b]) but \(holders[b]) tables hold it")
        }
        return problems
    }
}
