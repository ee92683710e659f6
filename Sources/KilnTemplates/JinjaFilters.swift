import Foundation

/// jinja2's filters and tests as chat templates use them, plus `tojson` as transformers defines
/// it (`json.dumps(x, ensure_ascii=False, indent=..., separators=..., sort_keys=...)`).
extension JinjaBuiltins {
    typealias Filter = (JinjaValue, Arguments, JinjaInterpreter) throws -> JinjaValue

    /// Every filter name the parser accepts; an unknown name fails when the template is loaded,
    /// as it does in jinja2.
    static var filterNames: Set<String> { Set(filters.keys) }
    static let testNames: Set<String> = [
        "defined", "undefined", "none", "string", "number", "integer", "float", "boolean", "true", "false",
        "mapping", "iterable", "sequence", "callable", "equalto", "eq", "ne", "lt", "le", "gt", "ge",
        "lessthan", "greaterthan", "in", "divisibleby", "even", "odd", "lower", "upper", "sameas", "escaped",
    ]

    static func applyFilter(_ name: String, _ value: JinjaValue, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)],
                            _ interp: JinjaInterpreter) throws -> JinjaValue {
        guard let filter = filters[name] else { throw fail("unknown filter '\(name)'") }
        return try filter(value, Arguments(args, kwargs, name), interp)
    }

    private static func length(_ v: JinjaValue) throws -> Int {
        switch v {
        case .string(let s): return s.unicodeScalars.count
        case .array(let a): return a.count
        case .dict(let d): return d.count
        case .undefined: return 0
        default: throw fail("object of type '\(v.typeName)' has no len()")
        }
    }

    /// jinja2's attribute getter for `selectattr`, `map(attribute=)`, `join(attribute=)`: dotted
    /// paths, integer parts index lists.
    private static func attributePath(_ value: JinjaValue, _ path: String) throws -> JinjaValue {
        var v = value
        for part in path.split(separator: ".") {
            v = try item(v, Int(part).map { .int($0) } ?? .string(String(part)))
        }
        return v
    }

    /// `select`/`reject`/`selectattr`/`rejectattr`: arguments after the test name go to the test.
    private static func selectItems(_ value: JinjaValue, _ args: Arguments, _ interp: JinjaInterpreter,
                                    attribute: Bool, keep: Bool) throws -> JinjaValue {
        var rest = args.positional
        var path: String? = nil
        if attribute {
            guard case .string(let p)? = rest.first else { throw fail("\(args.function)() needs an attribute name") }
            path = p
            rest.removeFirst()
        }
        var testName: String? = nil
        if !rest.isEmpty {
            guard case .string(let t) = rest.removeFirst() else { throw fail("\(args.function)(): test name must be a string") }
            testName = t
        }
        return .array(try iterate(value).filter { item in
            let subject = try path.map { try attributePath(item, $0) } ?? item
            let passed = try testName.map { try applyTest($0, subject, rest, interp) } ?? subject.isTruthy
            return passed == keep
        })
    }

    static let filters: [String: Filter] = [
        "trim": { v, a, _ in .string(strip(v.pythonString, try a.string(0, "chars"), leading: true, trailing: true)) },
        "tojson": { v, a, _ in
            var indent: String? = nil
            switch a.get(0, "indent") {
            case .int(let n)?: indent = String(repeating: " ", count: max(0, n))
            case .string(let s)?: indent = s
            default: break
            }
            var separators = indent == nil ? (", ", ": ") : (",", ": ")
            if case .array(let seps)? = a.get(3, "separators"), seps.count == 2, case .string(let i) = seps[0], case .string(let k) = seps[1] {
                separators = (i, k)
            }
            var encoder = JSONEncoderPython(indent: indent, itemSeparator: separators.0, keySeparator: separators.1,
                                            ensureASCII: a.get(1, "ensure_ascii")?.isTruthy ?? false,
                                            sortKeys: a.get(4, "sort_keys")?.isTruthy ?? false)
            try encoder.encode(v, level: 0)
            return .string(encoder.output)
        },
        "length": { v, _, _ in .int(try length(v)) },
        "count": { v, _, _ in .int(try length(v)) },
        "upper": { v, _, _ in .string(v.pythonString.uppercased()) },
        "lower": { v, _, _ in .string(v.pythonString.lowercased()) },
        "capitalize": { v, _, _ in .string(capitalize(v.pythonString)) },
        "title": { v, _, _ in
            // jinja2's own title: words start after whitespace, '-', or an opening bracket.
            var out = "", atWordStart = true
            for c in v.pythonString.unicodeScalars {
                let boundary = isPythonSpace(c) || "-({[<".unicodeScalars.contains(c)
                out += atWordStart && !boundary ? String(c).uppercased() : String(c).lowercased()
                atWordStart = boundary
            }
            return .string(out)
        },
        "default": defaultFilter, "d": defaultFilter,
        "join": { v, a, _ in
            let separator = try a.string(0, "d") ?? ""
            let path = try a.string(1, "attribute")
            return .string(try iterate(v).map { item in try (path.map { try attributePath(item, $0) } ?? item).pythonString }.joined(separator: separator))
        },
        "first": { v, _, _ in try iterate(v).first ?? .undefined },
        "last": { v, _, _ in try iterate(v).last ?? .undefined },
        "replace": { v, a, _ in
            guard let old = try a.string(0, "old"), let new = try a.string(1, "new") else { throw fail("replace needs old and new strings") }
            return .string(replace(v.pythonString, old, new, count: try a.int(2, "count")))
        },
        "string": { v, _, _ in .string(v.pythonString) },
        "int": { v, a, _ in
            let fallback = a.get(0, "default") ?? .int(0)
            switch v {
            case .int, .bool: return .int(v.integerValue!)
            case .double(let d): return d.isFinite && abs(d) < 9.2e18 ? .int(Int(d)) : fallback
            case .string(let s):
                let t = strip(s, nil, leading: true, trailing: true).replacingOccurrences(of: "_", with: "")
                if let i = Int(t) { return .int(i) }
                if let d = Double(t), d.isFinite, abs(d) < 9.2e18 { return .int(Int(d)) }
                return fallback
            default: return fallback
            }
        },
        "float": { v, a, _ in
            if let d = v.numericValue { return .double(d) }
            if case .string(let s) = v, let d = Double(strip(s, nil, leading: true, trailing: true)) { return .double(d) }
            return a.get(0, "default") ?? .double(0)
        },
        "list": { v, _, _ in .array(try iterate(v)) },
        "items": { v, _, _ in
            switch v {
            case .dict(let d): return .array(d.entries.map { .array([.string($0.key), $0.value]) })
            case .undefined: return .array([])
            default: throw fail("items filter expects a mapping, got \(v.typeName)")
            }
        },
        "selectattr": { v, a, i in try selectItems(v, a, i, attribute: true, keep: true) },
        "rejectattr": { v, a, i in try selectItems(v, a, i, attribute: true, keep: false) },
        "select": { v, a, i in try selectItems(v, a, i, attribute: false, keep: true) },
        "reject": { v, a, i in try selectItems(v, a, i, attribute: false, keep: false) },
        "map": { v, a, interp in
            if let path = try a.string(99, "attribute") {
                let fallback = a.get(99, "default")
                return .array(try iterate(v).map { item in
                    let r = try attributePath(item, path)
                    return r.isUndefined ? (fallback ?? r) : r
                })
            }
            guard case .string(let filterName)? = a.positional.first else { throw fail("map() needs a filter name or attribute=") }
            let rest = Array(a.positional.dropFirst())
            return .array(try iterate(v).map { try applyFilter(filterName, $0, rest, a.keywords, interp) })
        },
        "abs": { v, _, _ in
            switch v {
            case .int(let i): return .int(abs(i))
            case .double(let d): return .double(abs(d))
            case .bool(let b): return .int(b ? 1 : 0)
            default: throw fail("bad operand type for abs(): '\(v.typeName)'")
            }
        },
        "round": { v, a, _ in
            guard let d = v.numericValue else { throw fail("round filter expects a number, got \(v.typeName)") }
            let scale = pow(10.0, Double(try a.int(0, "precision") ?? 0))
            let method = try a.string(1, "method") ?? "common"
            let rule: FloatingPointRoundingRule = method == "ceil" ? .up : (method == "floor" ? .down : .toNearestOrAwayFromZero)
            return .double((d * scale).rounded(rule) / scale)
        },
        "reverse": { v, _, _ in
            if case .string(let s) = v { return .string(String(String.UnicodeScalarView(s.unicodeScalars.reversed()))) }
            return .array(try iterate(v).reversed())
        },
        "sort": { v, a, _ in
            let reverse = a.get(0, "reverse")?.isTruthy ?? false
            let caseSensitive = a.get(1, "case_sensitive")?.isTruthy ?? false
            let path = try a.string(2, "attribute")
            func key(_ x: JinjaValue) throws -> JinjaValue {
                let k = try path.map { try attributePath(x, $0) } ?? x
                if !caseSensitive, case .string(let s) = k { return .string(s.lowercased()) }
                return k
            }
            var failure: Error? = nil
            let sorted = try iterate(v).sorted { x, y in
                do { return try JinjaOperators.compare(try key(reverse ? y : x), try key(reverse ? x : y)) < 0 }
                catch { failure = error; return false }
            }
            if let failure { throw failure }
            return .array(sorted)
        },
        "sum": { v, a, _ in
            var total = a.get(1, "start") ?? .int(0)
            let path = try a.string(0, "attribute")
            for item in try iterate(v) {
                total = try JinjaOperators.binary("+", total, try path.map { try attributePath(item, $0) } ?? item, limits: JinjaLimits())
            }
            return total
        },
        "unique": { v, _, _ in
            var seen: [JinjaValue] = []
            for item in try iterate(v) where !seen.contains(where: { $0.pythonEquals(item) }) { seen.append(item) }
            return .array(seen)
        },
        "indent": { v, a, _ in
            let width: String
            if case .string(let s)? = a.get(0, "width") { width = s } else { width = String(repeating: " ", count: try a.int(0, "width") ?? 4) }
            let first = a.get(1, "first")?.isTruthy ?? false
            let blank = a.get(2, "blank")?.isTruthy ?? false
            let lines = v.pythonString.components(separatedBy: "\n")
            let body = lines.enumerated().map { i, line in
                (i == 0 && !first) || (!blank && line.isEmpty) ? line : width + line
            }
            return .string(body.joined(separator: "\n"))
        },
        "safe": { v, _, _ in v },
        "escape": escapeFilter, "e": escapeFilter,
        "wordcount": { v, _, _ in .int(try split(v.pythonString, nil, -1).count) },
    ]

    private static let defaultFilter: Filter = { v, a, _ in
        let fallback = a.get(0, "default_value") ?? .string("")
        let boolean = a.get(1, "boolean")?.isTruthy ?? false
        return v.isUndefined || (boolean && !v.isTruthy) ? fallback : v
    }

    private static let escapeFilter: Filter = { v, _, _ in
        var out = ""
        for c in v.pythonString.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&#34;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return .string(out)
    }

    // MARK: - Tests

    static func applyTest(_ name: String, _ value: JinjaValue, _ args: [JinjaValue], _ interp: JinjaInterpreter) throws -> Bool {
        func argument() throws -> JinjaValue {
            guard let a = args.first else { throw fail("test '\(name)' needs an argument") }
            return a
        }
        switch name {
        case "defined": return !value.isUndefined
        case "undefined": return value.isUndefined
        case "none": return value.isNone
        case "string": if case .string = value { return true } else { return false }
        case "number": return value.numericValue != nil
        case "integer": if case .int = value { return true } else { return false }
        case "float": if case .double = value { return true } else { return false }
        case "boolean": if case .bool = value { return true } else { return false }
        case "true": if case .bool(true) = value { return true } else { return false }
        case "false": if case .bool(false) = value { return true } else { return false }
        case "mapping": if case .dict = value { return true } else { return false }
        case "iterable", "sequence":
            switch value {
            case .string, .array, .dict: return true
            case .undefined: return name == "iterable"   // jinja2's Undefined defines __iter__ but not __getitem__
            default: return false
            }
        case "callable": if case .function = value { return true } else { return false }
        case "equalto", "eq", "sameas": return value.pythonEquals(try argument())
        case "ne": return !value.pythonEquals(try argument())
        case "lt", "lessthan": return try JinjaOperators.compare(value, try argument()) < 0
        case "le": return try JinjaOperators.compare(value, try argument()) <= 0
        case "gt", "greaterthan": return try JinjaOperators.compare(value, try argument()) > 0
        case "ge": return try JinjaOperators.compare(value, try argument()) >= 0
        case "in": return try JinjaOperators.contains(try argument(), value)
        case "divisibleby":
            guard let x = value.integerValue, let y = try argument().integerValue, y != 0 else { throw fail("divisibleby needs non-zero integers") }
            return x % y == 0
        case "even", "odd":
            guard let x = value.integerValue else { throw fail("test '\(name)' needs an integer, got \(value.typeName)") }
            return (x % 2 == 0) == (name == "even")
        case "lower": return value.pythonString == value.pythonString.lowercased()
        case "upper": return value.pythonString == value.pythonString.uppercased()
        case "escaped": return false
        default: throw fail("unknown test '\(name)'")
        }
    }
}

