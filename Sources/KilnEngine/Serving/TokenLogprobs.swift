import Foundation

/// The log-probability of a sampled token and of the most likely alternatives at its position, as the OpenAI API
/// reports them (`logprobs` / `top_logprobs`). Computed from the model's raw next-token distribution (before
/// penalties, temperature and truncation), as vLLM reports them by default.
public struct TokenLogprobs: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var token: Int32
        public var logprob: Float
        public init(token: Int32, logprob: Float) { self.token = token; self.logprob = logprob }
    }
    /// The token that was sampled.
    public var chosen: Entry
    /// The `top` most likely tokens, most likely first (ties: lower id first).
    public var top: [Entry]
    public init(chosen: Entry, top: [Entry]) { self.chosen = chosen; self.top = top }

    /// The most alternatives a request may ask for (OpenAI's limit for `top_logprobs`).
    public static let maxTop = 20

    /// log softmax of `logits` (`[vocab]`) at `token`, and the `top` largest entries. NaN logits count as −∞.
    /// Log-probabilities of −∞ are reported as −9999 (vLLM's convention), so they stay valid JSON.
    public static func compute(_ logits: UnsafeBufferPointer<Float>, token: Int32, top: Int) -> TokenLogprobs {
        var m = -Float.infinity
        for v in logits where v > m { m = v }
        var sum = 0.0
        if m.isFinite { for v in logits where !v.isNaN { sum += exp(Double(v - m)) } }
        let logZ = Double(m) + log(sum)
        func lp(_ i: Int) -> Float {
            let v = logits[i]
            guard !v.isNaN, v.isFinite, logZ.isFinite else { return -9999 }
            return max(-9999, Float(Double(v) - logZ))
        }
        // Top entries by a bounded insertion: `top` is at most 20, the vocabulary tens of thousands.
        let k = min(max(0, top), logits.count)
        var best: [(Int, Float)] = []
        best.reserveCapacity(k + 1)
        if k > 0 {
            for i in 0..<logits.count {
                let v = logits[i].isNaN ? -Float.infinity : logits[i]
                if best.count == k, let last = best.last, !(v > last.1) { continue }
                var j = best.count
                while j > 0 && v > best[j - 1].1 { j -= 1 }
                best.insert((i, v), at: j)
                if best.count > k { best.removeLast() }
            }
        }
        let t = Int(token)
        return TokenLogprobs(chosen: Entry(token: token, logprob: t >= 0 && t < logits.count ? lp(t) : -9999),
                             top: best.map { Entry(token: Int32($0.0), logprob: lp($0.0)) })
    }
}
