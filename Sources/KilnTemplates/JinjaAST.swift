/// Syntax tree of a parsed template. Every node keeps its source position so runtime errors
/// can say where they happened.

/// An expression.
indirect enum Expr {
    case literal(JinjaValue, SourcePosition)
    case name(String, SourcePosition)
    case list([Expr], SourcePosition)
    case dict([(Expr, Expr)], SourcePosition)
    case attribute(Expr, String, SourcePosition)
    case index(Expr, Expr, SourcePosition)
    case slice(Expr, start: Expr?, stop: Expr?, step: Expr?, SourcePosition)
    case call(Expr, [Expr], [(String, Expr)], SourcePosition)
    case filter(Expr, String, [Expr], [(String, Expr)], SourcePosition)
    case test(Expr, String, [Expr], negated: Bool, SourcePosition)
    /// `not`, unary `-` and `+`.
    case unary(String, Expr, SourcePosition)
    /// Arithmetic, `~`, comparisons, `in` and `not in`.
    case binary(String, Expr, Expr, SourcePosition)
    case and(Expr, Expr, SourcePosition)
    case or(Expr, Expr, SourcePosition)
    /// `a if cond else b`; a missing `else` yields undefined, as in jinja2.
    case conditional(cond: Expr, then: Expr, otherwise: Expr?, SourcePosition)

    var position: SourcePosition {
        switch self {
        case .literal(_, let p), .name(_, let p), .list(_, let p), .dict(_, let p), .attribute(_, _, let p),
             .index(_, _, let p), .slice(_, _, _, _, let p), .call(_, _, _, let p), .filter(_, _, _, _, let p),
             .test(_, _, _, _, let p), .unary(_, _, let p), .binary(_, _, _, let p), .and(_, _, let p),
             .or(_, _, let p), .conditional(_, _, _, let p):
            return p
        }
    }
}

/// What `{% set %}` assigns to.
enum SetTarget {
    /// `set x = ...` or `set a, b = ...`
    case names([String])
    /// `set ns.attr = ...` (only namespaces accept it, as in jinja2's sandbox).
    case attribute(String, String)
}

/// A macro's definition, shared by every call.
final class MacroDefinition {
    let name: String
    let parameters: [(String, Expr?)]
    let body: [Statement]
    init(name: String, parameters: [(String, Expr?)], body: [Statement]) {
        self.name = name; self.parameters = parameters; self.body = body
    }
}

/// A statement (text, output or tag).
enum Statement {
    case text(String)
    case output(Expr)
    case ifChain(branches: [(Expr, [Statement])], otherwise: [Statement])
    case forLoop(targets: [String], iterable: Expr, condition: Expr?, body: [Statement], otherwise: [Statement], SourcePosition)
    case set(SetTarget, Expr, SourcePosition)
    /// `{% set x %}...{% endset %}`: captures rendered text.
    case setBlock(String, [Statement])
    case macro(MacroDefinition)
    /// `{% filter name %}...{% endfilter %}`: applies a filter to rendered text.
    case filterBlock(String, [Expr], [(String, Expr)], [Statement], SourcePosition)
    case breakLoop(SourcePosition)
    case continueLoop(SourcePosition)
}
