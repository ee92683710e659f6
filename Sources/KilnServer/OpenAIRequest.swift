import KilnCore
import KilnEngine
import KilnTemplates

/// Which endpoint a request came to.
public enum EndpointKind: Sendable { case chat, completion }

/// What to generate from.
public enum PromptInput: Equatable, Sendable {
    /// A conversation, rendered with the model's chat template.
    case chat([ChatMessage])
    /// Plain text, tokenized with the model's BOS.
    case text(String)
    /// Token ids as given.
    case tokens([Int32])
}

/// A validated `/v1/chat/completions` or `/v1/completions` request.
public struct OpenAIRequest: Sendable {
    public var kind: EndpointKind
    public var model: String?
    public var prompt: PromptInput
    /// nil: until the end of generation or the context.
    public var maxTokens: Int?
    public var sampling: SamplingOptions
    public var stops: [String]
    public var stream: Bool
    public var includeUsage: Bool
    /// nil: no log-probabilities; k: the chosen token's and k alternatives.
    public var logprobs: Int?
    /// vLLM's extension: generate `maxTokens` even past end-of-generation tokens (load generators use it).
    public var ignoreEOS = false
    /// Top-level fields this server does not know (ignored, logged once per name).
    public var unknownFields: [String]

    /// Fields every generation endpoint understands.
    static let commonFields: Set<String> = [
        "model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "stream", "stream_options",
        "logprobs", "n", "presence_penalty", "frequency_penalty", "logit_bias", "ignore_eos",
    ]
    static let chatFields: Set<String> = commonFields.union([
        "messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice", "functions", "function_call",
        "response_format", "parallel_tool_calls", "audio", "modalities", "prediction",
    ])
    static let completionFields: Set<String> = commonFields.union(["prompt", "echo", "best_of", "suffix"])

