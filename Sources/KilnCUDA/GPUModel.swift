import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnModels

/// A/B switches of the GPU engine, passed in by the caller (the CLI's `--no-pdl`, `--mma-attention`,
/// `--no-fused-swiglu`); the defaults are the measured winners (docs/perf-notes.md).
public struct GPUEngineOptions: Sendable, Equatable {
    /// Programmatic dependent launch for the decode-path kernels (rmsnorm, GEMM split-K, RoPE, decode attention,
    /// SwiGLU): each kernel waits for its predecessor, then lets its successor launch, so a GEMM's first weight loads
    /// overlap the previous kernel's tail. H200, Llama-3-8B bs=2: 4.287 vs 4.442 ms/step without (session 3).
    /// Ignored by GPUs/drivers without it (plain launches).
    public var programmaticDependentLaunch = true
    /// On Hopper, prefill attention on the mma.sync kernel instead of the wgmma one (A/B checks).
    public var mmaPrefillAttention = false
    /// SwiGLU in the gate_up GEMM's epilogue on the decode path (0.064 ms/step faster on H200).
    public var fusedSwiGLUEpilogue = true
    /// FP8 128×128 block-scaled linear layers run on gemm_fp8.cu where the GPU has e4m3 tensor cores (compute
    /// capability 8.9+); off: converted to bf16 at load like other formats (A/B checks).
    public var fp8Kernels = true
    /// 4-, 3- and 2-bit lookup-table linear layers run on gemm_lut.cu (decode) where their parts share one table; off: converted
    /// to bf16 at load like other formats (A/B checks).
    public var lutKernels = true
    /// GGUF Q8_0 linear layers on gemm_lut's 8-bit member (with `lutKernels`) instead of converted to bf16 at load. Its
    /// kernels pass `kiln check --only lut` on a device (session 15, H100); off until a Q8_0 checkpoint has also run
    /// end to end against the CPU engine (scripts/gpu/smollm2_q8_gpu_vs_cpu.sh).
    public var q8Kernels = false
    /// Lookup-table prefill (M > 16) on gemm_lut_hopper (Hopper GPUs: codes dequantized in registers into wgmma) instead
    /// of dequantizing each layer into a bf16 scratch for the bf16 GEMMs. H100, Llama-3-8B 2 × 512 prefill: 25.6 ms at
    /// lut4-g64 against 51.9 dequantized (bf16: 24.7); `kiln check --only lut` and SmolLM2 lut3 GPU-vs-CPU pass on it
    /// (docs/perf-notes-lut.md). Off: the dequantize path (A/B checks).
    public var lutPrefillKernel = true
    /// FP8 prefill (M > 16) on gemm_fp8_hopper (Hopper GPUs) instead of dequantizing each layer into a bf16 scratch for
    /// the bf16 GEMMs (H100, Llama-3-8B FP8, prefill 2 × 512: 24.4 ms against 32.8; `kiln check --only fp8` and the
    /// transformers FP8 logits pass on it). Off: the dequantize path (A/B checks).
    public var fp8PrefillKernel = true
    /// On Hopper, GEMMs of 17–63 rows and the fp32 logits GEMM above 16 rows (the server's decode batches) on gemm_hopper
    /// in one pass over the weights instead of gemm_splitk's 16-row passes (GemmDispatch.wideHopper). H100, Llama-3-8B,
    /// `kiln bench serve`: 2,273 → 3,390 output tokens/s at concurrency 32, 4,745 → 5,295 at 64, 6,840 → 8,166 at 256
    /// (docs/perf-notes-serve.md); off: the 16-row passes (A/B checks).
    public var hopperServeGEMMs = true
    /// FP8 prefill on gemm_fp8_hopper: the RMSNorm before qkv and gate_up also writes its output in the FP8 GEMM's
    /// activation format (rmsnorm.cu's _fp8 kernels), so those GEMMs skip the separate quantizer pass (two of four per
    /// layer; decode keeps the separate launch, `normQuantizes` says why). Bit-identical to the unfused path
    /// (`kiln check --only fp8`); off: the separate quantizer (A/B checks).
    public var fusedFP8NormQuant = true
    /// FP8 prefill on gemm_fp8_hopper: the SwiGLU kernel before the down projection writes its output as FP8 activations
    /// (swiglu_rows_fp8), so down skips the quantizer's pass too (the third of four per layer). Bit-identical to SwiGLU
    /// followed by the quantizer (`kiln check --only fp8`); H100, Llama-3-8B FP8 prefill 2 × 512: 24.2 ms against 25.1.
    /// Off: the separate quantizer (A/B checks).
    public var fusedFP8SwiGLUQuant = true
    public init() {}
}

