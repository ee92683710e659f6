import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnModels

/// Tensor parallelism over N GPUs of one host, driven by one process (issue 23): rank r is a `GPUModel` of the plan's
/// `rankConfig` on `Context(ordinal: r)`, loaded from `RankWeights` (its slices of the checkpoint), with one thread per
/// rank (`RankThreads`, the rank's context current on it). Each rank's forward passes run the one `Transformer` over a
/// `TensorParallelRank` — the wrapper `SimulatedTensorParallel` tests on the CPU — with `NCCLCollectives`: an all-reduce of
/// the residual after the embedding and of the branch after o and down, and a gather of the vocabulary slices into
/// full-vocabulary logits on every rank, from which every rank's argmax (or sampler, with the same seed) picks the same id.
///
/// The API mirrors GPUModel's (greedy `prefill`, `decodeStep`, `generate`, `extend`, teacher-forced `logits(tokens:)`):
/// every call runs the GPUModel call of the same name on every rank's thread, whose passes go through the wrapper
/// (`GPUModel.tensorParallel`). A decode step is one CUDA graph per rank with its NCCL calls inside; the first step of a
/// batch size runs uncaptured, so NCCL sets up its connections outside any capture.
///
/// With one rank there is no NCCL and no thread: the model runs on the caller's thread through the same wrapper (every
/// collective skipped), so `--tp 1` measures what the wrapper costs against the plain single-GPU engine.
public final class GPUTensorParallel {
    public let plan: TensorParallelPlan
    /// Rank r's model, on GPU r.
    public let ranks: [GPUModel]
    public let threads: RankThreads
    /// The NCCL library and one communicator per rank; nil with one rank.
    public let nccl: NCCL?
    private let comms: [NCCLComm]
    /// Batch sizes (and whether they sample) whose first decode step ran uncaptured.
    private var warmDecode = Set<[Int]>()

    public var config: ModelConfig { plan.config }
    public var maxBatch: Int { ranks[0].maxBatch }
    public var maxSeq: Int { ranks[0].maxSeq }
    public var sequenceLengths: [Int] { ranks[0].sequenceLengths }

    /// How each rank gets its weights, on its own thread with its context current.
    public enum Weights {
        /// The full checkpoint; each rank loads `RankWeights` of it.
        case checkpoint(WeightSource)
        /// Random weights of the rank's shape made on its GPU (benchmarks); `fp8`/`lut` as GPUModel.dummy.
        case dummy(config: ModelConfig, fp8: Bool, lut: WeightFormat.LUTFormat?)
        var config: ModelConfig {
            switch self { case .checkpoint(let s): return s.config; case .dummy(let c, _, _): return c }
        }
    }

