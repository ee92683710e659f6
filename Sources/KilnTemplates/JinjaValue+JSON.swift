import Foundation
import KilnCore

extension JinjaValue {
    /// Parses JSON the way Python's `json.loads` does: object key order is kept (so `tojson`
    /// re-emits tool schemas in the caller's order), `1` is an int and `1.0` a float.
    ///
    /// Use it to pass request data such as `tools` or messages with tool calls to a template.
    public init(json: String) throws {
        var parser = JSONValueParser(scalars: Array(json.unicodeScalars))
        do {
            parser.skipSpace()
            self = try parser.value(depth: 0)
            parser.skipSpace()
            if parser.pos < parser.scalars.count { throw parser.fail("trailing characters") }
        } catch let error as TemplateError {
            throw KilnError("invalid JSON for a template value: \(error.message)")
        }
    }
}

/// A small recursive-descent JSON reader producing `JinjaValue`s.
private struct JSONValueParser {
    let scalars: [Unicode.Scalar]
    var pos = 0

    func fail(_ message: String) -> TemplateError { TemplateError(message: "\(message) at offset \(pos)", position: nil) }

    mutating func skipSpace() {
        while pos < scalars.count, [" ", "\n", "\r", "\t"].contains(scalars[pos]) { pos += 1 }
    }

    mutating func literal(_ word: String, _ value: JinjaValue) throws -> JinjaValue {
        let w = Array(word.unicodeScalars)
        guard pos + w.count <= scalars.count, Array(scalars[pos..<pos + w.count]) == w else { throw fail("unexpected character") }
        pos += w.count
        return value
    }

    mutating func value(depth: Int) throws -> JinjaValue {
        guard depth < 512 else { throw fail("nested too deeply") }
        guard pos < scalars.count else { throw fail("unexpected end") }
        switch scalars[pos] {
        case "n": return try literal("null", .none)
        case "t": return try literal("true", .bool(true))
        case "f": return try literal("false", .bool(false))
        case "\"": return .string(try string())
        case "[":
            pos += 1
            var items: [JinjaValue] = []
            skipSpace()
            if pos < scalars.count, scalars[pos] == "]" { pos += 1; return .array(items) }
            while true {
                skipSpace()
                items.append(try value(depth: depth + 1))
                skipSpace()
                guard pos < scalars.count else { throw fail("unterminated array") }
                if scalars[pos] == "]" { pos += 1; return .array(items) }
                guard scalars[pos] == "," else { throw fail("expected ',' or ']'") }
                pos += 1
            }
        case "{":
            pos += 1
            var d = JinjaDict()
            skipSpace()
            if pos < scalars.count, scalars[pos] == "}" { pos += 1; return .dict(d) }
            while true {
                skipSpace()
                guard pos < scalars.count, scalars[pos] == "\"" else { throw fail("expected a string key") }
                let key = try string()
                skipSpace()
                guard pos < scalars.count, scalars[pos] == ":" else { throw fail("expected ':'") }
                pos += 1
                skipSpace()
                d[key] = try value(depth: depth + 1)
                skipSpace()
                guard pos < scalars.count else { throw fail("unterminated object") }
                if scalars[pos] == "}" { pos += 1; return .dict(d) }
                guard scalars[pos] == "," else { throw fail("expected ',' or '}'") }
                pos += 1
            }
        default:
            let start = pos
            while pos < scalars.count, "+-0123456789.eE".unicodeScalars.contains(scalars[pos]) { pos += 1 }
            let text = String(String.UnicodeScalarView(scalars[start..<pos]))
            if !text.contains(where: { ".eE".contains($0) }), let i = Int(text) { return .int(i) }
            guard !text.isEmpty, let d = Double(text) else { throw fail("unexpected character") }
            return .double(d)
        }
    }

    mutating func string() throws -> String {
        pos += 1
        var out = String.UnicodeScalarView()
        while pos < scalars.count {
            let c = scalars[pos]
            pos += 1
            if c == "\"" { return String(out) }
            guard c == "\\" else { out.append(c); continue }
            guard pos < scalars.count else { break }
            let e = scalars[pos]
            pos += 1
            switch e {
            case "n": out.append("\n")
            case "t": out.append("\t")
            case "r": out.append("\r")
            case "b": out.append("\u{08}")
            case "f": out.append("\u{0C}")
            case "u":
                var code = try hex4()
                if (0xD800..<0xDC00).contains(code), pos + 1 < scalars.count, scalars[pos] == "\\", scalars[pos + 1] == "u" {
                    pos += 2
                    let low = try hex4()
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                }
                out.append(Unicode.Scalar(code) ?? "\u{FFFD}")
            default: out.append(e)
            }
        }
        throw fail("unterminated string")
    }

    mutating func hex4() throws -> UInt32 {
        guard pos + 4 <= scalars.count, let v = UInt32(String(String.UnicodeScalarView(scalars[pos..<pos + 4])), radix: 16) else {
            throw fail("bad \\u escape")
        }
        pos += 4
        return v
    }
}
