import Foundation
import KilnCore
import KilnGPU
import KilnKernels

/// Kernel choice for every GEMM of the engine, as data: `(op, M bucket, N, K) → instance + split`
/// from a tuning table when one is given, else the documented defaults of GemmSplitK/GemmHopper
/// (one warning per shape that has no entry, so a missing tuning run is visible but not noisy).
///
///   M ≤ 16          gemm_splitk (decode; bf16 or fp32 out), or on Hopper gemm_stream / gemm_swapab where the table says so
///   M ≥ 64, Hopper  gemm_hopper (prefill; bf16 out)
///   FP8 weights     gemm_fp8 at M ≤ 16; gemm_fp8_hopper at M > 16 on Hopper (fp8Prefill)
///   otherwise       gemm_splitk over row blocks of 16 (short prefill chunks, fp32 logits, non-Hopper GPUs)
public final class GemmDispatch {
    /// A kernel instance and its split count: the tuner's candidate type, so a table entry and a choice are one thing.
    public typealias Choice = GemmCandidate

    let library: KernelLibrary
    let tune: TuneTable?
    let log: (String) -> Void
    let hopperOK: Bool
    private var splitKKernels: [GemmSplitK.Config: GemmSplitK] = [:]
    private var hopperKernels: [GemmHopper.Config: GemmHopper] = [:]
    private var streamKernels: [GemmStream.Config: GemmStream] = [:]
    private var swapABKernels: [GemmSwapAB.Config: GemmSwapAB] = [:]
    private var fp8Kernels: [GemmFP8.Config: GemmFP8] = [:]
    private var fp8HopperKernels: [GemmFP8Hopper.Config: GemmFP8Hopper] = [:]
    private var lutKernels: [GemmLUT.Config: GemmLUT] = [:]
    private var lutHopperKernels: [GemmLUTHopper.Config: GemmLUTHopper] = [:]
    private var warned: Set<String> = []
    /// Split-K scratch (gemm_splitk, gemm_swapab), shared by all calls: they run one after another on one stream,
    /// each touches it only after its griddepcontrol.wait, and the counters are left zero by every launch.
    let workspace: DeviceBuffer<Float>
    let counters: DeviceBuffer<UInt32>
    public static let maxSplit = 8

    /// On Hopper, M of 17…63 (bf16 out) and every M > 16 with fp32 out (the logits) run on gemm_hopper in one pass over
    /// the weights instead of gemm_splitk's passes of 16 rows (the server's decode batches: docs/perf-notes-serve.md).
    /// Off: gemm_hopper from M = 64, fp32 always on gemm_splitk. `GPUEngineOptions.hopperServeGEMMs`, whose default the
    /// benches and the tuner take too, so they time what the engine runs.
    public let wideHopper: Bool

    public init(library: KernelLibrary, tune: TuneTable?, maxN: Int, stream: GPUStream, wideHopper: Bool = GPUEngineOptions().hopperServeGEMMs,
                log: @escaping (String) -> Void) throws {
        guard let ctx = library.context else { throw KilnError("GEMM dispatch needs a GPU context") }
        self.library = library; self.tune = tune; self.log = log
        hopperOK = GemmDispatch.hasHopperKernels(ctx.info)
        self.wideHopper = wideHopper && hopperOK
        workspace = try DeviceBuffer<Float>(ctx, count: GemmSplitK.workspaceFloats(m: 16, n: maxN, split: GemmDispatch.maxSplit))
        counters = try DeviceBuffer<UInt32>(ctx, count: maxN / 16 + 64)
        try counters.fill(byte: 0, stream: stream)
    }

    /// The weight formats this dispatch has kernels for: bf16 (every family) and FP8 128×128 (gemm_fp8 at M ≤ 16,
    /// gemm_fp8_hopper above on Hopper; elsewhere prefill dequantizes FP8 to bf16). GPUWeights.plan converts the rest at load.
    public static let kernelFormats: Set<WeightFormat> = [.bf16, GPUMatrix.fp8Format]
    // (Lookup-table formats run on gemm_lut at M ≤ 16 — a family of formats, see GPUWeights.plan — and prefill on
    // gemm_lut_hopper with `GPUEngineOptions.lutPrefillKernel` on Hopper, else dequantized to bf16.)