/// The GPU backend: a Llama-family model on one NVIDIA GPU, running the `Transformer` definition on Kiln's kernels.
///
/// Everything is allocated here, up front: weights (GPUWeights), the static KV cache and the
/// activation buffers for `maxRows` token rows. The forward passes (GPUModel+Forward.swift)
/// allocate nothing; a decode step is one CUDA-graph replay plus the read of the sampled ids.
public final class GPUModel {
    public let config: ModelConfig
    public let transformer: Transformer
    public let options: GPUEngineOptions
    public let context: Context
    public let library: KernelLibrary
    public let stream: GPUStream
    public let weights: GPUWeights
    /// Sequences decoded together (1…8), positions per sequence, and token rows per forward chunk.
    public let maxBatch: Int, maxSeq: Int, maxRows: Int
    let log: (String) -> Void

    let embed: Embedding
    let norm: RMSNorm
    let resNorm: ResidualRMSNorm
    let rope: RoPECache
    let swiglu: SwiGLU
    let sampling: Sampling
    let attnPrefill: Attention.Prefill
    let attnDecode: Attention.Decode
    let decodeSplits: Int
    public let gemm: GemmDispatch
    /// FP8 linear layers: each GEMM input is quantized per 1×128 block into `act`/`scales` for gemm_fp8 (decode) and, on
    /// Hopper, gemm_fp8_hopper (prefill); without Hopper, prefill dequantizes the layer into `dense` for the bf16 GEMMs.
    /// nil without FP8 layers.
    struct FP8Scratch {
        let quantize: FP8ActivationQuantizer
        let dequantize: FP8Dequantizer
        let act: DeviceBuffer<UInt8>      // [maxRows (16 without Hopper), maxK] e4m3
        let scales: DeviceBuffer<Float>   // [maxRows (16 without Hopper), ceil(maxK/128)]
        let dense: DeviceBuffer<UInt16>?  // [the largest FP8 matrix] bf16, only without Hopper
    }
    let fp8: FP8Scratch?
    /// FP8 prefill runs on gemm_fp8_hopper (`GPUEngineOptions.fp8PrefillKernel` on a Hopper GPU).
    let fp8Prefill: Bool
    /// Lookup-table linear layers: decode reads them natively (gemm_lut); prefill (m > 16) one of two ways. nil without
    /// LUT layers.
    enum LUTPrefill {
        /// gemm_lut_hopper (`GPUEngineOptions.lutPrefillKernel` on Hopper): the activations permuted into `permuted`
        /// ([maxRows, 64·⌈maxK/64⌉] bf16 X') for it.
        case kernel(permute: LUTPermute, permuted: DeviceBuffer<UInt16>)
        /// Each layer dequantized into `dense` (bf16, the largest LUT matrix) for the bf16 GEMMs.
        case dequantize(LUTDequantizer, dense: DeviceBuffer<UInt16>)
    }
    let lut: LUTPrefill?

    // KV cache: [layers][maxBatch, kvHeads, maxSeq, headDim] bf16, one allocation each; with `paged`, the server's pool
    // [layers][blocks + 1, kvHeads, blockSize, headDim] (the extra block takes the padding rows' writes).
    let kCache: DeviceBuffer<UInt16>
    let vCache: DeviceBuffer<UInt16>
    let layerCacheElements: Int
    /// The server's paged cache and its per-step buffers (GPUModel+Paged.swift); nil for the static cache.
    let paged: PagedState?

