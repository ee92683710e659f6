import Foundation

/// Where something is in the template source (1-based), for error messages.
public struct SourcePosition: Sendable, Equatable {
    public var line: Int
    public var column: Int
}

/// An error found while parsing or rendering; `ChatTemplate` turns it into a one-line `KilnError`.
struct TemplateError: Error {
    var message: String
    var position: SourcePosition?
}

/// One token inside `{{ }}` or `{% %}`.
struct Token {
    enum Kind: Equatable {
        case name(String)
        case string(String)
        case int(Int)
        case float(Double)
        case op(String)
    }
    var kind: Kind
    var position: SourcePosition
}

/// The template cut into text and tags, with whitespace control already applied.
enum Segment {
    case text(String)
    /// `{{ ... }}`, with the positions of the opener and of the closer.
    case output([Token], SourcePosition, SourcePosition)
    /// `{% ... %}`, with the positions of the opener and of the closer.
    case statement([Token], SourcePosition, SourcePosition)
}

/// Splits a template into segments the way jinja2's lexer does with `trim_blocks=True` and
/// `lstrip_blocks=True` (the configuration transformers' `apply_chat_template` uses).
struct JinjaLexer {
    private let chars: [Unicode.Scalar]
    private var pos = 0
    private var line = 1
    private var column = 1
    /// jinja2's `line_starting`: the previous tag's match ended with a newline, so a block tag at
    /// the very start of the following text still counts as being at the start of a line.
    private var lineStarting = true
    /// Where the last tag's `}}` or `%}` (or `-}}`, `-%}`) began, for "found end of tag" errors.
    private var closerPosition = SourcePosition(line: 1, column: 1)

    init(source: String) {
        // jinja2 normalises newlines and drops one trailing newline (keep_trailing_newline=False).
        var text = source.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n")
        if text.hasSuffix("\n") { text.removeLast() }
        chars = Array(text.unicodeScalars)
    }

    mutating func segments() throws -> [Segment] {
        var result: [Segment] = []
        while pos < chars.count {
            guard let tagStart = findTagStart(from: pos) else {
                result.append(.text(take(upTo: chars.count)))
                break
            }
            var data = take(upTo: tagStart)
            let opener = chars[pos + 1]  // "{", "%" or "#"
            let modifier: Unicode.Scalar? = pos + 2 < chars.count ? chars[pos + 2] : nil
            if modifier == "-" {
                data = Self.rstripWhitespace(data)
            } else if modifier != "+" && opener != "{" {
                data = lstripBlock(data)
            }
            if !data.isEmpty { result.append(.text(data)) }
            let tagPosition = SourcePosition(line: line, column: column)
            advance(by: (modifier == "-" || modifier == "+") ? 3 : 2)
            switch opener {
            case "#":
                try skipComment(opened: tagPosition)
            case "{":
                let tokens = try tagTokens(closer: "}", opened: tagPosition)
                result.append(.output(tokens, tagPosition, closerPosition))
            default:
                let tokens = try tagTokens(closer: "%", opened: tagPosition)
                if tokens.count == 1, tokens[0].kind == .name("raw") {
                    result.append(.text(try rawBody(opened: tagPosition)))
                } else {
                    result.append(.statement(tokens, tagPosition, closerPosition))
                }
            }
        }
        return result
    }

    // MARK: - Text and whitespace control

    private func findTagStart(from start: Int) -> Int? {
        var i = start
        while i + 1 < chars.count {
            if chars[i] == "{", chars[i + 1] == "{" || chars[i + 1] == "%" || chars[i + 1] == "#" { return i }
            i += 1
        }
        return nil
    }

    private mutating func take(upTo end: Int) -> String {
        var s = String.UnicodeScalarView()
        s.append(contentsOf: chars[pos..<end])
        advance(by: end - pos)
        return String(s)
    }

    private mutating func advance(by n: Int) {
        for _ in 0..<n {
            if chars[pos] == "\n" { line += 1; column = 1 } else { column += 1 }
            pos += 1
        }
    }

    static func isWhitespace(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace }

    static func rstripWhitespace(_ s: String) -> String {
        var scalars = Array(s.unicodeScalars)
        while let last = scalars.last, isWhitespace(last) { scalars.removeLast() }
        var v = String.UnicodeScalarView(); v.append(contentsOf: scalars); return String(v)
    }

