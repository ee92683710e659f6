import KilnCore
import KilnGPU

/// gemm_fp8.cu: the decode GEMM over FP8 block-scaled weights, W8A8 numerics (Y[M,N] = X[M,K]·W[N,K]^T, 1 ≤ M ≤ 16, e4m3
/// weights with 128×128 scale blocks, activations quantized per 1×128 block by `FP8ActivationQuantizer`), fp32
/// accumulation, bf16 / fp32 / SwiGLU out. Memory-bound: each call streams N·K weight bytes once.
public struct GemmFP8 {
    public static let file = "gemm_fp8.cu"
    /// Scale blocks of the format the kernels read (Hugging Face fine-grained FP8: `weight_block_size` [128, 128]).
    public static let block = 128
    /// Rows per weight-scale group of the layout the kernels read (`expandScales`).
    public static let scaleGroupRows = 8

    /// One row of KILN_GEMM_FP8_INSTANCES: X(NT, WARPS_N, WARPS_K, TILES, UNROLL).
    public struct Config: Hashable, Sendable, CustomStringConvertible {
        public var nt, wn, wk, tiles, unroll: Int
        public var name: String { "kiln_gemm_fp8_nt\(nt)_wn\(wn)_wk\(wk)_t\(tiles)_u\(unroll)" }
        public var description: String { name }
        public var maxM: Int { 8 * nt }
        public var threads: Int { 32 * wn * wk }
        public var rowsPerBlock: Int { 16 * tiles * wn }
        public func gridX(n: Int) -> Int { (n + rowsPerBlock - 1) / rowsPerBlock }
    }

    public static let configs: [Config] = InstanceTable.rows(file: file, macro: "KILN_GEMM_FP8_INSTANCES").compactMap { r in
        r.count == 5 ? Config(nt: r[0], wn: r[1], wk: r[2], tiles: r[3], unroll: r[4]) : nil
    }
    public static var instances: [KernelInstance] {
        configs.map { KernelInstance(file, $0.name, hot: true) }
            + [KernelInstance(file, FP8ActivationQuantizer.kernelName, hot: true), KernelInstance(file, FP8Dequantizer.kernelName, hot: true)]
    }
    public static func config(named name: String) -> Config? { configs.first { $0.name == name } }

    /// Default before any tuning: the twin of gemm_splitk's default (4 warps over K, one 16-row tile, two blocks of
    /// 128 columns per step), NT by M.
    public static func defaultConfig(m: Int) -> Config {
        let nt = m <= 8 ? 1 : 2
        return configs.first { $0.nt == nt && $0.wn == 1 && $0.wk == 4 && $0.tiles == 1 && $0.unroll == 2 } ?? configs.first { $0.nt == nt }!
    }

    /// The weight scales as the kernels read them: `[ceil(rows/8), ceil(cols/128)]`, each 8-row group with the
    /// scale_inv of its checkpoint block. `rowOf(r)` maps a row of the matrix the kernel reads to the checkpoint row it
    /// holds (identity, or the gate/up interleave of the SwiGLU epilogue); the 8 rows of a group must share a block.
    public static func expandScales(_ scaleInv: [Float], rows: Int, cols: Int, blockRows: Int = block, rowOf: (Int) -> Int = { $0 }) throws -> [Float] {
        let kb = (cols + block - 1) / block, groups = (rows + scaleGroupRows - 1) / scaleGroupRows
        let sourceRows = (scaleInv.count / max(1, kb))
        guard scaleInv.count == sourceRows * kb else { throw KilnError("FP8 scales: \(scaleInv.count) values are not rows × \(kb) blocks") }
        var out = [Float](repeating: 0, count: groups * kb)
        for gi in 0..<groups {
            let first = rowOf(gi * scaleGroupRows), last = rowOf(min(rows, (gi + 1) * scaleGroupRows) - 1)
            let br = first / blockRows
            guard last / blockRows == br, br < sourceRows else {
                throw KilnError("FP8 scales: rows \(gi * scaleGroupRows)… of the kernel's matrix span two scale blocks (\(first), \(last))")
            }
            for b in 0..<kb { out[gi * kb + b] = scaleInv[br * kb + b] }
        }
        return out
    }

    /// The row of the stacked [gate; up] checkpoint matrix (`ffn` rows each) that row `r` of the SwiGLU epilogue's
    /// interleaved layout holds: 16-row tile j = gate rows 8j…8j+7, then up rows 8j…8j+7 (GPUWeights.interleaveGateUp).
    public static func gateUpSourceRow(_ r: Int, ffn: Int) -> Int {
        (r % 16 < 8 ? 0 : ffn) + 8 * (r / 16) + r % 8
    }

    // Mirrors Fp8GemmParams.
    struct Params { var xq, xs, w, scale8, y, ws, cnt: UInt64; var m, n, k, epi: Int32 }

    public let config: Config
    let kernel: Kernel
    public init(_ library: KernelLibrary, config: Config) throws {
        if let info = library.context?.info, !info.hasE4M3TensorCores {
            throw KilnError("gemm_fp8 needs e4m3 tensor cores (compute capability 8.9 or newer; this GPU: \(info.arch))")
        }
        self.config = config
        kernel = try library.kernel(GemmFP8.file, config.name)
    }

