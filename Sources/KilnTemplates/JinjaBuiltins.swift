import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Global functions, attribute/item access, iteration and the Python string/dict methods that
/// chat templates call (`.strip()`, `.split()`, `.get()`, `.items()`...).
enum JinjaBuiltins {
    static func fail(_ message: String) -> TemplateError { TemplateError(message: message, position: nil) }

    /// Arguments by position or keyword, as Python binds them.
    struct Arguments {
        let positional: [JinjaValue]
        let keywords: [(String, JinjaValue)]
        let function: String
        init(_ positional: [JinjaValue], _ keywords: [(String, JinjaValue)], _ function: String) {
            self.positional = positional; self.keywords = keywords; self.function = function
        }
        /// The argument at `index` or named `name`, or nil when absent.
        func get(_ index: Int, _ name: String) -> JinjaValue? {
            if index < positional.count { return positional[index] }
            return keywords.first { $0.0 == name }?.1
        }
        func string(_ index: Int, _ name: String) throws -> String? {
            guard let v = get(index, name), !v.isNone else { return nil }
            guard case .string(let s) = v else { throw fail("\(function)(): '\(name)' must be a string, not \(v.typeName)") }
            return s
        }
        func int(_ index: Int, _ name: String) throws -> Int? {
            guard let v = get(index, name), !v.isNone else { return nil }
            guard let i = v.integerValue else { throw fail("\(function)(): '\(name)' must be an integer, not \(v.typeName)") }
            return i
        }
        func require(_ index: Int, _ name: String) throws -> JinjaValue {
            guard let v = get(index, name) else { throw fail("\(function)() missing argument '\(name)'") }
            return v
        }
    }

    static func function(_ name: String, _ body: @escaping (Arguments, JinjaInterpreter) throws -> JinjaValue) -> JinjaValue {
        .function(JinjaFunction(name: name) { args, kwargs, interp in try body(Arguments(args, kwargs, name), interp) })
    }

    // MARK: - Globals

    static let globals: [String: JinjaValue] = [
        "raise_exception": function("raise_exception") { args, _ in
            throw fail("raise_exception: " + (args.get(0, "message")?.pythonString ?? ""))
        },
        "strftime_now": function("strftime_now") { args, interp in
            guard let format = try args.string(0, "format") else { throw fail("strftime_now() needs a format string") }
            return .string(strftime(format, interp.now(), interp.timeZone))
        },
        "namespace": function("namespace") { args, _ in
            var attributes = JinjaDict()
            if case .dict(let d)? = args.positional.first { attributes = d }
            for (k, v) in args.keywords { attributes[k] = v }
            return .namespace(JinjaNamespace(attributes))
        },
        "dict": function("dict") { args, _ in
            var d = JinjaDict()
            if case .dict(let initial)? = args.positional.first { d = initial }
            for (k, v) in args.keywords { d[k] = v }
            return .dict(d)
        },
        "range": function("range") { args, interp in
            let numbers = try args.positional.map { v -> Int in
                guard let i = v.integerValue else { throw fail("range() arguments must be integers, not \(v.typeName)") }
                return i
            }
            let (start, stop, step): (Int, Int, Int)
            switch numbers.count {
            case 1: (start, stop, step) = (0, numbers[0], 1)
            case 2: (start, stop, step) = (numbers[0], numbers[1], 1)
            case 3: (start, stop, step) = (numbers[0], numbers[1], numbers[2])
            default: throw fail("range() takes 1 to 3 arguments")
            }
            guard step != 0 else { throw fail("range() step must not be zero") }
            let count = step > 0 ? max(0, (stop - start + step - 1) / step) : max(0, (start - stop - step - 1) / -step)
            guard count <= interp.limits.maxCollectionSize else { throw fail("range() of \(count) items is too large") }
            return .array((0..<count).map { .int(start + $0 * step) })
        },
    ]

