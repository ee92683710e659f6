/// The regex pre-tokenizers of byte-level BPE vocabularies, written by hand with exactly the regexes' semantics
/// (leftmost alternative first, greedy quantifiers with backtracking), because a regex engine is far too slow.
///
/// A pre-tokenizer cuts text into pieces ("words"); BPE then runs inside each piece only.
public enum PreTokenizer: String, Sendable, CaseIterable {
    /// Llama 3: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    case llama3
    /// Qwen 2: the Llama 3 regex with single digits, `\p{N}` instead of `\p{N}{1,3}`.
    case qwen2
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    case gpt2
    /// StarCoder, SmolLM, Command-R, Refact: every digit on its own (`\p{N}`), then the GPT-2 regex on the rest.
    case starcoder

    /// The pre-tokenizer of a GGUF `tokenizer.ggml.pre` value (the names llama.cpp gives these regex lists), with
    /// whether the vocabulary skips merging for pieces that are whole tokens already (Hugging Face's `ignore_merges`).
    static func fromGGUF(_ name: String) -> (PreTokenizer, ignoreMerges: Bool)? {
        switch name {
        case "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2": return (.llama3, true)
        case "dbrx", "smaug-bpe": return (.llama3, false)
        case "qwen2", "deepseek-r1-qwen", "kormo", "stablelm2", "hunyuan", "megrez": return (.qwen2, false)
        case "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
             "mpt", "olmo", "jais", "trillion", "granite-docling", "exaone4": return (.gpt2, false)
        case "starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b": return (.starcoder, false)
        default: return nil
        }
    }
    static let supportedGGUFNames = "llama-bpe (llama3), qwen2, gpt-2, mpt, olmo, starcoder, smollm, refact, command-r and their aliases"

    /// Cuts `text` into pieces; appends each piece's end (a byte offset into `text`) to `ends`.
    func split(_ text: UnsafeBufferPointer<UInt8>, scratch: inout PreTokenizerScratch, ends: inout [Int]) {
        if text.isEmpty { return }
        let n = scratch.decode(text)
        var pieceEnds: [Int32] = []
        swap(&pieceEnds, &scratch.scalarEnds)   // reuse the buffer without overlapping access to `scratch`
        pieceEnds.removeAll(keepingCapacity: true)
        scratch.withText { t in
            switch self {
            case .llama3: PreTokenizer.splitLlama3(t, 0, n, maxDigits: 3, into: &pieceEnds)
            case .qwen2: PreTokenizer.splitLlama3(t, 0, n, maxDigits: 1, into: &pieceEnds)
            case .gpt2: PreTokenizer.splitGPT2(t, 0, n, into: &pieceEnds)
            case .starcoder:
                // `\p{N}` first: digits become pieces of their own; the GPT-2 regex then runs on each stretch between.
                var start = 0
                for i in 0..<n where t.cls[i] & CharacterClass.number != 0 {
                    if i > start { PreTokenizer.splitGPT2(t, start, i, into: &pieceEnds) }
                    pieceEnds.append(Int32(i + 1))
                    start = i + 1
                }
                if n > start { PreTokenizer.splitGPT2(t, start, n, into: &pieceEnds) }
            }
        }
        for e in pieceEnds { ends.append(Int(scratch.byteOffsets[Int(e)])) }
        swap(&pieceEnds, &scratch.scalarEnds)
    }

    struct ScalarText {
        let cp: UnsafeBufferPointer<UInt32>
        let cls: UnsafeBufferPointer<UInt8>
    }

    @inline(__always) private static func lowerASCII(_ c: UInt32) -> UInt32 { (c >= 65 && c <= 90) ? c + 32 : c }

    /// Length of a contraction (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`) at `i`, or 0.
    @inline(__always)
    private static func contraction(_ t: ScalarText, _ i: Int, _ end: Int, caseInsensitive: Bool) -> Int {
        guard t.cp[i] == 0x27, i + 1 < end else { return 0 }
        let c1 = caseInsensitive ? lowerASCII(t.cp[i + 1]) : t.cp[i + 1]
        switch c1 {
        case 0x73, 0x74, 0x6D, 0x64: return 2   // s t m d
        default: break
        }
        guard i + 2 < end else { return 0 }
        let c2 = caseInsensitive ? lowerASCII(t.cp[i + 2]) : t.cp[i + 2]
        if (c1 == 0x72 && c2 == 0x65) || (c1 == 0x76 && c2 == 0x65) || (c1 == 0x6C && c2 == 0x6C) { return 3 }  // re ve ll
        return 0
    }

    /// The whitespace alternatives shared by both regex families, at a whitespace character `i`:
    /// `\s+(?!\S)` (the run, less its last character when a non-space follows) or else `\s+`.
    @inline(__always) private static func whitespaceRun(_ t: ScalarText, _ i: Int, _ end: Int) -> Int {
        var j = i + 1
        while j < end && t.cls[j] & CharacterClass.whitespace != 0 { j += 1 }
        if j == end || j - i == 1 { return j }
        return j - 1
    }