    /// fp32 workspace elements a call with `split` > 1 needs (none for split 1).
    public static func workspaceFloats(m: Int, n: Int, split: Int) -> Int { split > 1 ? split * m * n : 0 }

    /// xq: [m, k] e4m3 and xs: [m, ceil(k/128)] f32 (FP8ActivationQuantizer); w: [n, k] e4m3; scale8: `expandScales`'s
    /// layout; y: [m, n] bf16 (fp32 for `.f32`), or [m, n/2] bf16 for `.swiglu`. With split > 1, `workspace` holds
    /// ≥ workspaceFloats floats and `counters` ≥ config.gridX(n) zeroed UInt32 (left zero).
    public func callAsFunction(xq: CUdeviceptr, xs: CUdeviceptr, w: CUdeviceptr, scale8: CUdeviceptr, y: CUdeviceptr, m: Int, n: Int, k: Int,
                               split: Int = 1, workspace: CUdeviceptr = 0, counters: CUdeviceptr = 0,
                               epilogue: GemmSplitK.Epilogue = .bf16, stream: GPUStream) throws {
        guard epilogue != .swiglu || n % 16 == 0 else { throw KilnError("gemm_fp8 SwiGLU epilogue: N = \(n) must be a multiple of 16") }
        guard m >= 1, m <= config.maxM else { throw KilnError("gemm_fp8 \(config.name): M = \(m) outside 1…\(config.maxM)") }
        guard k % 16 == 0, k > 0, n > 0 else { throw KilnError("gemm_fp8: K = \(k) must be a positive multiple of 16 (N = \(n))") }
        guard split >= 1, split == 1 || (workspace != 0 && counters != 0) else { throw KilnError("gemm_fp8: split \(split) needs workspace and counters") }
        try kernel.launch(grid: (config.gridX(n: n), split, 1), block: (config.threads, 1, 1), stream: stream, pdl: stream.pdl,
                          Params(xq: xq, xs: xs, w: w, scale8: scale8, y: y, ws: workspace, cnt: counters,
                                 m: Int32(m), n: Int32(n), k: Int32(k), epi: epilogue.rawValue))
    }
}

/// gemm_fp8.cu's `kiln_fp8_quant_act`: bf16 activations [m, k] → e4m3 codes [m, k] and scales s [m, ceil(k/128)],
/// s = absmax / 448 per 128-column block and code = e4m3(x / s) (transformers' `act_quant`; the CPU reference is
/// `FP8BlockQuantizer.quantizeActivations`).
public struct FP8ActivationQuantizer {
    static let kernelName = "kiln_fp8_quant_act"
    struct Params { var x, xq, xs: UInt64; var m, k: Int32 }
    let kernel: Kernel
    public init(_ library: KernelLibrary) throws { kernel = try library.kernel(GemmFP8.file, FP8ActivationQuantizer.kernelName) }

    public static func scaleColumns(k: Int) -> Int { (k + GemmFP8.block - 1) / GemmFP8.block }

    public func callAsFunction(x: CUdeviceptr, xq: CUdeviceptr, xs: CUdeviceptr, m: Int, k: Int, stream: GPUStream) throws {
        guard m >= 1, k > 0, k % 16 == 0 else { throw KilnError("FP8 activation quantizer: m = \(m), k = \(k) (k a positive multiple of 16)") }
        let kb = FP8ActivationQuantizer.scaleColumns(k: k)
        try kernel.launch(grid: ((kb + 3) / 4, m, 1), block: (128, 1, 1), stream: stream, pdl: stream.pdl,
                          Params(x: x, xq: xq, xs: xs, m: Int32(m), k: Int32(k)))
    }
}

/// gemm_fp8.cu's `kiln_fp8_dequant`: e4m3 weights [n, k] with `GemmFP8.expandScales` scales → bf16 [n, k] (code ·
/// scale_inv in f32, rounded to nearest even: the bits `GPUWeights.bf16` computes on the CPU). Prefill over FP8
/// weights reads this copy with the bf16 GEMMs until an FP8 prefill GEMM exists.
public struct FP8Dequantizer {
    static let kernelName = "kiln_fp8_dequant"
    struct Params { var w, scale8, y: UInt64; var n, k: Int32 }
    let kernel: Kernel
    public init(_ library: KernelLibrary) throws { kernel = try library.kernel(GemmFP8.file, FP8Dequantizer.kernelName) }

    public func callAsFunction(w: CUdeviceptr, scale8: CUdeviceptr, y: CUdeviceptr, n: Int, k: Int, stream: GPUStream) throws {
        guard n >= 1, k > 0, k % 16 == 0 else { throw KilnError("FP8 dequantizer: n = \(n), k = \(k) (k a positive multiple of 16)") }
        let chunks = n * (k / 16)
        try kernel.launch(grid: ((chunks + 255) / 256, 1, 1), block: (256, 1, 1), stream: stream, pdl: stream.pdl,
                          Params(w: w, scale8: scale8, y: y, n: Int32(n), k: Int32(k)))
    }
}
