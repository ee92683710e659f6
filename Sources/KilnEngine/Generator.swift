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

/// Owns a model's KV cache and the tokens in it: prefill in batches, then decode one token at a time.
///
/// Conversations append: `generate` feeds only tokens not yet in the cache, so a multi-turn chat reuses its cache.
public final class Generator {
    public let model: CPUModel
    public let cache: KVCache
    /// Tokens whose keys and values are in the cache, in order.
    public private(set) var tokens: [Int32] = []
    private var lastLogits: [Float]

    /// A generator with a cache of `contextLength` positions (the model's context length by default).
    public init(model: CPUModel, contextLength: Int? = nil) throws {
        self.model = model
        cache = try model.makeCache(capacity: min(contextLength ?? model.config.contextLength, model.config.contextLength))
        lastLogits = [Float](repeating: 0, count: model.config.vocabSize)
    }

    /// Forgets everything (a new conversation).
    public func reset() { cache.reset(); tokens.removeAll() }

    /// Logits after the last token fed.
    public var logits: [Float] { lastLogits }

    /// Feeds `newTokens` in batches of the model's maximum batch; keeps the last token's logits.
    public func feed(_ newTokens: [Int32]) throws {
        guard !newTokens.isEmpty else { return }
        guard cache.count + newTokens.count <= cache.capacity else {
            throw KilnError("context limit reached: \(cache.count) tokens in context + \(newTokens.count) new exceed the context of \(cache.capacity) tokens")
        }
        var i = 0
        while i < newTokens.count {
            let j = min(newTokens.count, i + model.maxBatch)
            let out = try newTokens[i..<j].withUnsafeBufferPointer { try model.forward($0, cache: cache, logits: .last) }
            if j == newTokens.count { lastLogits.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: out.baseAddress!, count: out.count) } }
            i = j
        }
        tokens.append(contentsOf: newTokens)
    }

    /// Feeds `prompt` (only what follows the longest prefix it shares with the cached tokens),
    /// then samples up to `maxTokens` tokens, calling `onToken` for each; `onToken` returns false to stop.
    /// End-of-generation tokens stop generation and are not passed to `onToken`.
    @discardableResult
    public func generate(prompt: [Int32], maxTokens: Int, sampler: inout Sampler, endOfGeneration: Set<Int32>,
                         stats: inout GenerationStats, onToken: (Int32) throws -> Bool) throws -> StopReason {
        // Keep the cached tokens the prompt starts with (a chat's earlier turns); recompute from the first difference.
        var common = 0
        while common < min(prompt.count, tokens.count) && prompt[common] == tokens[common] { common += 1 }
        if common == prompt.count { common -= 1 }   // re-run the last prompt token so its logits are fresh
        guard common >= 0 else { throw KilnError("empty prompt") }
        tokens.removeLast(tokens.count - common)
        cache.truncate(to: common)
        let newTokens = Array(prompt[common...])
        let t0 = Date()
        try feed(newTokens)
        stats.promptTokens += newTokens.count
        stats.promptSeconds += Date().timeIntervalSince(t0)
        let t1 = Date()
        defer { stats.generateSeconds += Date().timeIntervalSince(t1) }
        var produced = 0
        while produced < maxTokens {
            let next = lastLogits.withUnsafeBufferPointer { sampler.sample($0, history: tokens) }
            if endOfGeneration.contains(next) { return .endOfGeneration }
            produced += 1
            stats.generatedTokens += 1
            let keepGoing = try onToken(next)
            if cache.count >= cache.capacity { tokens.append(next); return .contextFull }
            try feed([next])
            if !keepGoing { return .stopRequested }
        }
        return .tokenLimit
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
