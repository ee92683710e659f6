import Foundation

/// Arithmetic, concatenation and comparison with Python's semantics (int/float promotion,
/// floor division and modulo rounding toward negative infinity, `str * int` repetition).
enum JinjaOperators {
    private static func fail(_ message: String) -> TemplateError { TemplateError(message: message, position: nil) }

    private static func unsupported(_ op: String, _ a: JinjaValue, _ b: JinjaValue) -> TemplateError {
        if a.isUndefined || b.isUndefined { return fail("undefined value used with '\(op)'") }
        return fail("unsupported operand types for \(op): '\(a.typeName)' and '\(b.typeName)'")
    }

    static func unary(_ op: String, _ value: JinjaValue) throws -> JinjaValue {
        switch value {
        case .int(let i): return op == "-" ? .int(0 &- i) : .int(i)
        case .bool(let b): return .int(op == "-" ? (b ? -1 : 0) : (b ? 1 : 0))
        case .double(let d): return .double(op == "-" ? -d : d)
        default: throw fail("bad operand type for unary \(op): '\(value.typeName)'")
        }
    }

    static func binary(_ op: String, _ a: JinjaValue, _ b: JinjaValue, limits: JinjaLimits) throws -> JinjaValue {
        switch op {
        case "~": return .string(a.pythonString + b.pythonString)
        case "==": return .bool(a.pythonEquals(b))
        case "!=": return .bool(!a.pythonEquals(b))
        case "<", "<=", ">", ">=":
            let order = try compare(a, b, op)
            switch op {
            case "<": return .bool(order < 0)
            case "<=": return .bool(order <= 0)
            case ">": return .bool(order > 0)
            default: return .bool(order >= 0)
            }
        case "in": return .bool(try contains(b, a))
        case "not in": return .bool(!(try contains(b, a)))
        default: return try arithmetic(op, a, b, limits: limits)
        }
    }

    /// Python `needle in haystack`.
    static func contains(_ haystack: JinjaValue, _ needle: JinjaValue) throws -> Bool {
        switch haystack {
        case .string(let s):
            guard case .string(let n) = needle else { throw fail("'in <string>' requires string as left operand, not \(needle.typeName)") }
            return n.isEmpty || s.contains(n)
        case .array(let items): return items.contains { $0.pythonEquals(needle) }
        case .dict(let d):
            guard case .string(let key) = needle else { return false }
            return d[key] != nil
        case .undefined: return false   // jinja2's Undefined iterates as empty
        default: throw fail("argument of type '\(haystack.typeName)' is not iterable")
        }
    }

    /// Python's string order: by Unicode code point.
    static func compareScalars(_ x: String, _ y: String) -> Bool {
        let xs = Array(x.unicodeScalars), ys = Array(y.unicodeScalars)
        for (p, q) in zip(xs, ys) where p != q { return p.value < q.value }
        return xs.count < ys.count
    }

    /// -1, 0 or 1; numbers compare numerically, strings by code point, lists lexicographically.
    static func compare(_ a: JinjaValue, _ b: JinjaValue, _ op: String = "<") throws -> Int {
        if let x = a.integerValue, let y = b.integerValue { return x < y ? -1 : (x == y ? 0 : 1) }
        if let x = a.numericValue, let y = b.numericValue { return x < y ? -1 : (x == y ? 0 : 1) }
        switch (a, b) {
        case (.string(let x), .string(let y)):
            let xs = Array(x.unicodeScalars), ys = Array(y.unicodeScalars)
            for (p, q) in zip(xs, ys) where p != q { return p.value < q.value ? -1 : 1 }
            return xs.count < ys.count ? -1 : (xs.count == ys.count ? 0 : 1)
        case (.array(let x), .array(let y)):
            for (p, q) in zip(x, y) where !p.pythonEquals(q) { return try compare(p, q, op) }
            return x.count < y.count ? -1 : (x.count == y.count ? 0 : 1)
        default:
            throw fail("'\(op)' not supported between instances of '\(a.typeName)' and '\(b.typeName)'")
        }
    }

    private static func arithmetic(_ op: String, _ a: JinjaValue, _ b: JinjaValue, limits: JinjaLimits) throws -> JinjaValue {
        // Sequences first: concatenation and repetition.
        switch (op, a, b) {
        case ("+", .string(let x), .string(let y)): return .string(x + y)
        case ("+", .array(let x), .array(let y)): return .array(x + y)
        case ("*", .string(let s), _) where b.integerValue != nil, ("*", _, .string(let s)) where a.integerValue != nil:
            let n = max(0, (b.integerValue ?? a.integerValue)!)
            guard n == 0 || s.utf8.count <= limits.maxCollectionSize / n else { throw fail("string repetition too large") }
            return .string(String(repeating: s, count: n))
        case ("*", .array(let xs), _) where b.integerValue != nil, ("*", _, .array(let xs)) where a.integerValue != nil:
            let n = max(0, (b.integerValue ?? a.integerValue)!)
            guard n == 0 || xs.count <= limits.maxCollectionSize / n else { throw fail("list repetition too large") }
            return .array(Array([[JinjaValue]](repeating: xs, count: n).joined()))
        default: break
        }
        if let x = a.integerValue, let y = b.integerValue {
            func checked(_ r: (partialValue: Int, overflow: Bool)) throws -> JinjaValue {
                if r.overflow { throw fail("integer overflow in '\(op)'") }
                return .int(r.partialValue)
            }
            switch op {
            case "+": return try checked(x.addingReportingOverflow(y))
            case "-": return try checked(x.subtractingReportingOverflow(y))
            case "*": return try checked(x.multipliedReportingOverflow(by: y))
            case "/":
                guard y != 0 else { throw fail("division by zero") }
                return .double(Double(x) / Double(y))
            case "//", "%":
                guard y != 0 else { throw fail("integer division or modulo by zero") }
                if x == Int.min && y == -1 { throw fail("integer overflow in '\(op)'") }
                var q = x / y, r = x % y
                if r != 0 && ((r < 0) != (y < 0)) { q -= 1; r += y }
                return .int(op == "//" ? q : r)
            case "**":
                if y < 0 { return .double(pow(Double(x), Double(y))) }
                var result = 1, base = x, e = y
                while e > 0 {
                    if e & 1 == 1 { result = try checked(result.multipliedReportingOverflow(by: base)).integerValue! }
                    e >>= 1
                    if e > 0 { base = try checked(base.multipliedReportingOverflow(by: base)).integerValue! }
                }
                return .int(result)
            default: break
            }
        }
        if let x = a.numericValue, let y = b.numericValue {
            switch op {
            case "+": return .double(x + y)
            case "-": return .double(x - y)
            case "*": return .double(x * y)
            case "/":
                guard y != 0 else { throw fail("float division by zero") }
                return .double(x / y)
            case "//":
                guard y != 0 else { throw fail("float floor division by zero") }
                return .double((x / y).rounded(.down))
            case "%":
                guard y != 0 else { throw fail("float modulo by zero") }
                let r = fmod(x, y)
                return .double(r != 0 && ((r < 0) != (y < 0)) ? r + y : r)
            case "**": return .double(pow(x, y))
            default: break
            }
        }
        throw unsupported(op, a, b)
    }
}
