import Foundation
import KilnCore

/// Sampling settings; the defaults are llama.cpp's (`--temp 0.8 --top-k 40 --top-p 0.95 --min-p 0.05`).
public struct SamplingOptions: Sendable, Equatable {
    /// 0 (or less) means greedy: the highest logit, ties to the lowest id.
    public var temperature: Float = 0.8
    /// Keep the `topK` highest logits; 0 disables.
    public var topK: Int = 40
    /// Keep the smallest set of most likely tokens whose probability reaches `topP`; 1 disables.
    public var topP: Float = 0.95
    /// Drop tokens whose probability is below `minP` × the top probability; 0 disables.
    public var minP: Float = 0.05
    /// llama.cpp's repetition penalty over the last `repeatLastN` tokens: positive logits ÷ p, negative × p; 1 disables.
    public var repeatPenalty: Float = 1
    public var repeatLastN: Int = 64
    /// Same seed, same logits → same choices.
    public var seed: UInt64 = 0
    public init() {}
    public static var greedy: SamplingOptions { var o = SamplingOptions(); o.temperature = 0; return o }
}


/// Turns logits into a token: penalties, then top-k, top-p, min-p (llama.cpp's order), temperature, and a draw.
public struct Sampler {
    public var options: SamplingOptions
    private var rng: SplitMix64
    /// Candidate ids and logits, reused between calls.
    private var ids: [Int32] = []
    private var values: [Float] = []

    public init(options: SamplingOptions) {
        self.options = options
        rng = SplitMix64(seed: options.seed)
    }

    /// Index of the largest value; ties go to the lowest index.
    public static func argmax(_ logits: UnsafeBufferPointer<Float>) -> Int32 {
        var best = 0
        for i in 1..<logits.count where logits[i] > logits[best] { best = i }
        return Int32(best)
    }

    /// Chooses the next token from `logits` (`[vocab]`), given the tokens so far (for the repetition penalty).
    public mutating func sample(_ logits: UnsafeBufferPointer<Float>, history: [Int32] = []) -> Int32 {
        let o = options
        if o.temperature <= 0 && (o.repeatPenalty == 1 || history.isEmpty) { return Sampler.argmax(logits) }
        let penalized = penalties(logits, history: history)
        if o.temperature <= 0 {
            var best = 0, bestValue = -Float.infinity
            for i in 0..<logits.count {
                let l = penalized[Int32(i)] ?? logits[i]
                if l > bestValue { bestValue = l; best = i }
            }
            return Int32(best)
        }
        let kept = filterCandidates(logits, penalized: penalized)
        // Temperature, softmax over the survivors, and one draw.
        let m = Double(values[0])
        var sum = 0.0
        for i in 0..<kept { sum += exp((Double(values[i]) - m) / Double(o.temperature)) }
        var r = rng.nextUnit() * sum
        for i in 0..<kept {
            r -= exp((Double(values[i]) - m) / Double(o.temperature))
            if r < 0 { return ids[i] }
        }
        return ids[kept - 1]
    }

    /// The tokens that survive penalties, top-k, top-p and min-p, best first, with their (penalized) logits.
    public mutating func candidates(_ logits: UnsafeBufferPointer<Float>, history: [Int32] = []) -> [(id: Int32, logit: Float)] {
        let kept = filterCandidates(logits, penalized: penalties(logits, history: history))
        return (0..<kept).map { (ids[$0], values[$0]) }
    }

    private func penalties(_ logits: UnsafeBufferPointer<Float>, history: [Int32]) -> [Int32: Float] {
        let o = options
        var penalized: [Int32: Float] = [:]
        guard o.repeatPenalty != 1 && o.repeatLastN != 0 else { return penalized }
        let recent = o.repeatLastN < 0 ? history[...] : history.suffix(o.repeatLastN)
        for t in Set(recent) where t >= 0 && Int(t) < logits.count {
            let l = logits[Int(t)]
            penalized[t] = l > 0 ? l / o.repeatPenalty : l * o.repeatPenalty
        }
        return penalized
    }

    private mutating func filterCandidates(_ logits: UnsafeBufferPointer<Float>, penalized: [Int32: Float]) -> Int {
        ids.removeAll(keepingCapacity: true); values.removeAll(keepingCapacity: true)
        Sampler.topK(logits, penalized: penalized, k: options.topK, ids: &ids, values: &values)
        return Sampler.filter(values: values, topP: options.topP, minP: options.minP)
    }

    /// The `k` highest logits (all when k <= 0), sorted descending (ties: lower id first).
    static func topK(_ logits: UnsafeBufferPointer<Float>, penalized: [Int32: Float], k: Int, ids: inout [Int32], values: inout [Float]) {
        let n = logits.count
        let limit = k <= 0 || k > n ? n : k
        if limit == n {
            var pairs = (0..<n).map { (Int32($0), penalized[Int32($0)] ?? logits[$0]) }
            pairs.sort { $0.1 > $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }
            ids = pairs.map(\.0); values = pairs.map(\.1)
            return
        }
        // Insertion into a small sorted list: most logits fail the first comparison.
        for i in 0..<n {
            let v = penalized[Int32(i)] ?? logits[i]
            if values.count == limit, v <= values[limit - 1] { continue }
            var j = values.count
            if j == limit { j -= 1; values.removeLast(); ids.removeLast() }
            while j > 0 && values[j - 1] < v { j -= 1 }
            values.insert(v, at: j); ids.insert(Int32(i), at: j)
        }
    }

    /// How many of the sorted-descending `values` survive top-p then min-p (probabilities at temperature 1,
    /// as llama.cpp computes them); always at least one.
    public static func filter(values: [Float], topP: Float, minP: Float) -> Int {
        guard !values.isEmpty else { return 0 }
        let m = Double(values[0])
        var probs = values.map { exp(Double($0) - m) }
        let total = probs.reduce(0, +)
        for i in probs.indices { probs[i] /= total }
        var kept = probs.count
        if topP < 1 {
            var cum = 0.0
            for i in probs.indices {
                cum += probs[i]
                if cum >= Double(topP) { kept = i + 1; break }
            }
        }
        if minP > 0 {
            // llama.cpp renormalizes after top-p before min-p; the ratio to the top token is unaffected.
            let threshold = probs[0] * Double(minP)
            var k = 0
            while k < kept && probs[k] >= threshold { k += 1 }
            kept = max(1, k)
        }
        return max(1, kept)
    }
}
