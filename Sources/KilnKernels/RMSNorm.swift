import KilnCore
import KilnGPU

/// rmsnorm.cu: y = x / sqrt(mean(x²) + eps) · weight per row; weight and y of one element type, x (the
/// normalised stream) of that type or f32 — the engine's residual stream is f32 (rmsnorm.cu says why).
public struct RMSNorm {
    public static let file = "rmsnorm.cu"
    public static let dtypes: [DType] = [.bf16, .f16, .f32]
    /// (activation, stream) pairs: one type for everything, or bf16 activations over an f32 residual stream.
    public static let pairs: [(DType, DType)] = dtypes.map { ($0, $0) } + [(.bf16, .f32)]
    static func name(_ kernel: String, _ t: DType, _ r: DType) -> String {
        t == r ? "kiln::\(kernel)<\(t.cudaName)>" : "kiln::\(kernel)<\(t.cudaName), \(r.cudaName)>"
    }
    public static var instances: [KernelInstance] {
        pairs.flatMap { [KernelInstance(file, name("rmsnorm", $0.0, $0.1), hot: true),
                         KernelInstance(file, name("residual_rmsnorm", $0.0, $0.1), hot: true)] }
            + [KernelInstance(file, name("rmsnorm_fp8", fp8Pair.0, fp8Pair.1), hot: true),
               KernelInstance(file, name("residual_rmsnorm_fp8", fp8Pair.0, fp8Pair.1), hot: true)]
    }
    /// The one (activation, stream) pair with FP8 output kernels: the GPU engine's bf16 activations over its f32 stream.
    static let fp8Pair: (DType, DType) = (.bf16, .f32)

    /// y's copy in the activation format of the FP8 GEMMs (rmsnorm.cu's _fp8 kernels; FP8ActivationQuantizer's layout,
    /// bit for bit): codes [rows, cols] e4m3 and scales [rows, ceil(cols / 128)] f32.
    public struct FP8Output {
        public var codes: CUdeviceptr, scales: CUdeviceptr
        public init(codes: CUdeviceptr, scales: CUdeviceptr) { self.codes = codes; self.scales = scales }
    }
    /// Whether rows of `cols` can also be quantized by the norm: 16-byte packs and the whole row in the kernel's
    /// register cache (4 packs a thread) — every Llama width up to 8192.
    public static func fusesFP8(cols: Int) -> Bool { cols % 8 == 0 && cols / 8 <= 4 * threads(cols: cols) }
    static func checkFP8(_ fp8: FP8Output, x: CUdeviceptr, weight: CUdeviceptr, y: CUdeviceptr, cols: Int, kernel: Kernel?) throws {
        guard kernel != nil else { throw KilnError("rmsnorm: FP8 output needs the bf16-over-f32 kernels (init with fp8Output: true)") }
        guard fusesFP8(cols: cols) else { throw KilnError("rmsnorm: FP8 output needs cols % 8 == 0 and cols ≤ 8192 (got \(cols))") }
        guard [x, weight, y, fp8.codes].allSatisfy({ $0 % 16 == 0 }), fp8.scales % 4 == 0 else {
            throw KilnError("rmsnorm: FP8 output needs 16-byte aligned x, weight, y and codes")
        }
    }
    /// Threads per row: 128 up to 4096 columns (4 packs per thread in flight), else 256 (RMS_THREADS).
    static func threads(cols: Int) -> Int { cols <= 4096 ? 128 : 256 }

    struct Params { var x: UInt64; var weight: UInt64; var y: UInt64; var rows: Int32; var cols: Int32; var eps: Float; var rowsPerBlock: Int32 }
    /// Rows per block: 2 when a row fits the kernel's register cache (8·4 elements per thread, cols % 8 == 0), else 1.
    static func rowsPerBlock(cols: Int, threads: Int) -> Int { cols % 8 == 0 && cols <= threads * 32 ? 2 : 1 }

    struct FP8Params { var norm: Params; var codes: UInt64; var scales: UInt64 }

    public let dtype: DType, input: DType
    let kernel: Kernel
    let fp8Kernel: Kernel?
    /// Whether this norm was made with `fp8Output` (its kernels can write the FP8 copy).
    public var fusesFP8: Bool { fp8Kernel != nil }
    /// weight and y of `dtype`, x of `input` (default `dtype`). `defines` reaches NVRTC as -D constants (the
    /// self-test passes KILN_BREAK). `fp8Output`: also load the kernel that writes y's FP8 copy (bf16 over f32 only).
    public init(_ library: KernelLibrary, dtype: DType, input: DType? = nil, defines: [String: String] = [:], fp8Output: Bool = false) throws {
        self.dtype = dtype; self.input = input ?? dtype
        kernel = try library.kernel(RMSNorm.file, RMSNorm.name("rmsnorm", dtype, self.input), defines: defines)
        fp8Kernel = fp8Output && (dtype, self.input) == RMSNorm.fp8Pair
            ? try library.kernel(RMSNorm.file, RMSNorm.name("rmsnorm_fp8", dtype, self.input), defines: defines) : nil
    }

