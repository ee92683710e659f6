import Foundation
import KilnCore
import KilnModels
import KilnCPU
import KilnCUDA

/// One sequence on a backend, as generation drives it: feed tokens at the next positions, then choose the next token
/// from what the last feed left. The engine (`Generator`, `TextGenerator`) is written once against this; the CPU and
/// the GPU implement it.
public protocol SequenceBackend: AnyObject {
    var config: ModelConfig { get }
    /// Positions the sequence can hold.
    var capacity: Int { get }
    /// Tokens in the sequence's cache.
    var count: Int { get }
    /// Forgets positions from `n` on (a conversation rewound to the prefix a new prompt shares with it).
    func truncate(to n: Int) throws
    /// Sets how the next tokens are chosen before a prompt is fed: `history` is the whole prompt (the tokens the
    /// penalties see), of which presence/frequency count those after `promptLength`.
    func prepareSampling(_ options: SamplingOptions, history: [Int32], promptLength: Int) throws
    /// Runs `tokens` at the next positions (a prompt, or the one token just chosen).
    func feed(_ tokens: [Int32]) throws
    /// The next token after the last feed (`history`: every token so far; the first `promptLength` are the prompt's).
    func sample(_ sampler: inout Sampler, history: [Int32], promptLength: Int) throws -> Int32
    /// The last feed's next-token logits (`[vocab]`).
    func lastLogits() throws -> [Float]
    /// Where it runs, for logs ("CPU, 2 threads", the GPU's name).
    var deviceDescription: String { get }
}

/// The CPU engine's sequence: a `CPUModel` and one KV cache. Prompts run in batches of the model's maximum batch;
/// only the last batch computes logits.
public final class CPUSequence: SequenceBackend {
    public let model: CPUModel
    public let cache: KVCache
    private var logits: [Float]

    /// A sequence of `capacity` positions (the model's context length by default, never more).
    public init(model: CPUModel, capacity: Int? = nil) throws {
        self.model = model
        cache = try model.makeCache(capacity: min(capacity ?? model.config.contextLength, model.config.contextLength))
        logits = [Float](repeating: 0, count: model.config.vocabSize)
    }

    public var config: ModelConfig { model.config }
    public var capacity: Int { cache.capacity }
    public var count: Int { cache.count }
    public var deviceDescription: String { "CPU, \(model.pool.threadCount) threads" }
    public func truncate(to n: Int) throws { cache.truncate(to: n) }

    public func feed(_ tokens: [Int32]) throws {
        guard !tokens.isEmpty else { return }
        guard cache.count + tokens.count <= cache.capacity else {
            throw KilnError("context limit reached: \(cache.count) tokens in context + \(tokens.count) new exceed the context of \(cache.capacity) tokens")
        }
        var i = 0
        while i < tokens.count {
            let j = min(tokens.count, i + model.maxBatch)
            let final = j == tokens.count
            let out = try tokens[i..<j].withUnsafeBufferPointer { try model.forward($0, cache: cache, logits: final ? .last : .none) }
            if final { logits.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: out.baseAddress!, count: out.count) } }
            i = j
        }
    }

    /// The CPU samples the logits row with the `Sampler` itself: nothing to prepare.
    public func prepareSampling(_ options: SamplingOptions, history: [Int32], promptLength: Int) throws {}

    public func sample(_ sampler: inout Sampler, history: [Int32], promptLength: Int) throws -> Int32 {
        logits.withUnsafeBufferPointer { sampler.sample($0, history: history, promptLength: promptLength) }
    }

    public func lastLogits() throws -> [Float] { logits }
}

/// The GPU engine's sequence: slot 0 of a `GPUModel` (or of `GPUTensorParallel`'s ranks, `--tp N`). A prompt (or a chat's next turn) is a chunked prefill after the
/// tokens already cached; one token is a decode step replayed from a CUDA graph. The next token is chosen on the device
/// in the same step (argmax when greedy, else the sampling kernel with the CPU `Sampler`'s semantics and its own
/// (seed, step) random stream), so only the id crosses to the host.
public final class GPUSequence<Model: GPUDecoding>: SequenceBackend {
    public let model: Model
    /// The id the last step's argmax wrote into the decode graph's input (nil before any feed).
    private var deviceNext: Int32?

    public init(model: Model) { self.model = model }

    public var config: ModelConfig { model.config }
    /// The decode step needs one position past the last token.
    public var capacity: Int { model.maxSeq - 1 }
    public var count: Int { model.sequenceLengths[0] }
    public var deviceDescription: String { model.deviceDescription }

    public func truncate(to n: Int) throws {
        try model.truncate(sequence: 0, to: n)
        deviceNext = nil
    }

    public func feed(_ tokens: [Int32]) throws {
        guard !tokens.isEmpty else { return }
        guard count + tokens.count <= capacity else {
            throw KilnError("context limit reached: \(count) tokens in context + \(tokens.count) new exceed the context of \(capacity) tokens")
        }
        if tokens.count == 1, count > 0, let next = deviceNext {
            // The decode graph feeds ids[0]: the device's own argmax unless the host chose another token.
            if next != tokens[0] { try model.setNextIds(tokens) }
            deviceNext = try model.decodeStep(batch: 1, graph: true)[0]
        } else {
            deviceNext = try model.extend(sequence: 0, with: tokens)
        }
    }

    public func prepareSampling(_ options: SamplingOptions, history: [Int32], promptLength: Int) throws {
        try model.configureSampling(sequence: 0, options: options, history: history, promptLength: promptLength)
    }

    public func sample(_ sampler: inout Sampler, history: [Int32], promptLength: Int) throws -> Int32 {
        guard let next = deviceNext else { throw KilnError("nothing fed yet: no next token to sample") }
        return next
    }

    public func lastLogits() throws -> [Float] { try model.lastLogits(batch: 1) }
}
