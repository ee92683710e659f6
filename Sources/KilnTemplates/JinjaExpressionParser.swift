/// The tokens of one tag and a recursive-descent parser for the expressions in them.
///
/// Precedence, loosest first, as in jinja2's parser: `x if c else y`, `or`, `and`, `not`,
/// comparisons and `in`, `+ -`, `~`, `* / // %`, `**`, unary `- +`, then postfix
/// (`.attr`, `[i]`, `(args)`) and filters/tests (`| f`, `is t`), which bind tightest.
struct TokenStream {
    private let tokens: [Token]
    private var index = 0
    /// Position reported for errors at the end of the tag.
    private let end: SourcePosition
    private var depth = 0

    init(tokens: [Token], end: SourcePosition) { self.tokens = tokens; self.end = end }

    var peek: Token? { index < tokens.count ? tokens[index] : nil }
    private var here: SourcePosition { peek?.position ?? end }

    @discardableResult mutating func next() -> Token? {
        defer { index += 1 }
        return peek
    }

    mutating func skip(op: String) -> Bool {
        if peek?.kind == .op(op) { index += 1; return true }
        return false
    }
    mutating func skip(keyword: String) -> Bool {
        if peek?.kind == .name(keyword) { index += 1; return true }
        return false
    }
    mutating func expect(op: String) throws {
        guard skip(op: op) else { throw error("expected '\(op)'") }
    }
    mutating func expect(keyword: String) throws {
        guard skip(keyword: keyword) else { throw error("expected '\(keyword)'") }
    }
    mutating func expectName() throws -> String {
        guard case .name(let n)? = peek?.kind else { throw error("expected a name") }
        index += 1
        return n
    }
    /// Filter and test names may be dotted in jinja2 (`| foo.bar`).
    mutating func expectDottedName() throws -> String {
        var name = try expectName()
        while skip(op: ".") { name += "." + (try expectName()) }
        return name
    }
    func expectEnd() throws {
        if peek != nil { throw error("unexpected \(describe(peek!)) at the end of the tag") }
    }

    func error(_ message: String) -> TemplateError {
        let found = peek.map { " (found \(describe($0)))" } ?? " (found end of tag)"
        return TemplateError(message: message.hasPrefix("unexpected") ? message : message + found, position: here)
    }

    private func describe(_ token: Token) -> String {
        switch token.kind {
        case .name(let n): return "'\(n)'"
        case .string(let s): return "string \(JinjaValue.reprString(s))"
        case .int(let i): return "number \(i)"
        case .float(let d): return "number \(d)"
        case .op(let o): return "'\(o)'"
        }
    }

    // MARK: - Expressions

    /// An expression, or several separated by commas (a tuple, represented as a list).
    mutating func parseTuple(withCondition: Bool) throws -> Expr {
        let start = here
        let first = withCondition ? try parseExpression() : try parseOr()
        guard peek?.kind == .op(",") else { return first }
        var items = [first]
        while skip(op: ",") {
            if peek == nil { break }
            items.append(withCondition ? try parseExpression() : try parseOr())
        }
        return .list(items, start)
    }

    mutating func parseExpression() throws -> Expr {
        depth += 1
        defer { depth -= 1 }
        if depth > JinjaParser.maxNesting { throw error("expression nested more than \(JinjaParser.maxNesting) deep") }
        var expr = try parseOr()
        while peek?.kind == .name("if") {
            let position = here
            next()
            let condition = try parseOr()
            let otherwise: Expr? = skip(keyword: "else") ? try parseExpression() : nil
            expr = .conditional(cond: condition, then: expr, otherwise: otherwise, position)
        }
        return expr
    }

    private mutating func parseOr() throws -> Expr {
        var left = try parseAnd()
        while peek?.kind == .name("or") {
            let position = here; next()
            left = .or(left, try parseAnd(), position)
        }
        return left
    }

    private mutating func parseAnd() throws -> Expr {
        var left = try parseNot()
        while peek?.kind == .name("and") {
            let position = here; next()
            left = .and(left, try parseNot(), position)
        }
        return left
    }

