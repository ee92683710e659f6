import Foundation
import KilnEngine

/// Response bodies and stream chunks, field for field as the OpenAI API writes them.
struct ResponseBodies {
    let kind: EndpointKind
    /// "chatcmpl-…" or "cmpl-…", the same in every chunk of one stream.
    let id: String
    let created: Int
    let model: ServedModel
    /// Whether the request asked for log-probabilities (`logprobs` is then an object, not null).
    let wantsLogprobs: Bool

    init(kind: EndpointKind, model: ServedModel, wantsLogprobs: Bool) {
        self.kind = kind; self.model = model; self.wantsLogprobs = wantsLogprobs
        id = (kind == .chat ? "chatcmpl-" : "cmpl-") + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        created = Int(Date().timeIntervalSince1970)
    }

    static func usage(prompt: Int, completion: Int) -> JSON {
        .object([("prompt_tokens", .int(prompt)), ("completion_tokens", .int(completion)), ("total_tokens", .int(prompt + completion))])
    }

    static func finishReason(_ reason: FinishReason, stopped: Bool) -> String {
        if stopped { return "stop" }
        switch reason {
        case .endOfGeneration: return "stop"
        case .maxTokens, .contextLength, .cancelled: return "length"
        }
    }

    /// The whole reply of a non-streamed request.
    func complete(text: String, logprobs: [TokenLogprobs], finish: String, usage: JSON) -> JSON {
        let choice: JSON = kind == .chat
            ? .object([("index", .int(0)), ("message", .object([("role", .string("assistant")), ("content", .string(text))])),
                       ("logprobs", logprobsJSON(logprobs, textOffset: 0)), ("finish_reason", .string(finish))])
            : .object([("index", .int(0)), ("text", .string(text)), ("logprobs", logprobsJSON(logprobs, textOffset: 0)),
                       ("finish_reason", .string(finish))])
        return .object([("id", .string(id)), ("object", .string(kind == .chat ? "chat.completion" : "text_completion")),
                        ("created", .int(created)), ("model", .string(model.name)), ("choices", .array([choice])), ("usage", usage)])
    }

    /// One stream chunk. `role`: the first chat chunk announces the assistant; `finish`: the last one;
    /// `usage`: present (null until the end) when the client asked for `stream_options.include_usage`.
    func chunk(text: String?, role: Bool = false, logprobs: [TokenLogprobs] = [], textOffset: Int = 0, finish: String? = nil,
               usage: JSON? = nil) -> JSON {
        let lp: JSON = wantsLogprobs && !logprobs.isEmpty ? logprobsJSON(logprobs, textOffset: textOffset) : .null
        let choice: JSON
        if kind == .chat {
            var delta: [(String, JSON)] = []
            if role { delta.append(("role", .string("assistant"))) }
            if let text { delta.append(("content", .string(text))) }
            choice = .object([("index", .int(0)), ("delta", .object(delta)), ("logprobs", lp), ("finish_reason", finish.map(JSON.string) ?? .null)])
        } else {
            choice = .object([("index", .int(0)), ("text", .string(text ?? "")), ("logprobs", lp), ("finish_reason", finish.map(JSON.string) ?? .null)])
        }
        var fields: [(String, JSON)] = [("id", .string(id)), ("object", .string(kind == .chat ? "chat.completion.chunk" : "text_completion")),
                                        ("created", .int(created)), ("model", .string(model.name)), ("choices", .array([choice]))]
        if let usage { fields.append(("usage", usage)) }
        return .object(fields)
    }

    /// The last chunk of a stream with `include_usage`: no choices, the usage.
    func usageChunk(_ usage: JSON) -> JSON {
        .object([("id", .string(id)), ("object", .string(kind == .chat ? "chat.completion.chunk" : "text_completion")),
                 ("created", .int(created)), ("model", .string(model.name)), ("choices", .array([])), ("usage", usage)])
    }

    /// Chat: `{"content": [{token, logprob, bytes, top_logprobs}]}`. Completions: `{tokens, token_logprobs,
    /// top_logprobs, text_offset}` (`textOffset`: characters of the reply before the first of these tokens).
    func logprobsJSON(_ entries: [TokenLogprobs], textOffset: Int) -> JSON {
        guard wantsLogprobs else { return .null }
        func entry(_ e: TokenLogprobs.Entry) -> [(String, JSON)] {
            let piece = model.tokenPiece(e.token)
            return [("token", .string(piece.text)), ("logprob", .double(Double(e.logprob))), ("bytes", .array(piece.bytes.map { .int(Int($0)) }))]
        }
        if kind == .chat {
            return .object([("content", .array(entries.map { lp in
                .object(entry(lp.chosen) + [("top_logprobs", .array(lp.top.map { .object(entry($0)) }))])
            }))])
        }
        var offsets: [JSON] = []
        var offset = textOffset
        for e in entries {
            offsets.append(.int(offset))
            offset += model.tokenPiece(e.chosen.token).text.count
        }
        return .object([
            ("tokens", .array(entries.map { .string(model.tokenPiece($0.chosen.token).text) })),
            ("token_logprobs", .array(entries.map { .double(Double($0.chosen.logprob)) })),
            ("top_logprobs", .array(entries.map { lp in .object(lp.top.map { (model.tokenPiece($0.token).text, .double(Double($0.logprob))) }) })),
            ("text_offset", .array(offsets)),
        ])
    }
}