    /// lstrip_blocks: drop spaces between the start of the line and a `{%` or `{#`.
    private func lstripBlock(_ data: String) -> String {
        let scalars = Array(data.unicodeScalars)
        let lineStart = (scalars.lastIndex(of: "\n") ?? -1) + 1
        guard lineStart > 0 || lineStarting else { return data }
        guard scalars[lineStart...].allSatisfy(Self.isWhitespace) else { return data }
        var v = String.UnicodeScalarView(); v.append(contentsOf: scalars[..<lineStart]); return String(v)
    }

    /// After a tag's closer: `-` strips all following whitespace, otherwise trim_blocks removes
    /// one newline after block tags and comments (never after `}}`).
    private mutating func finishTag(stripAfter: Bool, isBlock: Bool) {
        var consumedNewline = false
        if stripAfter {
            while pos < chars.count, Self.isWhitespace(chars[pos]) { consumedNewline = chars[pos] == "\n"; advance(by: 1) }
        } else if isBlock, pos < chars.count, chars[pos] == "\n" {
            advance(by: 1); consumedNewline = true
        }
        lineStarting = consumedNewline
    }

    private mutating func skipComment(opened: SourcePosition) throws {
        while pos + 1 < chars.count {
            if chars[pos] == "#", chars[pos + 1] == "}" {
                let strip = pos > 0 && chars[pos - 1] == "-"
                advance(by: 2)
                finishTag(stripAfter: strip, isBlock: true)
                return
            }
            advance(by: 1)
        }
        throw TemplateError(message: "unclosed comment: missing '#}'", position: opened)
    }

    /// `{% raw %}...{% endraw %}`: the body is text, tags inside are not interpreted.
    private mutating func rawBody(opened: SourcePosition) throws -> String {
        var i = pos
        while let start = findTagStart(from: i) {
            var j = start + 2
            if j < chars.count, chars[j] == "-" || chars[j] == "+" { j += 1 }
            while j < chars.count, Self.isWhitespace(chars[j]) { j += 1 }
            let word = "endraw".unicodeScalars
            if chars[start + 1] == "%", j + word.count <= chars.count, Array(chars[j..<j + word.count]) == Array(word) {
                var k = j + word.count
                while k < chars.count, Self.isWhitespace(chars[k]) { k += 1 }
                let strip = k < chars.count && chars[k] == "-"
                if strip { k += 1 }
                if k + 1 < chars.count, chars[k] == "%", chars[k + 1] == "}" {
                    var body = take(upTo: start)
                    if chars[start + 2] == "-" { body = Self.rstripWhitespace(body) }
                    advance(by: k + 2 - pos)
                    finishTag(stripAfter: strip, isBlock: true)
                    return body
                }
            }
            i = start + 1
        }
        throw TemplateError(message: "unclosed 'raw' block: missing '{% endraw %}'", position: opened)
    }

    // MARK: - Tokens inside a tag

    private static let operators2: Set<String> = ["//", "**", "==", "!=", "<=", ">="]
    private static let operators1: Set<Unicode.Scalar> = ["+", "-", "*", "/", "%", "~", "<", ">", "=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|"]

    /// Reads tokens up to the tag's closer (`}}` or `%}`), which only counts outside brackets.
    private mutating func tagTokens(closer: Unicode.Scalar, opened: SourcePosition) throws -> [Token] {
        var tokens: [Token] = []
        var depth = 0
        let what = closer == "}" ? "'}}'" : "'%}'"
        while true {
            while pos < chars.count, Self.isWhitespace(chars[pos]) { advance(by: 1) }
            guard pos < chars.count else { throw TemplateError(message: "unclosed tag: missing \(what)", position: opened) }
            let c = chars[pos]
            let next: Unicode.Scalar? = pos + 1 < chars.count ? chars[pos + 1] : nil
            let afterNext: Unicode.Scalar? = pos + 2 < chars.count ? chars[pos + 2] : nil
            if depth == 0 {
                closerPosition = SourcePosition(line: line, column: column)
                if c == closer, next == "}" { advance(by: 2); finishTag(stripAfter: false, isBlock: closer == "%"); return tokens }
                if c == "-", next == closer, afterNext == "}" { advance(by: 3); finishTag(stripAfter: true, isBlock: closer == "%"); return tokens }
            }
            let here = SourcePosition(line: line, column: column)
            if c == "'" || c == "\"" {
                tokens.append(Token(kind: .string(try stringLiteral(quote: c)), position: here))
            } else if c.properties.isAlphabetic || c == "_" {
                var s = String.UnicodeScalarView()
                while pos < chars.count, chars[pos].properties.isAlphabetic || chars[pos] == "_" || ("0"..."9").contains(chars[pos]) {
                    s.append(chars[pos]); advance(by: 1)
                }
                tokens.append(Token(kind: .name(String(s)), position: here))
            } else if ("0"..."9").contains(c) {
                let afterDot = tokens.last?.kind == .op(".")
                tokens.append(Token(kind: try numberLiteral(allowFloat: !afterDot, at: here), position: here))
            } else if let n = next, Self.operators2.contains(String(c) + String(n)) {
                tokens.append(Token(kind: .op(String(c) + String(n)), position: here)); advance(by: 2)
            } else if Self.operators1.contains(c) {
                if c == "(" || c == "[" || c == "{" { depth += 1 }
                if c == ")" || c == "]" || c == "}" { depth = max(0, depth - 1) }
                tokens.append(Token(kind: .op(String(c)), position: here)); advance(by: 1)
            } else {
                throw TemplateError(message: "unexpected character '\(c)'", position: here)
            }
        }
    }

