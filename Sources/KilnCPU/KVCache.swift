import KilnCore
import KilnModels

/// Keys and values of every layer for up to `capacity` positions, in half precision (IEEE f16), on the CPU.
///
/// llama.cpp keeps an F16 cache too: matching its rounding keeps Kiln's logits close to the golden data, and half the
/// bytes of an f32 cache is half the memory traffic of attention at depth (read with F16C, eight values an instruction).
public final class KVCache {
    public let capacity: Int
    public let layers: Int
    public let kvDim: Int
    /// Positions filled so far; the next token goes at this position.
    public internal(set) var count = 0
    let keys: UnsafeMutablePointer<Float16>    // [layers × capacity × kvDim]
    let values: UnsafeMutablePointer<Float16>  // [layers × capacity × kvDim]

    /// Allocates a cache for `capacity` positions of a model with `config`.
    public init(config: ModelConfig, capacity: Int) throws {
        guard capacity > 0 else { throw KilnError("KV cache capacity must be positive, got \(capacity)") }
        self.capacity = capacity
        layers = config.numLayers
        kvDim = config.kvDim
        let n = layers * capacity * kvDim
        keys = .allocate(capacity: n); values = .allocate(capacity: n)
        keys.initialize(repeating: 0, count: n); values.initialize(repeating: 0, count: n)
    }

    deinit { keys.deallocate(); values.deallocate() }

    /// Forgets every position (the memory is reused).
    public func reset() { count = 0 }

    /// Forgets positions from `newCount` on, e.g. to rewind a conversation.
    public func truncate(to newCount: Int) { count = max(0, min(count, newCount)) }

    /// Bytes held by the cache.
    public var byteCount: Int { 2 * layers * capacity * kvDim * MemoryLayout<Float16>.size }

    @inline(__always) func keyRow(_ layer: Int, _ pos: Int) -> UnsafeMutablePointer<Float16> {
        keys + (layer * capacity + pos) * kvDim
    }
    @inline(__always) func valueRow(_ layer: Int, _ pos: Int) -> UnsafeMutablePointer<Float16> {
        values + (layer * capacity + pos) * kvDim
    }
}
