import Foundation
import KilnCore
import KilnTokenizer
import KilnTemplates

/// Text in, text out, on any backend: builds the prompt (plain text, or the model's chat template over the
/// conversation so far), generates, streams detokenized text, holds back stop strings and stops at the end of
/// generation. The CLI (and later the server) only parse, call this, and print.
public final class TextGenerator {
    /// What one request asks for.
    public struct Request {
        /// Tokens to generate at most.
        public var maxTokens: Int
        /// Strings that end generation (never printed).
        public var stops: [String]
        public init(maxTokens: Int, stops: [String] = []) { self.maxTokens = maxTokens; self.stops = stops }
    }

    /// What one request produced.
    public struct Reply {
        public var text: String
        public var reason: StopReason
        public var stats: GenerationStats
    }

    public let generator: Generator
    public let tokenizer: Tokenizer
    /// The conversation so far (chat turns), system message first when there is one.
    public private(set) var messages: [ChatMessage] = []
    private let template: ChatTemplate?
    private let templateName: String
    private var sampler: Sampler
    private let endOfGeneration: Set<Int32>

    /// `chatTemplate`: the model's template source (nil: the model has none, and `chat` is an error naming `templateName`).
    public init(backend: SequenceBackend, tokenizer: Tokenizer, chatTemplate: String?, templateName: String, sampling: SamplingOptions) throws {
        generator = Generator(backend: backend)
        self.tokenizer = tokenizer
        template = try chatTemplate.map { try ChatTemplate(source: $0, name: templateName) }
        self.templateName = templateName
        sampler = Sampler(options: sampling)
        endOfGeneration = Set(tokenizer.eogIds.map { Int32($0) })
    }

    /// Continues `prompt` as plain text (the tokenizer's BOS added as the model expects).
    public func complete(_ prompt: String, _ request: Request, onText: (String) throws -> Void) throws -> Reply {
        let ids = tokenizer.encode(prompt, addSpecial: true, parseSpecial: false)
        guard !ids.isEmpty else { throw KilnError("the prompt encodes to no tokens") }
        return try run(ids, request, onText: onText)
    }

    /// Starts a conversation with a system message (replacing the conversation so far).
    public func startConversation(system: String? = nil) {
        messages = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
    }

    /// One chat turn: adds the user's message, renders the chat template with a generation prompt (special tokens
    /// parsed; the template writes BOS where the model wants it), generates the reply and adds it to the conversation.
    /// The cache keeps the earlier turns, so only the new turn is prefilled.
    public func chat(_ user: String, _ request: Request, onText: (String) throws -> Void) throws -> Reply {
        guard let template else { throw KilnError("\(templateName): no chat template (tokenizer.chat_template) for a chat") }
        let turn = messages + [ChatMessage(role: "user", content: user)]
        let bos = tokenizer.bosId.map { tokenizer.tokenText($0) } ?? "", eos = tokenizer.eosId.map { tokenizer.tokenText($0) } ?? ""
        let rendered = try template.render(messages: turn, addGenerationPrompt: true, bosToken: bos, eosToken: eos)
        let reply = try run(tokenizer.encode(rendered, addSpecial: false, parseSpecial: true), request, onText: onText)
        messages = turn + [ChatMessage(role: "assistant", content: reply.text)]
        return reply
    }

    private func run(_ ids: [Int], _ request: Request, onText: (String) throws -> Void) throws -> Reply {
        var decoder = StreamingDecoder(tokenizer: tokenizer)
        var filter = StopStringFilter(request.stops)
        var text = "", stats = GenerationStats()
        let reason = try generator.generate(prompt: ids.map { Int32($0) }, maxTokens: request.maxTokens, sampler: &sampler,
                                            endOfGeneration: endOfGeneration, stats: &stats) { id in
            let piece = filter.push(decoder.push(Int(id)))
            text += piece
            try onText(piece)
            return !filter.stopped
        }
        let rest = filter.push(decoder.flush()) + filter.flush()
        text += rest
        try onText(rest)
        return Reply(text: text, reason: filter.stopped ? .stopRequested : reason, stats: stats)
    }
}
