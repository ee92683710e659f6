import KilnCore
import KilnGPU

/// gemm_fp8_hopper.cu: the FP8 prefill GEMM Y[M,N] = X[M,K]·W[N,K]^T on Hopper (wgmma e4m3 + TMA, persistent and
/// warp-specialised), W8A8 with 2D block scales: X quantized per 1×128 block by `FP8ActivationQuantizer`, W with
/// `GemmFP8.expandScales`' per-8-row scale_inv, each 128-column block's e4m3 sum promoted to fp32 with its two scales;
/// bf16 out. Meant for M > 16 (gemm_fp8.cu serves decode); docs/perf-notes-fp8.md has the design and the roofline.
public struct GemmFP8Hopper {
    public static let file = "gemm_fp8_hopper.cu"
    /// Columns of one k block: one 128-byte swizzle row of e4m3 and one scale block.
    public static let blockK = 128

    /// One row of KILN_GEMM_FP8_HOPPER_INSTANCES: X(BM, BN, STAGES, CONSUMERS, ACC_BUFFERS, CLUSTER, GROUP_M), or of the
    /// check-only table (`promotes` false: all of K accumulated in the tensor core; never dispatched).
    public struct Config: Hashable, Sendable, CustomStringConvertible {
        public var bm, bn, stages, consumers, buffers, cluster, groupM: Int
        public var promotes: Bool
        public var name: String {
            (promotes ? "kiln_gemm_fp8_hopper" : "kiln_gemm_fp8_hopper_nopromote")
                + "_bm\(bm)_bn\(bn)_s\(stages)_c\(consumers)_b\(buffers)_cl\(cluster)_g\(groupM)"
        }
        public var description: String { name }
        public var threads: Int { 128 * (consumers + 1) }
        public var sharedBytes: Int { stages * (bm + bn) * GemmFP8Hopper.blockK + 1024 }
        /// Work items of the persistent loop: tiles, or pairs of M tiles with cluster 2.
        public func tiles(m: Int, n: Int) -> Int { ((m + cluster * bm - 1) / (cluster * bm)) * ((n + bn - 1) / bn) }
    }

    static func rows(_ macro: String, promotes: Bool) -> [Config] {
        InstanceTable.rows(file: file, macro: macro).compactMap { r in
            r.count == 7 ? Config(bm: r[0], bn: r[1], stages: r[2], consumers: r[3], buffers: r[4], cluster: r[5], groupM: r[6],
                                  promotes: promotes) : nil
        }
    }
    /// The shipped instances (tuner candidates and defaults).
    public static let configs: [Config] = rows("KILN_GEMM_FP8_HOPPER_INSTANCES", promotes: true)
    /// The check-only instance without promotion (`kiln check` shows it misses the tolerance at K = 8192).
    public static let checkOnlyConfigs: [Config] = rows("KILN_GEMM_FP8_HOPPER_CHECK_ONLY", promotes: false)
    /// Every instance is compiled and checked for spills by `kiln check --compile-only` (hot: prefill runs them per layer).
    public static var instances: [KernelInstance] { (configs + checkOnlyConfigs).map { KernelInstance(file, $0.name, hot: true) } }
    public static func config(named name: String) -> Config? { configs.first { $0.name == name } }

    /// Default when no tuning entry exists: among the instances without a cluster (whose grid sizing is not measured
    /// yet, as for gemm_hopper's) and with the 8-tile raster group, the one with the least estimated time, waves ·
    /// cost(tile), waves = ceil(tiles / SMs). A tile's cost is the larger of its tensor-core work, BM·BN ÷ the share of
    /// time the tensor core is fed (1 with two block accumulators; with one, promotion stalls it: 0.8 with two consumer
    /// warp groups, whose wgmmas partly fill the gap, 0.6 with one), and its operand traffic, 88·(BM + BN): the bf16
    /// kernel's best tiles pulled ~8.5 TB/s from L2, against ~1,500 TFLOP/s of FP8 work that a good kernel sustains (1979
    /// peak), so a 128×128 tile waits on L2 and a 128×192 one less. Ties go to more tiles (single-wave small M: more SMs
    /// streaming W), then to two accumulators. A model, to be replaced by measured tuning entries.
    public static func defaultConfig(m: Int, n: Int, multiprocessors: Int) -> Config {
        func cost(_ c: Config) -> Double {
            let waves = Double((c.tiles(m: m, n: n) + multiprocessors - 1) / max(1, multiprocessors))
            let compute = Double(c.bm * c.bn) / (c.buffers == 2 ? 1.0 : c.consumers >= 2 ? 0.8 : 0.6)
            return waves * max(compute, 88.0 * Double(c.bm + c.bn))
        }
        let candidates = configs.filter { $0.groupM == 8 && $0.cluster == 1 }
        return candidates.min { a, b in
            let (ca, cb) = (cost(a), cost(b))
            if ca != cb { return ca < cb }
            let (ta, tb) = (a.tiles(m: m, n: n), b.tiles(m: m, n: n))
            return ta != tb ? ta > tb : a.buffers > b.buffers
        } ?? configs[0]
    }