    private mutating func parseNot() throws -> Expr {
        if peek?.kind == .name("not") {
            let position = here; next()
            depth += 1
            defer { depth -= 1 }
            if depth > JinjaParser.maxNesting { throw error("expression nested more than \(JinjaParser.maxNesting) deep") }
            return .unary("not", try parseNot(), position)
        }
        return try parseCompare()
    }

    private static let comparisons: Set<String> = ["==", "!=", "<", "<=", ">", ">="]

    /// Chained comparisons (`a < b < c`) become `a < b and b < c`.
    private mutating func parseCompare() throws -> Expr {
        let first = try parseMath1()
        var result: Expr? = nil
        var left = first
        while true {
            let position = here
            var op: String
            if case .op(let o)? = peek?.kind, Self.comparisons.contains(o) { op = o; next() }
            else if peek?.kind == .name("in") { op = "in"; next() }
            else if peek?.kind == .name("not"), index + 1 < tokens.count, tokens[index + 1].kind == .name("in") { op = "not in"; index += 2 }
            else { break }
            let right = try parseMath1()
            let comparison = Expr.binary(op, left, right, position)
            result = result.map { .and($0, comparison, position) } ?? comparison
            left = right
        }
        return result ?? first
    }

    private mutating func parseMath1() throws -> Expr {
        var left = try parseConcat()
        while case .op(let o)? = peek?.kind, o == "+" || o == "-" {
            let position = here; next()
            left = .binary(o, left, try parseConcat(), position)
        }
        return left
    }

    private mutating func parseConcat() throws -> Expr {
        var left = try parseMath2()
        while peek?.kind == .op("~") {
            let position = here; next()
            left = .binary("~", left, try parseMath2(), position)
        }
        return left
    }

    private mutating func parseMath2() throws -> Expr {
        var left = try parsePow()
        while case .op(let o)? = peek?.kind, o == "*" || o == "/" || o == "//" || o == "%" {
            let position = here; next()
            left = .binary(o, left, try parsePow(), position)
        }
        return left
    }

    private mutating func parsePow() throws -> Expr {
        var left = try parseUnary(withFilter: true)
        while peek?.kind == .op("**") {
            let position = here; next()
            left = .binary("**", left, try parseUnary(withFilter: true), position)
        }
        return left
    }

    private mutating func parseUnary(withFilter: Bool) throws -> Expr {
        depth += 1
        defer { depth -= 1 }
        if depth > JinjaParser.maxNesting { throw error("expression nested more than \(JinjaParser.maxNesting) deep") }
        let position = here
        var expr: Expr
        if case .op(let o)? = peek?.kind, o == "-" || o == "+" {
            next()
            expr = .unary(o, try parseUnary(withFilter: false), position)
        } else {
            expr = try parsePrimary()
        }
        expr = try parsePostfix(expr)
        if withFilter { expr = try parseFilters(expr) }
        return expr
    }

    private mutating func parsePrimary() throws -> Expr {
        guard let token = peek else { throw error("expected an expression") }
        let position = token.position
        switch token.kind {
        case .name(let n):
            next()
            switch n {
            case "true", "True": return .literal(.bool(true), position)
            case "false", "False": return .literal(.bool(false), position)
            case "none", "None": return .literal(.none, position)
            default: return .name(n, position)
            }
        case .string(var s):
            next()
            // Adjacent literals concatenate, as in Python.
            while case .string(let more)? = peek?.kind { s += more; next() }
            return .literal(.string(s), position)
        case .int(let i): next(); return .literal(.int(i), position)
        case .float(let d): next(); return .literal(.double(d), position)
        case .op("("):
            next()
            if skip(op: ")") { return .list([], position) }
            let inner = try parseTuple(withCondition: true)
            try expect(op: ")")
            return inner
        case .op("["):
            next()
            var items: [Expr] = []
            while !skip(op: "]") {
                if !items.isEmpty { try expect(op: ","); if skip(op: "]") { break } }
                items.append(try parseExpression())
            }
            return .list(items, position)
        case .op("{"):
            next()
            var pairs: [(Expr, Expr)] = []
            while !skip(op: "}") {
                if !pairs.isEmpty { try expect(op: ","); if skip(op: "}") { break } }
                let key = try parseExpression()
                try expect(op: ":")
                pairs.append((key, try parseExpression()))
            }
            return .dict(pairs, position)
        default:
            throw error("expected an expression")
        }
    }

