import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnModels

/// What a GPU model takes on the device, worked out from its config and weight formats before anything is allocated,
/// so a model that cannot fit (Llama-3-70B in bf16 on one GPU, a context too long for what is left) stops with one
/// error naming the needed and free bytes instead of failing in the middle of an upload.
///
/// Sizes are the buffers' sizes (the allocator's rounding and the CUDA context itself are not counted; `headroom`
/// covers graphs, cubins and the penalty buffers made on first use).
public struct GPUMemoryPlan: Sendable, Equatable {
    public var weights: Int
    public var kvCache: Int
    public var activations: Int
    public var headroom: Int
    public var total: Int { weights + kvCache + activations + headroom }

    public init(weights: Int, kvCache: Int, activations: Int, headroom: Int = 256 << 20) {
        self.weights = weights; self.kvCache = kvCache; self.activations = activations; self.headroom = headroom
    }

    // MARK: weights

    /// Device bytes of one linear layer `[rows, cols]` stored as `format` (the format the GPU keeps: a format without
    /// kernels of its own is converted to bf16 at load, `GPUWeights.plan`, and must be passed as bf16 here).
    public static func linearBytes(rows: Int, cols: Int, format: WeightFormat) -> Int {
        switch format {
        case GPUMatrix.fp8Format:
            // e4m3 codes, one f32 scale per 8-row group and 128-column block (GemmFP8.expandScales).
            return rows * cols + 4 * ((rows + 7) / 8) * ((cols + GemmFP8.block - 1) / GemmFP8.block)
        default:
            if let l = LUTDevicePlanes.lutView(format) {
                let layout = GemmLUT.DeviceLayout(rows: rows, cols: cols, group: l.groupSize, bits: l.bits)
                return layout.codeBytes + 4 * layout.scaleWords * (l.hasOffsets ? 2 : 1) + 4 << l.bits
            }
            return 2 * rows * cols
        }
    }

