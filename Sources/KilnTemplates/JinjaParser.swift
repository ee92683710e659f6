/// Builds the syntax tree from lexer segments, with jinja2's grammar and operator precedence.
struct JinjaParser {
    /// Deepest nesting of blocks or sub-expressions accepted; deeper input is rejected instead of
    /// risking a stack overflow in the recursive-descent parser or the interpreter.
    static let maxNesting = 128

    private let segments: [Segment]
    private var index = 0
    private var blockDepth = 0

    init(segments: [Segment]) { self.segments = segments }

    mutating func parseTemplate() throws -> [Statement] {
        let (body, end) = try parseBody(until: [])
        if let end { throw TemplateError(message: "unexpected '\(end.name)' tag with no open block", position: end.position) }
        return body
    }

    /// The tag that ended a body: its name, the remaining tokens (for `elif cond`) and position.
    private struct EndTag { var name: String; var stream: TokenStream; var position: SourcePosition }

    /// Parses statements until one of `endNames` (or the end of the template when `endNames` is empty).
    private mutating func parseBody(until endNames: Set<String>, opened: (String, SourcePosition)? = nil) throws -> ([Statement], EndTag?) {
        blockDepth += 1
        defer { blockDepth -= 1 }
        if blockDepth > Self.maxNesting {
            throw TemplateError(message: "blocks nested more than \(Self.maxNesting) deep", position: opened?.1)
        }
        var body: [Statement] = []
        while index < segments.count {
            let segment = segments[index]
            index += 1
            switch segment {
            case .text(let s):
                body.append(.text(s))
            case .output(let tokens, let position, let closer):
                var stream = TokenStream(tokens: tokens, end: closer)
                guard !tokens.isEmpty else { throw TemplateError(message: "empty expression in '{{ }}'", position: position) }
                let expr = try stream.parseExpression()
                try stream.expectEnd()
                body.append(.output(expr))
            case .statement(let tokens, let position, let closer):
                var stream = TokenStream(tokens: tokens, end: closer)
                guard case .name(let tag)? = stream.peek?.kind else {
                    throw TemplateError(message: "expected a tag name after '{%'", position: position)
                }
                stream.next()
                if endNames.contains(tag) { return (body, EndTag(name: tag, stream: stream, position: position)) }
                body.append(contentsOf: try parseStatement(tag, &stream, position, endNames: endNames))
            }
        }
        if let (name, position) = opened {
            let expected = endNames.sorted().map { "'\($0)'" }.joined(separator: " or ")
            throw TemplateError(message: "unclosed '\(name)' block: reached the end of the template looking for \(expected)", position: position)
        }
        return (body, nil)
    }

    private static let endTags: Set<String> = ["endif", "endfor", "endset", "endmacro", "endfilter", "endgeneration", "elif", "else", "endraw"]

