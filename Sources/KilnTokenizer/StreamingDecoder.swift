/// Turns tokens into text one at a time while generating, never emitting half a character: bytes of a UTF-8
/// sequence that is still incomplete wait for the next token. Invalid bytes come out as U+FFFD.
///
/// ```swift
/// var stream = StreamingDecoder(tokenizer: tok)
/// for id in generated { print(stream.push(id), terminator: "") }
/// print(stream.flush())
/// ```
public struct StreamingDecoder {
    public let tokenizer: Tokenizer
    /// Show control tokens (`<|im_end|>`) as text.
    public var renderSpecial: Bool
    private var pending: [UInt8] = []
    private var atStart = true

    public init(tokenizer: Tokenizer, renderSpecial: Bool = false) {
        self.tokenizer = tokenizer
        self.renderSpecial = renderSpecial
    }

    /// Adds one token; returns the text that is now complete (often empty in the middle of a multibyte character).
    public mutating func push(_ id: Int) -> String {
        let before = pending.count
        tokenizer.appendPiece(id, renderSpecial: renderSpecial, atStart: atStart, to: &pending)
        if pending.count > before || tokenizer.tokenType(id) == .normal { atStart = false }
        let complete = StreamingDecoder.completePrefixLength(pending)
        guard complete > 0 else { return "" }
        let text = String(decoding: pending[..<complete], as: UTF8.self)
        pending.removeFirst(complete)
        return text
    }

    /// Whatever is still held back (an incomplete character at the end of the stream, as U+FFFD).
    public mutating func flush() -> String {
        defer { pending.removeAll() }
        return pending.isEmpty ? "" : String(decoding: pending, as: UTF8.self)
    }

    /// The number of leading bytes that can be decoded now: all of them, except a trailing sequence that is valid so
    /// far but incomplete (a lead byte followed by fewer continuation bytes than it announces).
    static func completePrefixLength(_ bytes: [UInt8]) -> Int {
        let n = bytes.count
        // A UTF-8 sequence is at most 4 bytes: look for its lead byte among the last 3.
        var i = n - 1
        while i >= 0 && i >= n - 3 {
            let b = bytes[i]
            if b & 0xC0 == 0x80 { i -= 1; continue }        // continuation byte: keep looking for the lead
            let need: Int
            switch b {
            case 0xC2...0xDF: need = 2
            case 0xE0...0xEF: need = 3
            case 0xF0...0xF4: need = 4
            default: return n                                // ASCII or an invalid byte: nothing to wait for
            }
            return n - i < need ? i : n
        }
        return n
    }
}
