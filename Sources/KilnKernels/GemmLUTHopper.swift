import KilnCore
import KilnGPU

/// gemm_lut_hopper.cu: the prefill GEMM over lookup-table weights on Hopper, Y[M,N] = X[M,K]·W[N,K]^T for M > 16 with W in
/// gemm_lut's device layout (`GemmLUT.DeviceLayout`: 4-, 3-, 2-bit codes into a table, or Q8_0's 8-bit codes), the
/// weights dequantized in registers into the A operand of bf16 wgmma (the file's header explains the design). The
/// activations go through `LUTPermute` first (X', the k order of gemm_lut's fragments); the caller owns that scratch.
public struct GemmLUTHopper {
    public static let file = "gemm_lut_hopper.cu"
    /// Weight rows per CTA tile (two consumer warp groups of 64).
    public static let tileRows = 128

    /// One row of KILN_GEMM_LUT_HOPPER_INSTANCES: X(BITS, BT, STAGES, AFFINE).
    public struct Config: Hashable, Sendable, CustomStringConvertible {
        public var bits, tokens, stages: Int
        public var affine: Bool
        public var name: String { "kiln_gemm_lut_hopper\(bits)_bt\(tokens)_s\(stages)_a\(affine ? 1 : 0)" }
        public var description: String { name }
        public var threads: Int { 384 }
        /// KILN_GEMM_LUT_HOPPER_SMEM: the pair table (4 and 3 bits), the ring, 1 KB of alignment.
        public var sharedBytes: Int {
            let table = bits == 4 || bits == 3 ? 256 * 32 * 4 : 0
            return table + stages * (tokens * 128 + 8 * 128 * bits + 1024) + 1024
        }
        public func tiles(m: Int, n: Int) -> Int { ((n + tileRows - 1) / tileRows) * ((m + tokens - 1) / tokens) }
    }

    public static let configs: [Config] = InstanceTable.rows(file: file, macro: "KILN_GEMM_LUT_HOPPER_INSTANCES").compactMap { r in
        r.count == 4 ? Config(bits: r[0], tokens: r[1], stages: r[2], affine: r[3] != 0) : nil
    }
    public static var instances: [KernelInstance] {
        configs.map { KernelInstance(file, $0.name, hot: false) } + [KernelInstance(file, LUTPermute.kernelName, hot: false)]
    }
    public static func config(named name: String) -> Config? { configs.first { $0.name == name } }

    /// Default (before measurement): 128-token tiles up to 512 rows (twice the CTA tiles to fill the SMs), 256 beyond
    /// (half the passes over the codes and twice the tensor work per dequantized weight).
    public static func defaultConfig(m: Int, bits: Int, affine: Bool) -> Config? {
        let tokens = m <= 512 ? 128 : 256
        return configs.first { $0.bits == bits && $0.affine == affine && $0.tokens == tokens }
            ?? configs.first { $0.bits == bits && $0.affine == affine }
    }

    /// Whether some instance reads this format (every width and group gemm_lut reads; 8 bits symmetric only).
    public static func supports(_ f: WeightFormat.LUTFormat) -> Bool {
        configs.contains { $0.bits == f.bits && $0.affine == f.hasOffsets } && GemmLUT.groupSizes.contains(f.groupSize)
    }

    /// Mirrors `LutHopperArgs` (C layout: 2 pointers, 5 ints, 40 bytes with padding).
    struct Args { var table, y: UInt64; var m, n, k, groupShift, scaleBox: Int32 }
    // The kernel's parameters (four 128-byte maps by value, then the args).
    struct Params { var tx, tc, ts, to: TensorMap; var args: Args }
    static let offsets: [Int] = [MemoryLayout<Params>.offset(of: \Params.tx)!, MemoryLayout<Params>.offset(of: \Params.tc)!,
                                 MemoryLayout<Params>.offset(of: \Params.ts)!, MemoryLayout<Params>.offset(of: \Params.to)!,
                                 MemoryLayout<Params>.offset(of: \Params.args)!]

    public let config: Config
    let kernel: Kernel
    let context: Context
    let grid: PersistentGrid
    public init(_ library: KernelLibrary, config: Config) throws {
        self.config = config
        (context, kernel) = try library.hopperKernel(family: "gemm_lut_hopper", file: GemmLUTHopper.file, name: config.name,
                                                    sharedBytes: config.sharedBytes)
        grid = try PersistentGrid(kernel: kernel, context: context, cluster: 1, threads: config.threads, sharedBytes: config.sharedBytes)
    }

