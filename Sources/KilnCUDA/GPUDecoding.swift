import KilnCore
import KilnGPU
import KilnModels

/// What generation (KilnEngine's `GPUSequence`) and the engine benchmark (`EngineBench.model`) drive on the GPU: one
/// `GPUModel`, or `GPUTensorParallel`'s N ranks behind the same calls. Sequences are cache slots 0..<maxBatch.
public protocol GPUDecoding: AnyObject {
    /// The (full) model.
    var config: ModelConfig { get }
    /// Positions per sequence the cache holds.
    var maxSeq: Int { get }
    /// Tokens in the cache per sequence.
    var sequenceLengths: [Int] { get }
    /// Where it runs, for logs (the GPU's name; "2 × NVIDIA H100 …" under tensor parallelism).
    var deviceDescription: String { get }
    func prefill(_ prompts: [[Int32]]) throws -> [Int32]
    func extend(sequence s: Int, with tokens: [Int32]) throws -> Int32
    func decodeStep(batch b: Int, graph: Bool) throws -> [Int32]
    func launchDecodeStep(batch b: Int, graph: Bool) throws
    /// Waits for everything launched.
    func synchronize() throws
    func configureSampling(sequence s: Int, options: SamplingOptions, history: [Int32], promptLength: Int?) throws
    func setNextIds(_ next: [Int32]) throws
    func truncate(sequence s: Int, to n: Int) throws
    func lastLogits(batch b: Int) throws -> [Float]
}

extension GPUModel: GPUDecoding {
    public var deviceDescription: String { context.info.name }
    public func synchronize() throws { try stream.synchronize() }
}

extension GPUTensorParallel: GPUDecoding {
    public var deviceDescription: String { "\(plan.ranks) × \(ranks[0].context.info.name)" }
}

extension GPUDecoding {
    /// Greedy generation: prefill then `steps` decode steps; returns the generated ids per sequence.
    public func generate(prompts: [[Int32]], steps: Int) throws -> [[Int32]] {
        var out = try prefill(prompts).map { [$0] }
        for _ in 0..<max(0, steps - 1) {
            let next = try decodeStep(batch: prompts.count, graph: true)
            for s in out.indices { out[s].append(next[s]) }
        }
        return out
    }
}
