#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// An open-addressing hash map from byte strings to `Int32`, looked up by pointer and length with no allocation.
///
/// Keys are copied into one arena. Used for the vocabulary (bytes -> token id) and for the per-call word cache of the
/// BPE encoder, both on the hot path, where `[UInt8]`-keyed dictionaries would allocate a key per lookup.
struct ByteStringMap {
    private var arena: [UInt8] = []
    private var keyStart: [Int] = []
    private var keyLength: [Int32] = []
    private var values: [Int32] = []
    /// Per slot: `hash & 0xFFFF_FFFF_0000_0000 | (entry + 1)`; 0 marks an empty slot.
    private var slots: [UInt64]
    private var mask: Int

    private(set) var count = 0

    init(capacity: Int = 16) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        slots = [UInt64](repeating: 0, count: size)
        mask = size - 1
    }

    @inline(__always) static func hash(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
        // FNV-1a, then a final mix so the low bits (the slot index) depend on every byte.
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for i in 0..<n { h = (h ^ UInt64(p[i])) &* 0x100_0000_01b3 }
        h ^= h >> 29
        h = h &* 0xbf58_476d_1ce4_e5b9
        return h ^ (h >> 32)
    }

    /// The value stored for the `n` bytes at `p`, or -1.
    @inline(__always) func find(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int32 {
        if n <= 0 { return -1 }
        let h = ByteStringMap.hash(p, n)
        let tag = h & 0xFFFF_FFFF_0000_0000
        return slots.withUnsafeBufferPointer { slots in
            var i = Int(truncatingIfNeeded: h) & mask
            while true {
                let s = slots[i]
                if s == 0 { return -1 }
                if s & 0xFFFF_FFFF_0000_0000 == tag {
                    let e = Int(s & 0xFFFF_FFFF) - 1
                    if Int(keyLength[e]) == n && sameBytes(e, p, n) {
                        return values[e]
                    }
                }
                i = (i + 1) & mask
            }
        }
    }

    @inline(__always) private func sameBytes(_ entry: Int, _ p: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        arena.withUnsafeBufferPointer { arena in
            guard let base = arena.baseAddress else { return false }
            return memcmp(base + keyStart[entry], p, n) == 0
        }
    }

    func find(_ bytes: [UInt8]) -> Int32 {
        bytes.withUnsafeBufferPointer { b in
            guard let base = b.baseAddress else { return -1 }
            return find(base, b.count)
        }
    }

    /// Stores `value` for the key unless the key is present already; returns whether it was stored.
    @discardableResult
    mutating func insert(_ p: UnsafePointer<UInt8>, _ n: Int, value: Int32) -> Bool {
        if n <= 0 || find(p, n) >= 0 { return false }   // empty keys are never stored
        if (count + 1) * 2 > slots.count { grow() }
        let entry = count
        keyStart.append(arena.count)
        keyLength.append(Int32(n))
        arena.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        values.append(value)
        count += 1
        place(entry: entry, hash: ByteStringMap.hash(p, n))
        return true
    }

    @discardableResult
    mutating func insert(_ bytes: [UInt8], value: Int32) -> Bool {
        bytes.withUnsafeBufferPointer { b in
            guard let base = b.baseAddress else { return false }
            return insert(base, b.count, value: value)
        }
    }

    private mutating func place(entry: Int, hash h: UInt64) {
        var i = Int(truncatingIfNeeded: h) & mask
        while slots[i] != 0 { i = (i + 1) & mask }
        slots[i] = (h & 0xFFFF_FFFF_0000_0000) | UInt64(entry + 1)
    }

    private mutating func grow() {
        slots = [UInt64](repeating: 0, count: slots.count * 2)
        mask = slots.count - 1
        let arena = self.arena, keyStart = self.keyStart, keyLength = self.keyLength
        arena.withUnsafeBufferPointer { a in
            guard let base = a.baseAddress else { return }
            for e in 0..<count { place(entry: e, hash: ByteStringMap.hash(base + keyStart[e], Int(keyLength[e]))) }
        }
    }
}

/// An open-addressing map from a pair of token ids to a BPE merge: its rank (lower merges first) and the merged token.
struct MergeTable {
    private var keys: [UInt64]
    private var entries: [UInt64]   // rank << 32 | merged id
    private var mask: Int
    private(set) var count = 0
    static let empty = UInt64.max

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = [UInt64](repeating: MergeTable.empty, count: size)
        entries = [UInt64](repeating: 0, count: size)
        mask = size - 1
    }

    @inline(__always) private static func slot(_ key: UInt64) -> Int {
        var h = key &* 0x9E37_79B9_7F4A_7C15
        h ^= h >> 31
        return Int(truncatingIfNeeded: h)
    }

    /// `rank << 32 | merged`, or `UInt64.max` when the pair does not merge.
    @inline(__always) func lookup(_ left: Int32, _ right: Int32) -> UInt64 {
        let key = UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
        return keys.withUnsafeBufferPointer { keys in
            var i = MergeTable.slot(key) & mask
            while true {
                let k = keys[i]
                if k == MergeTable.empty { return UInt64.max }   // first: the pair (-1, -1) has the empty key's bits
                if k == key { return entries[i] }
                i = (i + 1) & mask
            }
        }
    }

    /// Adds a merge unless the pair has one already (the first, lowest-ranked, entry wins, as in llama.cpp).
    mutating func insert(left: Int32, right: Int32, rank: UInt32, merged: Int32) {
        if (count + 1) * 2 > keys.count { grow() }
        let key = UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
        var i = MergeTable.slot(key) & mask
        while keys[i] != MergeTable.empty {
            if keys[i] == key { return }
            i = (i + 1) & mask
        }
        keys[i] = key
        entries[i] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: merged))
        count += 1
    }

    private mutating func grow() {
        let oldKeys = keys, oldEntries = entries
        keys = [UInt64](repeating: MergeTable.empty, count: oldKeys.count * 2)
        entries = [UInt64](repeating: 0, count: oldKeys.count * 2)
        mask = keys.count - 1
        for (k, e) in zip(oldKeys, oldEntries) where k != MergeTable.empty {
            var i = MergeTable.slot(k) & mask
            while keys[i] != MergeTable.empty { i = (i + 1) & mask }
            keys[i] = k
            entries[i] = e
        }
    }
}
