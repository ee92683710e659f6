import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnModels
import KilnCUDA

/// One weight shape the engine multiplies by: y[M, n] = x[M, k] · W[n, k]^T (fp32 out for the logits), with W in
/// `format` as the GPU holds it.
public struct GemmShape: Hashable, Sendable, CustomStringConvertible {
    public var op: String
    public var format: WeightFormat
    public var n: Int
    public var k: Int
    public var outF32: Bool
    public init(op: String, format: WeightFormat = .bf16, n: Int, k: Int, outF32: Bool = false) {
        self.op = op; self.format = format; self.n = n; self.k = k; self.outF32 = outF32
    }
    public var description: String { "\(op) \(format.name) N=\(n) K=\(k)" }
    /// Bytes of W in its format (every plane), what one call reads at least.
    public var weightBytes: Int { format.byteCount(rows: n, cols: k) ?? n * k * 2 }

    /// The GEMMs of a model as the engine calls them (the Transformer's gemmShapes; the logits come out in fp32), on the
    /// weights' GPU format: bf16 for every format today (GPUWeights.plan converts the others at load).
    public static func of(_ c: ModelConfig) -> [GemmShape] {
        EngineBench.gemmShapes(c).map { GemmShape(op: $0.0, format: .bf16, n: $0.1, k: $0.2, outF32: $0.0 == "logits") }
    }
}

/// Candidate enumeration and validity rules (pure; tested without a GPU).
///
/// The candidates are the rows of the `.cu` instance tables (KILN_GEMM_SPLITK_INSTANCES × split counts 1, 2, 4, 8;
/// KILN_GEMM_STREAM_INSTANCES; KILN_GEMM_SWAPAB_INSTANCES × split counts; KILN_GEMM_HOPPER_INSTANCES), so adding a row to a table adds it to the search. A candidate that cannot run
/// correctly is removed by a rule before anything launches, never by a crash:
///   gemm_splitk: M ≤ 8·NT; M ≤ 16 (beyond, the dispatch ignores table entries); K a positive multiple of 8;
///                dynamic shared memory ≤ the device's opt-in limit; threads ≤ the block limit; split ≤ 8
///                (GemmDispatch.maxSplit, its workspace size); every split owns a non-empty K chunk
///                ((split−1)·⌈K/split⌉₈ < K); split·M·N ≤ the workspace.
///   gemm_stream: a Hopper GPU; 9 ≤ M ≤ 16 (GemmStream.Config.minTunedM: slower in the decode step at M = 2); K a positive multiple of 64 (its 3-D tensor-map view); shared memory ≤ opt-in
///                limit; threads ≤ the block limit; split 1 (no split-K).
///   gemm_swapab: a Hopper GPU; 9 ≤ M ≤ MT (as gemm_stream); K a positive multiple of 64; shared memory ≤ opt-in
///                limit; split·⌈N/64⌉ blocks co-resident (a lead waits on its helpers: the grid must fit in one wave);
///                (split−1)·⌈N/64⌉·64·MT ≤ the workspace.
///   gemm_hopper: a Hopper GPU; M ≥ 64 (the dispatch's prefill range); bf16 output (the logits stay on gemm_splitk);
///                K a multiple of 8; shared memory ≤ opt-in limit; threads ≤ the block limit; split 1.
public enum GemmSearch {
    public static let splits = [1, 2, 4, 8]

    public struct Limits: Sendable {
        public var hopper: Bool
        public var sharedOptIn: Int
        public var maxThreads: Int
        public var maxSplit: Int
        public var workspaceFloats: Int
        /// SMs and the shared memory of one SM: how many blocks can be resident at once (gemm_swapab's one-wave rule).
        public var multiprocessors: Int
        public var sharedPerSM: Int
        /// Tensor cores that multiply e4m3 (gemm_fp8; sm_89 and newer); by default, whether the GPU is a Hopper.
        public var e4m3: Bool
        public init(hopper: Bool, sharedOptIn: Int, maxThreads: Int = 1024, maxSplit: Int = 8, workspaceFloats: Int = .max,
                    multiprocessors: Int = 132, sharedPerSM: Int = 233_472, e4m3: Bool? = nil) {
            self.hopper = hopper; self.sharedOptIn = sharedOptIn; self.maxThreads = maxThreads; self.maxSplit = maxSplit
            self.workspaceFloats = workspaceFloats; self.multiprocessors = multiprocessors; self.sharedPerSM = sharedPerSM
            self.e4m3 = e4m3 ?? hopper
        }
        /// The H200/H100 SXM: sm_90, 132 SMs, 227 KB of opt-in shared memory per block, 228 KB per SM.
        public static let hopperGPU = Limits(hopper: true, sharedOptIn: 232_448)
    }