    /// C `strftime` (what Python's `datetime.strftime` calls) on `date` seen in `timeZone`.
    static func strftime(_ format: String, _ date: Date, _ timeZone: TimeZone) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second, .weekday], from: date)
        var t = tm()
        t.tm_year = Int32(c.year! - 1900)
        t.tm_mon = Int32(c.month! - 1)
        t.tm_mday = Int32(c.day!)
        t.tm_hour = Int32(c.hour!)
        t.tm_min = Int32(c.minute!)
        t.tm_sec = Int32(c.second!)
        t.tm_wday = Int32(c.weekday! - 1)
        t.tm_yday = Int32(calendar.ordinality(of: .day, in: .year, for: date)! - 1)
        var buffer = [Int8](repeating: 0, count: 512)
        let n = Foundation.strftime(&buffer, buffer.count, format, &t)
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: - Access

    static let dictMethods: Set<String> = ["get", "items", "keys", "values"]

    /// `obj.name`: jinja2 tries the Python attribute first, then the item.
    static func attribute(_ object: JinjaValue, _ name: String) -> JinjaValue {
        switch object {
        case .dict(let d):
            if dictMethods.contains(name) { return dictMethod(d, name) }
            return d[name] ?? .undefined
        case .namespace(let ns): return ns.attributes[name] ?? .undefined
        case .string(let s): return stringMethod(s, name) ?? .undefined
        default: return .undefined
        }
    }

    /// `obj[key]`: jinja2 tries the item first, then the attribute.
    static func item(_ object: JinjaValue, _ key: JinjaValue) throws -> JinjaValue {
        switch (object, key) {
        case (.dict(let d), .string(let k)):
            if let v = d[k] { return v }
            return dictMethods.contains(k) ? dictMethod(d, k) : .undefined
        case (.array(let items), _):
            if case .string(let name) = key { return attribute(object, name) }
            guard let i = key.integerValue else { return .undefined }
            let index = i < 0 ? i + items.count : i
            return items.indices.contains(index) ? items[index] : .undefined
        case (.string(let s), _):
            if case .string(let name) = key { return attribute(object, name) }
            guard let i = key.integerValue else { return .undefined }
            let scalars = Array(s.unicodeScalars)
            let index = i < 0 ? i + scalars.count : i
            return scalars.indices.contains(index) ? .string(String(scalars[index])) : .undefined
        case (_, .string(let name)): return attribute(object, name)
        default: return .undefined
        }
    }

    /// Python slicing for lists and strings.
    static func slice(_ object: JinjaValue, _ start: JinjaValue, _ stop: JinjaValue, _ step: JinjaValue) throws -> JinjaValue {
        func bound(_ v: JinjaValue, _ what: String) throws -> Int? {
            if v.isNone || v.isUndefined { return nil }
            guard let i = v.integerValue else { throw fail("slice \(what) must be an integer, not \(v.typeName)") }
            return i
        }
        let step = try bound(step, "step") ?? 1
        guard step != 0 else { throw fail("slice step cannot be zero") }
        func indices(_ count: Int) throws -> [Int] {
            func adjust(_ v: Int?, _ defaultValue: Int, low: Int, high: Int) -> Int {
                guard var i = v else { return defaultValue }
                if i < 0 { i += count }
                return min(max(i, low), high)
            }
            if step > 0 {
                let a = adjust(try bound(start, "start"), 0, low: 0, high: count)
                let b = adjust(try bound(stop, "stop"), count, low: 0, high: count)
                return Array(stride(from: a, to: b, by: step))
            }
            let a = adjust(try bound(start, "start"), count - 1, low: -1, high: count - 1)
            let b = adjust(try bound(stop, "stop"), -1, low: -1, high: count - 1)
            return Array(stride(from: a, to: b, by: step))
        }
        switch object {
        case .array(let items): return .array(try indices(items.count).map { items[$0] })
        case .string(let s):
            let scalars = Array(s.unicodeScalars)
            var out = String.UnicodeScalarView()
            for i in try indices(scalars.count) { out.append(scalars[i]) }
            return .string(String(out))
        default: throw fail("'\(object.typeName)' object is not subscriptable")
        }
    }

    /// What `for x in value` visits: list items, dict keys, string characters; undefined is empty.
    static func iterate(_ value: JinjaValue) throws -> [JinjaValue] {
        switch value {
        case .array(let items): return items
        case .dict(let d): return d.keys.map { .string($0) }
        case .string(let s): return s.unicodeScalars.map { .string(String($0)) }
        case .undefined: return []
        default: throw fail("'\(value.typeName)' object is not iterable")
        }
    }

    // MARK: - Methods

    private static func dictMethod(_ d: JinjaDict, _ name: String) -> JinjaValue {
        function(name) { args, _ in
            switch name {
            case "get":
                guard case .string(let key)? = args.get(0, "key") else { return args.get(1, "default") ?? .none }
                return d[key] ?? args.get(1, "default") ?? .none
            case "items": return .array(d.entries.map { .array([.string($0.key), $0.value]) })
            case "keys": return .array(d.keys.map { .string($0) })
            default: return .array(d.entries.map { $0.value })
            }
        }
    }

    /// Python's `str.isspace` set: Unicode whitespace plus the ASCII separators 0x1c-0x1f.
    static func isPythonSpace(_ c: Unicode.Scalar) -> Bool {
        c.properties.isWhitespace || (0x1c...0x1f).contains(c.value)
    }

    static func strip(_ s: String, _ chars: String?, leading: Bool, trailing: Bool) -> String {
        let set = chars.map { Set($0.unicodeScalars) }
        let drop: (Unicode.Scalar) -> Bool = { c in set?.contains(c) ?? isPythonSpace(c) }
        var scalars = Substring(s).unicodeScalars[...]
        if leading { while let f = scalars.first, drop(f) { scalars.removeFirst() } }
        if trailing { while let l = scalars.last, drop(l) { scalars.removeLast() } }
        return String(String.UnicodeScalarView(scalars))
    }

    /// Python `str.split(sep=None, maxsplit=-1)`.
    static func split(_ s: String, _ separator: String?, _ maxSplit: Int) throws -> [String] {
        if let separator {
            guard !separator.isEmpty else { throw fail("split(): empty separator") }
            var parts: [String] = []
            var rest = Substring(s)
            while maxSplit < 0 || parts.count < maxSplit, let r = rest.range(of: separator) {
                parts.append(String(rest[..<r.lowerBound]))
                rest = rest[r.upperBound...]
            }
            parts.append(String(rest))
            return parts
        }
        var parts: [String] = []
        var current = String.UnicodeScalarView()
        var scalars = Array(s.unicodeScalars)[...]
        while let c = scalars.first {
            if isPythonSpace(c) {
                if !current.isEmpty { parts.append(String(current)); current = String.UnicodeScalarView() }
                scalars.removeFirst()
                if maxSplit >= 0 && parts.count >= maxSplit {
                    while let f = scalars.first, isPythonSpace(f) { scalars.removeFirst() }
                    if !scalars.isEmpty { parts.append(strip(String(String.UnicodeScalarView(scalars)), nil, leading: false, trailing: true)) }
                    return parts
                }
            } else {
                current.append(c); scalars.removeFirst()
            }
        }
        if !current.isEmpty { parts.append(String(current)) }
        return parts
    }

    /// Python `str.title()`: upper-case a cased letter that follows an uncased character.
    static func pythonTitle(_ s: String) -> String {
        var out = ""
        var previousCased = false
        for c in s.unicodeScalars {
            let text = String(c)
            out += previousCased ? text.lowercased() : text.uppercased()
            previousCased = c.properties.isCased
        }
        return out
    }

    static func capitalize(_ s: String) -> String {
        guard let first = s.unicodeScalars.first else { return s }
        return String(first).uppercased() + String(String.UnicodeScalarView(s.unicodeScalars.dropFirst())).lowercased()
    }

    static func replace(_ s: String, _ old: String, _ new: String, count: Int?) -> String {
        guard let count, count >= 0 else {
            if old.isEmpty { return new + s.unicodeScalars.map { String($0) + new }.joined() }
            return s.replacingOccurrences(of: old, with: new)
        }
        var result = "", rest = Substring(s), done = 0
        while done < count, !old.isEmpty, let r = rest.range(of: old) {
            result += rest[..<r.lowerBound] + new
            rest = rest[r.upperBound...]
            done += 1
        }
        return result + rest
    }

    private static func prefixes(_ v: JinjaValue?, _ method: String) throws -> [String] {
        switch v {
        case .string(let s)?: return [s]
        case .array(let items)?:
            return try items.map { item in
                guard case .string(let s) = item else { throw fail("\(method)(): tuple items must be strings") }
                return s
            }
        default: throw fail("\(method)() argument must be a string or tuple of strings")
        }
    }

    static func stringMethod(_ s: String, _ name: String) -> JinjaValue? {
        let methods: Set<String> = ["strip", "lstrip", "rstrip", "split", "startswith", "endswith", "upper", "lower",
                                    "title", "capitalize", "replace", "find", "count", "join", "splitlines",
                                    "isdigit", "isspace", "isalpha", "isalnum", "islower", "isupper"]
        guard methods.contains(name) else { return nil }
        return function(name) { args, _ in
            switch name {
            case "strip": return .string(strip(s, try args.string(0, "chars"), leading: true, trailing: true))
            case "lstrip": return .string(strip(s, try args.string(0, "chars"), leading: true, trailing: false))
            case "rstrip": return .string(strip(s, try args.string(0, "chars"), leading: false, trailing: true))
            case "split":
                return .array(try split(s, try args.string(0, "sep"), try args.int(1, "maxsplit") ?? -1).map { .string($0) })
            case "splitlines":
                var lines = s.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
                if lines.last == "" { lines.removeLast() }
                return .array(lines.map { .string($0) })
            case "startswith": return .bool(try prefixes(args.get(0, "prefix"), name).contains { s.hasPrefix($0) })
            case "endswith": return .bool(try prefixes(args.get(0, "suffix"), name).contains { s.hasSuffix($0) })
            case "upper": return .string(s.uppercased())
            case "lower": return .string(s.lowercased())
            case "title": return .string(pythonTitle(s))
            case "capitalize": return .string(capitalize(s))
            case "replace":
                guard let old = try args.string(0, "old"), let new = try args.string(1, "new") else { throw fail("replace() needs old and new") }
                return .string(replace(s, old, new, count: try args.int(2, "count")))
            case "find", "count":
                guard let sub = try args.string(0, "sub") else { throw fail("\(name)() needs a string") }
                if name == "count" { return .int(sub.isEmpty ? s.unicodeScalars.count + 1 : s.components(separatedBy: sub).count - 1) }
                guard let r = s.range(of: sub) else { return .int(-1) }
                return .int(s.unicodeScalars.distance(from: s.unicodeScalars.startIndex, to: r.lowerBound))
            case "join":
                return .string(try iterate(try args.require(0, "iterable")).map { item -> String in
                    guard case .string(let t) = item else { throw fail("join(): expected str items, found \(item.typeName)") }
                    return t
                }.joined(separator: s))
            default:
                let scalars = s.unicodeScalars
                guard !scalars.isEmpty else { return .bool(false) }
                switch name {
                case "isdigit": return .bool(scalars.allSatisfy { $0.properties.numericType != nil })
                case "isspace": return .bool(scalars.allSatisfy(isPythonSpace))
                case "isalpha": return .bool(scalars.allSatisfy { $0.properties.isAlphabetic })
                case "isalnum": return .bool(scalars.allSatisfy { $0.properties.isAlphabetic || $0.properties.numericType != nil })
                case "islower": return .bool(s == s.lowercased() && s != s.uppercased())
                default: return .bool(s == s.uppercased() && s != s.lowercased())
                }
            }
        }
    }
}
