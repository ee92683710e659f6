/// SentencePiece-style BPE with byte fallback (Llama 1/2, Mistral, Phi-3: GGUF `tokenizer.ggml.model` = "llama"),
/// as llama.cpp's `llm_tokenizer_spm_session`: spaces become "▁", the text starts as one symbol per UTF-8 character,
/// and the adjacent pair whose concatenation is the highest-scoring token merges first (leftmost among equals).
/// Symbols that are not tokens at the end fall back to `<0xNN>` byte tokens.
final class SentencePieceBPE: @unchecked Sendable {
    /// Token text bytes -> id, over the whole vocabulary.
    let vocabulary: ByteStringMap
    let scores: [Float]
    /// The token of each byte value (`<0xNN>`, else the single-byte token), or -1.
    let byteTokens: [Int32]

    /// No token has a "▁" right after another character, so no merge can cross the start of a word: the text can be
    /// encoded word by word with the same result, in small queues instead of one queue as long as the text.
    let splitsAtWordStarts: Bool

    init(vocabulary: ByteStringMap, scores: [Float], byteTokens: [Int32], tokenTexts: [String]) {
        self.vocabulary = vocabulary
        self.scores = scores
        self.byteTokens = byteTokens
        splitsAtWordStarts = !tokenTexts.contains { text in
            let u = Array(text.utf8)
            return (3..<max(3, u.count)).contains { SentencePieceBPE.isWordStart(u, $0) }
        }
    }

    /// Whether a "▁" (E2 96 81) begins at byte `i` of `u`, after a character other than "▁".
    @inline(__always) static func isWordStart(_ u: UnsafeBufferPointer<UInt8>, _ i: Int) -> Bool {
        i >= 3 && i + 2 < u.count && u[i] == 0xE2 && u[i + 1] == 0x96 && u[i + 2] == 0x81
            && !(u[i - 3] == 0xE2 && u[i - 2] == 0x96 && u[i - 1] == 0x81)
    }
    static func isWordStart(_ u: [UInt8], _ i: Int) -> Bool { u.withUnsafeBufferPointer { isWordStart($0, i) } }

    private struct Symbol { var start: Int; var length: Int; var prev: Int; var next: Int }
    private struct Bigram { var score: Float; var left: Int; var right: Int; var size: Int }

    /// Encodes text whose spaces are already escaped to "▁" and appends the tokens to `output`.
    func encode(_ text: [UInt8], into output: inout [Int]) {
        text.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress, !buffer.isEmpty else { return }
            var symbols: [Symbol] = []
            var queue = BigramQueue()
            guard splitsAtWordStarts else {
                encodeChunk(base, buffer.count, &symbols, &queue, into: &output)
                return
            }
            var start = 0
            for i in 3..<max(3, buffer.count) where SentencePieceBPE.isWordStart(buffer, i) {
                encodeChunk(base + start, i - start, &symbols, &queue, into: &output)
                start = i
            }
            encodeChunk(base + start, buffer.count - start, &symbols, &queue, into: &output)
        }
    }

    private func encodeChunk(_ base: UnsafePointer<UInt8>, _ n: Int, _ symbols: inout [Symbol], _ queue: inout BigramQueue,
                             into output: inout [Int]) {
        symbols.removeAll(keepingCapacity: true)
        queue.removeAll()
        var offset = 0
        while offset < n {
            let length = min(SentencePieceBPE.utf8Length(base[offset]), n - offset)
            symbols.append(Symbol(start: offset, length: length, prev: symbols.count - 1, next: offset + length < n ? symbols.count + 1 : -1))
            offset += length
        }
        symbols.withUnsafeMutableBufferPointer { symbols in
            for i in 1..<max(1, symbols.count) { tryAdd(i - 1, i, symbols, base, &queue) }
            while let b = queue.pop() {
                let l = symbols[b.left], r = symbols[b.right]
                // Skip pairs one of whose symbols has merged since.
                if l.length == 0 || r.length == 0 || l.length + r.length != b.size { continue }
                symbols[b.left].length += r.length
                symbols[b.right].length = 0
                symbols[b.left].next = r.next
                if r.next >= 0 { symbols[r.next].prev = b.left }
                tryAdd(symbols[b.left].prev, b.left, symbols, base, &queue)
                tryAdd(b.left, symbols[b.left].next, symbols, base, &queue)
            }
            var i = 0
            while i >= 0 {
                let s = symbols[i]
                let id = vocabulary.find(base + s.start, s.length)
                if id >= 0 {
                    output.append(Int(id))
                } else {
                    for k in 0..<s.length {
                        let t = byteTokens[Int(base[s.start + k])]
                        if t >= 0 { output.append(Int(t)) }
                    }
                }
                i = s.next
            }
        }
    }

    /// Queues the pair (left, right) when their concatenation is a token.
    @inline(__always)
    private func tryAdd(_ left: Int, _ right: Int, _ symbols: UnsafeMutableBufferPointer<Symbol>, _ base: UnsafePointer<UInt8>,
                        _ queue: inout BigramQueue) {
        guard left >= 0, right >= 0 else { return }
        let l = symbols[left], r = symbols[right]
        let size = l.length + r.length
        let id = vocabulary.find(base + l.start, size)
        guard id >= 0, Int(id) < scores.count else { return }
        queue.push(score: scores[Int(id)], left: left, right: right, size: size)
    }

    /// Length of a UTF-8 sequence from its first byte (llama.cpp's `unicode_len_utf8`: a stray byte counts as 1).
    static func utf8Length(_ b: UInt8) -> Int {
        switch b >> 4 {
        case 0xC, 0xD: return 2
        case 0xE: return 3
        case 0xF: return 4
        default: return 1
        }
    }

    /// A max-heap of bigrams by score, ties to the leftmost.
    private struct BigramQueue {
        private var items: [Bigram] = []
        mutating func removeAll() { items.removeAll(keepingCapacity: true) }
        @inline(__always) private static func before(_ a: Bigram, _ b: Bigram) -> Bool {
            a.score > b.score || (a.score == b.score && a.left < b.left)
        }
        mutating func push(score: Float, left: Int, right: Int, size: Int) {
            let x = Bigram(score: score, left: left, right: right, size: size)
            items.append(x)
            var i = items.count - 1
            while i > 0 {
                let parent = (i - 1) / 2
                if !BigramQueue.before(x, items[parent]) { break }
                items[i] = items[parent]
                i = parent
            }
            items[i] = x
        }
        mutating func pop() -> Bigram? {
            guard let last = items.popLast() else { return nil }
            guard !items.isEmpty else { return last }
            let top = items[0]
            let n = items.count
            var i = 0
            while true {
                var child = 2 * i + 1
                if child >= n { break }
                if child + 1 < n && BigramQueue.before(items[child + 1], items[child]) { child += 1 }
                if !BigramQueue.before(items[child], last) { break }
                items[i] = items[child]
                i = child
            }
            items[i] = last
            return top
        }
    }
}