    private mutating func parseStatement(_ tag: String, _ stream: inout TokenStream, _ position: SourcePosition,
                                         endNames: Set<String>) throws -> [Statement] {
        switch tag {
        case "if":
            var branches: [(Expr, [Statement])] = []
            var condition = try stream.parseExpression()
            try stream.expectEnd()
            while true {
                let (body, end) = try parseBody(until: ["elif", "else", "endif"], opened: ("if", position))
                branches.append((condition, body))
                guard var end else { break }
                switch end.name {
                case "elif":
                    condition = try end.stream.parseExpression()
                    try end.stream.expectEnd()
                    continue
                case "else":
                    try end.stream.expectEnd()
                    let (otherwise, final) = try parseBody(until: ["endif"], opened: ("if", position))
                    try final?.stream.expectEnd()
                    return [.ifChain(branches: branches, otherwise: otherwise)]
                default:
                    try end.stream.expectEnd()
                }
                break
            }
            return [.ifChain(branches: branches, otherwise: [])]
        case "for":
            var targets: [String] = []
            let parenthesised = stream.skip(op: "(")
            repeat { targets.append(try stream.expectName()) } while stream.skip(op: ",")
            if parenthesised { try stream.expect(op: ")") }
            try stream.expect(keyword: "in")
            let iterable = try stream.parseTuple(withCondition: false)
            var condition: Expr? = nil
            if stream.skip(keyword: "if") { condition = try stream.parseExpression() }
            if stream.skip(keyword: "recursive") {
                throw TemplateError(message: "recursive for loops are not supported", position: position)
            }
            try stream.expectEnd()
            let (body, end) = try parseBody(until: ["else", "endfor"], opened: ("for", position))
            var otherwise: [Statement] = []
            if let end, end.name == "else" {
                try end.stream.expectEnd()
                let (elseBody, final) = try parseBody(until: ["endfor"], opened: ("for", position))
                try final?.stream.expectEnd()
                otherwise = elseBody
            } else {
                try end?.stream.expectEnd()
            }
            return [.forLoop(targets: targets, iterable: iterable, condition: condition, body: body, otherwise: otherwise, position)]
        case "set":
            let first = try stream.expectName()
            var target = SetTarget.names([first])
            if stream.skip(op: ".") {
                target = .attribute(first, try stream.expectName())
            } else if stream.peek?.kind == .op(",") {
                var names = [first]
                while stream.skip(op: ",") { names.append(try stream.expectName()) }
                target = .names(names)
            }
            if stream.skip(op: "=") {
                let value = try stream.parseTuple(withCondition: true)
                try stream.expectEnd()
                return [.set(target, value, position)]
            }
            guard case .names(let names) = target, names.count == 1 else {
                throw TemplateError(message: "block 'set' needs a single variable name", position: position)
            }
            try stream.expectEnd()
            let (body, end) = try parseBody(until: ["endset"], opened: ("set", position))
            try end?.stream.expectEnd()
            return [.setBlock(names[0], body)]
        case "macro":
            let name = try stream.expectName()
            try stream.expect(op: "(")
            var parameters: [(String, Expr?)] = []
            while !stream.skip(op: ")") {
                if !parameters.isEmpty { try stream.expect(op: ",") }
                if stream.skip(op: ")") { break }
                let parameter = try stream.expectName()
                parameters.append((parameter, stream.skip(op: "=") ? try stream.parseExpression() : nil))
            }
            try stream.expectEnd()
            let (body, end) = try parseBody(until: ["endmacro"], opened: ("macro", position))
            try end?.stream.expectEnd()
            return [.macro(MacroDefinition(name: name, parameters: parameters, body: body))]
        case "filter":
            let name = try stream.expectDottedName()
            guard JinjaBuiltins.filterNames.contains(name) else {
                throw TemplateError(message: "unknown filter '\(name)'", position: position)
            }
            var args: [Expr] = [], kwargs: [(String, Expr)] = []
            if stream.skip(op: "(") { (args, kwargs) = try stream.parseCallArguments() }
            try stream.expectEnd()
            let (body, end) = try parseBody(until: ["endfilter"], opened: ("filter", position))
            try end?.stream.expectEnd()
            return [.filterBlock(name, args, kwargs, body, position)]
        case "generation":
            // transformers' AssistantTracker extension: only marks assistant text, renders its body as is.
            try stream.expectEnd()
            let (body, end) = try parseBody(until: ["endgeneration"], opened: ("generation", position))
            try end?.stream.expectEnd()
            return body
        case "break":
            try stream.expectEnd()
            return [.breakLoop(position)]
        case "continue":
            try stream.expectEnd()
            return [.continueLoop(position)]
        default:
            if Self.endTags.contains(tag) {
                let open = endNames.isEmpty ? "no open block" : "expected " + endNames.sorted().map { "'\($0)'" }.joined(separator: " or ")
                throw TemplateError(message: "unexpected '\(tag)' tag (\(open))", position: position)
            }
            throw TemplateError(message: "unknown tag '\(tag)'", position: position)
        }
    }
}
