import Foundation
import KilnCore
import KilnCPU

/// llama-bench style throughput measurement: prompt processing (`pp`) and token generation (`tg`).
public enum Benchmark {
    public struct Row: Sendable {
        public var test: String          // "pp128" or "tg64"
        public var nPrompt: Int
        public var nGen: Int
        public var samplesNs: [Double]   // one per repetition
        public var rates: [Double] { samplesNs.map { Double(nPrompt + nGen) / ($0 / 1e9) } }
        public var averageRate: Double { rates.reduce(0, +) / Double(max(rates.count, 1)) }
        public var stddevRate: Double { stddev(rates) }
        public var averageNs: Double { samplesNs.reduce(0, +) / Double(max(samplesNs.count, 1)) }
        public var stddevNs: Double { stddev(samplesNs) }
    }

    /// Sample standard deviation, as llama-bench reports.
    static func stddev(_ xs: [Double]) -> Double {
        guard xs.count > 1 else { return 0 }
        let m = xs.reduce(0, +) / Double(xs.count)
        return (xs.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(xs.count - 1)).squareRoot()
    }

    /// `pp`: `prompt` tokens in batches from an empty cache. `tg`: `generate` single-token steps from an empty cache.
    /// With `depth` > 0 (llama-bench's `-d`), both start after `depth` tokens already in the cache (filled once, untimed;
    /// each repetition rewinds the cache to them). Each test runs once to warm up, then `repetitions` times.
    /// Token ids are arbitrary valid ids (llama-bench uses random ones).
    public static func run(model: CPUModel, prompt: Int, generate: Int, repetitions: Int, depth: Int = 0) throws -> [Row] {
        let cache = try model.makeCache(capacity: depth + max(prompt, generate, 1))
        var rows: [Row] = []
        var rng = SplitMix64(seed: 42)
        let vocab = UInt64(model.config.vocabSize)
        func ids(_ n: Int) -> [Int32] { (0..<n).map { _ in Int32(rng.next() % vocab) } }
        let suffix = depth > 0 ? " @ d\(depth)" : ""
        if depth > 0 { _ = try model.forward(ids(depth), cache: cache, logits: .none) }
        if prompt > 0 {
            let tokens = ids(prompt)
            var row = Row(test: "pp\(prompt)\(suffix)", nPrompt: prompt, nGen: 0, samplesNs: [])
            for r in 0...repetitions {
                cache.truncate(to: depth)
                let t0 = DispatchTime.now().uptimeNanoseconds
                var i = 0
                while i < prompt {
                    let j = min(prompt, i + model.maxBatch)
                    _ = try tokens[i..<j].withUnsafeBufferPointer { try model.forward($0, cache: cache, logits: .last) }
                    i = j
                }
                if r > 0 { row.samplesNs.append(Double(DispatchTime.now().uptimeNanoseconds - t0)) }
            }
            rows.append(row)
        }
        if generate > 0 {
            var row = Row(test: "tg\(generate)\(suffix)", nPrompt: 0, nGen: generate, samplesNs: [])
            var token: [Int32] = [1]
            for r in 0...repetitions {
                cache.truncate(to: depth)
                let t0 = DispatchTime.now().uptimeNanoseconds
                for _ in 0..<generate {
                    let logits = try token.withUnsafeBufferPointer { try model.forward($0, cache: cache, logits: .last) }
                    token[0] = Sampler.argmax(logits)
                }
                if r > 0 { row.samplesNs.append(Double(DispatchTime.now().uptimeNanoseconds - t0)) }
            }
            rows.append(row)
        }
        return rows
    }
}
