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
    /// Runs `tokens` at the next positions (a prompt, or the one token just chosen).
    func feed(_ tokens: [Int32]) throws
    /// The next token after the last feed.
    func sample(_ sampler: inout Sampler, history: [Int32]) throws -> Int32
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

    public func sample(_ sampler: inout Sampler, history: [Int32]) throws -> Int32 {
        logits.withUnsafeBufferPointer { sampler.sample($0, history: history) }
    }

    public func lastLogits() throws -> [Float] { logits }
}

/// The GPU engine's sequence: slot 0 of a `GPUModel`. A prompt (or a chat's next turn) is a chunked prefill after the
/// tokens already cached; one token is a decode step replayed from a CUDA graph. Greedy decoding uses the argmax the
/// step computed on the device (only the id crosses to the host); other sampling reads the logits row and samples with
/// the same `Sampler` as the CPU.
public final class GPUSequence: SequenceBackend {
    public let model: GPUModel
    /// The id the last step's argmax wrote into the decode graph's input (nil before any feed).
    private var deviceNext: Int32?

    public init(model: GPUModel) { self.model = model }

    public var config: ModelConfig { model.config }
    /// The decode step needs one position past the last token.
    public var capacity: Int { model.maxSeq - 1 }
    public var count: Int { model.sequenceLengths[0] }
    public var deviceDescription: String { model.context.info.name }

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
            deviceNext = try model.decodeStep(batch: 1)[0]
        } else {
            deviceNext = try model.extend(sequence: 0, with: tokens)
        }
    }

    public func sample(_ sampler: inout Sampler, history: [Int32]) throws -> Int32 {
        let o = sampler.options
        if o.temperature <= 0, o.repeatPenalty == 1 || history.isEmpty, let next = deviceNext { return next }
        let row = try model.lastLogits(batch: 1)
        return row.withUnsafeBufferPointer { sampler.sample($0, history: history) }
    }

    public func lastLogits() throws -> [Float] { try model.lastLogits(batch: 1) }
}
