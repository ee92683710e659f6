import KilnCore
import KilnKernels
import KilnModels
import KilnCUDA

extension GemmShape {
    /// The GEMMs `kiln tune --weights FORMAT` measures: bf16, every shape (`of`); a lookup-table format or FP8, the
    /// linear layers on that format (qkv, o, gate_up, down; the logits stay bf16 in the engine, as in
    /// `--dummy-weights … --weights …`, so `of` tunes them).
    public static func of(_ c: ModelConfig, weights: DummyLinearFormat) -> [GemmShape] {
        let linear = EngineBench.gemmShapes(c).filter { $0.0 != "logits" }
        switch weights {
        case .bf16: return of(c)
        case .fp8: return linear.map { GemmShape(op: $0.0, format: GPUMatrix.fp8Format, n: $0.1, k: $0.2) }
        case .lut(let l): return linear.map { GemmShape(op: $0.0, format: .lut(l), n: $0.1, k: $0.2) }
        }
    }

    /// The lookup-table format of a gemm_lut shape, nil for the others.
    var lutFormat: WeightFormat.LUTFormat? { if case .lut(let l) = format { return l } else { return nil } }
    var isFP8: Bool { format == GPUMatrix.fp8Format }
}

/// Candidates and validity rules of the weight-format GEMMs (pure; tested without a GPU), as GemmSearch's for bf16:
/// the rows of the `.cu` instance tables × split counts, minus what a rule excludes before anything launches.
///   gemm_lut:        M ≤ 16 (the dispatch's range) and ≤ 8·NT; the instance's code width and offsets are the format's
///                    (a 3-bit or symmetric instance cannot read lut4 affine codes); the format's group and K
///                    (GemmLUT.unsupported); threads ≤ the block limit; split 1…8 (the dispatch's workspace), no more
///                    splits than 64-column chunks of K, split·M·N ≤ the workspace.
///   gemm_fp8:        e4m3 tensor cores (sm_89+); M ≤ 16 and ≤ 8·NT; K a positive multiple of 16; threads ≤ the block
///                    limit; split 1…8, no more splits than 128-column blocks of K, split·M·N ≤ the workspace.
///   gemm_fp8_hopper: a Hopper GPU; M ≥ 64 (as gemm_hopper: the prefill buckets the tuner fills); K a multiple of 16;
///                    shared memory ≤ the opt-in limit; threads ≤ the block limit; split 1.
///   gemm_lut_hopper: a Hopper GPU; M ≥ 64; the instance's code width and offsets are the format's; the format's group
///                    and K (GemmLUT.unsupported); shared memory ≤ the opt-in limit; split 1.
extension GemmSearch {
    public static func rule(_ c: GemmLUT.Config, split: Int, shape s: GemmShape, m: Int, limits l: Limits) -> String? {
        guard let f = s.lutFormat else { return "\(s.format.name) is not a lookup-table format" }
        if c.bits != f.bits { return "\(c.bits)-bit instance for \(f.bits)-bit codes" }
        if c.affine != f.hasOffsets { return c.affine ? "affine instance for codes without offsets" : "symmetric instance for codes with offsets" }
        if m > 16 { return "gemm_lut serves M ≤ 16" }
        if m > c.maxM { return "M \(m) > \(c.maxM) (NT=\(c.nt))" }
        if let why = GemmLUT.unsupported(s.format, rows: s.n, cols: s.k) { return why }
        if c.threads > l.maxThreads { return "\(c.threads) threads > \(l.maxThreads)" }
        return splitRule(split, chunks: (s.k + GemmLUT.chunkCols - 1) / GemmLUT.chunkCols, chunkName: "64-column chunks",
                         workspace: GemmLUT.workspaceFloats(m: m, n: s.n, split: split), limits: l)
    }

    public static func rule(_ c: GemmFP8.Config, split: Int, shape s: GemmShape, m: Int, limits l: Limits) -> String? {
        if !s.isFP8 { return "\(s.format.name) is not FP8" }
        if !l.e4m3 { return "gemm_fp8 needs e4m3 tensor cores (sm_89+)" }
        if m > 16 { return "gemm_fp8 serves M ≤ 16" }
        if m > c.maxM { return "M \(m) > \(c.maxM) (NT=\(c.nt))" }
        if s.k <= 0 || s.k % 16 != 0 { return "K \(s.k) not a positive multiple of 16" }
        if c.threads > l.maxThreads { return "\(c.threads) threads > \(l.maxThreads)" }
        return splitRule(split, chunks: (s.k + GemmFP8.block - 1) / GemmFP8.block, chunkName: "128-column blocks",
                         workspace: GemmFP8.workspaceFloats(m: m, n: s.n, split: split), limits: l)
    }

    public static func rule(_ c: GemmFP8Hopper.Config, shape s: GemmShape, m: Int, limits l: Limits) -> String? {
        if !s.isFP8 { return "\(s.format.name) is not FP8" }
        if !l.hopper { return "gemm_fp8_hopper needs sm_90a" }
        if m < 64 { return "gemm_fp8_hopper is tuned for M ≥ 64" }
        if s.k < 16 || s.k % 16 != 0 { return "K \(s.k) not a multiple of 16" }
        if c.sharedBytes > l.sharedOptIn { return "shared memory \(c.sharedBytes) B > \(l.sharedOptIn) B" }
        if c.threads > l.maxThreads { return "\(c.threads) threads > \(l.maxThreads)" }
        return nil
    }

