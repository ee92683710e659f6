import Foundation

/// Sampling settings; the defaults are llama.cpp's (`--temp 0.8 --top-k 40 --top-p 0.95 --min-p 0.05`).
/// One definition for both backends: the CPU `Sampler` below and the GPU kernel (sampling.cu) apply the same steps:
/// penalties, top-k, then top-p and min-p on probabilities at temperature 1, then temperature over the survivors.
public struct SamplingOptions: Sendable, Equatable {
    /// 0 (or less) means greedy: the highest logit, ties to the lowest id.
    public var temperature: Float = 0.8
    /// Keep the `topK` highest logits; 0 (or less, or the vocabulary size and more) keeps the whole vocabulary.
    public var topK: Int = 40
    /// Keep the smallest set of most likely tokens whose probability reaches `topP`; 1 disables.
    public var topP: Float = 0.95
    /// Drop tokens whose probability is below `minP` × the top probability; 0 disables.
    public var minP: Float = 0.05
    /// llama.cpp's repetition penalty over the last `repeatLastN` tokens of the history (prompt included):
    /// positive logits ÷ p, negative × p; 1 disables. `repeatLastN` < 0: the whole history; 0 disables.
    public var repeatPenalty: Float = 1
    public var repeatLastN: Int = 64
    /// OpenAI's penalties over the generated tokens: logit −= presence·[count > 0] + frequency·count; 0 disables.
    public var presencePenalty: Float = 0
    public var frequencyPenalty: Float = 0
    /// Same seed, same logits → same choices.
    public var seed: UInt64 = 0
    public init() {}
    public static var greedy: SamplingOptions { var o = SamplingOptions(); o.temperature = 0; return o }

    /// Whether any penalty changes logits, given a history of `historyCount` tokens of which `generatedCount` were generated.
    func penalizes(historyCount: Int, generatedCount: Int) -> Bool {
        (repeatPenalty != 1 && repeatLastN != 0 && historyCount > 0)
            || ((presencePenalty != 0 || frequencyPenalty != 0) && generatedCount > 0)
    }
}