    /// Loads the N ranks. `tune` is called once, on rank 0's thread with rank 0's kernel library and the rank config (the
    /// shapes every GPU runs); its table serves every rank. `ncclPath`: the CLI's `KILN_NCCL` (nil: NCCL's search).
    public init(weights: Weights, ranks n: Int, maxBatch: Int = 8, maxSeq: Int = 4096, maxRows: Int = 1024,
                tune: (KernelLibrary, ModelConfig) throws -> TuneTable? = { _, _ in nil }, options: GPUEngineOptions = GPUEngineOptions(),
                ncclPath: String? = nil, log: @escaping (String) -> Void = { _ in }) throws {
        let p = try TensorParallelPlan(config: weights.config, ranks: n)
        let gpus = try Context.deviceCount()
        guard gpus >= n else { throw KilnError("--tp \(n) needs \(n) GPUs, but this machine has \(gpus)") }
        plan = p
        // NCCL first: a machine without it fails before minutes of loading.
        let lib = n > 1 ? try NCCL.load(path: ncclPath) : nil
        var contexts = [Context?](repeating: nil, count: n)
        let contextLock = NSLock()
        threads = try RankThreads(count: n, name: "gpu rank") { r in
            let c = try Context(ordinal: Int32(r))   // made current on this thread
            contextLock.lock(); contexts[r] = c; contextLock.unlock()
        }
        // Ranks are built one at a time, each on its own thread: the weight source, NVRTC and the kernel cache (its
        // temporary file names are per process) are not shared between threads safely.
        let buildLock = NSLock()
        let libraries = try threads.run { r in
            buildLock.lock(); defer { buildLock.unlock() }
            return try KernelLibrary(context: contexts[r]!)
        }
        if n > 1 {
            // The GEMM kernels compile on first use, which the ranks reach together: every kernel goes into the on-disk
            // cache now (one compile per file), so the ranks' first passes only read it.
            let seconds = try libraries[0].precompile()
            log(String(format: "--tp \(n): kernels compiled or read from the cache in %.1f s", seconds))
        }
        let table = try threads.run { r in r == 0 ? try tune(libraries[0], p.rankConfig) : nil }[0]
        ranks = try threads.run { r -> GPUModel in
            let ctx = contexts[r]!, library = libraries[r]
            buildLock.lock(); defer { buildLock.unlock() }
            switch weights {
            case .checkpoint(let source):
                let rankSource = try RankWeights(source, plan: p, rank: r)
                let m = try GPUModel.load(rankSource, context: ctx, library: library, maxBatch: maxBatch, maxSeq: maxSeq, maxRows: maxRows,
                                          tune: table, options: options, log: log)
                try rankSource.checkAllUsed()
                return m
            case let .dummy(_, fp8, lut):
                let c = p.rankConfig, seq = min(maxSeq, c.contextLength), format = GPUMemoryPlan.dummyFormat(fp8: fp8, lut: lut)
                try GPUMemoryPlan.staticEngine(c, linearFormat: { _ in format }, maxBatch: maxBatch, maxSeq: seq, maxRows: maxRows,
                                               fp8PrefillKernel: options.fp8PrefillKernel && GemmDispatch.hasHopperKernels(ctx.info))
                    .ensureFits(on: ctx, model: "rank \(r) of --tp \(n) (\(format.name) weights)", remedy: "lower -p/-n or -b, or raise --tp", log: log)
                let w = try GPUWeights.dummy(config: c, context: ctx, library: library, fp8: fp8, lut: lut, seed: UInt64(1 + r))
                return try GPUModel(weights: w, library: library, maxBatch: maxBatch, maxSeq: seq, maxRows: maxRows, tune: table,
                                    options: options, log: log)
            }
        }
        // Every tensor of the checkpoint went to some rank (each rank checked its own slices).
        if case .checkpoint(let source) = weights { try source.checkAllUsed() }
        nccl = lib
        if let lib {
            log("--tp \(n): NCCL \(try lib.version()) from \(lib.location)")
            comms = try lib.communicators(devices: (0..<n).map { Int32($0) })
        } else {
            comms = []
        }
        // Each rank's wrapper, full-vocabulary logits and sampler state, made on its own thread (its context).
        let models = ranks, comms = self.comms
        _ = try threads.run { r in
            let m = models[r]
            let rows = max(16, m.maxBatch)
            let full = n > 1 ? try DeviceBuffer<Float>(m.context, count: NCCLCollectives.fullLogitsCount(plan: p, rows: rows)) : m.logits
            let collectives = try lib.map { try NCCLCollectives(nccl: $0, comm: comms[r], plan: p, rank: r, stream: m.stream, maxRows: rows) }
            let wrapper = try TensorParallelRank(plan: p, rank: r, backend: m, collectives: collectives,
                                                 fullLogits: GPUCollectiveBuffer(address: full.address, type: .float32))
            let transformer = Transformer(config: p.config)
            m.tensorParallel = TensorParallelHook(forward: { try transformer.forward(wrapper, $0) }, fullLogits: full, vocabSize: p.config.vocabSize)
            if p.rankConfig.vocabSize != p.config.vocabSize {
                // The sampler's state covers the vocabulary it chooses from (the gathered one).
                m.samplingState = try SamplingState(context: m.context, rows: m.maxBatch, vocab: p.config.vocabSize, penalties: false)
            }
            try m.stream.synchronize()
        }
    }

