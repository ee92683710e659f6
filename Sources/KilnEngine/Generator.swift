import Foundation
import KilnCore
import KilnModels
import KilnCPU

/// Timings of one generation, for the `pp`/`tg` rates the CLI prints.
public struct GenerationStats: Sendable {
    public var promptTokens = 0
    public var promptSeconds = 0.0
    public var generatedTokens = 0
    public var generateSeconds = 0.0
    public var promptTokensPerSecond: Double { promptSeconds > 0 ? Double(promptTokens) / promptSeconds : 0 }
    public var generatedTokensPerSecond: Double { generateSeconds > 0 ? Double(generatedTokens) / generateSeconds : 0 }
    public init() {}
}

/// Why generation ended.
public enum StopReason: Sendable, Equatable { case endOfGeneration, tokenLimit, stopRequested, contextFull }

/// Token-level generation on any backend: keeps the tokens of one sequence's cache, feeds a prompt (only what it does
/// not share with them), then samples token after token.
///
/// Conversations append: `generate` feeds only tokens not yet in the cache, so a multi-turn chat reuses its cache.
public final class Generator {
    public let backend: SequenceBackend
    /// Tokens whose keys and values are in the cache, in order.
    public private(set) var tokens: [Int32] = []
    /// Told how far a prompt has been fed, (tokens fed, tokens to feed), starting with 0, when it is fed in chunks.
    public var promptProgress: ((_ done: Int, _ total: Int) -> Void)?
    /// Tokens per feed while `promptProgress` is set (0: the whole prompt in one feed, no progress). The CPU sets its
    /// maximum batch: `CPUSequence.feed` runs batches of that size anyway, so the work is the same plus one logits row
    /// per chunk. The GPU leaves it 0 (each of its feeds also runs the device's sampling step).
    public var promptChunk = 0

    public init(backend: SequenceBackend) { self.backend = backend }

    /// A CPU generator with a cache of `contextLength` positions (the model's context length by default).
    public convenience init(model: CPUModel, contextLength: Int? = nil) throws {
        self.init(backend: try CPUSequence(model: model, capacity: contextLength))
    }

    /// Positions the sequence can hold.
    public var capacity: Int { backend.capacity }

    /// Forgets everything (a new conversation).
    public func reset() throws { try backend.truncate(to: 0); tokens.removeAll() }

    /// Feeds `prompt` (only what follows the longest prefix it shares with the cached tokens),
    /// then samples up to `maxTokens` tokens, calling `onToken` for each; `onToken` returns false to stop.
    /// End-of-generation tokens stop generation and are not passed to `onToken`.
    @discardableResult
    public func generate(prompt: [Int32], maxTokens: Int, sampler: inout Sampler, endOfGeneration: Set<Int32>,
                         stats: inout GenerationStats, onToken: (Int32) throws -> Bool) throws -> StopReason {
        guard !prompt.isEmpty else { throw KilnError("empty prompt") }
        guard prompt.count <= backend.capacity else {
            throw KilnError("context limit reached: the prompt has \(prompt.count) tokens; the context holds \(backend.capacity)")
        }
        // Keep the cached tokens the prompt starts with (a chat's earlier turns); recompute from the first difference.
        var common = 0
        while common < min(prompt.count, tokens.count) && prompt[common] == tokens[common] { common += 1 }
        if common == prompt.count { common -= 1 }   // re-run the last prompt token so its logits are fresh
        if common < tokens.count {
            try backend.truncate(to: common)
            tokens.removeLast(tokens.count - common)
        }
        let newTokens = Array(prompt[common...])
        let t0 = Date()
        try backend.prepareSampling(sampler.options, history: prompt, promptLength: prompt.count)
        try feedPrompt(newTokens)
        stats.promptTokens += newTokens.count
        stats.promptSeconds += Date().timeIntervalSince(t0)
        let t1 = Date()
        defer { stats.generateSeconds += Date().timeIntervalSince(t1) }
        var produced = 0
        while produced < maxTokens {
            let next = try backend.sample(&sampler, history: tokens, promptLength: prompt.count)
            if endOfGeneration.contains(next) { return .endOfGeneration }
            produced += 1
            stats.generatedTokens += 1
            let keepGoing = try onToken(next)
            if backend.count >= backend.capacity { tokens.append(next); return .contextFull }
            try backend.feed([next])
            tokens.append(next)
            if !keepGoing { return .stopRequested }
        }
        return .tokenLimit
    }

    /// Feeds a prompt's new tokens, in chunks with progress when asked to.
    private func feedPrompt(_ newTokens: [Int32]) throws {
        guard let progress = promptProgress, promptChunk > 0, newTokens.count > promptChunk else {
            try backend.feed(newTokens)
            tokens.append(contentsOf: newTokens)
            return
        }
        progress(0, newTokens.count)
        var done = 0
        while done < newTokens.count {
            let chunk = Array(newTokens[done..<min(newTokens.count, done + promptChunk)])
            try backend.feed(chunk)
            tokens.append(contentsOf: chunk)
            done += chunk.count
            progress(done, newTokens.count)
        }
    }
}

/// Holds back text that might be the start of a stop string, so stop strings never reach the output.
public struct StopStringFilter {
    public let stops: [String]
    private var pending = ""
    public private(set) var stopped = false
    public init(_ stops: [String]) { self.stops = stops.filter { !$0.isEmpty } }

    /// Adds generated text; returns what may be printed now.
    public mutating func push(_ text: String) -> String {
        guard !stopped else { return "" }
        pending += text
        for s in stops {
            if let r = pending.range(of: s) {
                stopped = true
                let out = String(pending[..<r.lowerBound]); pending = ""
                return out
            }
        }
        // Keep the longest suffix that is a prefix of some stop string.
        var keep = 0
        for s in stops {
            for n in stride(from: min(s.count, pending.count), to: 0, by: -1) where pending.hasSuffix(String(s.prefix(n))) {
                keep = max(keep, n); break
            }
        }
        let out = String(pending.dropLast(keep))
        pending = String(pending.suffix(keep))
        return out
    }

    /// Text held back when generation ends without a stop string.
    public mutating func flush() -> String { defer { pending = "" }; return stopped ? "" : pending }
}