    public static func rule(_ c: GemmLUTHopper.Config, shape s: GemmShape, m: Int, limits l: Limits) -> String? {
        guard let f = s.lutFormat else { return "\(s.format.name) is not a lookup-table format" }
        if c.bits != f.bits { return "\(c.bits)-bit instance for \(f.bits)-bit codes" }
        if c.affine != f.hasOffsets { return c.affine ? "affine instance for codes without offsets" : "symmetric instance for codes with offsets" }
        if !l.hopper { return "gemm_lut_hopper needs sm_90a" }
        if m < 64 { return "gemm_lut_hopper is tuned for M ≥ 64" }
        if let why = GemmLUT.unsupported(s.format, rows: s.n, cols: s.k) { return why }
        if c.sharedBytes > l.sharedOptIn { return "shared memory \(c.sharedBytes) B > \(l.sharedOptIn) B" }
        if c.threads > l.maxThreads { return "\(c.threads) threads > \(l.maxThreads)" }
        return nil
    }

    /// The split-K rules the decode families share: 1…maxSplit, at most one split per K chunk, the workspace.
    static func splitRule(_ split: Int, chunks: Int, chunkName: String, workspace: Int, limits l: Limits) -> String? {
        if split < 1 || split > l.maxSplit { return "split \(split) outside 1…\(l.maxSplit)" }
        if split > chunks { return "split \(split) > \(chunks) \(chunkName) of K" }
        if workspace > l.workspaceFloats { return "split \(split) needs \(workspace) workspace floats" }
        return nil
    }

    /// Whether the dispatch consults the table for a weight-format shape at M: gemm_lut at M ≤ 16; FP8 at M ≤ 16
    /// (gemm_fp8, e4m3 tensor cores) and M ≥ 64 on Hopper (gemm_fp8_hopper). Nil for bf16 shapes.
    static func formatTunable(_ s: GemmShape, m: Int, limits l: Limits) -> Bool? {
        if s.lutFormat != nil { return m <= 16 || (m >= 64 && l.hopper) }
        if s.isFP8 { return (m <= 16 && l.e4m3) || (m >= 64 && l.hopper) }
        return nil
    }

    /// What the dispatch runs for a weight-format shape without a table entry (chooseLUT / chooseFP8 /
    /// chooseFP8Prefill's defaults), nil for bf16 shapes.
    static func formatDefault(_ s: GemmShape, m: Int, limits l: Limits) -> GemmCandidate? {
        if let f = s.lutFormat {
            if m > 16, let c = GemmLUTHopper.defaultConfig(m: m, bits: f.bits, affine: f.hasOffsets) { return GemmCandidate(.lutHopper(c)) }
            let c = GemmLUT.defaultConfig(m: min(m, 16), affine: f.hasOffsets, bits: f.bits)
            return GemmCandidate(.lut(c), split: GemmLUT.defaultSplit(c, n: s.n, k: s.k, multiprocessors: l.multiprocessors, maxSplit: l.maxSplit))
        }
        guard s.isFP8 else { return nil }
        if m > 16 { return GemmCandidate(.fp8Hopper(GemmFP8Hopper.defaultConfig(m: m, n: s.n, multiprocessors: l.multiprocessors))) }
        return GemmCandidate(.fp8(GemmFP8.defaultConfig(m: m)))
    }

    /// Every candidate of a weight-format shape (valid ones, the default first, and the filtered ones with their
    /// reasons), nil for bf16 shapes. gemm_lut: every instance × splits (those of another width or offsets filtered) and
    /// gemm_lut_hopper's instances (M ≥ 64);
    /// FP8: gemm_fp8 × splits and gemm_fp8_hopper (each filtered outside its M range).
    static func formatCandidates(_ s: GemmShape, m: Int, limits l: Limits, lut: [GemmLUT.Config] = GemmLUT.configs,
                                 lutHopper: [GemmLUTHopper.Config] = GemmLUTHopper.configs,
                                 fp8: [GemmFP8.Config] = GemmFP8.configs, fp8Hopper: [GemmFP8Hopper.Config] = GemmFP8Hopper.configs)
        -> (valid: [GemmCandidate], filtered: [(GemmCandidate, String)])? {
        guard let d = formatDefault(s, m: m, limits: l) else { return nil }
        var all: [(GemmCandidate, String?)] = []
        if s.lutFormat != nil {
            for c in lut { for sp in splits { all.append((GemmCandidate(.lut(c), split: sp), rule(c, split: sp, shape: s, m: m, limits: l))) } }
            for c in lutHopper { all.append((GemmCandidate(.lutHopper(c)), rule(c, shape: s, m: m, limits: l))) }
        } else {
            for c in fp8 { for sp in splits { all.append((GemmCandidate(.fp8(c), split: sp), rule(c, split: sp, shape: s, m: m, limits: l))) } }
            for c in fp8Hopper { all.append((GemmCandidate(.fp8Hopper(c)), rule(c, shape: s, m: m, limits: l))) }
        }
        var valid = all.filter { $0.1 == nil }.map(\.0)
        if let i = valid.firstIndex(of: d) { valid.insert(valid.remove(at: i), at: 0) }
        return (valid, all.compactMap { c, why in why.map { (c, $0) } })
    }
}