    /// xPermuted: X' [m, 64·⌈k/64⌉] bf16 (`LUTPermute`'s output); codes / scales / offsets (0 when symmetric) / table: an
    /// [n, k] matrix in gemm_lut's device layout of `config.bits`-bit codes; y: [m, n] bf16. Tensor maps are encoded per
    /// call (host µs), as gemm_hopper's.
    public func callAsFunction(xPermuted: CUdeviceptr, codes: CUdeviceptr, scales: CUdeviceptr, offsets: CUdeviceptr, table: CUdeviceptr,
                               y: CUdeviceptr, m: Int, n: Int, k: Int, group: Int, stream: GPUStream) throws {
        guard GemmLUT.groupSizes.contains(group), k > 0, k % group == 0, n >= 1, m >= 1 else {
            throw KilnError("gemm_lut_hopper: K = \(k) must be a positive multiple of the group size \(group) (32, 64 or 128; M = \(m), N = \(n))")
        }
        guard config.affine == (offsets != 0) else {
            throw KilnError("gemm_lut_hopper \(config.name): \(config.affine ? "an affine instance needs offsets" : "offsets given to a symmetric instance")")
        }
        let layout = GemmLUT.DeviceLayout(rows: n, cols: k, group: group, bits: config.bits)
        let kp = layout.chunks * GemmLUT.chunkCols, scaleBox = max(1, GemmLUT.chunkCols / group)
        let record = UInt64(layout.chunkBytes)
        let tx = try TensorMap.bf16Matrix(context, address: xPermuted, rows: m, cols: kp, boxRows: config.tokens, boxCols: GemmLUT.chunkCols)
        let tc = try TensorMap.words32(context, address: codes, dims: [record / 4, UInt64(layout.chunks), UInt64(layout.tiles)],
                                       strides: [record, record * UInt64(layout.chunks)], box: [UInt32(record / 4), 1, 8])
        func scaleMap(_ address: CUdeviceptr) throws -> TensorMap {
            try TensorMap.words32(context, address: address, dims: [8, UInt64(layout.paddedGroups), UInt64(layout.tiles)],
                                  strides: [32, 32 * UInt64(layout.paddedGroups)], box: [8, UInt32(scaleBox), 8])
        }
        let ts = try scaleMap(scales)
        let to = offsets != 0 ? try scaleMap(offsets) : ts
        let ctas = grid.ctas(items: config.tiles(m: m, n: n))
        try kernel.launch(grid: (ctas, 1, 1), block: (config.threads, 1, 1), sharedBytes: config.sharedBytes, stream: stream,
                          fields: Params(tx: tx, tc: tc, ts: ts, to: to,
                                         args: Args(table: table, y: y, m: Int32(m), n: Int32(n), k: Int32(k),
                                                    groupShift: Int32(group.trailingZeroBitCount), scaleBox: Int32(scaleBox))),
                          offsets: GemmLUTHopper.offsets)
    }
}

/// gemm_lut_hopper.cu's `kiln_lut_permute_x`: X [m, k] bf16 → X' [m, 64·⌈k/64⌉] bf16, each 64-column chunk's columns in
/// gemm_lut's fragment k order (zeros past K), the B operand gemm_lut_hopper reads.
public struct LUTPermute {
    static let kernelName = "kiln_lut_permute_x"
    struct Params { var x, xp: UInt64; var m, k, kp: Int32 }
    let kernel: Kernel
    public init(_ library: KernelLibrary) throws { kernel = try library.kernel(GemmLUTHopper.file, LUTPermute.kernelName) }

    /// Columns of X' for K input features.
    public static func paddedCols(_ k: Int) -> Int { (k + GemmLUT.chunkCols - 1) / GemmLUT.chunkCols * GemmLUT.chunkCols }

    /// The source column of X' column `c` (the header's permutation; the CPU statement tests check the kernel's map against).
    public static func sourceColumn(_ c: Int) -> Int {
        let chunk = c / 64, s = c % 64, j = s / 16, slot = s % 16
        return 64 * chunk + 16 * ((slot % 8) / 2) + 4 * j + 2 * (slot / 8) + slot % 2
    }

    public func callAsFunction(x: CUdeviceptr, xPermuted: CUdeviceptr, m: Int, k: Int, stream: GPUStream) throws {
        guard m >= 1, k >= 2, k % 2 == 0 else { throw KilnError("LUT permute: M = \(m), K = \(k) (K even, both positive)") }
        let kp = LUTPermute.paddedCols(k), pairs = m * kp / 2
        try kernel.launch(grid: ((pairs + 255) / 256, 1, 1), block: (256, 1, 1), stream: stream,
                          Params(x: x, xp: xPermuted, m: Int32(m), k: Int32(k), kp: Int32(kp)))
    }
}
