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
    /// Told once per conversation when the context is full and the oldest turns are dropped (the CLI prints it).
    public var onNotice: (String) -> Void = { _ in }
    /// Messages dropped from this conversation to make room (the system message is never dropped).
    public private(set) var droppedMessages = 0

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
        guard ids.count <= generator.capacity else { throw tooLong(ids.count) }
        return try run(ids, request, onText: onText)
    }

    /// Starts a conversation with a system message (replacing the conversation so far).
    public func startConversation(system: String? = nil) {
        messages = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
        droppedMessages = 0
    }

    /// One chat turn: adds the user's message, renders the chat template with a generation prompt (special tokens
    /// parsed; the template writes BOS where the model wants it), generates the reply and adds it to the conversation.
    /// The cache keeps the earlier turns, so only the new turn is prefilled.
    ///
    /// A long conversation goes on when the context fills: the oldest turns are dropped (the system message stays)
    /// until the conversation leaves room for the reply (`replyRoom`), both before the turn and when the reply itself
    /// fills the context (then it continues after the shortened conversation). `onNotice` hears of it once.
    public func chat(_ user: String, _ request: Request, onText: (String) throws -> Void) throws -> Reply {
        guard let template else { throw KilnError("\(templateName): no chat template (tokenizer.chat_template) for a chat") }
        var turn = messages + [ChatMessage(role: "user", content: user)]
        var replyText = "", stats = GenerationStats(), remaining = request.maxTokens
        while true {
            let room = min(remaining, replyRoom)
            let ids = try fitConversation(&turn, partialReply: replyText, room: room, template: template)
            var part = request
            part.maxTokens = remaining
            let reply = try run(ids, part, onText: onText)
            replyText += reply.text
            remaining -= reply.stats.generatedTokens
            stats.promptTokens += reply.stats.promptTokens; stats.promptSeconds += reply.stats.promptSeconds
            stats.generatedTokens += reply.stats.generatedTokens; stats.generateSeconds += reply.stats.generateSeconds
            if reply.reason == .contextFull, remaining > 0, canDrop(turn) { continue }
            messages = turn + [ChatMessage(role: "assistant", content: replyText)]
            return Reply(text: replyText, reason: reply.reason, stats: stats)
        }
    }

    /// Room kept for a reply when older turns must go: a quarter of the context (or the reply's own limit if smaller).
    public var replyRoom: Int { max(1, generator.capacity / 4) }

    /// The first message that may be dropped: the one after the system message.
    private func firstDroppable(_ turn: [ChatMessage]) -> Int { turn.first?.role == "system" ? 1 : 0 }

    /// Whether anything is older than the newest user message (which is never dropped).
    private func canDrop(_ turn: [ChatMessage]) -> Bool { turn.count - firstDroppable(turn) > 1 }

    /// The token ids of `turn` (and the reply generated so far), after dropping the oldest turns until `room` tokens
    /// remain free or only the system message and the newest user message are left.
    private func fitConversation(_ turn: inout [ChatMessage], partialReply: String, room: Int, template: ChatTemplate) throws -> [Int] {
        let bos = tokenizer.bosId.map { tokenizer.tokenText($0) } ?? "", eos = tokenizer.eosId.map { tokenizer.tokenText($0) } ?? ""
        var dropped = 0
        while true {
            let rendered = try template.render(messages: turn, addGenerationPrompt: true, bosToken: bos, eosToken: eos)
            var ids = tokenizer.encode(rendered, addSpecial: false, parseSpecial: true)
            if !partialReply.isEmpty { ids += tokenizer.encode(partialReply, addSpecial: false, parseSpecial: false) }
            if ids.count + room <= generator.capacity || !canDrop(turn) {
                guard ids.count <= generator.capacity else { throw tooLong(ids.count) }
                if dropped > 0 {
                    if droppedMessages == 0 {
                        onNotice("context full (\(generator.capacity) tokens): dropping the oldest turns of the conversation"
                                 + (turn.first?.role == "system" ? ", keeping the system message" : ""))
                    }
                    droppedMessages += dropped
                }
                return ids
            }
            // Drop the oldest turn: a user message and the assistant reply that follows it.
            let first = firstDroppable(turn)
            turn.remove(at: first); dropped += 1
            if canDrop(turn), turn[first].role == "assistant" { turn.remove(at: first); dropped += 1 }
        }
    }

    /// A prompt the context cannot hold, with what would help: a larger `-c` up to the model's own context length.
    private func tooLong(_ tokens: Int) -> KilnError {
        let context = generator.capacity, model = generator.backend.config.contextLength
        if context < model {
            return KilnError("the prompt has \(tokens) tokens but the context holds \(context): raise it with -c (up to the model's context length of \(model) tokens)")
        }
        return KilnError("the prompt has \(tokens) tokens, more than the model's context length of \(model) tokens (-c cannot go beyond it): shorten the prompt")
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