    /// x, y: [rows, cols]; weight: [cols]. y may alias x when they have one type.
    /// `threads` (32…256, a multiple of 32) and `rowsPerBlock` (1 or 2) override the defaults, for tuning.
    /// `fp8`: y's FP8 copy too (one row per block; `fusesFP8(cols:)` must hold).
    public func callAsFunction(x: CUdeviceptr, weight: CUdeviceptr, y: CUdeviceptr, rows: Int, cols: Int, eps: Float, threads: Int? = nil,
                               rowsPerBlock: Int? = nil, fp8: FP8Output? = nil, stream: GPUStream) throws {
        guard rows > 0 else { return }
        if let fp8 {
            try RMSNorm.checkFP8(fp8, x: x, weight: weight, y: y, cols: cols, kernel: fp8Kernel)
            let p = Params(x: x, weight: weight, y: y, rows: Int32(rows), cols: Int32(cols), eps: eps, rowsPerBlock: 1)
            try fp8Kernel!.launch(grid: (rows, 1, 1), block: (RMSNorm.threads(cols: cols), 1, 1), stream: stream, pdl: stream.pdl,
                                  FP8Params(norm: p, codes: fp8.codes, scales: fp8.scales))
            return
        }
        let t = threads ?? RMSNorm.threads(cols: cols)
        let rpb = rowsPerBlock ?? RMSNorm.rowsPerBlock(cols: cols, threads: t)
        try kernel.launch(grid: ((rows + rpb - 1) / rpb, 1, 1), block: (t, 1, 1), stream: stream, pdl: stream.pdl,
                          Params(x: x, weight: weight, y: y, rows: Int32(rows), cols: Int32(cols), eps: eps, rowsPerBlock: Int32(rpb)))
    }
}

/// rmsnorm.cu, fused: residual += x (written back, rounded to the residual's type), then
/// y = rmsnorm(residual) · weight — the pre-norm step at the start of each transformer sub-block.
public struct ResidualRMSNorm {
    struct Params { var x: UInt64; var residual: UInt64; var weight: UInt64; var y: UInt64; var rows: Int32; var cols: Int32; var eps: Float }
    struct FP8Params { var norm: Params; var codes: UInt64; var scales: UInt64 }

    public let dtype: DType, residual: DType
    let kernel: Kernel
    let fp8Kernel: Kernel?
    /// x, weight and y of `dtype`; the residual of `residual` (default `dtype`). `fp8Output`: as RMSNorm's.
    public init(_ library: KernelLibrary, dtype: DType, residual: DType? = nil, defines: [String: String] = [:], fp8Output: Bool = false) throws {
        self.dtype = dtype; self.residual = residual ?? dtype
        kernel = try library.kernel(RMSNorm.file, RMSNorm.name("residual_rmsnorm", dtype, self.residual), defines: defines)
        fp8Kernel = fp8Output && (dtype, self.residual) == RMSNorm.fp8Pair
            ? try library.kernel(RMSNorm.file, RMSNorm.name("residual_rmsnorm_fp8", dtype, self.residual), defines: defines) : nil
    }

    /// x, residual, y: [rows, cols]; weight: [cols]. `fp8`: y's FP8 copy too (`RMSNorm.fusesFP8(cols:)` must hold).
    public func callAsFunction(x: CUdeviceptr, residual: CUdeviceptr, weight: CUdeviceptr, y: CUdeviceptr,
                               rows: Int, cols: Int, eps: Float, fp8: RMSNorm.FP8Output? = nil, stream: GPUStream) throws {
        guard rows > 0 else { return }
        let p = Params(x: x, residual: residual, weight: weight, y: y, rows: Int32(rows), cols: Int32(cols), eps: eps)
        if let fp8 {
            try RMSNorm.checkFP8(fp8, x: x, weight: weight, y: y, cols: cols, kernel: fp8Kernel)
            guard residual % 16 == 0 else { throw KilnError("residual rmsnorm: FP8 output needs a 16-byte aligned residual") }
            try fp8Kernel!.launch(grid: (rows, 1, 1), block: (RMSNorm.threads(cols: cols), 1, 1), stream: stream, pdl: stream.pdl,
                                  FP8Params(norm: p, codes: fp8.codes, scales: fp8.scales))
            return
        }
        try kernel.launch(grid: (rows, 1, 1), block: (RMSNorm.threads(cols: cols), 1, 1), stream: stream, pdl: stream.pdl, p)
    }
}