    // Activations, [rows, features] row-major.
    let x: DeviceBuffer<Float>         // [maxRows, hidden] residual stream, f32
    let xn: DeviceBuffer<UInt16>       // [maxRows, hidden] normed input of the next GEMM
    let branch: DeviceBuffer<UInt16>   // [maxRows, hidden] attention / MLP output before the residual add
    let qkv: DeviceBuffer<UInt16>      // [maxRows, qDim + 2·kvDim]
    let attn: DeviceBuffer<UInt16>     // [maxRows, qDim]
    let gateUp: DeviceBuffer<UInt16>   // [maxRows, 2·ffn]
    let act: DeviceBuffer<UInt16>      // [maxRows, ffn]
    let last: DeviceBuffer<UInt16>     // [maxBatch, hidden] the rows whose logits are wanted
    let logits: DeviceBuffer<Float>    // [max(16, maxBatch), vocab]
    let ids: DeviceBuffer<Int32>       // [maxRows] input token ids; decode writes the sampled ids here
    let positions: DeviceBuffer<Int32> // [maxBatch] position of each sequence's next row
    let lens: DeviceBuffer<Int32>      // [maxBatch] keys in the cache after this step's write (= positions + 1)
    let attnWorkspace: DeviceBuffer<Float>
    let attnCounters: DeviceBuffer<UInt32>
    let hostInts: PinnedBuffer<Int32>  // staging for ids/positions (prefill) and the sampled ids (decode)
    let hostLogits: PinnedBuffer<Float>

    /// Decode graphs per (batch, whether the step samples on the device).
    var graphs: [GraphKey: GraphExec] = [:]
    struct GraphKey: Hashable { var batch: Int; var sampled: Bool }
    /// The paged cache's decode graphs per (batch bucket, selection).
    var pagedGraphs: [PagedGraphKey: GraphExec] = [:]
    /// Buckets whose first step ran eagerly (their kernels loaded): the next one is captured.
    var pagedWarm: Set<PagedGraphKey> = []
    /// Device sampling (GPUModel+Sampling.swift): per-sequence settings, random streams and penalty state.
    let samplingParams: DeviceBuffer<Sampling.RowParams>   // [maxBatch]
    var samplingState: SamplingState
    /// Sequences whose next token the sampling kernel chooses (else argmax).
    var deviceSampled: [Bool]
    /// The pass in progress (attention mode, logits destination), read by the operations.
    var pass = Pass()
    /// Tokens in the cache per sequence (host mirror of `positions`).
    public internal(set) var sequenceLengths: [Int]
    /// Set when this model is one rank of `GPUTensorParallel` (GPUModel+TensorParallel.swift); nil on one GPU.
    var tensorParallel: TensorParallelHook?

    public var qkvDim: Int { config.qkvDim }

