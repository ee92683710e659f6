/// Byte-level BPE (GPT-2, Llama 3, Qwen 2, StarCoder/SmolLM): merges ranked by their order in the merge list,
/// applied inside each pre-tokenizer piece, as llama.cpp's `llm_tokenizer_bpe_session` and Hugging Face's BPE model do.
///
/// Everything works on raw bytes and token ids: a piece starts as one symbol per byte (the token of that byte's
/// GPT-2 character), and a merge of two adjacent symbols is a lookup of the id pair in `merges`.
final class ByteLevelBPE: @unchecked Sendable {
    /// The token of each byte value, or -1 when the vocabulary lacks it.
    let byteTokens: [Int32]
    /// Bytes -> token id, for the tokens that stand for byte strings (all byte-level vocabulary entries).
    let vocabulary: ByteStringMap
    let merges: MergeTable
    let preTokenizer: PreTokenizer
    /// A piece that is a whole token is that token, without merging (Llama 3's `ignore_merges`).
    let ignoreMerges: Bool

    init(byteTokens: [Int32], vocabulary: ByteStringMap, merges: MergeTable, preTokenizer: PreTokenizer, ignoreMerges: Bool) {
        self.byteTokens = byteTokens
        self.vocabulary = vocabulary
        self.merges = merges
        self.preTokenizer = preTokenizer
        self.ignoreMerges = ignoreMerges
    }

    /// Encodes one stretch of plain text (no special tokens in it) and appends its tokens to `output`.
    func encode(_ text: UnsafeBufferPointer<UInt8>, into output: inout [Int], state: inout BPEState) {
        guard let base = text.baseAddress, !text.isEmpty else { return }
        var ends: [Int] = []
        swap(&ends, &state.pieceEnds)
        ends.removeAll(keepingCapacity: true)
        preTokenizer.split(text, scratch: &state.preScratch, ends: &ends)
        var start = 0
        for end in ends {
            encodePiece(base + start, end - start, into: &output, state: &state)
            start = end
        }
        swap(&ends, &state.pieceEnds)
    }

    /// Appends the tokens of one piece (`n` bytes at `p`).
    @inline(__always)
    func encodePiece(_ p: UnsafePointer<UInt8>, _ n: Int, into output: inout [Int], state: inout BPEState) {
        if n == 1 {
            let t = byteTokens[Int(p[0])]
            if t >= 0 { output.append(Int(t)) }
            return
        }
        if ignoreMerges {
            let t = vocabulary.find(p, n)
            if t >= 0 { output.append(Int(t)); return }
        }
        let cached = state.cache.find(p, n)
        if cached >= 0 {
            let range = state.cacheRanges[Int(cached)]
            for i in Int(range.start)..<Int(range.end) { output.append(Int(state.cacheTokens[i])) }
            return
        }
        let first = state.cacheTokens.count
        merge(p, n, state: &state)
        for i in first..<state.cacheTokens.count { output.append(Int(state.cacheTokens[i])) }
        if state.cache.count < BPEState.maxCachedPieces {
            state.cache.insert(p, n, value: Int32(state.cacheRanges.count))
            state.cacheRanges.append((Int32(first), Int32(state.cacheTokens.count)))
        } else {
            state.cacheTokens.removeSubrange(first...)
        }
    }

