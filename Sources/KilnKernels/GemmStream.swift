import KilnCore
import KilnGPU

/// gemm_stream.cu: the Hopper decode GEMM Y[M,N] = X[M,K]·W[N,K]^T for 1 ≤ M ≤ 16 whose weights stream through a TMA
/// ring (bf16 in, fp32 accumulation, the same epilogues as gemm_splitk). A tuner candidate beside gemm_splitk for
/// 9 ≤ M ≤ 16, where it wins on o, qkv and down (docs/perf-notes-gemm.md v8); gemm_whole keeps M ≤ 8.
public final class GemmStream {
    public static let file = "gemm_stream.cu"

    /// One row of KILN_GEMM_STREAM_INSTANCES: X(NB, KB, WS, CW).
    public struct Config: Hashable, Sendable, CustomStringConvertible {
        public var nb, kb, ws, cw: Int
        public init(nb: Int, kb: Int, ws: Int, cw: Int) { self.nb = nb; self.kb = kb; self.ws = ws; self.cw = cw }
        public var name: String { "kiln_gemm_stream_nb\(nb)_kb\(kb)_ws\(ws)_cw\(cw)" }
        public var description: String { name }
        /// The tuner offers it for 9 ≤ M ≤ 16 only (the kernel itself serves 1…16): at M = 2 it timed level with
        /// gemm_whole on down alone but made the decode step 0.056 ms slower there (4.372 vs 4.316 ms/step, H200,
        /// three alternating runs each; perf-notes-gemm.md v8), and gemm_whole wins at M ≤ 8 on every other shape.
        public var minTunedM: Int { 9 }
        public var maxM: Int { 16 }
        public var threads: Int { 32 * (cw + 1) }
        /// Dynamic shared memory (KILN_GEMM_STREAM_SMEM) plus the static barriers and warp partials.
        public var sharedBytes: Int { ws * nb * 128 * kb + 1024 }
        public var staticSharedBytes: Int { 16 * ws + max(cw - 1, 1) * nb / 8 * 4 * 32 * 4 }
        public func gridX(n: Int) -> Int { (n + nb - 1) / nb }
        /// Why this instance cannot compute an N×K product (nil: it can).
        public func unsupported(n: Int, k: Int) -> String? {
            if k <= 0 || k % 64 != 0 { return "\(name) needs K % 64 == 0 (K = \(k))" }
            if n <= 0 { return "\(name) needs N ≥ 1" }
            return nil
        }
    }

    public static let configs: [Config] = InstanceTable.rows(file: file, macro: "KILN_GEMM_STREAM_INSTANCES").compactMap { r in
        r.count == 4 ? Config(nb: r[0], kb: r[1], ws: r[2], cw: r[3]) : nil
    }
    public static var instances: [KernelInstance] { configs.map { KernelInstance(file, $0.name, hot: true) } }
    public static func config(named name: String) -> Config? { configs.first { $0.name == name } }

    // Mirrors (tmw, x, y, M, N, K, epi); the map is 128 bytes, passed by value.
    struct Params { var tw: TensorMap; var x, y: UInt64; var m, n, k, epi: Int32 }
    static let offsets: [Int] = [MemoryLayout<Params>.offset(of: \Params.tw)!, MemoryLayout<Params>.offset(of: \Params.x)!,
                                 MemoryLayout<Params>.offset(of: \Params.y)!, MemoryLayout<Params>.offset(of: \Params.m)!,
                                 MemoryLayout<Params>.offset(of: \Params.n)!, MemoryLayout<Params>.offset(of: \Params.k)!,
                                 MemoryLayout<Params>.offset(of: \Params.epi)!]

    struct MapKey: Hashable { var w: CUdeviceptr; var n, k: Int }
    public let config: Config
    let kernel: Kernel
    let context: Context
    /// One tensor map per weight matrix, encoded on first use: weights never move, and the decode loop then
    /// neither encodes nor allocates.
    private var maps: [MapKey: TensorMap] = [:]

    public init(_ library: KernelLibrary, config: Config) throws {
        self.config = config
        (context, kernel) = try library.hopperKernel(family: "gemm_stream", file: GemmStream.file, name: config.name, sharedBytes: config.sharedBytes)
    }

    /// x: [m, k] bf16; w: [n, k] bf16; y: [m, n] bf16 or fp32, or [m, n/2] bf16 for the SwiGLU epilogue.
    public func callAsFunction(x: CUdeviceptr, w: CUdeviceptr, y: CUdeviceptr, m: Int, n: Int, k: Int,
                               epilogue: GemmSplitK.Epilogue = .bf16, stream: GPUStream) throws {
        guard m >= 1, m <= config.maxM else { throw KilnError("gemm_stream \(config.name): M = \(m) outside 1…\(config.maxM)") }
        if let why = config.unsupported(n: n, k: k) { throw KilnError("gemm_stream: \(why)") }
        guard epilogue != .swiglu || n % 16 == 0 else { throw KilnError("gemm_stream SwiGLU epilogue: N = \(n) must be a multiple of 16") }
        guard x % 16 == 0 else { throw KilnError("gemm_stream: x must be 16-byte aligned") }
        let key = MapKey(w: w, n: n, k: k)
        let tw: TensorMap
        if let t = maps[key] { tw = t } else {
            tw = try TensorMap.bf16RowChunks(context, address: w, rows: n, cols: k, boxRows: config.nb, boxChunks: config.kb)
            maps[key] = tw
        }
        try kernel.launch(grid: (config.gridX(n: n), 1, 1), block: (config.threads, 1, 1), sharedBytes: config.sharedBytes,
                          stream: stream, pdl: stream.pdl,
                          fields: Params(tw: tw, x: x, y: y, m: Int32(m), n: Int32(n), k: Int32(k), epi: epilogue.rawValue),
                          offsets: GemmStream.offsets)
    }
}