    /// `paged`: the server's paged KV cache (GPUModel+Paged.swift) instead of the static one; then `maxBatch` and
    /// `maxSeq` come from it (its sequences, and their context).
    public init(weights: GPUWeights, library: KernelLibrary, maxBatch requestedBatch: Int = 8, maxSeq requestedSeq: Int = 4096, maxRows: Int = 1024,
                tune: TuneTable? = nil, options opts: GPUEngineOptions = GPUEngineOptions(), paged pagedConfig: PagedKVConfig? = nil,
                log: @escaping (String) -> Void = { _ in }) throws {
        guard let ctx = library.context else { throw KilnError("GPUModel needs a GPU context") }
        // The paged cache's sampling has a slot per sequence plus one for the padding rows of a graph's batch bucket.
        let maxBatch = pagedConfig.map { $0.maxSequences + 1 } ?? requestedBatch
        let maxSeq = pagedConfig?.contextLength ?? requestedSeq
        if pagedConfig == nil, !(1...8).contains(maxBatch) { throw KilnError("batch size \(maxBatch) outside 1…8") }
        let c = weights.config
        guard maxSeq >= 1, maxSeq <= c.contextLength else { throw KilnError("max sequence \(maxSeq) outside 1…\(c.contextLength) (the model's context)") }
        guard c.hiddenSize % 8 == 0, c.intermediateSize % 8 == 0, c.qDim % 8 == 0 else {
            throw KilnError("GPU engine needs hidden, ffn and q widths that are multiples of 8 (got \(c.hiddenSize), \(c.intermediateSize), \(c.qDim))")
        }
        config = c; transformer = Transformer(config: c); options = opts; context = ctx; self.library = library; self.weights = weights; self.log = log
        self.maxBatch = maxBatch; self.maxSeq = maxSeq; self.maxRows = max(maxRows, maxBatch)
        stream = try GPUStream(ctx)
        stream.pdl = opts.programmaticDependentLaunch
        // The residual stream x is f32 (rmsnorm.cu: a few huge dimensions in some models lose small updates in bf16);
        // everything the GEMMs read or write stays bf16.
        embed = try Embedding(library, table: .bf16, output: .f32)
        let normQuant = opts.fusedFP8NormQuant && opts.fp8PrefillKernel && weights.largestFP8Matrix > 0 && RMSNorm.fusesFP8(cols: c.hiddenSize)
        norm = try RMSNorm(library, dtype: .bf16, input: .f32, fp8Output: normQuant)
        resNorm = try ResidualRMSNorm(library, dtype: .bf16, residual: .f32, fp8Output: normQuant)
        rope = try RoPECache(library, pairing: c.ropeStyle == .interleaved ? .interleaved : .halves)
        swiglu = try SwiGLU(library)
        sampling = try Sampling(library)
        let wgmma = ctx.info.computeCapability.major == 9 && !opts.mmaPrefillAttention
        attnPrefill = try Attention.Prefill(library, choice: Attention.PrefillChoice.best(headDim: c.headDim, hopper: wgmma))
        attnDecode = try Attention.Decode(library, config: Attention.defaultDecode(headDim: c.headDim, group: c.numHeads / c.numKVHeads,
                                                                                   paged: pagedConfig != nil))
        decodeSplits = Attention.defaultSplits(batch: maxBatch, kvHeads: c.numKVHeads, multiprocessors: ctx.info.multiprocessors)
        gemm = try GemmDispatch(library: library, tune: tune, maxN: max(c.vocabSize, 2 * c.intermediateSize, c.qkvDim), stream: stream,
                                wideHopper: opts.hopperServeGEMMs, log: log)
        fp8Prefill = opts.fp8PrefillKernel && gemm.hasFP8Prefill
        if weights.largestFP8Matrix > 0 {
            let maxK = max(c.hiddenSize, c.qDim, c.intermediateSize), rows = fp8Prefill ? max(16, self.maxRows) : 16
            fp8 = FP8Scratch(quantize: try FP8ActivationQuantizer(library), dequantize: try FP8Dequantizer(library),
                             act: try DeviceBuffer<UInt8>(ctx, count: rows * maxK),
                             scales: try DeviceBuffer<Float>(ctx, count: rows * FP8ActivationQuantizer.scaleColumns(k: maxK)),
                             dense: fp8Prefill ? nil : try DeviceBuffer<UInt16>(ctx, count: weights.largestFP8Matrix))
        } else {
            fp8 = nil
        }
        if weights.largestLUTMatrix > 0 {
            let native = opts.lutPrefillKernel && weights.lutFormats.allSatisfy(gemm.hasLUTPrefill)
            let maxK = LUTPermute.paddedCols(max(c.hiddenSize, c.qDim, c.intermediateSize))
            lut = native ? .kernel(permute: try LUTPermute(library), permuted: try DeviceBuffer<UInt16>(ctx, count: max(16, self.maxRows) * maxK))
                : .dequantize(try LUTDequantizer(library), dense: try DeviceBuffer<UInt16>(ctx, count: weights.largestLUTMatrix))
        } else {
            lut = nil
        }

        func buf(_ n: Int) throws -> DeviceBuffer<UInt16> { try DeviceBuffer<UInt16>(ctx, count: n) }
        layerCacheElements = pagedConfig.map { ($0.blocks + 1) * c.numKVHeads * $0.blockSize * c.headDim }
            ?? maxBatch * c.numKVHeads * maxSeq * c.headDim
        kCache = try buf(c.numLayers * layerCacheElements); vCache = try buf(c.numLayers * layerCacheElements)
        paged = try pagedConfig.map { try PagedState(config: $0, model: c, library: library, maxRows: max(maxRows, maxBatch)) }
        let r = self.maxRows, h = c.hiddenSize
        x = try DeviceBuffer<Float>(ctx, count: r * h); xn = try buf(r * h); branch = try buf(r * h)
        qkv = try buf(r * c.qkvDim); attn = try buf(r * c.qDim)
        gateUp = try buf(r * 2 * c.intermediateSize); act = try buf(r * c.intermediateSize)
        last = try buf(maxBatch * h)
        logits = try DeviceBuffer<Float>(ctx, count: max(16, maxBatch) * c.vocabSize)
        ids = try DeviceBuffer<Int32>(ctx, count: r)
        positions = try DeviceBuffer<Int32>(ctx, count: maxBatch)
        lens = try DeviceBuffer<Int32>(ctx, count: maxBatch)
        // The paged cache's graphs choose their splits per batch bucket (PagedState.splits): the workspace covers the largest.
        let workspaceRows = pagedConfig == nil ? maxBatch * decodeSplits
            : (1...maxBatch).map { $0 * Attention.defaultSplits(batch: $0, kvHeads: c.numKVHeads, multiprocessors: ctx.info.multiprocessors) }.max()!
        attnWorkspace = try DeviceBuffer<Float>(ctx, count: max(1, Attention.decodeWorkspaceFloats(batch: workspaceRows, heads: c.numHeads, splits: 1, headDim: c.headDim)))
        attnCounters = try DeviceBuffer<UInt32>(ctx, count: maxBatch * c.numKVHeads)
        hostInts = try PinnedBuffer<Int32>(ctx, count: r + 2 * maxBatch)
        hostLogits = try PinnedBuffer<Float>(ctx, count: 16 * c.vocabSize)
        sequenceLengths = Array(repeating: 0, count: maxBatch)
        samplingParams = try DeviceBuffer(ctx, [Sampling.RowParams](repeating: Sampling.RowParams(.greedy), count: maxBatch))
        samplingState = try SamplingState(context: ctx, rows: maxBatch, vocab: c.vocabSize, penalties: false)
        deviceSampled = Array(repeating: false, count: maxBatch)
        // The caches are zeroed once so that no NaN bit pattern from a previous process can ever be read
        // (the attention kernels never read past a sequence's length; this is belt and braces).
        for b in [kCache, vCache, xn, branch] { try b.fill(byte: 0, stream: stream) }
        try x.fill(byte: 0, stream: stream)
        try attnCounters.fill(byte: 0, stream: stream)
        // SwiGLU in the gate_up GEMM's epilogue on the decode path (gemm_splitk, M ≤ 63): one kernel fewer
        // per layer. Needs the interleaved gate_up rows (prefill's swiglu kernel reads that layout too). FP8 and LUT
        // gate_up matrices are interleaved at load, so then every layer must be.
        if opts.fusedSwiGLUEpilogue || weights.hasFP8GateUp || weights.hasLUTGateUp, c.intermediateSize % 8 == 0 {
            try weights.interleaveGateUp(swiglu: swiglu, context: ctx, stream: stream)
        }
        try stream.synchronize()
    }