    /// Runs the merges on one piece and appends the result to `state.cacheTokens`.
    ///
    /// The lowest-ranked adjacent pair merges first, the leftmost among equals (llama.cpp's priority queue order).
    /// A min-heap holds `rank << 32 | position` for every mergeable pair; an entry whose rank no longer matches the
    /// pair now at its position is stale and skipped (a rank names one pair of tokens, so equal ranks mean the same pair).
    private func merge(_ p: UnsafePointer<UInt8>, _ n: Int, state: inout BPEState) {
        let none = UInt32.max
        state.symbols.removeAll(keepingCapacity: true)
        state.next.removeAll(keepingCapacity: true)
        state.prev.removeAll(keepingCapacity: true)
        state.pairRank.removeAll(keepingCapacity: true)
        state.pairMerged.removeAll(keepingCapacity: true)
        state.heap.removeAll(keepingCapacity: true)
        for i in 0..<n {
            state.symbols.append(byteTokens[Int(p[i])])
            state.next.append(Int32(i + 1 < n ? i + 1 : -1))
            state.prev.append(Int32(i - 1))
            state.pairRank.append(none)
            state.pairMerged.append(-1)
        }
        for i in 0..<(n - 1) {
            let m = merges.lookup(state.symbols[i], state.symbols[i + 1])
            if m != UInt64.max {
                state.pairRank[i] = UInt32(m >> 32)
                state.pairMerged[i] = Int32(truncatingIfNeeded: m)
                state.heap.push(m & 0xFFFF_FFFF_0000_0000 | UInt64(i))
            }
        }
        while let top = state.heap.popMin() {
            let i = Int(top & 0xFFFF_FFFF)
            guard state.pairRank[i] == UInt32(top >> 32) else { continue }
            let j = Int(state.next[i])
            // Merge symbol j into symbol i.
            state.symbols[i] = state.pairMerged[i]
            state.pairRank[j] = none
            let after = state.next[j]
            state.next[i] = after
            if after >= 0 { state.prev[Int(after)] = Int32(i) }
            // The pairs on both sides of the new symbol change.
            let before = Int(state.prev[i])
            if before >= 0 { updatePair(before, i, state: &state) }
            if after >= 0 { updatePair(i, Int(after), state: &state) } else { state.pairRank[i] = none }
        }
        var i = 0
        while i >= 0 {
            let t = state.symbols[i]
            if t >= 0 { state.cacheTokens.append(t) }
            i = Int(state.next[i])
        }
    }

    @inline(__always) private func updatePair(_ left: Int, _ right: Int, state: inout BPEState) {
        let m = merges.lookup(state.symbols[left], state.symbols[right])
        if m == UInt64.max {
            state.pairRank[left] = UInt32.max
        } else {
            state.pairRank[left] = UInt32(m >> 32)
            state.pairMerged[left] = Int32(truncatingIfNeeded: m)
            state.heap.push(m & 0xFFFF_FFFF_0000_0000 | UInt64(left))
        }
    }
}

/// Per-call working memory of the BPE encoder: reusable buffers and a cache of pieces already encoded
/// (running text repeats its words; the cache lives for one `encode` call, so the tokenizer stays thread-safe).
struct BPEState {
    static let maxCachedPieces = 1 << 20
    var preScratch = PreTokenizerScratch()
    var pieceEnds: [Int] = []
    var symbols: [Int32] = []
    var next: [Int32] = []
    var prev: [Int32] = []
    var pairRank: [UInt32] = []
    var pairMerged: [Int32] = []
    var heap = MinHeap()
    var cache = ByteStringMap(capacity: 1024)
    var cacheRanges: [(start: Int32, end: Int32)] = []
    var cacheTokens: [Int32] = []
}

/// A binary min-heap of `UInt64` keys.
struct MinHeap {
    private var items: [UInt64] = []
    var isEmpty: Bool { items.isEmpty }

    mutating func removeAll(keepingCapacity: Bool) { items.removeAll(keepingCapacity: keepingCapacity) }

    mutating func push(_ x: UInt64) {
        items.append(x)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if items[parent] <= x { break }
            items[i] = items[parent]
            i = parent
        }
        items[i] = x
    }

    mutating func popMin() -> UInt64? {
        guard let last = items.popLast() else { return nil }
        guard !items.isEmpty else { return last }
        let top = items[0]
        let n = items.count
        var i = 0
        while true {
            var child = 2 * i + 1
            if child >= n { break }
            if child + 1 < n && items[child + 1] < items[child] { child += 1 }
            if items[child] >= last { break }
            items[i] = items[child]
            i = child
        }
        items[i] = last
        return top
    }
}