    /// Why `c` with `split` cannot serve `shape` at `m` (nil: it can).
    public static func rule(_ c: GemmSplitK.Config, split: Int, shape s: GemmShape, m: Int, limits l: Limits) -> String? {
        if m > 16 { return "gemm_splitk is tuned for M ≤ 16" }
        if m > c.maxM { return "M \(m) > \(c.maxM) (NT=\(c.nt))" }
        if s.k <= 0 || s.k % 8 != 0 { return "K \(s.k) not a positive multiple of 8" }
        if let why = c.unsupported(n: s.n, k: s.k, split: split) { return why }
        if c.threads > l.maxThreads { return "\(c.threads) threads > \(l.maxThreads)" }
        if split < 1 || split > l.maxSplit { return "split \(split) outside 1…\(l.maxSplit)" }
        if split > 1 {
            let chunk = ((s.k + split - 1) / split + 7) & ~7
            if (split - 1) * chunk >= s.k { return "split \(split) leaves an empty K chunk (K \(s.k))" }
            if split * m * s.n > l.workspaceFloats { return "split \(split) needs \(split * m * s.n) workspace floats" }
        }
        return nil
    }

    public static func rule(_ c: GemmStream.Config, shape s: GemmShape, m: Int, limits l: Limits) -> String? {
        if !l.hopper { return "gemm_stream needs sm_90a" }
        if m > c.maxM || m < c.minTunedM { return "gemm_stream is tuned for \(c.minTunedM) ≤ M ≤ \(c.maxM)" }
        if let why = c.unsupported(n: s.n, k: s.k) { return why }
        if c.sharedBytes + c.staticSharedBytes > l.sharedOptIn { return "shared memory \(c.sharedBytes + c.staticSharedBytes) B > \(l.sharedOptIn) B" }
        if c.threads > l.maxThreads { return "\(c.threads) threads > \(l.maxThreads)" }
        return nil
    }

    public static func rule(_ c: GemmSwapAB.Config, split: Int, shape s: GemmShape, m: Int, limits l: Limits) -> String? {
        if !l.hopper { return "gemm_swapab needs sm_90a" }
        if m > c.maxM || m < c.minTunedM { return "gemm_swapab is tuned for \(c.minTunedM) ≤ M ≤ \(c.maxM)" }
        if let why = c.unsupported(n: s.n, k: s.k, split: split) { return why }
        if c.sharedBytes + c.staticSharedBytes > l.sharedOptIn { return "shared memory \(c.sharedBytes + c.staticSharedBytes) B > \(l.sharedOptIn) B" }
        if split > l.maxSplit { return "split \(split) outside 1…\(l.maxSplit)" }
        let grid = c.gridX(n: s.n, split: split), resident = c.blocksPerSM(sharedPerSM: l.sharedPerSM) * l.multiprocessors
        if grid > resident { return "split \(split) needs \(grid) co-resident blocks (\(resident) fit)" }
        if c.workspaceFloats(n: s.n, split: split) > l.workspaceFloats { return "split \(split) needs \(c.workspaceFloats(n: s.n, split: split)) workspace floats" }
        return nil
    }

    public static func rule(_ c: GemmHopper.Config, shape s: GemmShape, m: Int, limits l: Limits) -> String? {
        if !l.hopper { return "gemm_hopper needs sm_90a" }
        if m < 64 { return "gemm_hopper serves M ≥ 64" }
        if s.outF32 { return "gemm_hopper has bf16 output only" }
        if s.k < 8 || s.k % 8 != 0 { return "K \(s.k) not a multiple of 8" }
        if c.sharedBytes > l.sharedOptIn { return "shared memory \(c.sharedBytes) B > \(l.sharedOptIn) B" }
        if c.threads > l.maxThreads { return "\(c.threads) threads > \(l.maxThreads)" }
        return nil
    }