    /// Device bytes of a model's weights: the four linear layers of every decoder layer as `linearFormat` says (the
    /// GPU-side format), everything else bf16 (embedding, untied output layer, norms, biases).
    public static func weightBytes(_ c: ModelConfig, linearFormat: (LinearLayer) -> WeightFormat) -> Int {
        let model = Transformer(config: c)
        let perLayer = LinearLayer.allCases.reduce(0) {
            $0 + linearBytes(rows: model.outputs($1), cols: model.inputs($1), format: linearFormat($1))
        }
        let vectors = 2 * c.hiddenSize + (c.attentionBias ? c.qkvDim : 0) + (c.qkNorm ? 2 * c.headDim : 0)
        let tables = c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2)
        return c.numLayers * (perLayer + 2 * vectors) + 2 * (tables + c.hiddenSize)
    }

    /// The GPU-side format of a checkpoint's linear layers, from layer 0's first matrix (checkpoints quantize every
    /// decoder layer alike; a mixed one is estimated from its first layer): native where `GPUWeights.plan` says so,
    /// else bf16.
    public static func checkpointFormats(_ source: WeightSource, nativeFP8: Bool, nativeLUT: Bool, nativeQ8: Bool = false) throws
        -> (LinearLayer) -> WeightFormat {
        let model = Transformer(config: source.config)
        var formats: [LinearLayer: WeightFormat] = [:]
        for layer in LinearLayer.allCases {
            let p = model.parts(layer, layer: 0)[0]
            let stored = try source.matrix(p.name, rows: p.shape[0], cols: p.shape[1]).format
            formats[layer] = GPUWeights.plan(stored, nativeFP8: nativeFP8, nativeLUT: nativeLUT, nativeQ8: nativeQ8) == .native ? stored : .bf16
        }
        return { formats[$0] ?? .bf16 }
    }

    /// The linear layers' format of `--dummy-weights` (`GPUWeights.dummy`).
    public static func dummyFormat(fp8: Bool, lut: WeightFormat.LUTFormat?) -> WeightFormat {
        lut.map { .lut($0) } ?? (fp8 ? GPUMatrix.fp8Format : .bf16)
    }

    // MARK: everything else

    /// Bytes of the static KV cache: K and V for `batch` sequences of `context` positions in every layer, bf16.
    public static func kvCacheBytes(_ c: ModelConfig, batch: Int, context: Int) -> Int {
        2 * c.numLayers * batch * c.numKVHeads * context * c.headDim * 2
    }

    /// Device bytes of everything `GPUModel.init` allocates besides the weights and the KV cache, for `maxRows` token
    /// rows and `maxBatch` logits rows (an estimate within a few MB: the buffers' sizes, not the allocator's rounding).
    /// `denseScratch`: elements of the bf16 copy prefill dequantizes a quantized layer into (0 when none is made).
    public static func activationBytes(_ c: ModelConfig, denseScratch: Int, maxRows r: Int, maxBatch b: Int, context: Int) -> Int {
        let h = c.hiddenSize, f = c.intermediateSize
        let rows = r * (4 * h + 2 * h + 2 * h + 2 * c.qkvDim + 2 * c.qDim + 4 * f + 2 * f + 4 * 3)
        let logits = 4 * max(16, b) * c.vocabSize + 2 * b * h
        let gather = 2 * 2 * c.numKVHeads * context * c.headDim
        let workspace = 4 * max(b, 256) * c.numHeads * (c.headDim + 2) + 4 * 16 * max(h, c.intermediateSize) * 2
        return rows + logits + 2 * denseScratch + gather + workspace
    }

    /// The bf16 scratch a model with these linear formats needs at prefill: the largest quantized layer, dequantized into
    /// it, unless FP8 prefill runs on its own kernel (`fp8PrefillKernel`), which reads the codes as stored; lookup-table
    /// layers on gemm_lut_hopper (`lutPrefillRows`: the engine's row count) need only the permuted activations X'
    /// (`lutPrefillRows` × 64·⌈K/64⌉ of the widest input).
    public static func denseScratch(_ c: ModelConfig, linearFormat: (LinearLayer) -> WeightFormat, fp8PrefillKernel: Bool,
                                    lutPrefillRows: Int? = nil) -> Int {
        let model = Transformer(config: c)
        return LinearLayer.allCases.map { layer -> Int in
            let format = linearFormat(layer)
            if format == .bf16 || (format == GPUMatrix.fp8Format && fp8PrefillKernel) { return 0 }
            if case .lut = format, let rows = lutPrefillRows {
                return max(16, rows) * LUTPermute.paddedCols(max(c.hiddenSize, c.qDim, c.intermediateSize))
            }
            return model.outputs(layer) * model.inputs(layer)
        }.max() ?? 0
    }

    /// The plan of `GPUModel.init`'s static engine: `maxBatch` sequences of `maxSeq` positions, `maxRows` token rows.
    public static func staticEngine(_ c: ModelConfig, linearFormat: (LinearLayer) -> WeightFormat, maxBatch: Int, maxSeq: Int,
                                    maxRows: Int = 1024, fp8PrefillKernel: Bool, lutPrefillKernel: Bool = false) -> GPUMemoryPlan {
        let dense = denseScratch(c, linearFormat: linearFormat, fp8PrefillKernel: fp8PrefillKernel,
                                 lutPrefillRows: lutPrefillKernel ? max(maxRows, maxBatch) : nil)
        return GPUMemoryPlan(weights: weightBytes(c, linearFormat: linearFormat), kvCache: kvCacheBytes(c, batch: maxBatch, context: maxSeq),
                             activations: activationBytes(c, denseScratch: dense, maxRows: max(maxRows, maxBatch), maxBatch: maxBatch, context: maxSeq))
    }

    /// The least `GPUModel.paged` takes: the weights, activations for `maxRows` token rows and `sequences` + 1 logits rows,
    /// and one sequence's KV cache (the pool then takes what is left). The bf16 scratch is counted for every quantized
    /// format, as `paged` sizes its activations.
    public static func pagedEngineMinimum(_ c: ModelConfig, linearFormat: (LinearLayer) -> WeightFormat, sequences: Int, context: Int,
                                          maxRows: Int) -> GPUMemoryPlan {
        let dense = denseScratch(c, linearFormat: linearFormat, fp8PrefillKernel: false)
        return GPUMemoryPlan(weights: weightBytes(c, linearFormat: linearFormat), kvCache: kvCacheBytes(c, batch: 1, context: context),
                             activations: activationBytes(c, denseScratch: dense, maxRows: maxRows, maxBatch: sequences + 1, context: context))
    }

    // MARK: the check

    /// Throws when the plan does not fit in `free` bytes: the error names the model, every part and what is free.
    public func ensureFits(free: Int, model: String, gpu: String, remedy: String) throws {
        guard total > free else { return }
        throw KilnError("\(model) does not fit on the GPU: it needs \(GPUMemoryPlan.gb(total)) (\(describe)) and \(gpu) has "
                        + "\(GPUMemoryPlan.gb(free)) free; \(remedy)")
    }

    /// Checks the plan against the free memory of `context`'s GPU now (before anything of the model is allocated)
    /// and logs it.
    public func ensureFits(on context: Context, model: String, remedy: String, log: (String) -> Void) throws {
        let free = try context.memoryInfo().free
        log("memory plan for \(model): \(GPUMemoryPlan.gb(total)) (\(describe)); \(GPUMemoryPlan.gb(free)) free")
        try ensureFits(free: free, model: model, gpu: context.info.name, remedy: remedy)
    }

    public var describe: String {
        "weights \(GPUMemoryPlan.gb(weights)), KV cache \(GPUMemoryPlan.gb(kvCache)), activations \(GPUMemoryPlan.gb(activations)), "
            + "headroom \(GPUMemoryPlan.gb(headroom))"
    }

    static func gb(_ bytes: Int) -> String { String(format: "%.2f GB", Double(bytes) / 1e9) }
}