    /// Loads a checkpoint (any WeightSource) onto the GPU. Pass the `library` the caller already has (the tuner's)
    /// so its compiled kernels are reused. `maxRows`: token rows per forward chunk (GPUModel.init).
    public static func load(_ source: WeightSource, context: Context, library: KernelLibrary? = nil, maxBatch: Int = 8, maxSeq: Int? = nil,
                            maxRows: Int = 1024, tune: TuneTable? = nil, options: GPUEngineOptions = GPUEngineOptions(),
                            log: @escaping (String) -> Void = { _ in }) throws -> GPUModel {
        let library = try library ?? KernelLibrary(context: context)
        let nativeFP8 = options.fp8Kernels && context.info.hasE4M3TensorCores, seq = min(maxSeq ?? 4096, source.config.contextLength)
        let formats = try GPUMemoryPlan.checkpointFormats(source, nativeFP8: nativeFP8, nativeLUT: options.lutKernels, nativeQ8: options.q8Kernels)
        try ensureFits(source.config, linearFormat: formats, maxBatch: maxBatch, maxSeq: seq, maxRows: maxRows, options: options, context: context,
                       model: source.sourcePath, remedy: "lower -c/--context or -b/--batch, or use a smaller format (kiln quantize)", log: log)
        let w = try GPUWeights.load(source, context: context, nativeFP8: nativeFP8, nativeLUT: options.lutKernels, nativeQ8: options.q8Kernels,
                                    log: log)
        return try GPUModel(weights: w, library: library, maxBatch: maxBatch, maxSeq: seq, maxRows: maxRows, tune: tune, options: options, log: log)
    }

