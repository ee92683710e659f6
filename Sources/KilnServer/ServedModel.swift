import Foundation
import KilnCore
import KilnEngine
import KilnTokenizer
import KilnTemplates

/// The model as requests see it: its name, tokenizer, chat template and context, and how a request's prompt becomes
/// token ids (the same rules as `kiln run`: plain text with the tokenizer's BOS; a chat through the model's template
/// with its special tokens parsed).
public final class ServedModel: @unchecked Sendable {
    public let name: String
    public let tokenizer: Tokenizer
    public let contextLength: Int
    public let endOfGeneration: Set<Int32>
    private let template: ChatTemplate?
    private let templateLock = NSLock()

    public init(name: String, tokenizer: Tokenizer, chatTemplate: String?, contextLength: Int) throws {
        self.name = name; self.tokenizer = tokenizer; self.contextLength = contextLength
        template = try chatTemplate.map { try ChatTemplate(source: $0, name: name) }
        endOfGeneration = Set(tokenizer.eogIds.map { Int32($0) })
    }

    /// The token ids of a request's prompt.
    public func promptTokens(_ prompt: PromptInput) throws -> [Int32] {
        switch prompt {
        case .text(let text):
            return tokenizer.encode(text, addSpecial: true, parseSpecial: false).map { Int32($0) }
        case .tokens(let ids):
            if let bad = ids.first(where: { Int($0) >= tokenizer.vocabSize }) {
                throw APIError.invalid("prompt holds token id \(bad), beyond the vocabulary of \(tokenizer.vocabSize)", param: "prompt")
            }
            return ids
        case .chat(let messages):
            guard let template else {
                throw APIError.invalid("the model '\(name)' has no chat template: use /v1/completions", param: "messages")
            }
            let bos = tokenizer.bosId.map { tokenizer.tokenText($0) } ?? "", eos = tokenizer.eosId.map { tokenizer.tokenText($0) } ?? ""
            let rendered: String
            do {
                templateLock.lock(); defer { templateLock.unlock() }
                rendered = try template.render(messages: messages, addGenerationPrompt: true, bosToken: bos, eosToken: eos)
            } catch {
                throw APIError.invalid("the chat template failed on these messages: \(error)", param: "messages")
            }
            return tokenizer.encode(rendered, addSpecial: false, parseSpecial: true).map { Int32($0) }
        }
    }

    /// A token's text and bytes as log-probability entries show it (control tokens included).
    public func tokenPiece(_ id: Int32) -> (text: String, bytes: [UInt8]) {
        let bytes = tokenizer.decodeBytes([Int(id)], renderSpecial: true)
        return (String(decoding: bytes, as: UTF8.self), bytes)
    }
}

/// A request's reply as it is generated: token ids in, printable text out. Reuses what `TextGenerator` streams with:
/// `StreamingDecoder` (never half a UTF-8 character, however the bytes split across tokens) and `StopStringFilter`
/// (stop strings never reach the client).
struct ReplyText {
    private var decoder: StreamingDecoder
    private var filter: StopStringFilter
    private let endOfGeneration: Set<Int32>
    /// Tokens generated (an end-of-generation id included, as usage counts it).
    private(set) var tokenCount = 0
    /// Log-probabilities of the tokens whose text has not been sent yet.
    private(set) var pendingLogprobs: [TokenLogprobs] = []
    private(set) var text = ""

    init(model: ServedModel, stops: [String]) {
        decoder = StreamingDecoder(tokenizer: model.tokenizer)
        filter = StopStringFilter(stops)
        endOfGeneration = model.endOfGeneration
    }

    /// A stop string was generated: the reply ends (finish reason "stop").
    var stopped: Bool { filter.stopped }

    /// Adds one generated token; returns the text that can be sent now.
    mutating func push(_ token: Int32, _ logprobs: TokenLogprobs?) -> String {
        guard !filter.stopped else { return "" }
        tokenCount += 1
        if endOfGeneration.contains(token) { return "" }
        if let logprobs { pendingLogprobs.append(logprobs) }
        let piece = filter.push(decoder.push(Int(token)))
        text += piece
        return piece
    }

    /// The text held back at the end (an incomplete character, a partial stop string that never completed).
    mutating func finish() -> String {
        let rest = filter.push(decoder.flush()) + filter.flush()
        text += rest
        return rest
    }

    /// Hands over the log-probabilities gathered since the last call.
    mutating func takeLogprobs() -> [TokenLogprobs] {
        defer { pendingLogprobs.removeAll() }
        return pendingLogprobs
    }
}
