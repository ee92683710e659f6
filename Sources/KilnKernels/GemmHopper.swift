import KilnCore
import KilnGPU

/// gemm_hopper.cu: the prefill GEMM Y[M,N] = X[M,K]·W[N,K]^T (bf16, fp32 accumulation, bf16 out) on
/// Hopper wgmma + TMA, persistent and warp-specialised (docs/perf-notes-gemm-hopper.md). Meant for M ≥ 64.
public struct GemmHopper {
    public static let file = "gemm_hopper.cu"

    /// One row of KILN_GEMM_HOPPER_INSTANCES: X(BM, BN, BK, STAGES, CONSUMERS, CLUSTER).
    public struct Config: Hashable, Sendable, CustomStringConvertible {
        public var bm, bn, bk, stages, consumers, cluster: Int
        /// fp32 output (KILN_GEMM_HOPPER_F32_INSTANCES: the logits at M > 16) instead of bf16.
        public var outF32 = false
        public var name: String { "kiln_gemm_hopper_\(outF32 ? "f32_" : "")bm\(bm)_bn\(bn)_bk\(bk)_s\(stages)_c\(consumers)_cl\(cluster)" }
        public var description: String { name }
        public var threads: Int { 128 * (consumers + 1) }
        public var sharedBytes: Int { stages * (bm + bn) * bk * 2 + 1024 }
        public func tiles(m: Int, n: Int) -> Int { ((m + cluster * bm - 1) / (cluster * bm)) * ((n + bn - 1) / bn) }
    }

    public static let configs: [Config] = InstanceTable.rows(file: file, macro: "KILN_GEMM_HOPPER_INSTANCES").compactMap { r in
        r.count == 6 ? Config(bm: r[0], bn: r[1], bk: r[2], stages: r[3], consumers: r[4], cluster: r[5]) : nil
    }
    /// The fp32-output instances; not tuner candidates (the tuner's gemm_hopper shapes are bf16), chosen by
    /// `defaultF32Config`.
    public static let f32Configs: [Config] = InstanceTable.rows(file: file, macro: "KILN_GEMM_HOPPER_F32_INSTANCES").compactMap { r in
        r.count == 6 ? Config(bm: r[0], bn: r[1], bk: r[2], stages: r[3], consumers: r[4], cluster: r[5], outF32: true) : nil
    }
    public static var instances: [KernelInstance] { (configs + f32Configs).map { KernelInstance(file, $0.name, hot: false) } }
    public static func config(named name: String) -> Config? { configs.first { $0.name == name } }

    /// The fp32-output instance for M rows: 64-row tiles up to 128 rows (more tiles for the SMs), 128 beyond.
    public static func defaultF32Config(m: Int) -> Config {
        f32Configs.first { $0.bm == (m <= 128 ? 64 : 128) } ?? f32Configs[0]
    }

    /// Default when no tuning entry exists, from the v2 table of docs/perf-notes-gemm-hopper.md:
    /// M ≤ 128 → 64×128 (the only tile that fills the SMs); M ≤ 512 → 128×128 (best on o/down, ≥ 80% elsewhere);
    /// larger → 128×256 (best at M ≥ 1024 on 3 of 4 shapes). The cluster instance is never a default
    /// (its grid sizing is not measured yet).
    public static func defaultConfig(m: Int, n: Int) -> Config {
        func find(_ bm: Int, _ bn: Int) -> Config? { configs.first { $0.bm == bm && $0.bn == bn && $0.cluster == 1 } }
        if m <= 128 { return find(64, 128) ?? configs[0] }
        if m <= 512 { return find(128, 128) ?? configs[0] }
        return find(128, 256) ?? configs[0]
    }

    // Mirrors (tmap_x, tmap_w, y, M, N, K); the maps are 128 bytes each, passed by value.
    struct Params { var tx: TensorMap; var tw: TensorMap; var y: UInt64; var m, n, k: Int32 }
    static let offsets: [Int] = [MemoryLayout<Params>.offset(of: \Params.tx)!, MemoryLayout<Params>.offset(of: \Params.tw)!,
                                 MemoryLayout<Params>.offset(of: \Params.y)!, MemoryLayout<Params>.offset(of: \Params.m)!,
                                 MemoryLayout<Params>.offset(of: \Params.n)!, MemoryLayout<Params>.offset(of: \Params.k)!]

    public let config: Config
    let kernel: Kernel
    let context: Context
    public init(_ library: KernelLibrary, config: Config) throws {
        self.config = config
        (context, kernel) = try library.hopperKernel(family: "gemm_hopper", file: GemmHopper.file, name: config.name, sharedBytes: config.sharedBytes)
        grid = try PersistentGrid(kernel: kernel, context: context, cluster: config.cluster, threads: config.threads,
                                  sharedBytes: config.sharedBytes)
    }
    /// The persistent grid: CTAs resident at once (PersistentGrid.swift).
    let grid: PersistentGrid

    /// x: [m, k] bf16; w: [n, k] bf16; y: [m, n] bf16 (f32 for an `outF32` config). Tensor maps are encoded per call (a few µs of host
    /// time, overlapped with the GPU), since activation buffers are views whose row count changes.
    public func callAsFunction(x: CUdeviceptr, w: CUdeviceptr, y: CUdeviceptr, m: Int, n: Int, k: Int, stream: GPUStream) throws {
        guard m >= 1, n >= 1, k >= 8, k % 8 == 0 else { throw KilnError("gemm_hopper: need M, N ≥ 1 and K a multiple of 8 ≥ 8 (M \(m), N \(n), K \(k))") }
        let tx = try TensorMap.bf16Matrix(context, address: x, rows: m, cols: k, boxRows: config.bm, boxCols: config.bk)
        let tw = try TensorMap.bf16Matrix(context, address: w, rows: n, cols: k, boxRows: config.bn / config.cluster, boxCols: config.bk)
        let ctas = grid.ctas(items: config.tiles(m: m, n: n))
        try kernel.launch(grid: (ctas, 1, 1), block: (config.threads, 1, 1), sharedBytes: config.sharedBytes, stream: stream,
                          fields: Params(tx: tx, tw: tw, y: y, m: Int32(m), n: Int32(n), k: Int32(k)), offsets: GemmHopper.offsets)
    }
}