    private mutating func numberLiteral(allowFloat: Bool, at here: SourcePosition) throws -> Token.Kind {
        func digits() -> String {
            var s = ""
            while pos < chars.count, ("0"..."9").contains(chars[pos]) || (chars[pos] == "_" && pos + 1 < chars.count && ("0"..."9").contains(chars[pos + 1])) {
                if chars[pos] != "_" { s.unicodeScalars.append(chars[pos]) }
                advance(by: 1)
            }
            return s
        }
        var text = digits()
        var isFloat = false
        if allowFloat, pos + 1 < chars.count, chars[pos] == ".", ("0"..."9").contains(chars[pos + 1]) {
            advance(by: 1); text += "." + digits(); isFloat = true
        }
        if allowFloat, pos < chars.count, chars[pos] == "e" || chars[pos] == "E" {
            var k = pos + 1
            if k < chars.count, chars[k] == "+" || chars[k] == "-" { k += 1 }
            if k < chars.count, ("0"..."9").contains(chars[k]) {
                var exp = "e"
                advance(by: 1)
                if chars[pos] == "+" || chars[pos] == "-" { exp.unicodeScalars.append(chars[pos]); advance(by: 1) }
                text += exp + digits(); isFloat = true
            }
        }
        if isFloat { return .float(Double(text) ?? .infinity) }
        guard let i = Int(text) else { throw TemplateError(message: "integer literal \(text) is too large", position: here) }
        return .int(i)
    }

    /// A quoted string with Python's escapes (jinja2 decodes literals with `unicode-escape`).
    private mutating func stringLiteral(quote: Unicode.Scalar) throws -> String {
        let start = SourcePosition(line: line, column: column)
        advance(by: 1)
        var out = String.UnicodeScalarView()
        while pos < chars.count {
            let c = chars[pos]
            if c == quote { advance(by: 1); return String(out) }
            if c == "\\", pos + 1 < chars.count {
                let e = chars[pos + 1]
                advance(by: 2)
                switch e {
                case "n": out.append("\n")
                case "t": out.append("\t")
                case "r": out.append("\r")
                case "\\": out.append("\\")
                case "'": out.append("'")
                case "\"": out.append("\"")
                case "a": out.append("\u{07}")
                case "b": out.append("\u{08}")
                case "f": out.append("\u{0C}")
                case "v": out.append("\u{0B}")
                case "\n": break
                case "x", "u", "U":
                    let width = e == "x" ? 2 : (e == "u" ? 4 : 8)
                    var hex = ""
                    while hex.count < width, pos < chars.count, chars[pos].properties.isASCIIHexDigit { hex.unicodeScalars.append(chars[pos]); advance(by: 1) }
                    guard hex.count == width, let v = UInt32(hex, radix: 16), let scalar = Unicode.Scalar(v) else {
                        throw TemplateError(message: "bad \\\(e) escape in string literal", position: start)
                    }
                    out.append(scalar)
                case "0"..."7":
                    var oct = String(e)
                    while oct.count < 3, pos < chars.count, ("0"..."7").contains(chars[pos]) { oct.unicodeScalars.append(chars[pos]); advance(by: 1) }
                    out.append(Unicode.Scalar(UInt32(oct, radix: 8)!) ?? "?")
                default:
                    out.append("\\"); out.append(e)  // Python keeps unknown escapes as written
                }
                continue
            }
            out.append(c)
            advance(by: 1)
        }
        throw TemplateError(message: "unterminated string literal", position: start)
    }
}
