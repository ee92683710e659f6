import Foundation

/// Limits that keep a hostile or broken template from hanging or exhausting memory.
public struct JinjaLimits: Sendable {
    /// Most nested macro calls (jinja2 would hit Python's recursion limit).
    public var maxCallDepth = 64
    /// Most bytes of rendered output.
    public var maxOutputBytes = 16 << 20
    /// Most loop iterations plus macro calls over one render.
    public var maxSteps = 1_000_000
    /// Most elements a single list or string operation may create (`range`, `*`).
    public var maxCollectionSize = 1 << 20
    public init() {}
}

/// Executes a parsed template. One interpreter renders one template once.
public final class JinjaInterpreter {
    /// Variable scopes, innermost last: [0] built-in globals, [1] the render context and
    /// top-level `set`s, then one per macro call and per loop iteration (jinja2 scoping: a `set`
    /// inside a loop body does not leak out of it; one inside `if` does).
    private var scopes: [[String: JinjaValue]]
    private var output = ""
    private var outputBytes = 0
    private var callDepth = 0
    private var steps = 0
    let limits: JinjaLimits
    /// The clock behind `strftime_now`, injectable so tests are deterministic.
    let now: () -> Date
    /// The time zone `strftime_now` formats in.
    let timeZone: TimeZone

    enum Flow { case normal, breakLoop, continueLoop }

    init(context: [String: JinjaValue], limits: JinjaLimits, now: @escaping () -> Date, timeZone: TimeZone) {
        self.limits = limits
        self.now = now
        self.timeZone = timeZone
        scopes = [JinjaBuiltins.globals, context]
    }

    func render(_ statements: [Statement]) throws -> String {
        _ = try execute(statements)
        return output
    }

    // MARK: - Statements

    private func emit(_ text: String) throws {
        outputBytes += text.utf8.count
        if outputBytes > limits.maxOutputBytes {
            throw TemplateError(message: "output exceeds \(limits.maxOutputBytes) bytes", position: nil)
        }
        output += text
    }

    func countStep(_ position: SourcePosition?) throws {
        steps += 1
        if steps > limits.maxSteps {
            throw TemplateError(message: "more than \(limits.maxSteps) loop iterations and calls; giving up", position: position)
        }
    }

    func execute(_ statements: [Statement]) throws -> Flow {
        for statement in statements {
            switch statement {
            case .text(let s):
                try emit(s)
            case .output(let expr):
                try emit(try eval(expr).pythonString)
            case .ifChain(let branches, let otherwise):
                var taken = false
                for (condition, body) in branches where try eval(condition).isTruthy {
                    taken = true
                    let flow = try execute(body)
                    if flow != .normal { return flow }
                    break
                }
                if !taken {
                    let flow = try execute(otherwise)
                    if flow != .normal { return flow }
                }
            case .forLoop(let targets, let iterable, let condition, let body, let otherwise, let position):
                try runLoop(targets: targets, iterable: iterable, condition: condition, body: body, otherwise: otherwise, position: position)
            case .set(let target, let valueExpr, let position):
                let value = try eval(valueExpr)
                switch target {
                case .names(let names):
                    for (name, v) in zip(names, try unpack(value, into: names.count, position)) { scopes[scopes.count - 1][name] = v }
                case .attribute(let object, let attribute):
                    guard case .namespace(let ns)? = lookup(object) else {
                        throw TemplateError(message: "cannot assign attribute '\(attribute)' on '\(object)': only namespace() objects accept it", position: position)
                    }
                    ns.attributes[attribute] = value
                }
            case .setBlock(let name, let body):
                scopes[scopes.count - 1][name] = .string(try capture(body))
            case .macro(let definition):
                scopes[scopes.count - 1][definition.name] = .function(JinjaFunction(name: definition.name) { args, kwargs, interp in
                    try interp.callMacro(definition, args, kwargs)
                })
            case .filterBlock(let name, let argExprs, let kwargExprs, let body, let position):
                let text = JinjaValue.string(try capture(body))
                let args = try argExprs.map { try eval($0) }
                let kwargs = try kwargExprs.map { ($0.0, try eval($0.1)) }
                try emit(try withPosition(position) { try JinjaBuiltins.applyFilter(name, text, args, kwargs, self) }.pythonString)
            case .breakLoop:
                return .breakLoop
            case .continueLoop:
                return .continueLoop
            }
        }
        return .normal
    }