    static func splitLlama3(_ t: ScalarText, _ start: Int, _ end: Int, maxDigits: Int, into ends: inout [Int32]) {
        let L = CharacterClass.letter, N = CharacterClass.number, WS = CharacterClass.whitespace, NL = CharacterClass.newline
        var i = start
        while i < end {
            let c = t.cls[i]
            var j = i
            defer { ends.append(Int32(j)); i = j }
            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            let k = contraction(t, i, end, caseInsensitive: true)
            if k > 0 { j = i + k; continue }
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if c & L != 0 || (c & (L | N | NL) == 0 && i + 1 < end && t.cls[i + 1] & L != 0) {
                j = i + 1
                while j < end && t.cls[j] & L != 0 { j += 1 }
                continue
            }
            // \p{N}{1,maxDigits}
            if c & N != 0 {
                j = i + 1
                while j < end && j - i < maxDigits && t.cls[j] & N != 0 { j += 1 }
                continue
            }
            // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
            let p = (t.cp[i] == 0x20 && i + 1 < end) ? i + 1 : i
            if CharacterClass.isOther(t.cls[p]) {
                j = p + 1
                while j < end && CharacterClass.isOther(t.cls[j]) { j += 1 }
                while j < end && t.cls[j] & NL != 0 { j += 1 }
                continue
            }
            // Only whitespace is left here. \s*[\r\n]+ : the run up to and including its last newline, if it has one.
            var runEnd = i + 1
            while runEnd < end && t.cls[runEnd] & WS != 0 { runEnd += 1 }
            var lastNewline = -1
            for q in stride(from: runEnd - 1, through: i, by: -1) where t.cls[q] & NL != 0 { lastNewline = q; break }
            if lastNewline >= 0 { j = lastNewline + 1; continue }
            // \s+(?!\S) | \s+
            j = whitespaceRun(t, i, end)
        }
    }

    static func splitGPT2(_ t: ScalarText, _ start: Int, _ end: Int, into ends: inout [Int32]) {
        let L = CharacterClass.letter, N = CharacterClass.number
        var i = start
        while i < end {
            var j = i
            defer { ends.append(Int32(j)); i = j }
            // 's|'t|'re|'ve|'m|'ll|'d
            let k = contraction(t, i, end, caseInsensitive: false)
            if k > 0 { j = i + k; continue }
            // An optional space before letters, numbers or other characters.
            let p = (t.cp[i] == 0x20 && i + 1 < end) ? i + 1 : i
            let c = t.cls[p]
            if c & L != 0 {             //  ?\p{L}+
                j = p + 1
                while j < end && t.cls[j] & L != 0 { j += 1 }
                continue
            }
            if c & N != 0 {             //  ?\p{N}+
                j = p + 1
                while j < end && t.cls[j] & N != 0 { j += 1 }
                continue
            }
            if CharacterClass.isOther(c) {   //  ?[^\s\p{L}\p{N}]+
                j = p + 1
                while j < end && CharacterClass.isOther(t.cls[j]) { j += 1 }
                continue
            }
            // \s+(?!\S) | \s+
            j = whitespaceRun(t, i, end)
        }
    }
}

/// Buffers a pre-tokenizer reuses from call to call: the text decoded to scalars, their classes and byte offsets.
struct PreTokenizerScratch {
    var scalars: [UInt32] = []
    var classes: [UInt8] = []
    /// Byte offset of each scalar, plus one past the end.
    var byteOffsets: [Int32] = []
    var scalarEnds: [Int32] = []

    /// Decodes UTF-8 (an invalid byte becomes a scalar of its own with no class); returns the scalar count.
    mutating func decode(_ text: UnsafeBufferPointer<UInt8>) -> Int {
        scalars.removeAll(keepingCapacity: true)
        classes.removeAll(keepingCapacity: true)
        byteOffsets.removeAll(keepingCapacity: true)
        scalars.reserveCapacity(text.count)
        classes.reserveCapacity(text.count)
        byteOffsets.reserveCapacity(text.count + 1)
        let n = text.count
        var i = 0
        CharacterClass.basicPlane.withUnsafeBufferPointer { table in
            @inline(__always) func isContinuation(_ k: Int) -> Bool { k < n && text[k] & 0xC0 == 0x80 }
            while i < n {
                let b0 = UInt32(text[i])
                var cp: UInt32 = 0xFFFD
                var len = 1
                var cls: UInt8 = 0
                if b0 < 0x80 {
                    cp = b0
                } else if b0 & 0xE0 == 0xC0, isContinuation(i + 1) {
                    cp = (b0 & 0x1F) << 6 | UInt32(text[i + 1] & 0x3F); len = 2
                } else if b0 & 0xF0 == 0xE0, isContinuation(i + 1), isContinuation(i + 2) {
                    cp = (b0 & 0x0F) << 12 | UInt32(text[i + 1] & 0x3F) << 6 | UInt32(text[i + 2] & 0x3F); len = 3
                } else if b0 & 0xF8 == 0xF0, isContinuation(i + 1), isContinuation(i + 2), isContinuation(i + 3) {
                    cp = (b0 & 0x07) << 18 | UInt32(text[i + 1] & 0x3F) << 12 | UInt32(text[i + 2] & 0x3F) << 6 | UInt32(text[i + 3] & 0x3F)
                    len = 4
                }
                if len > 1 || b0 < 0x80 { cls = cp < 0x10000 ? table[Int(cp)] : CharacterClass.classifySlowly(cp) }
                scalars.append(cp)
                classes.append(cls)
                byteOffsets.append(Int32(i))
                i += len
            }
        }
        byteOffsets.append(Int32(n))
        return scalars.count
    }

    func withText<R>(_ body: (PreTokenizer.ScalarText) -> R) -> R {
        scalars.withUnsafeBufferPointer { cp in
            classes.withUnsafeBufferPointer { cls in
                body(PreTokenizer.ScalarText(cp: cp, cls: cls))
            }
        }
    }
}