    private mutating func parsePostfix(_ base: Expr) throws -> Expr {
        var expr = base
        while let token = peek {
            let position = token.position
            if token.kind == .op(".") {
                next()
                switch peek?.kind {
                case .name(let n)?: next(); expr = .attribute(expr, n, position)
                case .int(let i)?: next(); expr = .index(expr, .literal(.int(i), position), position)
                default: throw error("expected an attribute name after '.'")
                }
            } else if token.kind == .op("[") {
                next()
                expr = try parseSubscript(expr, position)
            } else if token.kind == .op("(") {
                next()
                let (args, kwargs) = try parseCallArguments()
                expr = .call(expr, args, kwargs, position)
            } else {
                break
            }
        }
        return expr
    }

    private mutating func parseSubscript(_ base: Expr, _ position: SourcePosition) throws -> Expr {
        var parts: [Expr?] = [nil]
        var isSlice = false
        while !skip(op: "]") {
            if skip(op: ":") {
                isSlice = true
                parts.append(nil)
                guard parts.count <= 3 else { throw error("too many ':' in slice") }
                continue
            }
            guard parts[parts.count - 1] == nil else { throw error("expected ']'") }
            parts[parts.count - 1] = try parseExpression()
        }
        if !isSlice {
            guard let index = parts[0] else { throw error("empty subscript") }
            return .index(base, index, position)
        }
        return .slice(base, start: parts[0], stop: parts.count > 1 ? parts[1] : nil, step: parts.count > 2 ? parts[2] : nil, position)
    }

    /// Arguments after `(`, through the closing `)`.
    mutating func parseCallArguments() throws -> ([Expr], [(String, Expr)]) {
        var args: [Expr] = []
        var kwargs: [(String, Expr)] = []
        while !skip(op: ")") {
            if !args.isEmpty || !kwargs.isEmpty { try expect(op: ","); if skip(op: ")") { break } }
            if case .name(let n)? = peek?.kind, index + 1 < tokens.count, tokens[index + 1].kind == .op("=") {
                index += 2
                kwargs.append((n, try parseExpression()))
            } else {
                if !kwargs.isEmpty { throw error("positional argument after keyword argument") }
                args.append(try parseExpression())
            }
        }
        return (args, kwargs)
    }

    private mutating func parseFilters(_ base: Expr) throws -> Expr {
        var expr = base
        while let token = peek {
            let position = token.position
            if token.kind == .op("|") {
                next()
                let namePosition = here
                let name = try expectDottedName()
                guard JinjaBuiltins.filterNames.contains(name) else {
                    throw TemplateError(message: "unknown filter '\(name)'", position: namePosition)
                }
                var args: [Expr] = [], kwargs: [(String, Expr)] = []
                if skip(op: "(") { (args, kwargs) = try parseCallArguments() }
                expr = .filter(expr, name, args, kwargs, position)
            } else if token.kind == .name("is") {
                next()
                let negated = skip(keyword: "not")
                let namePosition = here
                let name = try expectDottedName()
                guard JinjaBuiltins.testNames.contains(name) else {
                    throw TemplateError(message: "unknown test '\(name)'", position: namePosition)
                }
                var args: [Expr] = []
                if skip(op: "(") {
                    args = try parseCallArguments().0
                } else if let argument = peek, startsTestArgument(argument) {
                    args = [try parsePostfix(try parsePrimary())]
                }
                expr = .test(expr, name, args, negated: negated, position)
            } else if token.kind == .op("(") {
                next()
                let (args, kwargs) = try parseCallArguments()
                expr = .call(expr, args, kwargs, position)
            } else {
                break
            }
        }
        return expr
    }

    /// jinja2 lets a test take one argument without parentheses: `x is divisibleby 3`.
    private func startsTestArgument(_ token: Token) -> Bool {
        switch token.kind {
        case .name(let n): return !["else", "or", "and", "is", "if", "in", "not"].contains(n)
        case .string, .int, .float: return true
        case .op(let o): return o == "[" || o == "{"
        }
    }
}
