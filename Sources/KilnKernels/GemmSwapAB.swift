import KilnCore
import KilnGPU

/// gemm_swapab.cu: the Hopper decode GEMM Y[M,N] = X[M,K]·W[N,K]^T for 1 ≤ M ≤ 16 with the weights as the wgmma A
/// operand (64-row tiles) and the tokens as its N, each tile's K split unevenly over a lead CTA and `split − 1`
/// helpers whose partials the lead adds (bf16 in, fp32 accumulation, the same epilogues as gemm_splitk). A tuner
/// candidate beside gemm_splitk and gemm_stream for 9 ≤ M ≤ 16, where it wins on o (docs/perf-notes-gemm.md v10).
public final class GemmSwapAB {
    public static let file = "gemm_swapab.cu"
    public static let threads = 160
    /// The tile height: one wgmma's M.
    public static let tileRows = 64

    /// One row of KILN_GEMM_SWAPAB_INSTANCES: X(MT, KB, S, LEAD).
    public struct Config: Hashable, Sendable, CustomStringConvertible {
        public var mt, kb, stages, lead: Int
        public init(mt: Int, kb: Int, stages: Int, lead: Int) { self.mt = mt; self.kb = kb; self.stages = stages; self.lead = lead }
        public var name: String { "kiln_gemm_swapab_mt\(mt)_kb\(kb)_s\(stages)_l\(lead)" }
        public var description: String { name }
        /// Like gemm_stream, offered by the tuner for 9 ≤ M ≤ 16 only: the decode step at M ≤ 8 keeps gemm_whole,
        /// which times level or ahead there (v8, v10). The kernel itself serves 1…MT.
        public var minTunedM: Int { 9 }
        public var maxM: Int { mt }
        /// Dynamic shared memory (KILN_GEMM_SWAPAB_SMEM), and the static part: the barriers and the staged partial sum.
        public var sharedBytes: Int { stages * kb * (64 + mt) * 128 + 1024 }
        public var staticSharedBytes: Int { (2 * stages + 1) * 8 + mt / 2 * 128 * 4 }
        public func tiles(n: Int) -> Int { (n + GemmSwapAB.tileRows - 1) / GemmSwapAB.tileRows }
        public func gridX(n: Int, split: Int) -> Int { split * tiles(n: n) }
        /// fp32 scratch for the helpers' partials.
        public func workspaceFloats(n: Int, split: Int) -> Int { split > 1 ? tiles(n: n) * (split - 1) * GemmSwapAB.tileRows * mt : 0 }
        /// Blocks per SM by shared memory (each block also reserves 1 KiB), for checks without a GPU; the launcher
        /// asks the driver.
        public func blocksPerSM(sharedPerSM: Int) -> Int { sharedPerSM / (sharedBytes + staticSharedBytes + 1024) }
        /// Why this instance cannot compute an N×K product with `split` (nil: it can), leaving residency aside.
        public func unsupported(n: Int, k: Int, split: Int) -> String? {
            if k <= 0 || k % 64 != 0 { return "\(name) needs K % 64 == 0 (K = \(k))" }
            if n <= 0 { return "\(name) needs N ≥ 1" }
            if split < 1 { return "\(name) needs split ≥ 1" }
            return nil
        }
    }

    public static let configs: [Config] = InstanceTable.rows(file: file, macro: "KILN_GEMM_SWAPAB_INSTANCES").compactMap { r in
        r.count == 4 ? Config(mt: r[0], kb: r[1], stages: r[2], lead: r[3]) : nil
    }
    public static var instances: [KernelInstance] { configs.map { KernelInstance(file, $0.name, hot: true) } }
    public static func config(named name: String) -> Config? { configs.first { $0.name == name } }

    // Mirrors (tmw, tmx, y, ws, cnt, M, N, K, SK, epi); the maps are 128 bytes each, passed by value.
    struct Params { var tw, tx: TensorMap; var y, ws, cnt: UInt64; var m, n, k, split, epi: Int32 }
    static let offsets: [Int] = [MemoryLayout<Params>.offset(of: \Params.tw)!, MemoryLayout<Params>.offset(of: \Params.tx)!,
                                 MemoryLayout<Params>.offset(of: \Params.y)!, MemoryLayout<Params>.offset(of: \Params.ws)!,
                                 MemoryLayout<Params>.offset(of: \Params.cnt)!, MemoryLayout<Params>.offset(of: \Params.m)!,
                                 MemoryLayout<Params>.offset(of: \Params.n)!, MemoryLayout<Params>.offset(of: \Params.k)!,
                                 MemoryLayout<Params>.offset(of: \Params.split)!, MemoryLayout<Params>.offset(of: \Params.epi)!]

