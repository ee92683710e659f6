import Foundation
import KilnCore

/// A value seen by a chat template: the Python values that `jinja2` templates work with.
///
/// Rendering (`pythonString`), equality and truthiness follow Python, because the reference
/// for every chat template is `jinja2` as Hugging Face transformers runs it.
public enum JinjaValue: Sendable {
    case string(String)
    case int(Int)
    case double(Double)
    case bool(Bool)
    case none
    case array([JinjaValue])
    case dict(JinjaDict)
    /// A callable: a built-in function, a bound method or a macro.
    case function(JinjaFunction)
    /// `namespace(...)`: the one mutable object, so `{% set ns.x = ... %}` can change it from inside a loop.
    case namespace(JinjaNamespace)
    /// What a missing variable, key or attribute evaluates to: renders as "", is falsy, iterates as empty.
    case undefined

    /// Python truthiness (`bool(x)`).
    public var isTruthy: Bool {
        switch self {
        case .string(let s): return !s.isEmpty
        case .int(let i): return i != 0
        case .double(let d): return d != 0
        case .bool(let b): return b
        case .none, .undefined: return false
        case .array(let a): return !a.isEmpty
        case .dict(let d): return !d.isEmpty
        case .function, .namespace: return true
        }
    }

    public var isUndefined: Bool { if case .undefined = self { return true } else { return false } }
    public var isNone: Bool { if case .none = self { return true } else { return false } }

    /// Python's name for the type, for error messages.
    public var typeName: String {
        switch self {
        case .string: return "str"
        case .int: return "int"
        case .double: return "float"
        case .bool: return "bool"
        case .none: return "NoneType"
        case .array: return "list"
        case .dict: return "dict"
        case .function: return "function"
        case .namespace: return "Namespace"
        case .undefined: return "Undefined"
        }
    }

    /// `str(x)` in Python, which is what `{{ x }}` prints.
    public var pythonString: String {
        switch self {
        case .string(let s): return s
        case .undefined: return ""
        default: return pythonRepr
        }
    }

    /// `repr(x)` in Python, used inside containers (`{{ [1, 'a'] }}` prints `[1, 'a']`).
    public var pythonRepr: String {
        switch self {
        case .string(let s): return Self.reprString(s)
        case .int(let i): return String(i)
        case .double(let d): return Self.formatDouble(d)
        case .bool(let b): return b ? "True" : "False"
        case .none: return "None"
        case .undefined: return ""
        case .array(let a): return "[" + a.map { $0.pythonRepr }.joined(separator: ", ") + "]"
        case .dict(let d):
            return "{" + d.entries.map { Self.reprString($0.key) + ": " + $0.value.pythonRepr }.joined(separator: ", ") + "}"
        case .function(let f): return "<function \(f.name)>"
        case .namespace: return "<Namespace>"
        }
    }