    deinit {
        // The hook holds the wrapper, which holds the model: break the cycle, then free the communicators.
        _ = try? threads.run { r in
            try? ranks[r].stream.synchronize()
            ranks[r].tensorParallel = nil
        }
        if let nccl { for c in comms { try? nccl.destroy(c) } }
    }

    /// Runs `body` on every rank's thread; the ranks must agree on the result (the ids they chose from the same gathered
    /// logits), or the collectives are broken and the error says so.
    private func agreed<T: Equatable>(_ what: String, _ body: (GPUModel) throws -> T) throws -> T {
        let models = ranks
        let results = try threads.run { r in try body(models[r]) }
        if let r = results.indices.first(where: { results[$0] != results[0] }) {
            throw KilnError("--tp \(plan.ranks): rank \(r) chose \(results[r]) but rank 0 \(results[0]) (\(what)): the ranks' logits differ")
        }
        return results[0]
    }

    /// As GPUModel.prefill: the greedy (or device-sampled) next token of each prompt.
    public func prefill(_ prompts: [[Int32]]) throws -> [Int32] { try agreed("prefill") { try $0.prefill(prompts) } }

    /// As GPUModel.extend.
    public func extend(sequence s: Int, with tokens: [Int32]) throws -> Int32 {
        try agreed("extend") { try $0.extend(sequence: s, with: tokens) }
    }

    /// The batch's key for `warmDecode`.
    private func warmKey(_ b: Int) -> [Int] { [b, ranks[0].deviceSampled[0..<min(b, maxBatch)].contains(true) ? 1 : 0] }

    /// As GPUModel.launchDecodeStep on every rank (each replays its graph; the first step of a batch size runs uncaptured).
    public func launchDecodeStep(batch b: Int, graph: Bool = true) throws {
        let key = warmKey(b), warm = graph && warmDecode.contains(key)
        _ = try threads.run { r in try ranks[r].launchDecodeStep(batch: b, graph: warm) }
        warmDecode.insert(key)
    }

    /// As GPUModel.decodeStep: every rank's graph, then each rank's sampled ids, which must agree.
    public func decodeStep(batch b: Int, graph: Bool = true) throws -> [Int32] {
        let key = warmKey(b), warm = graph && warmDecode.contains(key)
        let next = try agreed("decode step") { try $0.decodeStep(batch: b, graph: warm) }
        warmDecode.insert(key)
        return next
    }

    /// Waits for every rank's stream.
    public func synchronize() throws { _ = try threads.run { r in try ranks[r].stream.synchronize() } }

    public func configureSampling(sequence s: Int, options: SamplingOptions, history: [Int32] = [], promptLength: Int? = nil) throws {
        _ = try threads.run { r in try ranks[r].configureSampling(sequence: s, options: options, history: history, promptLength: promptLength) }
    }

    public func setNextIds(_ next: [Int32]) throws { _ = try threads.run { r in try ranks[r].setNextIds(next) } }

    public func truncate(sequence s: Int, to n: Int) throws { _ = try threads.run { r in try ranks[r].truncate(sequence: s, to: n) } }

    /// The last step's full-vocabulary logits of sequences 0..<b (rank 0's copy).
    public func lastLogits(batch b: Int) throws -> [Float] {
        try threads.run { r in r == 0 ? try ranks[0].lastLogits(batch: b) : [] }[0]
    }

    /// Teacher-forced logits of every position (fp32 [tokens, vocab]), as GPUModel.logits(tokens:): each rank copies its
    /// vocabulary slice of each chunk to the host, joined here (no device gather on this check path).
    public func logits(tokens: [Int32]) throws -> [Float] {
        let slices = try threads.run { r in try ranks[r].logits(tokens: tokens) }
        var out = [Float](repeating: .nan, count: tokens.count * plan.config.vocabSize)
        out.withUnsafeMutableBufferPointer { o in
            for (r, slice) in slices.enumerated() {
                slice.withUnsafeBufferPointer { plan.placeLogitsSlice($0.baseAddress!, rank: r, rows: tokens.count, into: o.baseAddress!) }
            }
        }
        return out
    }
}