    /// Whether GemmDispatch.choose consults the table at this (shape, M) — only then is tuning it useful.
    public static func tunable(_ s: GemmShape, m: Int, limits l: Limits) -> Bool {
        formatTunable(s, m: m, limits: l) ?? (m <= 16 || (m >= 64 && l.hopper && !s.outF32))
    }

    /// Every valid candidate (the default first, so it is verified first and becomes the trusted output), and
    /// every filtered one with its reason.
    public static func candidates(_ s: GemmShape, m: Int, limits l: Limits,
                                  splitK: [GemmSplitK.Config] = GemmSplitK.configs, stream: [GemmStream.Config] = GemmStream.configs,
                                  swapAB: [GemmSwapAB.Config] = GemmSwapAB.configs, hopper: [GemmHopper.Config] = GemmHopper.configs)
        -> (valid: [GemmCandidate], filtered: [(GemmCandidate, String)]) {
        if let other = formatCandidates(s, m: m, limits: l) { return other }   // gemm_lut, gemm_fp8, gemm_fp8_hopper
        var valid: [GemmCandidate] = [], filtered: [(GemmCandidate, String)] = []
        for c in splitK {
            for sp in splits {
                let cand = GemmCandidate(.splitK(c), split: sp)
                if let why = rule(c, split: sp, shape: s, m: m, limits: l) { filtered.append((cand, why)) } else { valid.append(cand) }
            }
        }
        for c in stream {
            let cand = GemmCandidate(.stream(c))
            if let why = rule(c, shape: s, m: m, limits: l) { filtered.append((cand, why)) } else { valid.append(cand) }
        }
        for c in swapAB {
            for sp in splits {
                let cand = GemmCandidate(.swapAB(c), split: sp)
                if let why = rule(c, split: sp, shape: s, m: m, limits: l) { filtered.append((cand, why)) } else { valid.append(cand) }
            }
        }
        for c in hopper {
            let cand = GemmCandidate(.hopper(c))
            if let why = rule(c, shape: s, m: m, limits: l) { filtered.append((cand, why)) } else { valid.append(cand) }
        }
        let d = defaultCandidate(s, m: m, limits: l)
        if let i = valid.firstIndex(of: d) { valid.insert(valid.remove(at: i), at: 0) }
        return (valid, filtered)
    }

    /// What GemmDispatch.choose runs without a table entry (its documented defaults).
    public static func defaultCandidate(_ s: GemmShape, m: Int, limits l: Limits) -> GemmCandidate {
        if let other = formatDefault(s, m: m, limits: l) { return other }
        if m >= 64, l.hopper, !s.outF32 { return GemmCandidate(.hopper(GemmHopper.defaultConfig(m: m, n: s.n))) }
        return GemmCandidate(.splitK(GemmSplitK.defaultConfig(m: min(m, 16))))
    }
}

/// The fp32 reference on a sample of outputs, and the bf16-suited comparisons every candidate must pass.
public struct GemmReference: Sendable {
    /// Sampled output rows (indices into N) and tokens (indices into M).
    public var rows: [Int]
    public var tokens: [Int]
    /// values[t * rows.count + r] = Σ_k x[tokens[t], k] · w[rows[r], k], accumulated in Double.
    public var values: [Float]

    /// Rows: the first and last 16 (tile edges, the tail block) and `random` more; tokens: every one when M ≤ 16,
    /// else the first 8, each bucket's last and middle row, and 16 random.
    public static func sample(n: Int, maxM: Int, ms: [Int], random: Int = 96, seed: UInt64 = 11) -> (rows: [Int], tokens: [Int]) {
        var rng = SplitMix64(seed: seed)
        var rows = Set((0..<min(16, n)).map { $0 } + (max(0, n - 16)..<n).map { $0 })
        for _ in 0..<random { rows.insert(Int(rng.next() % UInt64(n))) }
        var tokens: Set<Int>
        if maxM <= 16 { tokens = Set(0..<maxM) } else {
            tokens = Set(0..<8)
            for m in ms where m <= maxM { tokens.insert(m - 1); tokens.insert(m / 2) }
            for _ in 0..<16 { tokens.insert(Int(rng.next() % UInt64(maxM))) }
        }
        return (rows.sorted(), tokens.sorted())
    }