    /// The kernel for `op` on `format` weights `[n, k]` at `m` tokens: the table's entry for exactly this
    /// (op, format, M bucket, N, K) if it names an instance that can run it, else the documented default.
    /// `format` defaults to bf16, the only format the GPU's weights are in today (`kernelFormats`).
    public func choose(op: String, format: WeightFormat = .bf16, m: Int, n: Int, k: Int, outF32: Bool) -> Choice {
        if let e = tune?.lookup(op: op, format: format, n: n, k: k, m: m) {
            if m <= 16, let c = GemmSplitK.config(named: e.config), c.maxM >= m { return Choice(.splitK(c), split: min(max(1, e.split), GemmDispatch.maxSplit)) }
            if m <= 16, hopperOK, let c = GemmStream.config(named: e.config), c.unsupported(n: n, k: k) == nil { return Choice(.stream(c)) }
            if m <= 16, hopperOK, let c = GemmSwapAB.config(named: e.config), c.maxM >= m, c.unsupported(n: n, k: k, split: e.split) == nil,
               c.workspaceFloats(n: n, split: e.split) <= workspace.count {
                return Choice(.swapAB(c), split: e.split)
            }
            if m >= 64, hopperOK, !outF32, let c = GemmHopper.config(named: e.config) { return Choice(.hopper(c)) }
        } else {
            warnUntuned(op: op, format: format, m: m, n: n, k: k)
        }
        if m >= 64, hopperOK, !outF32 { return Choice(.hopper(GemmHopper.defaultConfig(m: m, n: n))) }
        if m > 16, wideHopper { return Choice(.hopper(outF32 ? GemmHopper.defaultF32Config(m: m) : GemmHopper.defaultConfig(m: m, n: n))) }
        return Choice(.splitK(GemmSplitK.defaultConfig(m: min(m, 16))))
    }

    func splitKKernel(_ c: GemmSplitK.Config) throws -> GemmSplitK {
        if let k = splitKKernels[c] { return k }
        let k = try GemmSplitK(library, config: c); splitKKernels[c] = k; return k
    }
    func streamKernel(_ c: GemmStream.Config) throws -> GemmStream {
        if let k = streamKernels[c] { return k }
        let k = try GemmStream(library, config: c); streamKernels[c] = k; return k
    }
    func swapABKernel(_ c: GemmSwapAB.Config) throws -> GemmSwapAB {
        if let k = swapABKernels[c] { return k }
        let k = try GemmSwapAB(library, config: c); swapABKernels[c] = k; return k
    }
    func hopperKernel(_ c: GemmHopper.Config) throws -> GemmHopper {
        if let k = hopperKernels[c] { return k }
        let k = try GemmHopper(library, config: c); hopperKernels[c] = k; return k
    }

    /// One warning per shape that a loaded tuning table has no entry for (none when running on the defaults by choice).
    private func warnUntuned(op: String, format: WeightFormat, m: Int, n: Int, k: Int) {
        let key = "\(op) \(format.name) N=\(n) K=\(k) M≤\(MBucket.bucket(for: m))"
        if tune != nil, warned.insert(key).inserted { log("warning: no tuning entry for \(key); using the default kernel (run `kiln tune` to measure it)") }
    }

    /// The FP8 decode GEMM for `op` on `[n, k]` at `m` ≤ 16 tokens: the table's entry for (op, fp8, M bucket, N, K) if
    /// it names a gemm_fp8 instance that serves m, else GemmFP8's default.
    public func chooseFP8(op: String, m: Int, n: Int, k: Int) -> (config: GemmFP8.Config, split: Int) {
        if let tuned = GemmDispatch.fp8Entry(tune, op: op, m: m, n: n, k: k) { return tuned }
        warnUntuned(op: op, format: GPUMatrix.fp8Format, m: m, n: n, k: k)
        return (GemmFP8.defaultConfig(m: m), 1)
    }