    /// Validates `body`; every problem is a 400 naming its field. `seed` absent: `randomSeed` is used.
    public static func parse(_ body: JSON, kind: EndpointKind, randomSeed: UInt64 = UInt64.random(in: 0...UInt64.max)) throws -> OpenAIRequest {
        guard case .object(let fields) = body else { throw APIError.invalid("the request body must be a JSON object, got \(body.typeName)") }
        let f = Fields(body)
        let known = kind == .chat ? chatFields : completionFields
        let unknown = fields.map(\.0).filter { !known.contains($0) }

        // Known fields Kiln cannot honour.
        if let n = try f.int("n"), n != 1 { throw APIError.unsupported("n", "only n = 1 (one choice per request) is served, got \(n)") }
        if let bias = f["logit_bias"], bias != .object([]) { throw APIError.unsupported("logit_bias", "token biases are not applied") }
        if kind == .chat {
            for name in ["tools", "functions", "function_call", "audio", "prediction"] where f[name] != nil {
                throw APIError.unsupported(name, "tool calls, audio and predicted outputs are not served")
            }
            if let choice = f["tool_choice"], choice != .string("none") { throw APIError.unsupported("tool_choice", "tool calls are not served") }
            if let format = f["response_format"], format["type"] != .string("text") {
                throw APIError.unsupported("response_format", "only {\"type\": \"text\"} is served (no JSON mode or schemas)")
            }
            if let modalities = f["modalities"], modalities != .array([.string("text")]) { throw APIError.unsupported("modalities", "only text is served") }
        } else {
            if try f.bool("echo") == true { throw APIError.unsupported("echo", "the prompt is not echoed") }
            if let bestOf = try f.int("best_of"), bestOf != 1 { throw APIError.unsupported("best_of", "only best_of = 1 is served, got \(bestOf)") }
            if let suffix = try f.string("suffix"), !suffix.isEmpty { throw APIError.unsupported("suffix", "insertion is not served") }
        }

        let prompt: PromptInput = kind == .chat ? .chat(try parseMessages(f)) : try parsePrompt(f)
        var maxTokens = try f.int("max_tokens")
        if kind == .chat, let m = try f.int("max_completion_tokens") { maxTokens = m }
        if let maxTokens, maxTokens < 1 {
            let name = kind == .chat && f["max_completion_tokens"] != nil ? "max_completion_tokens" : "max_tokens"
            throw APIError.invalid("\(name) must be at least 1, got \(maxTokens)", param: name)
        }

        // OpenAI's defaults: temperature 1, no truncation.
        var s = SamplingOptions()
        s.temperature = 1; s.topK = 0; s.topP = 1; s.minP = 0; s.repeatPenalty = 1
        if let t = try f.number("temperature", in: 0...2) { s.temperature = Float(t) }
        if let p = try f.number("top_p", in: 0...1) {
            guard p > 0 else { throw APIError.invalid("top_p must be in (0, 1], got \(p)", param: "top_p") }
            s.topP = Float(p)
        }
        if let k = try f.int("top_k") {
            guard k >= -1 else { throw APIError.invalid("top_k must be -1 or 0 (disabled) or a positive count, got \(k)", param: "top_k") }
            s.topK = max(0, k)
        }
        if let m = try f.number("min_p", in: 0...1) { s.minP = Float(m) }
        if let p = try f.number("presence_penalty", in: -2...2) { s.presencePenalty = Float(p) }
        if let p = try f.number("frequency_penalty", in: -2...2) { s.frequencyPenalty = Float(p) }
        s.seed = try f.int("seed").map { UInt64(bitPattern: Int64($0)) } ?? randomSeed

        var stops: [String] = []
        switch f["stop"] {
        case nil: break
        case .string(let one)?: stops = [one]
        case .array(let items)?:
            stops = try items.enumerated().map { i, v in
                guard case .string(let s) = v else { throw APIError.invalid("stop[\(i)] must be a string, got \(v.typeName)", param: "stop") }
                return s
            }
        case let v?: throw APIError.invalid("stop must be a string or an array of strings, got \(v.typeName)", param: "stop")
        }

        let stream = try f.bool("stream") ?? false
        var includeUsage = false
        if let options = f["stream_options"] {
            guard case .object = options else { throw APIError.invalid("stream_options must be an object, got \(options.typeName)", param: "stream_options") }
            guard stream else { throw APIError.invalid("stream_options is only allowed when stream is true", param: "stream_options") }
            includeUsage = try Fields(options, path: "stream_options.").bool("include_usage") ?? false
        }

        var logprobs: Int?
        switch kind {
        case .chat:
            let wanted = try f.bool("logprobs") ?? false
            let top = try f.int("top_logprobs")
            if let top {
                guard (0...TokenLogprobs.maxTop).contains(top) else {
                    throw APIError.invalid("top_logprobs must be 0…\(TokenLogprobs.maxTop), got \(top)", param: "top_logprobs")
                }
                guard wanted else { throw APIError.invalid("top_logprobs needs logprobs set to true", param: "top_logprobs") }
            }
            logprobs = wanted ? (top ?? 0) : nil
        case .completion:
            if let k = try f.int("logprobs") {
                guard (0...TokenLogprobs.maxTop).contains(k) else {
                    throw APIError.invalid("logprobs must be 0…\(TokenLogprobs.maxTop), got \(k)", param: "logprobs")
                }
                logprobs = k
            }
        }
        return OpenAIRequest(kind: kind, model: try f.string("model"), prompt: prompt, maxTokens: maxTokens, sampling: s, stops: stops,
                             stream: stream, includeUsage: includeUsage, logprobs: logprobs, ignoreEOS: try f.bool("ignore_eos") ?? false,
                             unknownFields: unknown)
    }

