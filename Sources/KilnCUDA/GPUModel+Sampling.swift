import Foundation
import KilnCore
import KilnGPU
import KilnKernels

/// Sampling on the device. A sequence configured with `configureSampling` gets its next token from `sampling.cu`'s
/// `sample` kernel (the CPU `Sampler`'s semantics: penalties, top-k, top-p and min-p at temperature 1, temperature, one
/// draw from a (seed, step) stream) inside the decode graph and after a prefill, so only the ids cross to the host.
/// Greedy sequences without penalties keep the argmax kernel (the decode graph as measured).
extension GPUModel {
    /// Sets sequence `s`'s sampling (its row of the parameters on the device) and restarts its random stream and penalty
    /// state from `history` (the tokens in its cache; presence/frequency count those after `promptLength`).
    public func configureSampling(sequence s: Int, options: SamplingOptions, history: [Int32] = [], promptLength: Int? = nil) throws {
        guard s >= 0, s < maxBatch else { throw KilnError("sequence \(s) outside 0…\(maxBatch - 1)") }
        let row = try setSamplingRow(s, options: options, history: history, promptLength: promptLength, step: 0)
        deviceSampled[s] = row.needsSampleKernel
    }

    /// Row (or, paged, slot) `r` of the settings on the device, and its state restarted at `step` draws with the penalties
    /// of `history`. The penalty buffers are allocated on first use (≈ 1 MB per row at a 128k vocabulary); graphs that
    /// captured the old state (those that sample) are dropped.
    func setSamplingRow(_ r: Int, options: SamplingOptions, history: [Int32], promptLength: Int?, step: Int) throws -> Sampling.RowParams {
        let row = Sampling.RowParams(options)
        if row.hasPenalties, samplingState.counts == nil || samplingState.recentCapacity < max(0, options.repeatLastN) {
            samplingState = try SamplingState(context: context, rows: maxBatch, vocab: vocabularySize, penalties: true,
                                              recentCapacity: max(64, options.repeatLastN))
            graphs = graphs.filter { !$0.key.sampled }
            pagedGraphs = pagedGraphs.filter { $0.key.selection == .argmax }
        }
        try stream.synchronize()
        try [row].withUnsafeBytes { try samplingParams.upload(bytes: $0, atByte: r * MemoryLayout<Sampling.RowParams>.stride) }
        try samplingState.reset(row: r, history: history, promptLength: promptLength,
                                repeatLastN: row.hasPenalties ? options.repeatLastN : 0, step: UInt64(max(0, step)))
        return row
    }

    /// The next id of sequences 0..<b from the logits rows 0..<b: the sampling kernel when any of them samples, else argmax.
    func chooseNext(batch b: Int, sampled: Bool) throws {
        if sampled {
            try sampling.sample(logits: samplingLogits, rows: b, vocab: vocabularySize, params: samplingParams.address, state: samplingState,
                                out: ids.address, stream: stream)
        } else {
            try sampling.argmax(logits: samplingLogits, out: ids.address, rows: b, cols: vocabularySize, stream: stream)
        }
    }

    /// Logits of the last prefill or decode step for sequences 0..<b (fp32, [b, vocab]): for checks and log-probabilities,
    /// not for sampling (which stays on the device).
    public func lastLogits(batch b: Int) throws -> [Float] {
        guard b >= 1, b <= maxBatch else { throw KilnError("batch of \(b) sequences outside 1…\(maxBatch)") }
        let v = vocabularySize
        var out = [Float](repeating: .nan, count: b * v)
        try stream.synchronize()
        try out.withUnsafeMutableBytes { dst in
            try stream.copy(from: samplingLogits, to: dst.baseAddress!, bytes: 4 * b * v)
        }
        try stream.synchronize()
        return out
    }

    /// Replaces the ids the next decode step feeds for sequences 0..<ids.count (a token chosen elsewhere).
    public func setNextIds(_ next: [Int32]) throws {
        guard !next.isEmpty, next.count <= maxBatch else { throw KilnError("batch of \(next.count) sequences outside 1…\(maxBatch)") }
        guard next.allSatisfy({ $0 >= 0 && Int($0) < vocabularySize }) else { throw KilnError("token id outside the vocabulary") }
        try stage(next, to: ids.address, hostOffset: 0)
        try stream.synchronize()
    }
}