    /// x: [maxM, k] bf16 bits; wRows: the sampled rows of W, [rows.count, k] bf16 bits.
    public init(x: [UInt16], wRows: [UInt16], k: Int, rows: [Int], tokens: [Int]) {
        self.init(tokenValues: tokens.map { t in (0..<k).map { bf16ToFloat(x[t * k + $0]) } },
                  weightRows: (0..<rows.count).map { r in (0..<k).map { bf16ToFloat(wRows[r * k + $0]) } }, rows: rows, tokens: tokens)
    }

    /// The values the kernel multiplies, whatever the formats: tokenValues[t] = row tokens[t] of x, weightRows[r] = row
    /// rows[r] of W (each [k]; dequantized exactly as the kernel's numerics define them, e.g. FP8 code × scale).
    public init(tokenValues xf: [[Float]], weightRows: [[Float]], rows: [Int], tokens: [Int]) {
        precondition(xf.count == tokens.count && weightRows.count == rows.count)
        self.rows = rows; self.tokens = tokens
        var v = [Float](repeating: 0, count: rows.count * tokens.count)
        let k = weightRows.first?.count ?? 0
        for r in 0..<rows.count {
            let w = weightRows[r]
            for (ti, xr) in xf.enumerated() {
                var acc = 0.0
                for i in 0..<k { acc += Double(xr[i]) * Double(w[i]) }
                v[ti * rows.count + r] = Float(acc)
            }
        }
        values = v
    }
    public init(rows: [Int], tokens: [Int], values: [Float]) { self.rows = rows; self.tokens = tokens; self.values = values }
}

public enum GemmCheck {
    /// Relative bound: bf16 output rounding is ≤ 2⁻⁹ relative; 2⁻⁷ leaves room for fp32 summation order, while a
    /// wrong tile, split or tail (errors of the order of the values themselves) is far outside it.
    public static let relative: Float = 1.0 / 128
    /// Absolute floor, as a fraction of the reference's RMS, for outputs near zero.
    public static let absolute: Float = 1.0 / 256

    /// Checks `got` ([m, n] row-major, already in fp32) against the sampled reference (tokens < m only), and every
    /// element for NaN/Inf. Returns nil when it passes, else a sentence naming the first bad element.
    public static func check(_ got: [Float], m: Int, n: Int, reference ref: GemmReference) -> String? {
        precondition(got.count >= m * n)
        for i in 0..<(m * n) where !got[i].isFinite { return "y[\(i / n), \(i % n)] = \(got[i]) (not finite)" }
        var sq = 0.0, cnt = 0
        for (ti, t) in ref.tokens.enumerated() where t < m {
            for r in 0..<ref.rows.count { let v = Double(ref.values[ti * ref.rows.count + r]); sq += v * v; cnt += 1 }
        }
        let floor = absolute * Float((sq / Double(max(1, cnt))).squareRoot())
        var bad = 0, first: String?
        for (ti, t) in ref.tokens.enumerated() where t < m {
            for (ri, row) in ref.rows.enumerated() {
                let e = ref.values[ti * ref.rows.count + ri], g = got[t * n + row]
                if abs(g - e) > relative * abs(e) + floor {
                    bad += 1
                    if first == nil { first = "y[\(t), \(row)] = \(g), reference \(e)" }
                }
            }
        }
        return first.map { "\($0) (\(bad) of \(cnt) sampled outputs off)" }
    }