    /// Mirrors `Fp8HopperArgs` of gemm_fp8_hopper.cu, field for field (C layout: 3 pointers, 4 ints, 40 bytes).
    struct Args { var xs, scale8, y: UInt64; var m, n, k, kb: Int32 }
    // The kernel's parameters (tmap_x, tmap_w, args); the maps are 128 bytes each, passed by value.
    struct Params { var tx: TensorMap; var tw: TensorMap; var args: Args }
    static let offsets: [Int] = [MemoryLayout<Params>.offset(of: \Params.tx)!, MemoryLayout<Params>.offset(of: \Params.tw)!,
                                 MemoryLayout<Params>.offset(of: \Params.args)!]

    public let config: Config
    let kernel: Kernel
    let context: Context
    public init(_ library: KernelLibrary, config: Config) throws {
        self.config = config
        (context, kernel) = try library.hopperKernel(family: "gemm_fp8_hopper", file: GemmFP8Hopper.file, name: config.name,
                                                     sharedBytes: config.sharedBytes)
        grid = try PersistentGrid(kernel: kernel, context: context, cluster: config.cluster, threads: config.threads,
                                  sharedBytes: config.sharedBytes)
    }
    /// The persistent grid: CTAs resident at once (PersistentGrid.swift).
    let grid: PersistentGrid

    /// xq: [m, k] e4m3 and xs: [m, ceil(k/128)] f32 (FP8ActivationQuantizer); w: [n, k] e4m3; scale8: [ceil(n/8),
    /// ceil(k/128)] f32 (`GemmFP8.expandScales`); y: [m, n] bf16. Tensor maps are encoded per call (a few µs of host
    /// time), since activation buffers are views whose row count changes. `maxCTAs` caps the persistent grid (checks use
    /// it to give each CTA many tiles; with cluster 2 it counts both CTAs of a pair).
    public func callAsFunction(xq: CUdeviceptr, xs: CUdeviceptr, w: CUdeviceptr, scale8: CUdeviceptr, y: CUdeviceptr, m: Int, n: Int, k: Int,
                               maxCTAs: Int? = nil, stream: GPUStream) throws {
        guard m >= 1, n >= 1, k >= 16, k % 16 == 0 else {
            throw KilnError("gemm_fp8_hopper: need M, N ≥ 1 and K a multiple of 16 ≥ 16 (M \(m), N \(n), K \(k))")
        }
        let kb = (k + GemmFP8Hopper.blockK - 1) / GemmFP8Hopper.blockK
        let tx = try TensorMap.e4m3Matrix(context, address: xq, rows: m, cols: k, boxRows: config.bm, boxCols: GemmFP8Hopper.blockK)
        let tw = try TensorMap.e4m3Matrix(context, address: w, rows: n, cols: k, boxRows: config.bn / config.cluster, boxCols: GemmFP8Hopper.blockK)
        let ctas = grid.ctas(items: config.tiles(m: m, n: n), maxCTAs: maxCTAs)
        try kernel.launch(grid: (ctas, 1, 1), block: (config.threads, 1, 1), sharedBytes: config.sharedBytes, stream: stream,
                          fields: Params(tx: tx, tw: tw, args: Args(xs: xs, scale8: scale8, y: y, m: Int32(m), n: Int32(n), k: Int32(k), kb: Int32(kb))),
                          offsets: GemmFP8Hopper.offsets)
    }
}