    /// The table's gemm_fp8 entry for (op, fp8, M bucket, N, K) when it names an instance that serves m (the split
    /// clamped to 1…maxSplit), else nil. Pure, so the table's meaning is tested without a GPU.
    public static func fp8Entry(_ table: TuneTable?, op: String, m: Int, n: Int, k: Int) -> (config: GemmFP8.Config, split: Int)? {
        guard let e = table?.lookup(op: op, format: GPUMatrix.fp8Format, n: n, k: k, m: m), let c = GemmFP8.config(named: e.config), c.maxM >= m
        else { return nil }
        return (c, min(max(1, e.split), maxSplit))
    }

    /// y[m, n] = X · W^T over FP8 weights (gemm_fp8, m ≤ 16): `xq`/`xs` the activations quantized per 1×128 block
    /// (FP8ActivationQuantizer), `w`/`scale8` the e4m3 codes and their expanded scales (GPUMatrix.fp8). `choice`
    /// overrides the table (the tuner times each candidate through this launch path).
    public func fp8(_ op: String, xq: CUdeviceptr, xs: CUdeviceptr, w: CUdeviceptr, scale8: CUdeviceptr, y: CUdeviceptr, m: Int, n: Int, k: Int,
                    epilogue: GemmSplitK.Epilogue, stream: GPUStream, choice: (config: GemmFP8.Config, split: Int)? = nil) throws {
        let (c, split) = choice ?? chooseFP8(op: op, m: m, n: n, k: k)
        let kernel: GemmFP8
        if let cached = fp8Kernels[c] { kernel = cached } else { kernel = try GemmFP8(library, config: c); fp8Kernels[c] = kernel }
        try kernel(xq: xq, xs: xs, w: w, scale8: scale8, y: y, m: m, n: n, k: k, split: split, workspace: workspace.address,
                   counters: counters.address, epilogue: epilogue, stream: stream)
    }

    /// Whether FP8 matrices at m > 16 run on gemm_fp8_hopper (a Hopper GPU); else prefill dequantizes them to bf16.
    public var hasFP8Prefill: Bool { hopperOK }
    /// Whether the Hopper-only families (gemm_hopper, gemm_stream, gemm_swapab, gemm_fp8_hopper) run on this GPU: sm_90.
    public static func hasHopperKernels(_ info: DeviceInfo) -> Bool { info.computeCapability.major == 9 }

    /// The FP8 prefill GEMM for `op` on `[n, k]` at `m` > 16 tokens: the table's entry for (op, fp8, M bucket, N, K) if it
    /// names a gemm_fp8_hopper instance, else GemmFP8Hopper's default for this shape.
    public func chooseFP8Prefill(op: String, m: Int, n: Int, k: Int) -> GemmFP8Hopper.Config {
        if let c = GemmDispatch.fp8PrefillEntry(tune, op: op, m: m, n: n, k: k) { return c }
        warnUntuned(op: op, format: GPUMatrix.fp8Format, m: m, n: n, k: k)
        return GemmFP8Hopper.defaultConfig(m: m, n: n, multiprocessors: library.context?.info.multiprocessors ?? 132)
    }

    /// The table's gemm_fp8_hopper entry for (op, fp8, M bucket, N, K), else nil (pure, as `fp8Entry`).
    public static func fp8PrefillEntry(_ table: TuneTable?, op: String, m: Int, n: Int, k: Int) -> GemmFP8Hopper.Config? {
        guard let e = table?.lookup(op: op, format: GPUMatrix.fp8Format, n: n, k: k, m: m) else { return nil }
        return GemmFP8Hopper.config(named: e.config)
    }

    /// y[m, n] bf16 = X · W^T over FP8 weights on gemm_fp8_hopper (m > 16, a Hopper GPU): `xq`/`xs` the activations
    /// quantized per 1×128 block, `w`/`scale8` as for `fp8`; `choice` overrides the table (the tuner).
    public func fp8Prefill(_ op: String, xq: CUdeviceptr, xs: CUdeviceptr, w: CUdeviceptr, scale8: CUdeviceptr, y: CUdeviceptr,
                           m: Int, n: Int, k: Int, stream: GPUStream, choice: GemmFP8Hopper.Config? = nil) throws {
        let c = choice ?? chooseFP8Prefill(op: op, m: m, n: n, k: k)
        let kernel: GemmFP8Hopper
        if let cached = fp8HopperKernels[c] { kernel = cached } else { kernel = try GemmFP8Hopper(library, config: c); fp8HopperKernels[c] = kernel }
        try kernel(xq: xq, xs: xs, w: w, scale8: scale8, y: y, m: m, n: n, k: k, stream: stream)
    }

