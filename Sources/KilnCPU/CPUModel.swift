import Foundation
import KilnCore
import KilnModels

/// The weights of one transformer block, read in place from the weight source.
struct LayerWeights {
    var attnNorm: [Float]        // [hidden]
    var q, k, v, o: LinearWeight // [qDim, hidden], [kvDim, hidden] ×2, [hidden, qDim]
    var qkvBias: [Float]?        // qwen2: [qDim + 2·kvDim]
    var qNorm, kNorm: [Float]?   // qwen3: [headDim] each
    var ffnNorm: [Float]         // [hidden]
    var gate, up, down: LinearWeight // [ffn, hidden] ×2, [hidden, ffn]
}

/// The CPU backend: runs the `Transformer` (Llama / Granite / Qwen2 / Qwen3) by implementing its operations; the
/// reference that GPU kernels are checked against.
///
/// All activation buffers are allocated up front for batches of up to `maxBatch` tokens, so a forward pass
/// allocates nothing; matrix products are split over a persistent `ThreadPool`.
public final class CPUModel {
    public let config: ModelConfig
    public let transformer: Transformer
    public let maxBatch: Int
    public let pool: ThreadPool
    let weights: WeightSource   // keeps the mapped file alive
    let tokenEmbedding: WeightTensor // [vocab, hidden]
    let layers: [LayerWeights]
    let outputNorm: [Float]          // [hidden]
    let output: LinearWeight         // [vocab, hidden]
    let invFreq: [Float]             // [headDim/2] RoPE inverse frequencies (llama3 scaling / rope_freqs applied)
    let buffers: ForwardBuffers
    /// State of the forward pass in progress (set by `forward`, read by the operations; reused, never reallocated).
    var pass = PassState()

    /// Matrices on the VNNI int8 products (`Int8Products.swift`), for logs.
    public let int8ProductMatrices: Int

    /// Dequantized f32 copies of quantized matrices (`floatWeights`), owned here; LinearWeight points into them.
    private var ownedWeights: [UnsafeMutableRawPointer] = []
    deinit { for p in ownedWeights { p.deallocate() } }

