#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// A stretch of input: plain text (a byte range) or a special token found in it.
enum TextFragment: Equatable {
    case text(Range<Int>)
    case token(Int)
}

/// Finds added tokens (control, user-defined, unknown) in raw text before BPE runs, as llama.cpp's
/// `tokenizer_st_partition`: tokens are tried longest first, each splitting every plain-text fragment left at all of
/// its occurrences. Without `parseSpecial` only user-defined tokens are found (Hugging Face always extracts
/// non-special added tokens); control and unknown tokens stay plain text.
struct SpecialTokenSplitter {
    struct Entry {
        var id: Int
        var bytes: [UInt8]
        var isControl: Bool     // control or unknown: found only with parseSpecial
        var lstrip: Bool        // swallow whitespace on the left
        var rstrip: Bool        // swallow whitespace on the right
    }
    let entries: [Entry]
    let hasUserDefined: Bool

    init(entries: [Entry]) {
        // Longest first; ties by id so the order does not depend on the sort.
        self.entries = entries.filter { !$0.bytes.isEmpty }.sorted { ($0.bytes.count, -$0.id) > ($1.bytes.count, -$1.id) }
        hasUserDefined = self.entries.contains { !$0.isControl }
    }

    func split(_ text: UnsafeBufferPointer<UInt8>, parseSpecial: Bool) -> [TextFragment] {
        guard !text.isEmpty else { return [] }
        var fragments: [TextFragment] = [.text(0..<text.count)]
        guard parseSpecial || hasUserDefined, let base = text.baseAddress else { return fragments }
        for entry in entries where parseSpecial || !entry.isControl {
            var result: [TextFragment] = []
            result.reserveCapacity(fragments.count)
            var changed = false
            for fragment in fragments {
                guard case .text(let range) = fragment else { result.append(fragment); continue }
                var start = range.lowerBound
                let end = range.upperBound
                while start < end, let match = SpecialTokenSplitter.find(entry.bytes, in: base, from: start, to: end) {
                    changed = true
                    var leftEnd = match
                    if entry.lstrip { while leftEnd > start && SpecialTokenSplitter.isSpace(base[leftEnd - 1]) { leftEnd -= 1 } }
                    if leftEnd > start { result.append(.text(start..<leftEnd)) }
                    result.append(.token(entry.id))
                    start = match + entry.bytes.count
                    if entry.rstrip { while start < end && SpecialTokenSplitter.isSpace(base[start]) { start += 1 } }
                }
                if start < end { result.append(.text(start..<end)) }
            }
            if changed { fragments = result }
        }
        return fragments
    }

    /// C `isspace` in the C locale, which llama.cpp uses for lstrip/rstrip.
    @inline(__always) static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || (b >= 0x09 && b <= 0x0D) }

    /// The first occurrence of `needle` in `base[from..<to]`.
    static func find(_ needle: [UInt8], in base: UnsafePointer<UInt8>, from: Int, to: Int) -> Int? {
        let m = needle.count
        guard m > 0, to - from >= m else { return nil }
        return needle.withUnsafeBufferPointer { n -> Int? in
            guard let np = n.baseAddress else { return nil }
            let first = Int32(np[0])
            var i = from
            let last = to - m
            while i <= last {
                guard let hit = memchr(base + i, first, last - i + 1) else { return nil }
                let at = base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
                if memcmp(base + at, np, m) == 0 { return at }
                i = at + 1
            }
            return nil
        }
    }
}