    /// Renders `body` into a string instead of the output (block `set`, macros, `filter`).
    private func capture(_ body: [Statement]) throws -> String {
        let saved = output
        output = ""
        defer { output = saved }
        _ = try execute(body)
        return output
    }

    private func runLoop(targets: [String], iterable: Expr, condition: Expr?, body: [Statement],
                         otherwise: [Statement], position: SourcePosition) throws {
        let all = try withPosition(iterable.position) { try JinjaBuiltins.iterate(try eval(iterable)) }
        var items: [(JinjaValue, [JinjaValue])] = []
        for item in all {
            try countStep(position)
            let bound = try unpack(item, into: targets.count, position)
            if let condition {
                // The inline `if` filters items before `loop` is computed, so loop.index/length skip them.
                scopes.append(Dictionary(uniqueKeysWithValues: zip(targets, bound)))
                defer { scopes.removeLast() }
                if !(try eval(condition).isTruthy) { continue }
            }
            items.append((item, bound))
        }
        if items.isEmpty {
            _ = try execute(otherwise)
            return
        }
        let count = items.count
        for (i, (_, bound)) in items.enumerated() {
            try countStep(position)
            var loop = JinjaDict()
            loop["index"] = .int(i + 1)
            loop["index0"] = .int(i)
            loop["revindex"] = .int(count - i)
            loop["revindex0"] = .int(count - i - 1)
            loop["first"] = .bool(i == 0)
            loop["last"] = .bool(i == count - 1)
            loop["length"] = .int(count)
            loop["depth"] = .int(1)
            loop["depth0"] = .int(0)
            loop["previtem"] = i > 0 ? items[i - 1].0 : .undefined
            loop["nextitem"] = i + 1 < count ? items[i + 1].0 : .undefined
            loop["cycle"] = .function(JinjaFunction(name: "loop.cycle") { args, _, _ in
                guard !args.isEmpty else { throw TemplateError(message: "loop.cycle() needs at least one argument", position: nil) }
                return args[i % args.count]
            })
            var scope = Dictionary(uniqueKeysWithValues: zip(targets, bound))
            scope["loop"] = .dict(loop)
            scopes.append(scope)
            let flow = try execute(body)
            scopes.removeLast()
            if flow == .breakLoop { break }
        }
    }

    private func unpack(_ value: JinjaValue, into count: Int, _ position: SourcePosition) throws -> [JinjaValue] {
        if count == 1 { return [value] }
        let parts = try withPosition(position) { try JinjaBuiltins.iterate(value) }
        guard parts.count == count else {
            throw TemplateError(message: "cannot unpack \(parts.count) values into \(count) names", position: position)
        }
        return parts
    }