    /// Every element of `got` against a trusted GPU output of the same shape (both rounded the same way).
    public static func compare(_ got: [Float], trusted: [Float], count: Int) -> String? {
        var sq = 0.0
        for i in 0..<count { sq += Double(trusted[i]) * Double(trusted[i]) }
        let floor = absolute * Float((sq / Double(max(1, count))).squareRoot())
        var bad = 0, first: String?
        for i in 0..<count {
            let a = got[i], b = trusted[i]
            if !a.isFinite || abs(a - b) > relative * max(abs(a), abs(b)) + floor {
                bad += 1
                if first == nil { first = "element \(i) = \(a), trusted output \(b)" }
            }
        }
        return first.map { "\($0) (\(bad) of \(count) differ from the default kernel's verified output)" }
    }
}

/// Times every valid candidate of every (shape, M) on the GPU and records the verified winners.
public final class GemmTuner {
    public struct Row {
        public var shape: GemmShape
        public var m: Int
        public var candidates: Int
        public var rejected: [(String, String)]
        public var defaultName: String
        public var defaultMicroseconds: Double?
        public var winner: GemmCandidate?
        public var winnerMicroseconds: Double?
        /// Bytes one call moves at least: the weights once, x and y once (as `kiln bench kernels` counts them for
        /// lookup-table and FP8 weights: codes, scales as the kernel reads them, the activations in the kernel's format).
        public var bytes: Double {
            if let l = shape.lutFormat { return Double(EngineBench.lutBytes(n: shape.n, k: shape.k, m: m, format: l)) }
            if shape.isFP8 { return Double(EngineBench.fp8Bytes(n: shape.n, k: shape.k, m: m)) }
            return Double(shape.weightBytes + 2 * m * shape.k + m * shape.n * (shape.outF32 ? 4 : 2))
        }
    }

    let library: KernelLibrary
    let ctx: Context
    let stream: GPUStream
    let dispatch: GemmDispatch
    let rand: RandomInit
    public let limits: GemmSearch.Limits
    /// Samples per candidate (the median is taken); each sample times one replay of a graph of `batch` launches.
    public var runs = 20
    public var batch = 10
    /// Weight copies rotated while timing: at least 3 and more than `rotateBytes` in all (the H200's L2 is 60 MB).
    public var rotateBytes = 160 << 20
    /// Candidates finished so far over every `tune` call (the progress bar's count).
    public private(set) var done = 0
    let log: (String) -> Void

    /// `pdl`: time candidates with programmatic dependent launch, as the engine launches them (GPUEngineOptions).
    public init(library: KernelLibrary, shapes: [GemmShape], pdl: Bool = true, log: @escaping (String) -> Void) throws {
        guard let c = library.context else { throw KilnError("the tuner needs a GPU context") }
        self.library = library; ctx = c; self.log = log
        stream = try GPUStream(c)
        stream.pdl = pdl
        let maxN = shapes.map(\.n).max() ?? 1
        dispatch = try GemmDispatch(library: library, tune: nil, maxN: maxN, stream: stream, log: log)
        rand = try RandomInit(library)
        limits = GemmSearch.Limits(hopper: c.info.computeCapability.major == 9, sharedOptIn: c.info.sharedMemoryPerBlockOptIn,
                                   maxThreads: c.info.maxThreadsPerBlock, maxSplit: GemmDispatch.maxSplit,
                                   workspaceFloats: GemmSplitK.workspaceFloats(m: 16, n: maxN, split: GemmDispatch.maxSplit),
                                   multiprocessors: c.info.multiprocessors, sharedPerSM: c.info.sharedMemoryPerMultiprocessor,
                                   e4m3: c.info.hasE4M3TensorCores)
    }

    /// The (shape, M) pairs worth tuning, and the candidate count of each (for the progress bar).
    public func plan(_ shapes: [GemmShape], ms: [Int]) -> [(GemmShape, Int, Int)] {
        shapes.flatMap { s in
            ms.filter { GemmSearch.tunable(s, m: $0, limits: limits) }.map { (s, $0, GemmSearch.candidates(s, m: $0, limits: limits).valid.count) }
        }
    }