    /// Loads the model's weights from `weights` (strictly: unknown tensors are an error) and starts `threads` threads.
    /// `floatWeights`: dequantize every GGUF block matrix to f32 at load, so matrix products use the float
    /// activations instead of llama.cpp's Q8 activation quantization — slower and 4–8× the memory, but free of
    /// activation-rounding noise: the reference against which other engines' arithmetic (the GPU's) is judged.
    /// `fp8`: the numerics of FP8 block-scaled matrices (`FP8Numerics.default`, or W8A8 as transformers computes).
    /// `int8Products`: Q4_0/Q4_1/Q8_0 matrices take the VNNI product where the CPU has it (`Int8Products.swift`).
    public init(weights: WeightSource, threads: Int = ProcessInfo.processInfo.activeProcessorCount, maxBatch: Int = 64,
                floatWeights: Bool = false, fp8: FP8Numerics = .default, int8Products: Bool = true) throws {
        let c = weights.config
        config = c
        let d = Transformer(config: c)
        transformer = d
        self.weights = weights
        self.maxBatch = max(1, maxBatch)
        let src = weights.sourcePath
        func vector(_ name: String, _ n: Int) throws -> [Float] {
            let t = try weights.tensor(name, shape: [n])
            guard let base = t.data.baseAddress, t.dtype.blockSize == 1 || n % 32 == 0,
                  let bytes = t.dtype.byteCount(elements: n), bytes <= t.data.count,
                  t.dtype != .i32, t.dtype != .i64, t.dtype != .u8, t.dtype != .f8_e4m3 else {
                throw KilnError("\(src): tensor \(name) of type \(t.dtype.rawValue) cannot be read as \(n) floats")
            }
            var out = [Float](repeating: 0, count: n)
            out.withUnsafeMutableBufferPointer { QuantBlocks.dequantize(t.dtype, base, $0.baseAddress!, count: n) }
            return out
        }
        var owned: [UnsafeMutableRawPointer] = []
        var interleaved = 0
        /// The engine's weight for `m`: its planes in place, or with `floatWeights` a GGUF matrix dequantized to f32
        /// by the format's reference. Errors are prefixed with the source.
        func linear(_ m: () throws -> QuantizedMatrix) throws -> LinearWeight {
            do {
                let matrix = try m()
                var w = try LinearWeight(matrix, fp8: fp8)
                guard floatWeights, w.usesQ8 else {
                    if int8Products, let p = w.makeInterleaved() {
                        owned.append(p); w.interleaved = UnsafeRawPointer(p); interleaved += 1
                    }
                    return w
                }
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
        let embd = try weights.tensor(d.embedding.name, shape: [c.vocabSize, h])
        // The forward pass reads embedding rows as they are stored: checked here as a matrix of a known format.
        let embdMatrix: QuantizedMatrix
        do { embdMatrix = try QuantizedMatrix(embd) } catch let e as KilnError { throw KilnError("\(src): \(e.message)") }
        tokenEmbedding = embd
        func matrices(_ l: LinearLayer, _ i: Int) throws -> [LinearWeight] {
            try d.parts(l, layer: i).map { try linear($0.name, $0.shape[0], $0.shape[1]) }
        }
        func optionalVector(_ part: Transformer.Part?) throws -> [Float]? { try part.map { try vector($0.name, $0.shape[0]) } }
        var ls: [LayerWeights] = []
        for i in 0..<c.numLayers {
            let qkv = try matrices(.qkv, i), gateUp = try matrices(.gateUp, i)
            ls.append(LayerWeights(
                attnNorm: try vector(d.norm(.attention, layer: i)!.name, h),
                q: qkv[0], k: qkv[1], v: qkv[2], o: try matrices(.o, i)[0],
                qkvBias: try d.qkvBiasParts(layer: i).map { try $0.flatMap { try vector($0.name, $0.shape[0]) } },
                qNorm: try optionalVector(d.norm(.query, layer: i)), kNorm: try optionalVector(d.norm(.key, layer: i)),
                ffnNorm: try vector(d.norm(.ffn, layer: i)!.name, h),
                gate: gateUp[0], up: gateUp[1], down: try matrices(.down, i)[0]))
        }
        layers = ls
        outputNorm = try vector(d.outputNorm.name, h)
        output = weights.has(d.output.name) ? try linear(d.output.name, c.vocabSize, h) : try linear { embdMatrix }
        ownedWeights = owned
        int8ProductMatrices = interleaved
        var freqFactors: [Float]? = nil
        if weights.has(d.ropeFreqs.name) { freqFactors = try vector(d.ropeFreqs.name, c.headDim / 2) }
        invFreq = CPUModel.ropeInverseFrequencies(config: c, freqFactors: freqFactors)
        try weights.checkAllUsed()
        pool = ThreadPool(threads: threads)
        buffers = ForwardBuffers(config: c, maxBatch: self.maxBatch, threads: pool.threadCount)
        if needsQ8K { buffers.act.superBlocks = Q8KActivations(maxTokens: self.maxBatch, maxCols: buffers.act.maxCols) }
    }

    /// Creates an empty KV cache for `capacity` positions (at most the model's context length unless `allowLonger`).
    public func makeCache(capacity: Int? = nil) throws -> KVCache {
        try KVCache(config: config, capacity: capacity ?? config.contextLength)
    }

    /// RoPE inverse frequencies of `config` (KilnCore's one definition), with the file's `rope_freqs` factors if any.
    public static func ropeInverseFrequencies(config c: ModelConfig, freqFactors: [Float]?) -> [Float] {
        KilnCore.ropeInverseFrequencies(headDim: c.headDim, theta: c.ropeTheta, scaling: c.ropeScaling, freqFactors: freqFactors)
    }
}

/// What the operations of one forward pass need besides the buffers: its token ids and each sequence's cache.
struct PassState {
    var ids = UnsafeBufferPointer<Int32>(start: nil, count: 0)
    var caches: [KVCache] = []
    var single = StepBatch.single(start: 0, count: 1)
    /// Rows whose logits the pass produces (the output norm writes them to the first rows of `xn`).
    var logitRows = 0
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