/// Python's `json.dumps` output format, byte for byte.
struct JSONEncoderPython {
    let indent: String?
    let itemSeparator: String
    let keySeparator: String
    let ensureASCII: Bool
    let sortKeys: Bool
    var output = ""

    init(indent: String?, itemSeparator: String, keySeparator: String, ensureASCII: Bool, sortKeys: Bool) {
        self.indent = indent; self.itemSeparator = itemSeparator; self.keySeparator = keySeparator
        self.ensureASCII = ensureASCII; self.sortKeys = sortKeys
    }

    private mutating func newline(_ level: Int) {
        if let indent { output += "\n" + String(repeating: indent, count: level) }
    }

    mutating func encode(_ value: JinjaValue, level: Int) throws {
        guard level < JinjaParser.maxNesting else { throw JinjaBuiltins.fail("tojson: value nested too deeply") }
        switch value {
        case .none: output += "null"
        case .bool(let b): output += b ? "true" : "false"
        case .int(let i): output += String(i)
        case .double(let d):
            output += d.isNaN ? "NaN" : (d.isInfinite ? (d > 0 ? "Infinity" : "-Infinity") : JinjaValue.formatDouble(d))
        case .string(let s): encodeString(s)
        case .array(let items):
            if items.isEmpty { output += "[]"; return }
            output += "["
            for (i, item) in items.enumerated() {
                if i > 0 { output += itemSeparator }
                newline(level + 1)
                try encode(item, level: level + 1)
            }
            newline(level)
            output += "]"
        case .dict(let d):
            if d.isEmpty { output += "{}"; return }
            output += "{"
            let keys = sortKeys ? d.keys.sorted { JinjaOperators.compareScalars($0, $1) } : d.keys
            for (i, key) in keys.enumerated() {
                if i > 0 { output += itemSeparator }
                newline(level + 1)
                encodeString(key)
                output += keySeparator
                try encode(d[key]!, level: level + 1)
            }
            newline(level)
            output += "}"
        case .undefined, .function, .namespace:
            throw JinjaBuiltins.fail("tojson: Object of type \(value.typeName) is not JSON serializable")
        }
    }

    private mutating func encodeString(_ s: String) {
        output += "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            case "\u{08}": output += "\\b"
            case "\u{0C}": output += "\\f"
            default:
                if c.value < 0x20 {
                    output += String(format: "\\u%04x", c.value)
                } else if ensureASCII && c.value > 0x7e {
                    if c.value > 0xFFFF {
                        let v = c.value - 0x10000
                        output += String(format: "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF))
                    } else {
                        output += String(format: "\\u%04x", c.value)
                    }
                } else {
                    output.unicodeScalars.append(c)
                }
            }
        }
        output += "\""
    }
}