    func weightCopies(_ s: GemmShape) throws -> Int {
        let wanted = max(3, (rotateBytes + s.weightBytes - 1) / s.weightBytes)
        let (free, _) = try ctx.memoryInfo()
        let fit = max(1, (free - (2 << 30)) / s.weightBytes)
        if fit < min(wanted, 3) { log("note: only \(fit) copies of \(s) fit in GPU memory; timings may be served partly from L2") }
        return min(wanted, fit)
    }

    /// Tunes `ms` (bucket values) for every shape, recording winners in `table`. Returns one row per (shape, M).
    public func tune(_ shapes: [GemmShape], ms: [Int], into table: inout TuneTable, progress: ProgressBar?) throws -> [Row] {
        let plan = plan(shapes, ms: ms)
        for s in shapes {
            if let why = GemmTuner.unsupported(s) { throw KilnError("cannot tune \(s): \(why)") }
        }
        var rows: [Row] = []
        for s in shapes {
            let mine = plan.filter { $0.0 == s }
            guard let maxM = mine.map(\.1).max() else { continue }
            let work = try workload(s, maxM: maxM, ms: mine.map(\.1))
            for (_, m, _) in mine { rows.append(try measure(s, m: m, work: work, into: &table, progress: progress)) }
        }
        return rows
    }

    /// Why no GEMM kernel family tunes `s`'s weight format, or nil: bf16, FP8 128×128 and the lookup-table formats gemm_lut reads.
    public static func unsupported(_ s: GemmShape) -> String? {
        if GemmDispatch.kernelFormats.contains(s.format) { return nil }
        if case .lut = s.format { return GemmLUT.unsupported(s.format, rows: s.n, cols: s.k) }
        return "no GEMM kernel reads \(s.format.name) weights yet (kernels exist for "
            + GemmDispatch.kernelFormats.map(\.name).sorted().joined(separator: ", ") + " and the lookup-table formats)"
    }

    /// One shape's weights on the GPU, ready to run any of its candidates: `copies` weight copies rotated while timing,
    /// the CPU reference on sampled outputs of copy 0 (the copy every verification launch reads), and the launch of a
    /// candidate on copy `copy` at m tokens into y ([m, n], fp32 when the shape's output is, else bf16) through
    /// GemmDispatch, the engine's own launch path. Buffers live as long as the closure.
    struct Workload {
        var copies: Int
        var reference: GemmReference
        var launch: (_ candidate: GemmCandidate, _ copy: Int, _ m: Int, _ y: CUdeviceptr) throws -> Void
    }

    func workload(_ s: GemmShape, maxM: Int, ms: [Int]) throws -> Workload {
        if let l = s.lutFormat { return try lutWorkload(s, format: l, maxM: maxM, ms: ms) }
        if s.isFP8 { return try fp8Workload(s, maxM: maxM, ms: ms) }
        return try bf16Workload(s, maxM: maxM, ms: ms)
    }

