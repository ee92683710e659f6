import Foundation
import KilnCore
import KilnGPU

/// Host-side sampling for the GPU engine. The decode graph samples greedily on the GPU (argmax writes the
/// next input ids); for temperature / top-k / top-p / min-p / repetition penalty the CLI reads the logits of
/// the last step, samples on the host, and overwrites the ids the next step feeds. Costs one logits row copy
/// per step (vocab × 4 bytes per sequence), so the greedy path keeps its ids-only traffic.
extension GPUModel {
    /// Logits of the last prefill or decode step for sequences 0..<b (fp32, [b, vocab]).
    public func lastLogits(batch b: Int) throws -> [Float] {
        guard b >= 1, b <= maxBatch else { throw KilnError("batch of \(b) sequences outside 1…\(maxBatch)") }
        let v = config.vocabSize
        var out = [Float](repeating: .nan, count: b * v)
        try stream.synchronize()
        try out.withUnsafeMutableBytes { dst in
            try stream.copy(from: logits.address, to: dst.baseAddress!, bytes: 4 * b * v)
        }
        try stream.synchronize()
        return out
    }

    /// Replaces the ids the next decode step feeds for sequences 0..<ids.count (after host-side sampling).
    public func setNextIds(_ next: [Int32]) throws {
        guard !next.isEmpty, next.count <= maxBatch else { throw KilnError("batch of \(next.count) sequences outside 1…\(maxBatch)") }
        guard next.allSatisfy({ $0 >= 0 && Int($0) < config.vocabSize }) else { throw KilnError("token id outside the vocabulary") }
        try stage(next, to: ids.address, hostOffset: 0)
        try stream.synchronize()
    }
}