    /// The lookup-table decode GEMM (4, 3 or 2 bits) for `op` on an [n, k] matrix of `format` at `m` ≤ 16 tokens: the table's entry
    /// for (op, format, M bucket, N, K) if it names a gemm_lut instance that serves m with the matrix's offsets (or
    /// not), else GemmLUT's default with `GemmLUT.defaultSplit`.
    public func chooseLUT(op: String, format: WeightFormat.LUTFormat, m: Int, n: Int, k: Int) -> (config: GemmLUT.Config, split: Int) {
        if let tuned = GemmDispatch.lutEntry(tune, op: op, format: format, m: m, n: n, k: k) { return tuned }
        warnUntuned(op: op, format: .lut(format), m: m, n: n, k: k)
        let c = GemmLUT.defaultConfig(m: m, affine: format.hasOffsets, bits: format.bits)
        return (c, GemmLUT.defaultSplit(c, n: n, k: k, multiprocessors: library.context?.info.multiprocessors ?? 132, maxSplit: GemmDispatch.maxSplit))
    }

    /// The table's gemm_lut entry for (op, format, M bucket, N, K) when it names an instance of the format's width and
    /// offsets that serves m (the split clamped to 1…maxSplit), else nil (pure, as `fp8Entry`).
    public static func lutEntry(_ table: TuneTable?, op: String, format: WeightFormat.LUTFormat, m: Int, n: Int, k: Int)
        -> (config: GemmLUT.Config, split: Int)? {
        guard let e = table?.lookup(op: op, format: .lut(format), n: n, k: k, m: m), let c = GemmLUT.config(named: e.config), c.maxM >= m,
              c.affine == format.hasOffsets, c.bits == format.bits else { return nil }
        return (c, min(max(1, e.split), maxSplit))
    }

    /// y[m, n] = X · W^T over a lookup-table matrix (gemm_lut, m ≤ 16), `w` in the kernel's device layout; `choice`
    /// overrides the table (the tuner).
    public func lut(_ op: String, x: CUdeviceptr, w: GPUMatrix.LUTMatrix, y: CUdeviceptr, m: Int, epilogue: GemmSplitK.Epilogue,
                    stream: GPUStream, choice: (config: GemmLUT.Config, split: Int)? = nil) throws {
        let (c, split) = choice ?? chooseLUT(op: op, format: w.format, m: m, n: w.rows, k: w.cols)
        let kernel: GemmLUT
        if let cached = lutKernels[c] { kernel = cached } else { kernel = try GemmLUT(library, config: c); lutKernels[c] = kernel }
        try kernel(x: x, codes: w.codes.address, scales: w.scales.address, offsets: w.offsets?.address ?? 0, table: w.table.address, y: y,
                   m: m, n: w.rows, k: w.cols, group: w.format.groupSize, split: split, workspace: workspace.address,
                   counters: counters.address, epilogue: epilogue, stream: stream)
    }

    /// Whether lookup-table matrices of `format` at m > 16 can run on gemm_lut_hopper (a Hopper GPU and an instance of
    /// that width and kind); else prefill dequantizes them to bf16.
    public func hasLUTPrefill(_ format: WeightFormat.LUTFormat) -> Bool { hopperOK && GemmLUTHopper.supports(format) }

    /// The table's gemm_lut_hopper entry for (op, format, M bucket, N, K) when it names an instance of the format's width
    /// and kind, else nil (pure, as `lutEntry`).
    public static func lutPrefillEntry(_ table: TuneTable?, op: String, format: WeightFormat.LUTFormat, m: Int, n: Int, k: Int) -> GemmLUTHopper.Config? {
        guard m > 16, let e = table?.lookup(op: op, format: .lut(format), n: n, k: k, m: m), let c = GemmLUTHopper.config(named: e.config),
              c.bits == format.bits, c.affine == format.hasOffsets else { return nil }
        return c
    }

