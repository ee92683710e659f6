import Foundation
import KilnCore
import KilnModels

/// Which logits a forward pass produces.
public enum LogitsRequest: Sendable, Equatable {
    /// Only the last token's logits (`[vocab]`): prefill and decode.
    case last
    /// Every token's logits (`[tokens × vocab]`): teacher forcing.
    case all
    /// The last `n` tokens' logits (`[n × vocab]`, clamped to the batch): perplexity scores only part of a chunk,
    /// and the output projection is a large share of the work.
    case lastTokens(Int)

    func count(of n: Int) -> Int {
        switch self {
        case .last: return 1
        case .all: return n
        case .lastTokens(let k): return max(1, min(n, k))
        }
    }
}

/// The weights of one transformer block, read in place from the weight source.
struct LayerWeights {
    var attnNorm: [Float]        // [hidden]
    var q, k, v, o: LinearWeight // [qDim, hidden], [kvDim, hidden] ×2, [hidden, qDim]
    var qBias, kBias, vBias: [Float]? // qwen2: [qDim], [kvDim], [kvDim]
    var ffnNorm: [Float]         // [hidden]
    var gate, up, down: LinearWeight // [ffn, hidden] ×2, [hidden, ffn]
}

/// A Llama / Granite / Qwen2 decoder running on the CPU: the reference that GPU kernels are checked against.
///
/// All activation buffers are allocated up front for batches of up to `maxBatch` tokens, so a forward pass
/// allocates nothing; matrix products are split over a persistent `ThreadPool`.
public final class CPUModel {
    public let config: ModelConfig
    public let maxBatch: Int
    public let pool: ThreadPool
    let weights: WeightSource   // keeps the mapped file alive
    let tokenEmbedding: WeightTensor // [vocab, hidden]
    let layers: [LayerWeights]
    let outputNorm: [Float]          // [hidden]
    let output: LinearWeight         // [vocab, hidden]
    let invFreq: [Float]             // [headDim/2] RoPE inverse frequencies (llama3 scaling / rope_freqs applied)
    let buffers: ForwardBuffers

    /// Dequantized f32 copies of quantized matrices (`floatWeights`), owned here; LinearWeight points into them.
    private var ownedWeights: [UnsafeMutableRawPointer] = []
    deinit { for p in ownedWeights { p.deallocate() } }

    /// Loads the model's weights from `weights` (strictly: unknown tensors are an error) and starts `threads` threads.
    /// `floatWeights`: dequantize Q4_0/Q4_1/Q8_0 matrices to f32 at load, so matrix products use the float
    /// activations instead of llama.cpp's Q8 activation quantization — slower and 4–8× the memory, but free of
    /// activation-rounding noise: the reference against which other engines' arithmetic (the GPU's) is judged.
    public init(weights: WeightSource, threads: Int = ProcessInfo.processInfo.activeProcessorCount, maxBatch: Int = 64,
                floatWeights: Bool = false) throws {
        let c = weights.config
        config = c
        self.weights = weights
        self.maxBatch = max(1, maxBatch)
        let src = weights.sourcePath
        func vector(_ name: String, _ n: Int) throws -> [Float] {
            let t = try weights.tensor(name, shape: [n])
            guard let base = t.data.baseAddress, t.dtype.blockSize == 1 || n % 32 == 0,
                  let bytes = t.dtype.byteCount(elements: n), bytes <= t.data.count,
                  t.dtype != .i32, t.dtype != .i64, t.dtype != .u8 else {
                throw KilnError("\(src): tensor \(name) of type \(t.dtype.rawValue) cannot be read as \(n) floats")
            }
            var out = [Float](repeating: 0, count: n)
            out.withUnsafeMutableBufferPointer { QuantBlocks.dequantize(t.dtype, base, $0.baseAddress!, count: n) }
            return out
        }
        var owned: [UnsafeMutableRawPointer] = []
        /// The engine's weight for `m`: its planes in place, or with `floatWeights` a GGUF matrix dequantized to f32
        /// by the format's reference. Errors are prefixed with the source.
        func linear(_ m: () throws -> QuantizedMatrix) throws -> LinearWeight {
            do {
                let matrix = try m()
                let w = try LinearWeight(matrix)
                guard floatWeights, w.usesQ8 else { return w }
                let p = UnsafeMutableRawPointer.allocate(byteCount: 4 * w.rows * w.cols, alignment: 64)
                owned.append(p)
                try matrix.dequantize(rows: 0..<w.rows, into: p.assumingMemoryBound(to: Float.self))
                return LinearWeight(name: w.name, f32: UnsafeRawPointer(p), rows: w.rows, cols: w.cols)
            } catch let e as KilnError where !e.message.hasPrefix(src) {
                throw KilnError("\(src): \(e.message)")
            }
        }
        func linear(_ name: String, _ rows: Int, _ cols: Int) throws -> LinearWeight {
            try linear { try weights.matrix(name, rows: rows, cols: cols) }
        }
        let h = c.hiddenSize
        let embd = try weights.tensor("token_embd.weight", shape: [c.vocabSize, h])
        // The forward pass reads embedding rows as they are stored: checked here as a matrix of a known format.
        let embdMatrix: QuantizedMatrix
        do { embdMatrix = try QuantizedMatrix(embd) } catch let e as KilnError { throw KilnError("\(src): \(e.message)") }
        tokenEmbedding = embd
        var ls: [LayerWeights] = []
        for i in 0..<c.numLayers {
            let p = "blk.\(i)."
            ls.append(LayerWeights(
                attnNorm: try vector(p + "attn_norm.weight", h),
                q: try linear(p + "attn_q.weight", c.qDim, h), k: try linear(p + "attn_k.weight", c.kvDim, h),
                v: try linear(p + "attn_v.weight", c.kvDim, h), o: try linear(p + "attn_output.weight", h, c.qDim),
                qBias: c.attentionBias ? try vector(p + "attn_q.bias", c.qDim) : nil,
                kBias: c.attentionBias ? try vector(p + "attn_k.bias", c.kvDim) : nil,
                vBias: c.attentionBias ? try vector(p + "attn_v.bias", c.kvDim) : nil,
                ffnNorm: try vector(p + "ffn_norm.weight", h),
                gate: try linear(p + "ffn_gate.weight", c.intermediateSize, h),
                up: try linear(p + "ffn_up.weight", c.intermediateSize, h),
                down: try linear(p + "ffn_down.weight", h, c.intermediateSize)))
        }
        layers = ls
        outputNorm = try vector("output_norm.weight", h)
        output = weights.has("output.weight") ? try linear("output.weight", c.vocabSize, h) : try linear { embdMatrix }
        ownedWeights = owned
        var freqFactors: [Float]? = nil
        if weights.has("rope_freqs.weight") { freqFactors = try vector("rope_freqs.weight", c.headDim / 2) }
        invFreq = CPUModel.ropeInverseFrequencies(config: c, freqFactors: freqFactors)
        try weights.checkAllUsed()
        pool = ThreadPool(threads: threads)
        buffers = ForwardBuffers(config: c, maxBatch: self.maxBatch, threads: pool.threadCount)
    }

