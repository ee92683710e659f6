import KilnCore
import KilnGPU

/// gemm_splitk.cu: the decode GEMM Y[M,N] = X[M,K]·W[N,K]^T for 1 ≤ M ≤ 16, bf16 in, fp32
/// accumulation, bf16 or fp32 out. Memory-bound: each call streams W once (docs/perf-notes-gemm.md).
public struct GemmSplitK {
    public static let file = "gemm_splitk.cu"

    /// One row of KILN_GEMM_SPLITK_INSTANCES: X(NT, WARPS_N, WARPS_K, TILES, UNROLL, STAGES), or, with
    /// `whole`, of KILN_GEMM_SPLITK_WHOLE_INSTANCES: X(NT, WARPS_K, UNROLL, MINB) (gemm_whole: the STAGES = 1
    /// schedule without tail or split-K code, for N % 16 == 0 and K % (32·UNROLL) == 0; MINB is its
    /// `__launch_bounds__` minimum of blocks per SM).
    public struct Config: Hashable, Sendable, CustomStringConvertible {
        public var nt, wn, wk, tiles, unroll, stages: Int
        public var whole = false
        public var minBlocks = 1
        public var name: String {
            whole ? "kiln_gemm_splitk_whole_nt\(nt)_wk\(wk)_u\(unroll)_b\(minBlocks)"
                  : "kiln_gemm_splitk_nt\(nt)_wn\(wn)_wk\(wk)_t\(tiles)_u\(unroll)_s\(stages)"
        }
        public var description: String { name }
        public var maxM: Int { 8 * nt }
        public var threads: Int { 32 * wn * wk }
        public var rowsPerBlock: Int { 16 * tiles * wn }
        public func gridX(n: Int) -> Int { (n + rowsPerBlock - 1) / rowsPerBlock }
        /// Why this instance cannot compute an N×K product with `split` (nil: it can). The general
        /// kernel serves any N, K % 8 == 0 and any split; the whole-block one only its exact tiling.
        public func unsupported(n: Int, k: Int, split: Int) -> String? {
            guard whole else { return nil }
            if n % 16 != 0 { return "\(name) needs N % 16 == 0 (N = \(n))" }
            if k % (32 * unroll) != 0 { return "\(name) needs K % \(32 * unroll) == 0 (K = \(k))" }
            if split != 1 { return "\(name) has no split-K (split \(split))" }
            return nil
        }
    }

    public static let configs: [Config] =
        InstanceTable.rows(file: file, macro: "KILN_GEMM_SPLITK_INSTANCES").compactMap { r in
            r.count == 6 ? Config(nt: r[0], wn: r[1], wk: r[2], tiles: r[3], unroll: r[4], stages: r[5]) : nil
        } + InstanceTable.rows(file: file, macro: "KILN_GEMM_SPLITK_WHOLE_INSTANCES").compactMap { r in
            r.count == 4 ? Config(nt: r[0], wn: 1, wk: r[1], tiles: 1, unroll: r[2], stages: 1, whole: true, minBlocks: r[3]) : nil
        }
    public static var instances: [KernelInstance] { configs.map { KernelInstance(file, $0.name, hot: true) } }
    public static func config(named name: String) -> Config? { configs.first { $0.name == name } }

    /// Default when no tuning entry exists (docs/perf-notes-gemm.md, v1/v2 winners): wn1_wk4_t1_u8 on
    /// every shape at M ≤ 8 (best or within a few % everywhere, gate_up included), the NT=2 twin above.
    public static func defaultConfig(m: Int) -> Config {
        let nt = m <= 8 ? 1 : 2
        return configs.first { !$0.whole && $0.nt == nt && $0.wn == 1 && $0.wk == 4 && $0.tiles == 1 && $0.unroll == 8 && $0.stages == 0 }
            ?? configs.first { $0.nt == nt }!
    }

    /// What a decode GEMM (gemm_splitk, gemm_stream, gemm_swapab) writes: its `epi` parameter, `kiln::Epilogue` in
    /// common/kiln.cuh with the same case names and raw values (ConformanceTests compares them with the header text).
    public enum Epilogue: Int32, Sendable, CaseIterable {
        /// Y bf16 [M, N].
        case bf16 = 0
        /// Y fp32 [M, N].
        case f32 = 1
        /// W = gate_up with rows interleaved per 16-row tile (GPUWeights.interleaveGateUp; N % 16 == 0):
        /// Y bf16 [M, N/2] = silu(gate)·up, gate and up rounded to bf16 first (as GEMM → swiglu.cu).
        case swiglu = 2
        public func outputColumns(n: Int) -> Int { self == .swiglu ? n / 2 : n }
        public var outputBytes: Int { self == .f32 ? 4 : 2 }
    }

    // Mirrors the C parameters (x, w, y, ws, cnt, M, N, K, epi).
    struct Params { var x, w, y, ws, cnt: UInt64; var m, n, k, epi: Int32 }
    static let offsets: [Int] = [\Params.x, \Params.w, \Params.y, \Params.ws, \Params.cnt, \Params.m, \Params.n, \Params.k, \Params.epi]
        .map { MemoryLayout<Params>.offset(of: $0)! }

    public let config: Config
    let kernel: Kernel
    public init(_ library: KernelLibrary, config: Config) throws {
        self.config = config
        kernel = try library.kernel(GemmSplitK.file, config.name)
    }

    /// fp32 workspace elements a call with `split` > 1 needs (none for split 1).
    public static func workspaceFloats(m: Int, n: Int, split: Int) -> Int { split > 1 ? split * m * n : 0 }

    /// x: [m, k] bf16; w: [n, k] bf16; y: [m, n] (fp32 if `outF32`), or [m, n/2] bf16 for `epilogue` .swiglu.
    /// With split > 1, `workspace` holds ≥ workspaceFloats floats and `counters` ≥ config.gridX(n) zeroed UInt32 (left zero).
    public func callAsFunction(x: CUdeviceptr, w: CUdeviceptr, y: CUdeviceptr, m: Int, n: Int, k: Int, split: Int = 1,
                               workspace: CUdeviceptr = 0, counters: CUdeviceptr = 0, outF32: Bool = false,
                               epilogue: Epilogue? = nil, stream: GPUStream) throws {
        let epi = epilogue ?? (outF32 ? .f32 : .bf16)
        guard epi != .swiglu || n % 16 == 0 else { throw KilnError("gemm_splitk SwiGLU epilogue: N = \(n) must be a multiple of 16") }
        guard m >= 1, m <= config.maxM else { throw KilnError("gemm_splitk \(config.name): M = \(m) outside 1…\(config.maxM)") }
        guard k % 8 == 0, k > 0, n > 0 else { throw KilnError("gemm_splitk: K = \(k) must be a positive multiple of 8 (N = \(n))") }
        guard split >= 1, split == 1 || (workspace != 0 && counters != 0) else { throw KilnError("gemm_splitk: split \(split) needs workspace and counters") }
        if let why = config.unsupported(n: n, k: k, split: split) { throw KilnError("gemm_splitk: \(why)") }
        try kernel.launch(grid: (config.gridX(n: n), split, 1), block: (config.threads, 1, 1), stream: stream, pdl: stream.pdl,
                          fields: Params(x: x, w: w, y: y, ws: workspace, cnt: counters, m: Int32(m), n: Int32(n), k: Int32(k), epi: epi.rawValue),
                          offsets: GemmSplitK.offsets)
    }
}
