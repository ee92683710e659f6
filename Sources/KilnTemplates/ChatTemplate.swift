import Foundation
import KilnCore

/// One turn of a conversation.
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// A model's chat template (`tokenizer.chat_template` in GGUF, `chat_template` in
/// tokenizer_config.json), rendered the way transformers' `apply_chat_template` renders it:
/// jinja2 with `trim_blocks` and `lstrip_blocks`, plus `raise_exception`, `strftime_now` and a
/// `tojson` that keeps non-ASCII text.
///
/// ```swift
/// let template = try ChatTemplate(source: ggufTemplate, name: "SmolLM2-135M-Instruct")
/// let prompt = try template.render(messages: [ChatMessage(role: "user", content: "Hi")],
///                                  addGenerationPrompt: true, bosToken: "<|im_start|>", eosToken: "<|im_end|>")
/// ```
///
/// Parsing happens once in `init`, so syntax errors, unknown tags and unknown filters surface
/// when the model loads rather than at the first request.
public struct ChatTemplate: @unchecked Sendable {
    // @unchecked: the syntax tree holds classes (macro definitions) that are never mutated after parsing.

    /// Names the template in error messages (usually the model name).
    public let name: String
    /// Guards against runaway templates; see `JinjaLimits`.
    public var limits = JinjaLimits()
    /// The clock `strftime_now` reads; replace it for reproducible output.
    public var clock: @Sendable () -> Date = { Date() }
    /// The time zone `strftime_now` formats in (Python's `datetime.now()` uses local time).
    public var timeZone: TimeZone = .current

    private let statements: [Statement]

    /// Parses `source`; throws a one-line `KilnError` naming `name`, the line and column.
    public init(source: String, name: String) throws {
        self.name = name
        do {
            var lexer = JinjaLexer(source: source)
            var parser = JinjaParser(segments: try lexer.segments())
            statements = try parser.parseTemplate()
        } catch let error as TemplateError {
            throw Self.kilnError(error, name: name)
        }
    }

    /// Renders a conversation with the variables transformers passes: `messages`,
    /// `add_generation_prompt`, `bos_token`, `eos_token`, plus `extra` (e.g. `tools`, `date_string`).
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String, eosToken: String,
                       extra: [String: JinjaValue] = [:]) throws -> String {
        var context = extra
        context["messages"] = .array(messages.map { .dict(JinjaDict([("role", .string($0.role)), ("content", .string($0.content))])) })
        context["add_generation_prompt"] = .bool(addGenerationPrompt)
        context["bos_token"] = .string(bosToken)
        context["eos_token"] = .string(eosToken)
        return try render(context: context)
    }

    /// Renders with an arbitrary context (messages with tool calls, documents, ...).
    public func render(context: [String: JinjaValue]) throws -> String {
        let interpreter = JinjaInterpreter(context: context, limits: limits, now: clock, timeZone: timeZone)
        do {
            return try interpreter.render(statements)
        } catch let error as TemplateError {
            throw Self.kilnError(error, name: name)
        }
    }

    private static func kilnError(_ error: TemplateError, name: String) -> KilnError {
        let place = error.position.map { " line \($0.line), column \($0.column)" } ?? ""
        let message = error.message.replacingOccurrences(of: "\n", with: "\\n")
        return KilnError("chat template '\(name)'\(place): \(message)")
    }
}