    /// `--dummy-weights`: random weights generated on the GPU for a preset or config.json; `fp8`: FP8 linear layers
    /// (`--weights fp8`); `lut`: lookup-table linear layers of that format (`--weights lut4-g64`, `lut3-g64`, host-made).
    public static func dummy(_ spec: String, context: Context, library: KernelLibrary? = nil, maxBatch: Int = 8, maxSeq: Int = 4096,
                             maxRows: Int = 1024, tune: TuneTable? = nil, options: GPUEngineOptions = GPUEngineOptions(), fp8: Bool = false,
                             lut: WeightFormat.LUTFormat? = nil, log: @escaping (String) -> Void = { _ in }) throws -> GPUModel {
        let c = try DummyModels.config(spec)
        if fp8, !context.info.hasE4M3TensorCores {
            throw KilnError("--weights fp8 needs e4m3 tensor cores (compute capability 8.9 or newer); this GPU is \(context.info.arch)")
        }
        let library = try library ?? KernelLibrary(context: context)
        let seq = min(maxSeq, c.contextLength)
        let format = GPUMemoryPlan.dummyFormat(fp8: fp8, lut: lut)
        try ensureFits(c, linearFormat: { _ in format }, maxBatch: maxBatch, maxSeq: seq, maxRows: maxRows, options: options, context: context,
                       model: "\(spec) (\(format.name) weights)", remedy: "lower -p/-n (the context) or -b/--batch, or pick a smaller --weights", log: log)
        let w = try GPUWeights.dummy(config: c, context: context, library: library, fp8: fp8, lut: lut)
        return try GPUModel(weights: w, library: library, maxBatch: maxBatch, maxSeq: seq, maxRows: maxRows, tune: tune, options: options, log: log)
    }

    /// `load`'s and `dummy`'s check before anything is allocated: the static engine's `GPUMemoryPlan` against the GPU's
    /// free memory (logged; an error naming both when it does not fit). FP8 prefill reads no bf16 scratch where it runs
    /// on gemm_fp8_hopper, as `init` decides (`fp8Prefill`).
    private static func ensureFits(_ c: ModelConfig, linearFormat: (LinearLayer) -> WeightFormat, maxBatch: Int, maxSeq: Int, maxRows: Int,
                                   options: GPUEngineOptions, context: Context, model: String, remedy: String, log: (String) -> Void) throws {
        try GPUMemoryPlan.staticEngine(c, linearFormat: linearFormat, maxBatch: maxBatch, maxSeq: maxSeq, maxRows: maxRows,
                                       fp8PrefillKernel: options.fp8PrefillKernel && GemmDispatch.hasHopperKernels(context.info),
                                       lutPrefillKernel: options.lutPrefillKernel && GemmDispatch.hasHopperKernels(context.info))
            .ensureFits(on: context, model: model, remedy: remedy, log: log)
    }
}
