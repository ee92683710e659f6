import Foundation
import KilnCore
import KilnGPU
import KilnKernels

/// Decode: one step for `batch` sequences is captured once as a CUDA graph and replayed. Nothing in
/// it depends on host values that change per step: the input ids, positions and lengths live in
/// device buffers that the graph itself advances (argmax writes the next ids over the inputs, and the
/// last kernel bumps positions and lengths). The host's only wait is for the sampled ids.
extension GPUModel {
    /// Enqueues one decode step (kernels only), for capture or for a plain (uncaptured) run.
    func enqueueDecodeStep(batch b: Int, sampled: Bool) throws {
        pass.mode = .decode(batch: b)
        // Positions are read from the device at replay time; `start` here is the host's view when captured.
        try runForward(StepBatch(sequences: (0..<b).map { StepBatch.Sequence(id: $0, start: sequenceLengths[$0], count: 1) }))
        try chooseNext(batch: b, sampled: sampled)
        try rope.advance(positions: positions.address, lens: lens.address, batch: b, stream: stream)
    }

    /// The instantiated graph of a decode step for `b` sequences (captured on first use), with the sampling kernel
    /// when `sampled`, else argmax.
    func decodeGraph(batch b: Int, sampled: Bool) throws -> GraphExec {
        let key = GraphKey(batch: b, sampled: sampled)
        if let g = graphs[key] { return g }
        let g = try Graph.capture(on: stream) { try enqueueDecodeStep(batch: b, sampled: sampled) }.instantiate()
        graphs[key] = g
        return g
    }

    /// Launches one decode step without waiting (benchmarks chain these; ids stay on the GPU).
    public func launchDecodeStep(batch b: Int, graph useGraph: Bool = true) throws {
        guard b >= 1, b <= maxBatch else { throw KilnError("batch of \(b) sequences outside 1…\(maxBatch)") }
        guard let longest = sequenceLengths[0..<b].max(), longest + 1 < maxSeq else {
            throw KilnError("the KV cache is full (\(maxSeq) positions); start a new sequence or raise the cache size")
        }
        let sampled = deviceSampled[0..<b].contains(true)
        if useGraph { try decodeGraph(batch: b, sampled: sampled).launch(on: stream) } else { try enqueueDecodeStep(batch: b, sampled: sampled) }
        for s in 0..<b { sequenceLengths[s] += 1 }
    }

    /// One greedy decode step for sequences 0..<b: feeds the ids sampled last (by `prefill` or the previous
    /// step), returns the next id of each sequence.
    public func decodeStep(batch b: Int, graph useGraph: Bool = true) throws -> [Int32] {
        try launchDecodeStep(batch: b, graph: useGraph)
        try stream.copy(from: ids.address, to: UnsafeMutableRawPointer(hostInts.pointer), bytes: 4 * b)
        try stream.synchronize()
        return (0..<b).map { hostInts[$0] }
    }

}