    /// bf16 weights: random values on the GPU (±0.035), activations ±1.
    func bf16Workload(_ s: GemmShape, maxM: Int, ms: [Int]) throws -> Workload {
        let copies = try weightCopies(s)
        let ws = try (0..<copies).map { i -> DeviceBuffer<UInt16> in
            let b = try DeviceBuffer<UInt16>(ctx, count: s.n * s.k)
            try rand(y: b.address, count: s.n * s.k, seed: UInt64(1000 + i), center: 0, halfWidth: 0.035, minMag: 0.005, stream: stream)
            return b
        }
        let x = try activations(s, maxM: maxM)
        // The CPU reference: sampled rows of weight copy 0.
        let (sr, st) = GemmReference.sample(n: s.n, maxM: maxM, ms: ms)
        let gathered = try gatherRows(ws[0].address, rows: sr, rowBytes: 2 * s.k)
        let ref = GemmReference(x: try x.download(), wRows: gathered.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) },
                                k: s.k, rows: sr, tokens: st)
        return Workload(copies: copies, reference: ref) { c, copy, m, y in
            try self.dispatch(s.op, x: x.address, w: ws[copy].address, y: y, m: m, n: s.n, k: s.k, outF32: s.outF32, choice: c, stream: self.stream)
        }
    }

    /// bf16 activations [maxM, k], random ±1 (never below 0.01 in magnitude).
    func activations(_ s: GemmShape, maxM: Int) throws -> DeviceBuffer<UInt16> {
        let x = try DeviceBuffer<UInt16>(ctx, count: maxM * s.k)
        try rand(y: x.address, count: maxM * s.k, seed: 7, center: 0, halfWidth: 1, minMag: 0.01, stream: stream)
        return x
    }

    /// The bytes of rows `rows` (each `rowBytes` long) of the row-major matrix at `base`, downloaded.
    func gatherRows(_ base: CUdeviceptr, rows: [Int], rowBytes: Int) throws -> [UInt8] {
        let gathered = try DeviceBuffer<UInt8>(ctx, count: rows.count * rowBytes)
        for (i, r) in rows.enumerated() { try stream.copy(from: base + UInt64(r * rowBytes), to: gathered.address(at: i * rowBytes), bytes: rowBytes) }
        try stream.synchronize()
        return try gathered.download()
    }

    /// Verifies, then times, every valid candidate of (s, m) on `work`; records the winner in `table`.
    func measure(_ s: GemmShape, m: Int, work: Workload, into table: inout TuneTable, progress: ProgressBar?) throws -> Row {
        let yBytes = m * s.n * (s.outF32 ? 4 : 2)
        let y = try DeviceBuffer<UInt8>(ctx, count: yBytes)
        let (valid, _) = GemmSearch.candidates(s, m: m, limits: limits)
        let def = GemmSearch.defaultCandidate(s, m: m, limits: limits)
        var trusted: [Float]? = nil
        func output() throws -> [Float] {
            try stream.synchronize()
            let raw = try y.download()
            return raw.withUnsafeBytes { p -> [Float] in
                s.outF32 ? Array(p.bindMemory(to: Float.self)) : p.bindMemory(to: UInt16.self).map(bf16ToFloat)
            }
        }
        let base = done
        let result = Autotuner.select(valid, verify: { c -> String? in
            try y.fill(byte: 0xFF, stream: self.stream)   // NaN everywhere: a kernel that skips outputs fails
            try work.launch(c, 0, m, y.address)
            let got = try output()
            if let bad = GemmCheck.check(got, m: m, n: s.n, reference: work.reference) { return bad }
            if let t = trusted { return GemmCheck.compare(got, trusted: t, count: m * s.n) }
            if c == def { trusted = got }
            return nil
        }, time: { c -> Double in
            var i = 0
            // Timed as the decode step runs it: `batch` calls captured in one CUDA graph (launch cost ~0.6 µs per
            // call instead of ~2.7), so instances are ranked by what they cost inside the engine's graph.
            let ms = try GPUBench.graphMedian(self.stream, runs: max(20, self.runs), batch: self.batch) {
                try work.launch(c, i % work.copies, m, y.address)
                i += 1
            }
            return ms * 1000
        }, progress: { i, _ in progress?.update(done: base + i, note: "\(s.op) M=\(m)") })
        done += valid.count
        let defOutcome = result.all.first { $0.candidate == def }
        if let w = result.winner {
            table.record(TuneEntry(op: s.op, format: s.format, n: s.n, k: s.k, mBucket: m, config: w.candidate.name, split: w.candidate.split,
                                   microseconds: w.microseconds!, defaultMicroseconds: defOutcome?.microseconds ?? .nan))
        } else {
            log("warning: no candidate verified for \(s) M=\(m); the default stays in use")
        }
        let rejected = result.all.filter { $0.rejection != nil }.map { ($0.candidate.description, $0.rejection!) }
        for (c, why) in rejected { log("rejected \(c) for \(s) M=\(m): \(why)") }
        return Row(shape: s, m: m, candidates: valid.count, rejected: rejected, defaultName: def.description,
                   defaultMicroseconds: defOutcome?.microseconds, winner: result.winner?.candidate, winnerMicroseconds: result.winner?.microseconds)
    }

    /// The closing table: per shape and M the default's time, the winner's, the speed-up and % of copy bandwidth.
    public static func report(_ rows: [Row], copyGBps: Double) -> [String] {
        var out = ["| op | N | K | M | default µs | winner | winner µs | speed-up | winner % copy BW |",
                   "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
        func f(_ v: Double?, _ fmt: String) -> String { v.map { String(format: fmt, $0) } ?? "—" }
        for r in rows {
            let speedup = (r.defaultMicroseconds != nil && r.winnerMicroseconds != nil) ? r.defaultMicroseconds! / r.winnerMicroseconds! : nil
            let pct = r.winnerMicroseconds.map { 100 * r.bytes / ($0 * 1e-6) / 1e9 / copyGBps }
            out.append("| \(r.shape.op) | \(r.shape.n) | \(r.shape.k) | \(r.m) | \(f(r.defaultMicroseconds, "%.2f")) | "
                       + "\(r.winner?.description ?? "none verified") | \(f(r.winnerMicroseconds, "%.2f")) | \(f(speedup, "%.2f×")) | \(f(pct, "%.0f%%")) |")
        }
        return out
    }
}