    struct MapKey: Hashable { var address: CUdeviceptr; var rows, k: Int }
    public let config: Config
    let kernel: Kernel
    let context: Context
    /// Blocks resident at once (the driver's occupancy × SMs): a grid beyond it could leave a lead waiting on a
    /// helper that never starts, so the launcher refuses it.
    public let residentBlocks: Int
    /// Tensor maps by (address, rows, K), encoded on first use: the weights and the decode step's activation
    /// buffers never move, so the decode loop neither encodes nor allocates.
    private var weightMaps: [MapKey: TensorMap] = [:]
    private var tokenMaps: [MapKey: TensorMap] = [:]

    public init(_ library: KernelLibrary, config: Config) throws {
        self.config = config
        (context, kernel) = try library.hopperKernel(family: "gemm_swapab", file: GemmSwapAB.file, name: config.name, sharedBytes: config.sharedBytes)
        residentBlocks = try kernel.maxActiveBlocksPerSM(block: GemmSwapAB.threads, sharedBytes: config.sharedBytes) * context.info.multiprocessors
    }

    /// x: [m, k] bf16; w: [n, k] bf16; y: [m, n] bf16 or fp32, or [m, n/2] bf16 for the SwiGLU epilogue. With
    /// split > 1, `workspace` holds ≥ config.workspaceFloats floats and `counters` ≥ config.tiles(n) zeroed UInt32
    /// (left zero).
    public func callAsFunction(x: CUdeviceptr, w: CUdeviceptr, y: CUdeviceptr, m: Int, n: Int, k: Int, split: Int,
                               workspace: CUdeviceptr, counters: CUdeviceptr, epilogue: GemmSplitK.Epilogue = .bf16, stream: GPUStream) throws {
        guard m >= 1, m <= config.maxM else { throw KilnError("gemm_swapab \(config.name): M = \(m) outside 1…\(config.maxM)") }
        if let why = config.unsupported(n: n, k: k, split: split) { throw KilnError("gemm_swapab: \(why)") }
        guard epilogue != .swiglu || n % 16 == 0 else { throw KilnError("gemm_swapab SwiGLU epilogue: N = \(n) must be a multiple of 16") }
        guard x % 16 == 0, w % 16 == 0 else { throw KilnError("gemm_swapab: x and w must be 16-byte aligned") }
        guard split == 1 || (workspace != 0 && counters != 0) else { throw KilnError("gemm_swapab: split \(split) needs workspace and counters") }
        let grid = config.gridX(n: n, split: split)
        guard grid <= residentBlocks else {
            throw KilnError("gemm_swapab \(config.name): split \(split) over N = \(n) needs \(grid) co-resident blocks; this GPU holds \(residentBlocks)")
        }
        let tw = try map(&weightMaps, MapKey(address: w, rows: n, k: k), boxRows: GemmSwapAB.tileRows)
        let tx = try map(&tokenMaps, MapKey(address: x, rows: m, k: k), boxRows: config.mt)
        try kernel.launch(grid: (grid, 1, 1), block: (GemmSwapAB.threads, 1, 1), sharedBytes: config.sharedBytes, stream: stream, pdl: stream.pdl,
                          fields: Params(tw: tw, tx: tx, y: y, ws: workspace, cnt: counters, m: Int32(m), n: Int32(n), k: Int32(k),
                                         split: Int32(split), epi: epilogue.rawValue),
                          offsets: GemmSwapAB.offsets)
    }

    private func map(_ cache: inout [MapKey: TensorMap], _ key: MapKey, boxRows: Int) throws -> TensorMap {
        if let t = cache[key] { return t }
        let t = try TensorMap.bf16RowChunks(context, address: key.address, rows: key.rows, cols: key.k, boxRows: boxRows, boxChunks: config.kb)
        cache[key] = t
        return t
    }
}