    /// Python's `repr(float)`: shortest round-trip digits, exponent outside [1e-4, 1e16).
    static func formatDouble(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d > 0 ? "inf" : "-inf" }
        // Swift's description gives the shortest round-trip digits; re-lay them out with
        // Python's rule: scientific when the decimal exponent is < -4 or >= 16.
        var text = d.magnitude.description
        var exponent = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exponent = Int(text[text.index(after: e)...]) ?? 0
            text = String(text[..<e])
        }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        let intPart = String(parts[0]), fracPart = parts.count > 1 ? String(parts[1]) : ""
        var digits = intPart + fracPart
        exponent += intPart.count - 1   // value = 0.d1d2... * 10^(exponent+1)
        let leadingZeros = digits.prefix { $0 == "0" }.count
        if leadingZeros == digits.count { return d.sign == .minus ? "-0.0" : "0.0" }
        digits.removeFirst(leadingZeros)
        exponent -= leadingZeros
        while digits.count > 1 && digits.hasSuffix("0") { digits.removeLast() }
        let sign = d.sign == .minus ? "-" : ""
        if exponent < -4 || exponent >= 16 {
            let mantissa = digits.count == 1 ? digits : String(digits.prefix(1)) + "." + digits.dropFirst()
            let expText = String(format: "%02d", abs(exponent))
            return sign + mantissa + "e" + (exponent < 0 ? "-" : "+") + expText
        }
        if exponent < 0 { return sign + "0." + String(repeating: "0", count: -exponent - 1) + digits }
        if digits.count <= exponent + 1 { return sign + digits + String(repeating: "0", count: exponent + 1 - digits.count) + ".0" }
        let cut = digits.index(digits.startIndex, offsetBy: exponent + 1)
        return sign + digits[..<cut] + "." + digits[cut...]
    }

    /// Python's `repr(str)`: single quotes unless the text holds a single quote and no double quote.
    static func reprString(_ s: String) -> String {
        let quote: Character = (s.contains("'") && !s.contains("\"")) ? "\"" : "'"
        var out = String(quote)
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if Character(scalar) == quote { out += "\\" + String(quote) }
                else if scalar.value < 0x20 || scalar.value == 0x7f { out += String(format: "\\x%02x", scalar.value) }
                else { out.unicodeScalars.append(scalar) }
            }
        }
        out.append(quote)
        return out
    }

    /// A number as a Double when the value is numeric (bools count, as in Python).
    var numericValue: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    /// An integer when the value is an int or bool (Python's `bool` is an `int`).
    var integerValue: Int? {
        switch self {
        case .int(let i): return i
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    /// Python `==`: numbers compare by value across int/float/bool, containers element-wise.
    public func pythonEquals(_ other: JinjaValue) -> Bool {
        switch (self, other) {
        case (.string(let a), .string(let b)): return a == b
        case (.none, .none), (.undefined, .undefined): return true
        case (.array(let a), .array(let b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.pythonEquals($1) }
        case (.dict(let a), .dict(let b)):
            guard a.count == b.count else { return false }
            return a.entries.allSatisfy { e in b[e.key].map { e.value.pythonEquals($0) } ?? false }
        case (.namespace(let a), .namespace(let b)): return a === b
        case (.function(let a), .function(let b)): return a.name == b.name
        default:
            if let x = integerValue, let y = other.integerValue { return x == y }
            if let x = numericValue, let y = other.numericValue { return x == y }
            return false
        }
    }
}

extension JinjaValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByFloatLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(arrayLiteral elements: JinjaValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JinjaValue)...) { self = .dict(JinjaDict(elements)) }
    public init(nilLiteral: ()) { self = .none }
}

/// A dictionary that keeps insertion order, as Python's `dict` does (templates print tool schemas
/// with `tojson`, and key order must match the caller's).
public struct JinjaDict: Sendable {
    public private(set) var keys: [String] = []
    private var storage: [String: JinjaValue] = [:]

    public init() {}
    public init(_ pairs: [(String, JinjaValue)]) { for (k, v) in pairs { self[k] = v } }

    public subscript(key: String) -> JinjaValue? {
        get { storage[key] }
        set {
            if let v = newValue {
                if storage.updateValue(v, forKey: key) == nil { keys.append(key) }
            } else if storage.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }
    public var count: Int { keys.count }
    public var isEmpty: Bool { keys.isEmpty }
    /// Key/value pairs in insertion order.
    public var entries: [(key: String, value: JinjaValue)] { keys.map { ($0, storage[$0]!) } }
}

/// A callable value. `call` receives positional and keyword arguments already evaluated.
public final class JinjaFunction: @unchecked Sendable {
    public typealias Body = (_ args: [JinjaValue], _ kwargs: [(String, JinjaValue)], _ interp: JinjaInterpreter) throws -> JinjaValue
    public let name: String
    let body: Body
    public init(name: String, body: @escaping Body) { self.name = name; self.body = body }
}

/// The object `namespace(...)` returns; reference semantics are the point of it.
public final class JinjaNamespace: @unchecked Sendable {
    var attributes: JinjaDict
    init(_ attributes: JinjaDict) { self.attributes = attributes }
}