    static func parseMessages(_ f: Fields) throws -> [ChatMessage] {
        guard let value = f["messages"] else { throw APIError.invalid("messages is required", param: "messages") }
        guard case .array(let items) = value else { throw APIError.invalid("messages must be an array, got \(value.typeName)", param: "messages") }
        guard !items.isEmpty else { throw APIError.invalid("messages must hold at least one message", param: "messages") }
        return try items.enumerated().map { i, item in
            let path = "messages[\(i)]"
            guard case .object = item else { throw APIError.invalid("\(path) must be an object, got \(item.typeName)", param: path) }
            let m = Fields(item, path: "\(path).")
            guard let role = try m.string("role") else { throw APIError.invalid("\(path).role is required", param: "\(path).role") }
            let roles = ["system", "developer", "user", "assistant"]
            guard roles.contains(role) else {
                throw APIError.invalid("\(path).role must be one of \(roles.joined(separator: ", ")), got '\(role)'", param: "\(path).role")
            }
            let content: String
            switch m["content"] {
            case .string(let text)?: content = text
            case .array(let parts)?:
                content = try parts.enumerated().map { j, part in
                    let p = Fields(part, path: "\(path).content[\(j)].")
                    guard case .object = part, try p.string("type") == "text", let text = try p.string("text") else {
                        throw APIError.invalid("\(path).content[\(j)] must be a text part {\"type\": \"text\", \"text\": …}; only text is served",
                                               param: "\(path).content[\(j)]")
                    }
                    return text
                }.joined()
            case nil, .null?: throw APIError.invalid("\(path).content is required", param: "\(path).content")
            case let v?: throw APIError.invalid("\(path).content must be a string or an array of text parts, got \(v.typeName)", param: "\(path).content")
            }
            // "developer" is OpenAI's newer name for the system message.
            return ChatMessage(role: role == "developer" ? "system" : role, content: content)
        }
    }

    static func parsePrompt(_ f: Fields) throws -> PromptInput {
        switch f["prompt"] {
        case nil: throw APIError.invalid("prompt is required", param: "prompt")
        case .string(let text)?:
            guard !text.isEmpty else { throw APIError.invalid("prompt is empty", param: "prompt") }
            return .text(text)
        case .array(let items)?:
            if items.count == 1, case .string(let text) = items[0], !text.isEmpty { return .text(text) }
            let ids = items.compactMap { v -> Int32? in if case .int(let i) = v, i >= 0, i <= Int(Int32.max) { return Int32(i) }; return nil }
            guard !items.isEmpty, ids.count == items.count else {
                throw APIError.invalid("prompt must be a string, an array of one string, or an array of token ids (one prompt per request)", param: "prompt")
            }
            return .tokens(ids)
        case let v?: throw APIError.invalid("prompt must be a string, got \(v.typeName)", param: "prompt")
        }
    }
}

/// Typed access to an object's fields; a wrong type is a 400 naming the field. null counts as absent.
struct Fields {
    let value: JSON
    let path: String
    init(_ value: JSON, path: String = "") { self.value = value; self.path = path }

    subscript(name: String) -> JSON? {
        let v = value[name]
        return v == .null ? nil : v
    }

    func int(_ name: String) throws -> Int? {
        switch self[name] {
        case nil: return nil
        case .int(let i)?: return i
        case .double(let d)? where d == d.rounded() && abs(d) < 1e15: return Int(d)
        case let v?: throw APIError.invalid("\(path)\(name) must be an integer, got \(v.typeName == "a number" ? "\(v.serialized)" : v.typeName)", param: path + name)
        }
    }

    func number(_ name: String, in range: ClosedRange<Double>) throws -> Double? {
        let d: Double
        switch self[name] {
        case nil: return nil
        case .int(let i)?: d = Double(i)
        case .double(let x)?: d = x
        case let v?: throw APIError.invalid("\(path)\(name) must be a number, got \(v.typeName)", param: path + name)
        }
        guard range.contains(d) else {
            throw APIError.invalid("\(path)\(name) must be between \(range.lowerBound) and \(range.upperBound), got \(d)", param: path + name)
        }
        return d
    }

    func bool(_ name: String) throws -> Bool? {
        switch self[name] {
        case nil: return nil
        case .bool(let b)?: return b
        case let v?: throw APIError.invalid("\(path)\(name) must be a boolean, got \(v.typeName)", param: path + name)
        }
    }

    func string(_ name: String) throws -> String? {
        switch self[name] {
        case nil: return nil
        case .string(let s)?: return s
        case let v?: throw APIError.invalid("\(path)\(name) must be a string, got \(v.typeName)", param: path + name)
        }
    }
}
