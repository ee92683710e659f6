import KilnCore
import KilnModels

/// The keys and values of `blockCount` blocks of `blockSize` positions, for every layer, in half precision (IEEE f16),
/// on the CPU. Shared by the sequences of a serving engine (each a `KVCache` with its own block table), or owned by one
/// contiguous cache.
///
/// llama.cpp keeps an F16 cache too: matching its rounding keeps Kiln's logits close to the golden data, and half the
/// bytes of an f32 cache is half the memory traffic of attention at depth (read with F16C, eight values an instruction).
public final class KVBlockStorage {
    public let layers: Int
    public let kvDim: Int
    /// Positions per block.
    public let blockSize: Int
    public let blockCount: Int
    /// Rows of one layer: layer l's position `offset` of block b is row `b · blockSize + offset` of that layer.
    let rowsPerLayer: Int
    let keys: UnsafeMutablePointer<Float16>    // [layers × blockCount × blockSize × kvDim]
    let values: UnsafeMutablePointer<Float16>  // [layers × blockCount × blockSize × kvDim]

    /// Allocates `blockCount` blocks of `blockSize` positions for a model with `config`.
    public init(config: ModelConfig, blockSize: Int, blockCount: Int) throws {
        guard blockSize > 0 else { throw KilnError("KV block size must be positive, got \(blockSize)") }
        guard blockCount > 0 else { throw KilnError("KV block storage needs at least one block, got \(blockCount)") }
        layers = config.numLayers
        kvDim = config.kvDim
        self.blockSize = blockSize
        self.blockCount = blockCount
        rowsPerLayer = blockSize * blockCount
        let n = layers * rowsPerLayer * kvDim
        keys = .allocate(capacity: n); values = .allocate(capacity: n)
        keys.initialize(repeating: 0, count: n); values.initialize(repeating: 0, count: n)
    }

    deinit { keys.deallocate(); values.deallocate() }

    /// Bytes held by the keys and values.
    public var byteCount: Int { 2 * layers * rowsPerLayer * kvDim * MemoryLayout<Float16>.size }
}

/// One sequence's keys and values: positions mapped through a block table onto a `KVBlockStorage`, position p in block
/// `blocks[p / blockSize]` at offset `p % blockSize`.
///
/// A contiguous cache (`init(config:capacity:)`, for `kiln run`, perplexity, bench) owns storage of one block of the whole
/// capacity, so its layout is `[layers × capacity × kvDim]` as before. A serving engine makes one view per sequence over
/// shared storage (`init(storage:)`) and sets its table before each pass (`assign`), the scheduler's block ids, so
/// sequences with a common prefix read the same blocks.
///
/// Attention reads the table as runs of physically consecutive blocks (`runStarts`/`runRows`), so its kernels visit
/// rows `kvDim` apart within a run with no lookup per position; a contiguous cache is one run.
public final class KVCache {
    public let storage: KVBlockStorage
    /// Positions this cache can hold: the table's blocks (a contiguous cache: what was asked).
    public private(set) var capacity: Int
    public var layers: Int { storage.layers }
    public var kvDim: Int { storage.kvDim }
    /// Positions filled so far; the next token goes at this position.
    public internal(set) var count = 0
    /// The block of each `blockSize` positions.
    public private(set) var blocks: [Int]
    /// Runs of consecutive blocks: run r covers positions `runStarts[r]..<runStarts[r + 1]`, stored from row `runRows[r]`
    /// of each layer. `runStarts` ends with `Int.max` (its count is `runRows.count + 1`).
    private(set) var runStarts: [Int] = [0, Int.max]
    private(set) var runRows: [Int] = [0]

    /// A contiguous cache for `capacity` positions of a model with `config`.
    public init(config: ModelConfig, capacity: Int) throws {
        guard capacity > 0 else { throw KilnError("KV cache capacity must be positive, got \(capacity)") }
        storage = try KVBlockStorage(config: config, blockSize: capacity, blockCount: 1)
        self.capacity = capacity
        blocks = [0]
    }

    /// A sequence over shared `storage`, with an empty table until `assign`.
    public init(storage: KVBlockStorage) {
        self.storage = storage
        capacity = 0
        blocks = []
        runStarts = [Int.max]; runRows = []
    }

    /// Sets the table (block ids of `storage`, position p in `blocks[p / blockSize]`) and the positions already computed
    /// (`count`, e.g. a cached prefix another sequence computed). The blocks must cover `count`.
    public func assign(blocks table: [Int], count filled: Int) throws {
        let bs = storage.blockSize
        for b in table where b < 0 || b >= storage.blockCount {
            throw KilnError("KV block \(b) is outside the storage's \(storage.blockCount) blocks")
        }
        guard filled >= 0, filled <= table.count * bs else {
            throw KilnError("\(filled) cached positions do not fit \(table.count) blocks of \(bs) positions")
        }
        if table != blocks {
            blocks = table
            runStarts.removeAll(keepingCapacity: true); runRows.removeAll(keepingCapacity: true)
            for (i, b) in table.enumerated() where i == 0 || b != table[i - 1] + 1 {
                runStarts.append(i * bs); runRows.append(b * bs)
            }
            runStarts.append(Int.max)
        }
        capacity = table.count * bs
        count = filled
    }

    /// Forgets every position (the memory is reused).
    public func reset() { count = 0 }

    /// Forgets positions from `newCount` on, e.g. to rewind a conversation.
    public func truncate(to newCount: Int) { count = max(0, min(count, newCount)) }

    /// Bytes of the storage this cache reads (shared storage counts whole).
    public var byteCount: Int { storage.byteCount }

    /// The row of `layer` holding position `pos` (a table lookup: for writes, not for attention's inner loops).
    @inline(__always) func row(_ layer: Int, _ pos: Int) -> Int {
        let bs = storage.blockSize
        return layer * storage.rowsPerLayer + blocks[pos / bs] * bs + pos % bs
    }
    /// Row 0 of `layer`'s keys and values (the rows of `runRows` count from there).
    @inline(__always) func layerKeys(_ layer: Int) -> UnsafeMutablePointer<Float16> { storage.keys + layer * storage.rowsPerLayer * kvDim }
    @inline(__always) func layerValues(_ layer: Int) -> UnsafeMutablePointer<Float16> { storage.values + layer * storage.rowsPerLayer * kvDim }
    @inline(__always) func keyRow(_ layer: Int, _ pos: Int) -> UnsafeMutablePointer<Float16> { storage.keys + row(layer, pos) * kvDim }
    @inline(__always) func valueRow(_ layer: Int, _ pos: Int) -> UnsafeMutablePointer<Float16> { storage.values + row(layer, pos) * kvDim }
}