    /// y[m, n] = X · W^T over a lookup-table matrix on gemm_lut_hopper (prefill, m > 16): `xPermuted` is X' of
    /// `LUTPermute` (the caller ran it); bf16 out. The instance: `choice` (the tuner, the benches' sweep), else the
    /// table's entry, else GemmLUTHopper's default.
    public func lutPrefill(_ op: String, xPermuted: CUdeviceptr, w: GPUMatrix.LUTMatrix, y: CUdeviceptr, m: Int, stream: GPUStream,
                           choice: GemmLUTHopper.Config? = nil) throws {
        let tuned = choice ?? GemmDispatch.lutPrefillEntry(tune, op: op, format: w.format, m: m, n: w.rows, k: w.cols)
        guard let c = tuned ?? GemmLUTHopper.defaultConfig(m: m, bits: w.format.bits, affine: w.format.hasOffsets) else {
            throw KilnError("linear \(op): no gemm_lut_hopper instance reads \(w.format.bits)-bit codes\(w.format.hasOffsets ? " with offsets" : "")")
        }
        let kernel: GemmLUTHopper
        if let cached = lutHopperKernels[c] { kernel = cached } else { kernel = try GemmLUTHopper(library, config: c); lutHopperKernels[c] = kernel }
        try kernel(xPermuted: xPermuted, codes: w.codes.address, scales: w.scales.address, offsets: w.offsets?.address ?? 0,
                   table: w.table.address, y: y, m: m, n: w.rows, k: w.cols, group: w.format.groupSize, stream: stream)
    }

    /// y[m, n] = x[m, k] · w[n, k]^T; y is fp32 when `outF32`, else bf16. `epilogue` .swiglu (the decode GEMMs;
    /// w interleaved): y = bf16 [m, n/2]; the kernel choice is the plain op's (tuned) one.
    public func callAsFunction(_ op: String, x: CUdeviceptr, w: CUdeviceptr, y: CUdeviceptr, m: Int, n: Int, k: Int,
                               outF32: Bool = false, epilogue: GemmSplitK.Epilogue? = nil, choice: Choice? = nil, stream: GPUStream) throws {
        let ch = choice ?? choose(op: op, m: m, n: n, k: k, outF32: outF32)
        let epi = epilogue ?? (outF32 ? .f32 : .bf16)
        let cfg: GemmSplitK.Config
        switch ch.kernel {
        case .hopper(let h):
            guard epi == (h.outF32 ? .f32 : .bf16) else { throw KilnError("\(h.name) has no \(epi) epilogue") }
            try hopperKernel(h)(x: x, w: w, y: y, m: m, n: n, k: k, stream: stream)
            return
        case .stream(let c) where m <= c.maxM:
            try streamKernel(c)(x: x, w: w, y: y, m: m, n: n, k: k, epilogue: epi, stream: stream)
            return
        case .swapAB(let c) where m <= c.maxM:
            try swapABKernel(c)(x: x, w: w, y: y, m: m, n: n, k: k, split: ch.split, workspace: workspace.address, counters: counters.address,
                                epilogue: epi, stream: stream)
            return
        case .stream, .swapAB: cfg = GemmSplitK.defaultConfig(m: 16)
        case .splitK(let c): cfg = c
        case .lut, .lutHopper, .fp8, .fp8Hopper: throw KilnError("\(ch.name) does not read bf16 weights (GemmDispatch.lut / lutPrefill / fp8 / fp8Prefill run it)")
        }
        let kernel = try splitKKernel(m <= cfg.maxM ? cfg : GemmSplitK.defaultConfig(m: 16))
        let rowBytes = epi.outputColumns(n: n) * epi.outputBytes
        var r = 0
        while r < m {
            let rows = min(kernel.config.maxM, m - r)
            try kernel(x: x + UInt64(r * k * 2), w: w, y: y + UInt64(r * rowBytes), m: rows, n: n, k: k, split: ch.split,
                       workspace: workspace.address, counters: counters.address, epilogue: epi, stream: stream)
            r += rows
        }
    }
}