/// Turns logits into a token: penalties, then top-k, top-p, min-p (llama.cpp's order), temperature, and a draw.
///
/// `history` is every token so far (prompt included: the repetition penalty's window covers it); its first
/// `promptLength` tokens are the prompt, and presence/frequency penalties count only the tokens after them.
/// NaN logits count as −∞: never chosen, probability 0.
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

    /// Index of the largest value; ties go to the lowest index; NaN is ignored (0 when every value is NaN).
    public static func argmax(_ logits: UnsafeBufferPointer<Float>) -> Int32 {
        var best = -1
        var bestValue = -Float.infinity
        for i in 0..<logits.count where logits[i] > bestValue || (best < 0 && logits[i] == bestValue) {
            best = i; bestValue = logits[i]
        }
        return Int32(max(0, best))
    }

    /// Chooses the next token from `logits` (`[vocab]`), given the tokens so far (for the penalties).
    public mutating func sample(_ logits: UnsafeBufferPointer<Float>, history: [Int32] = [], promptLength: Int = 0) -> Int32 {
        let o = options
        let generated = max(0, history.count - max(0, promptLength))
        if o.temperature <= 0 && !o.penalizes(historyCount: history.count, generatedCount: generated) { return Sampler.argmax(logits) }
        let penalized = Sampler.penalties(logits, options: o, history: history, promptLength: promptLength)
        if o.temperature <= 0 { return Sampler.penalizedArgmax(logits, penalized) }
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
    public mutating func candidates(_ logits: UnsafeBufferPointer<Float>, history: [Int32] = [], promptLength: Int = 0)
        -> [(id: Int32, logit: Float)] {
        let kept = filterCandidates(logits, penalized: Sampler.penalties(logits, options: options, history: history, promptLength: promptLength))
        return (0..<kept).map { (ids[$0], values[$0]) }
    }

    /// The distribution `sample` draws from: the surviving ids, best first, with their probabilities after temperature
    /// (summing to 1). Greedy (temperature ≤ 0) is the one (penalized) argmax with probability 1. The GPU
    /// conformance check compares the kernel's kept set and its draws' frequencies against this.
    public static func distribution(_ logits: UnsafeBufferPointer<Float>, options: SamplingOptions, history: [Int32] = [],
                                    promptLength: Int = 0) -> [(id: Int32, probability: Double)] {
        let penalized = penalties(logits, options: options, history: history, promptLength: promptLength)
        if options.temperature <= 0 { return [(penalizedArgmax(logits, penalized), 1)] }
        var s = Sampler(options: options)
        let kept = s.filterCandidates(logits, penalized: penalized)
        return temperedProbabilities(ids: Array(s.ids.prefix(kept)), logits: Array(s.values.prefix(kept)), temperature: options.temperature)
    }

    /// softmax(logit / temperature) over `logits` (sorted descending), computed as `sample` weighs them.
    public static func temperedProbabilities(ids: [Int32], logits: [Float], temperature: Float) -> [(id: Int32, probability: Double)] {
        guard let first = logits.first else { return [] }
        let m = Double(first)
        let weights = logits.map { exp((Double($0) - m) / Double(temperature)) }
        let sum = weights.reduce(0, +)
        return zip(ids, weights).map { ($0, $1 / sum) }
    }

    /// The logits the penalties change (token → new logit): repetition over the window of `history`, then presence
    /// and frequency over the generated part (the tokens after the first `promptLength`).
    static func penalties(_ logits: UnsafeBufferPointer<Float>, options o: SamplingOptions, history: [Int32], promptLength: Int) -> [Int32: Float] {
        var penalized: [Int32: Float] = [:]
        if o.repeatPenalty != 1 && o.repeatLastN != 0 {
            let recent = o.repeatLastN < 0 ? history[...] : history.suffix(o.repeatLastN)
            for t in Set(recent) where t >= 0 && Int(t) < logits.count {
                let l = logits[Int(t)]
                penalized[t] = l > 0 ? l / o.repeatPenalty : l * o.repeatPenalty
            }
        }
        if o.presencePenalty != 0 || o.frequencyPenalty != 0 {
            var counts: [Int32: Int] = [:]
            for t in history.dropFirst(max(0, promptLength)) where t >= 0 && Int(t) < logits.count { counts[t, default: 0] += 1 }
            for (t, n) in counts {
                let l = penalized[t] ?? logits[Int(t)]
                penalized[t] = l - (o.presencePenalty + o.frequencyPenalty * Float(n))
            }
        }
        return penalized
    }

    /// NaN counts as −∞ (never kept, probability 0).
    @inline(__always) static func effective(_ logits: UnsafeBufferPointer<Float>, _ penalized: [Int32: Float], _ i: Int) -> Float {
        let v = penalized.isEmpty ? logits[i] : (penalized[Int32(i)] ?? logits[i])
        return v.isNaN ? -.infinity : v
    }

    static func penalizedArgmax(_ logits: UnsafeBufferPointer<Float>, _ penalized: [Int32: Float]) -> Int32 {
        var best = 0, bestValue = -Float.infinity
        for i in 0..<logits.count {
            let l = effective(logits, penalized, i)
            if l > bestValue { bestValue = l; best = i }
        }
        return Int32(best)
    }

    private mutating func filterCandidates(_ logits: UnsafeBufferPointer<Float>, penalized: [Int32: Float]) -> Int {
        ids.removeAll(keepingCapacity: true); values.removeAll(keepingCapacity: true)
        Sampler.topK(logits, penalized: penalized, k: options.topK, ids: &ids, values: &values)
        return Sampler.filter(values: values, topP: options.topP, minP: options.minP)
    }

    /// The `k` highest logits (all when k <= 0 or k >= the vocabulary), sorted descending (ties: lower id first).
    static func topK(_ logits: UnsafeBufferPointer<Float>, penalized: [Int32: Float], k: Int, ids: inout [Int32], values: inout [Float]) {
        let n = logits.count
        let limit = k <= 0 || k > n ? n : k
        if limit == n {
            var pairs = (0..<n).map { (Int32($0), effective(logits, penalized, $0)) }
            pairs.sort { $0.1 > $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }
            ids = pairs.map(\.0); values = pairs.map(\.1)
            return
        }
        // Insertion into a small sorted list: most logits fail the first comparison.
        for i in 0..<n {
            let v = effective(logits, penalized, i)
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