    /// Creates an empty KV cache for `capacity` positions (at most the model's context length unless `allowLonger`).
    public func makeCache(capacity: Int? = nil) throws -> KVCache {
        try KVCache(config: config, capacity: capacity ?? config.contextLength)
    }

    /// RoPE inverse frequency of each dimension pair: θ^(-2i/d), divided by llama.cpp's `rope_freqs` factors when the
    /// file has them, else adjusted by Llama 3.1's `llama3` scaling from the config.
    public static func ropeInverseFrequencies(config c: ModelConfig, freqFactors: [Float]?) -> [Float] {
        let half = c.headDim / 2
        var out = [Float](repeating: 0, count: half)
        for i in 0..<half {
            var f = pow(Double(c.ropeTheta), -2.0 * Double(i) / Double(c.headDim))
            if let ff = freqFactors {
                f /= Double(ff[i])
            } else if let s = c.ropeScaling {
                let old = Double(s.originalMaxPositionEmbeddings)
                let lowWavelen = old / s.lowFreqFactor, highWavelen = old / s.highFreqFactor
                let wavelen = 2 * Double.pi / f
                if wavelen > lowWavelen {
                    f /= s.factor
                } else if wavelen >= highWavelen {
                    let smooth = (old / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor)
                    f = (1 - smooth) * f / s.factor + smooth * f
                }
            }
            out[i] = Float(f)
        }
        return out
    }
}

/// Activation buffers for one batch of up to `maxBatch` tokens; shapes are `[tokens × features]`.
final class ForwardBuffers {
    let x: UnsafeMutablePointer<Float>        // [B × hidden] residual stream
    let xn: UnsafeMutablePointer<Float>       // [B × max(hidden, qDim, ffn)] normed input / attention output / ffn hidden
    let q: UnsafeMutablePointer<Float>        // [B × qDim]
    let k: UnsafeMutablePointer<Float>        // [B × kvDim]
    let v: UnsafeMutablePointer<Float>        // [B × kvDim]
    let branch: UnsafeMutablePointer<Float>   // [B × hidden] output of attention / ffn before the residual add
    let gate: UnsafeMutablePointer<Float>     // [B × ffn]
    let up: UnsafeMutablePointer<Float>       // [B × ffn]
    let ropeCos: UnsafeMutablePointer<Float>  // [B × headDim/2]
    let ropeSin: UnsafeMutablePointer<Float>  // [B × headDim/2]
    let logits: UnsafeMutablePointer<Float>   // [B × vocab]
    let act: Q8Activations
    var scores: UnsafeMutablePointer<Float>   // [threads × scoreCapacity] per-thread attention scratch
    var scoreCapacity: Int
    let threads: Int

    init(config c: ModelConfig, maxBatch b: Int, threads: Int) {
        func alloc(_ n: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(n, 1)); p.initialize(repeating: 0, count: max(n, 1)); return p
        }
        let wide = max(c.hiddenSize, c.qDim, c.intermediateSize)
        x = alloc(b * c.hiddenSize); xn = alloc(b * wide); q = alloc(b * c.qDim)
        k = alloc(b * c.kvDim); v = alloc(b * c.kvDim); branch = alloc(b * c.hiddenSize)
        gate = alloc(b * c.intermediateSize); up = alloc(b * c.intermediateSize)
        ropeCos = alloc(b * c.headDim / 2); ropeSin = alloc(b * c.headDim / 2)
        logits = alloc(b * c.vocabSize)
        act = Q8Activations(maxTokens: b, maxCols: wide)
        self.threads = threads
        scoreCapacity = 0
        scores = alloc(0)
        reserveScores(c.headDim)
    }

    /// Makes room for attention over `positions` keys (grows once per cache size, not per token).
    func reserveScores(_ positions: Int) {
        guard positions > scoreCapacity else { return }
        scores.deallocate()
        scoreCapacity = positions
        scores = .allocate(capacity: threads * positions)
        scores.initialize(repeating: 0, count: threads * positions)
    }

    deinit {
        for p in [x, xn, q, k, v, branch, gate, up, ropeCos, ropeSin, logits, scores] { p.deallocate() }
    }
}