    func callMacro(_ macro: MacroDefinition, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws -> JinjaValue {
        guard args.count <= macro.parameters.count else {
            throw TemplateError(message: "macro '\(macro.name)' takes \(macro.parameters.count) arguments, got \(args.count)", position: nil)
        }
        callDepth += 1
        defer { callDepth -= 1 }
        if callDepth > limits.maxCallDepth {
            throw TemplateError(message: "macro calls nested more than \(limits.maxCallDepth) deep (runaway recursion in '\(macro.name)'?)", position: nil)
        }
        try countStep(nil)
        // A macro sees the globals and the template's top level, plus its own parameters.
        let savedScopes = scopes
        defer { scopes = savedScopes }
        var local: [String: JinjaValue] = [:]
        scopes = [scopes[0], scopes[1], local]
        for (i, (name, defaultExpr)) in macro.parameters.enumerated() {
            if i < args.count { local[name] = args[i] }
            else if let v = kwargs.first(where: { $0.0 == name })?.1 { local[name] = v }
            else if let defaultExpr { local[name] = try eval(defaultExpr) }
            else { local[name] = .undefined }
        }
        if let unknown = kwargs.first(where: { kw in !macro.parameters.contains { $0.0 == kw.0 } }) {
            throw TemplateError(message: "macro '\(macro.name)' has no parameter '\(unknown.0)'", position: nil)
        }
        scopes[2] = local
        return .string(try capture(macro.body))
    }

    // MARK: - Expressions

    func lookup(_ name: String) -> JinjaValue? {
        for scope in scopes.reversed() { if let v = scope[name] { return v } }
        return nil
    }

    /// Runs `body`, attaching `position` to errors that do not have one yet.
    func withPosition<T>(_ position: SourcePosition, _ body: () throws -> T) throws -> T {
        do { return try body() } catch var error as TemplateError {
            if error.position == nil { error.position = position }
            throw error
        }
    }

    /// A readable name for an expression, for "'x.y' is undefined" messages.
    private func describe(_ expr: Expr) -> String {
        switch expr {
        case .name(let n, _): return n
        case .attribute(let base, let n, _): return describe(base) + "." + n
        case .index(let base, .literal(let key, _), _): return describe(base) + "[" + key.pythonRepr + "]"
        case .call(let f, _, _, _): return describe(f) + "()"
        default: return "value"
        }
    }

    private func evalDefined(_ expr: Expr, for use: String) throws -> JinjaValue {
        let value = try eval(expr)
        if value.isUndefined { throw TemplateError(message: "'\(describe(expr))' is undefined (\(use))", position: expr.position) }
        return value
    }

    func eval(_ expr: Expr) throws -> JinjaValue {
        switch expr {
        case .literal(let v, _):
            return v
        case .name(let n, _):
            return lookup(n) ?? .undefined
        case .list(let items, _):
            return .array(try items.map { try eval($0) })
        case .dict(let pairs, let position):
            var d = JinjaDict()
            for (k, v) in pairs {
                guard case .string(let key) = try eval(k) else {
                    throw TemplateError(message: "dict keys must be strings", position: position)
                }
                d[key] = try eval(v)
            }
            return .dict(d)
        case .attribute(let base, let name, let position):
            let object = try evalDefined(base, for: "reading '.\(name)'")
            return try withPosition(position) { JinjaBuiltins.attribute(object, name) }
        case .index(let base, let keyExpr, let position):
            let object = try evalDefined(base, for: "subscripting it")
            let key = try eval(keyExpr)
            return try withPosition(position) { try JinjaBuiltins.item(object, key) }
        case .slice(let base, let start, let stop, let step, let position):
            let object = try evalDefined(base, for: "slicing it")
            let bounds = try [start, stop, step].map { try $0.map { try eval($0) } ?? .none }
            return try withPosition(position) { try JinjaBuiltins.slice(object, bounds[0], bounds[1], bounds[2]) }
        case .call(let callee, let argExprs, let kwargExprs, let position):
            let function = try evalDefined(callee, for: "calling it")
            guard case .function(let f) = function else {
                throw TemplateError(message: "'\(describe(callee))' (\(function.typeName)) is not callable", position: position)
            }
            let args = try argExprs.map { try eval($0) }
            let kwargs = try kwargExprs.map { ($0.0, try eval($0.1)) }
            return try withPosition(position) { try f.body(args, kwargs, self) }
        case .filter(let base, let name, let argExprs, let kwargExprs, let position):
            let value = try eval(base)
            let args = try argExprs.map { try eval($0) }
            let kwargs = try kwargExprs.map { ($0.0, try eval($0.1)) }
            return try withPosition(position) { try JinjaBuiltins.applyFilter(name, value, args, kwargs, self) }
        case .test(let base, let name, let argExprs, let negated, let position):
            let value = try eval(base)
            let args = try argExprs.map { try eval($0) }
            let result = try withPosition(position) { try JinjaBuiltins.applyTest(name, value, args, self) }
            return .bool(result != negated)
        case .unary(let op, let operandExpr, let position):
            let operand = try eval(operandExpr)
            if op == "not" { return .bool(!operand.isTruthy) }
            return try withPosition(position) { try JinjaOperators.unary(op, operand) }
        case .binary(let op, let leftExpr, let rightExpr, let position):
            let left = try eval(leftExpr)
            let right = try eval(rightExpr)
            return try withPosition(position) { try JinjaOperators.binary(op, left, right, limits: limits) }
        case .and(let leftExpr, let rightExpr, _):
            let left = try eval(leftExpr)
            return left.isTruthy ? try eval(rightExpr) : left
        case .or(let leftExpr, let rightExpr, _):
            let left = try eval(leftExpr)
            return left.isTruthy ? left : try eval(rightExpr)
        case .conditional(let condition, let then, let otherwise, _):
            if try eval(condition).isTruthy { return try eval(then) }
            return try otherwise.map { try eval($0) } ?? .undefined
        }
    }
}