/// The engine's side: load the table at start, or tune what is missing first (`kiln run --tune`).
public enum TuneSession {
    /// Loads the table for the running GPU (`path`, else $KILN_HOME/tune/<gpu>.json). A missing or mismatched table
    /// gives an empty table with the current key (logged once, with the reason), so GemmDispatch names each untuned shape.
    public static func load(context: Context, path: String?, log: (String) -> Void) throws -> (table: TuneTable, path: String) {
        let key = try TuneKey.current(context)
        let p = path ?? TuneTable.defaultPath(gpuName: key.gpuName)
        switch try TuneTable.load(path: p, expecting: key) {
        case .loaded(let t): return (t, p)
        case .missing:
            log("note: no tuning table at \(p); default kernels are used (run `kiln tune` to measure this GPU)")
        case .stale(let why):
            log("note: ignoring the tuning table \(p): it was measured with \(why); run `kiln tune` to re-measure")
        }
        return (TuneTable(key: key), p)
    }

    /// (shape, M) pairs the dispatch would consult that have no entry.
    public static func missing(_ table: TuneTable, shapes: [GemmShape], ms: [Int], limits: GemmSearch.Limits) -> [(GemmShape, Int)] {
        shapes.flatMap { s in
            ms.filter { GemmSearch.tunable(s, m: $0, limits: limits) && table.lookup(op: s.op, format: s.format, n: s.n, k: s.k, m: $0) == nil }.map { (s, $0) }
        }
    }

    /// `kiln run --tune`: loads the table, tunes the shapes of `config` that have no entry at `ms`, saves, returns it.
    /// `weights`: the linear layers' format (`--dummy-weights … --weights`): its GEMMs and the bf16 logits.
    public static func loadOrTune(config: ModelConfig, weights: DummyLinearFormat = .bf16, library: KernelLibrary, path: String?,
                                  ms: [Int] = [1, 2, 4, 8, 16], tuneMissing: Bool, pdl: Bool = true,
                                  log: @escaping (String) -> Void) throws -> TuneTable {
        guard let ctx = library.context else { throw KilnError("tuning needs a GPU context") }
        var (table, p) = try load(context: ctx, path: path, log: log)
        guard tuneMissing else { return table }
        let shapes = weights == .bf16 ? GemmShape.of(config) : GemmShape.of(config).filter(\.outF32) + GemmShape.of(config, weights: weights)
        let tuner = try GemmTuner(library: library, shapes: shapes, pdl: pdl, log: log)
        let todo = missing(table, shapes: shapes, ms: ms.map(MBucket.bucket(for:)), limits: tuner.limits)
        guard !todo.isEmpty else { return table }
        log("tuning \(todo.count) GEMM shape/M pairs with no entry…")
        let bar = ProgressBar(total: todo.reduce(0) { $0 + GemmSearch.candidates($1.0, m: $1.1, limits: tuner.limits).valid.count })
        for s in Set(todo.map(\.0)) {
            _ = try tuner.tune([s], ms: todo.filter { $0.0 == s }.map(\.1), into: &table, progress: bar)
        }
        bar.finish()
        try table.save(path: p)
        log("saved \(p)")
        return table
    }
}
