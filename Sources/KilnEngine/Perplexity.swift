import Foundation
import KilnCore
import KilnCPU

/// Perplexity exactly as llama.cpp's `llama-perplexity` computes it.
public enum Perplexity {
    public struct Result: Sendable { public var ppl: Double; public var error: Double; public var chunks: Int; public var scoredTokens: Int }

    /// Splits `tokens` into non-overlapping chunks of `context` tokens (a partial last chunk is dropped), runs each from
    /// an empty cache, and scores the second half: logits at positions `context/2 ..< context-1` predict the next token.
    /// `bos`, when given, replaces each chunk's first token (llama.cpp does this when the vocabulary adds BOS).
    /// `onChunk(i, runningPPL)` is called after each chunk. The error is llama.cpp's: sqrt(var(nll)/(n-1))·ppl.
    public static func evaluate(model: CPUModel, tokens: [Int32], context: Int, batch: Int? = nil, bos: Int32? = nil,
                                onChunk: (Int, Double) -> Void = { _, _ in }) throws -> Result {
        guard context >= 4 else { throw KilnError("perplexity context must be at least 4 tokens, got \(context)") }
        guard tokens.count >= 2 * context else {
            throw KilnError("perplexity needs at least \(2 * context) tokens (2 × context), the text has \(tokens.count)")
        }
        let vocab = model.config.vocabSize
        let cache = try model.makeCache(capacity: context)
        let step = max(1, min(batch ?? model.maxBatch, model.maxBatch))
        let chunks = tokens.count / context
        let first = context / 2
        var nll = 0.0, nll2 = 0.0, count = 0
        for c in 0..<chunks {
            cache.reset()
            var chunk = Array(tokens[(c * context)..<((c + 1) * context)])
            if let bos { chunk[0] = bos }
            var i = 0
            while i < context {
                let j = min(context, i + step)
                // Rows p in [first, context-2] predict chunk[p+1]; only the batch's rows from `lo` on need logits.
                let lo = max(i, first), hi = min(j, context - 1)
                let wanted = j - lo
                let logits = try chunk[i..<j].withUnsafeBufferPointer {
                    try model.forward($0, cache: cache, logits: wanted > 0 ? .lastTokens(wanted) : .last)
                }
                for p in stride(from: lo, to: hi, by: 1) {
                    let r = p - lo
                    let row = UnsafeBufferPointer(rebasing: logits[(r * vocab)..<((r + 1) * vocab)])
                    let v = -logSoftmax(row, Int(chunk[p + 1]))
                    nll += v; nll2 += v * v; count += 1
                }
                i = j
            }
            onChunk(c + 1, exp(nll / Double(count)))
        }
        let mean = nll / Double(count)
        var variance = nll2 / Double(count) - mean * mean
        let ppl = exp(mean)
        variance = variance > 0 ? (variance / Double(count - 1)).squareRoot() : 0
        return Result(ppl: ppl, error: variance * ppl, chunks: chunks, scoredTokens: count)
    }

    /// log p(token) under softmax(logits), with the sum of exponentials in Double as llama.cpp does.
    static func logSoftmax(_ logits: UnsafeBufferPointer<Float>, _ token: Int) -> Double {
        var m = logits[0]
        for v in logits where v > m { m = v }
        var sum = 0.0
        for v in logits { sum += Double(exp(v - m)) }
        return Double(logits[token] - m) - log(sum)
    }
}
