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
    }
    /// Threads per row: 128 up to 4096 columns (4 packs per thread in flight), else 256 (RMS_THREADS).
    static func threads(cols: Int) -> Int { cols <= 4096 ? 128 : 256 }

    struct Params { var x: UInt64; var weight: UInt64; var y: UInt64; var rows: Int32; var cols: Int32; var eps: Float; var rowsPerBlock: Int32 }
    /// Rows per block: 2 when a row fits the kernel's register cache (8·4 elements per thread, cols % 8 == 0), else 1.
    static func rowsPerBlock(cols: Int, threads: Int) -> Int { cols % 8 == 0 && cols <= threads * 32 ? 2 : 1 }

    public let dtype: DType, input: DType
    let kernel: Kernel
    /// weight and y of `dtype`, x of `input` (default `dtype`). `defines` reaches NVRTC as -D constants (the
    /// self-test passes KILN_BREAK).
    public init(_ library: KernelLibrary, dtype: DType, input: DType? = nil, defines: [String: String] = [:]) throws {
        self.dtype = dtype; self.input = input ?? dtype
        kernel = try library.kernel(RMSNorm.file, RMSNorm.name("rmsnorm", dtype, self.input), defines: defines)
    }

    /// x, y: [rows, cols]; weight: [cols]. y may alias x when they have one type.
    /// `threads` (32…256, a multiple of 32) and `rowsPerBlock` (1 or 2) override the defaults, for tuning.
    public func callAsFunction(x: CUdeviceptr, weight: CUdeviceptr, y: CUdeviceptr, rows: Int, cols: Int, eps: Float, threads: Int? = nil,
                               rowsPerBlock: Int? = nil, stream: GPUStream) throws {
        guard rows > 0 else { return }
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

    public let dtype: DType, residual: DType
    let kernel: Kernel
    /// x, weight and y of `dtype`; the residual of `residual` (default `dtype`).
    public init(_ library: KernelLibrary, dtype: DType, residual: DType? = nil, defines: [String: String] = [:]) throws {
        self.dtype = dtype; self.residual = residual ?? dtype
        kernel = try library.kernel(RMSNorm.file, RMSNorm.name("residual_rmsnorm", dtype, self.residual), defines: defines)
    }

    /// x, residual, y: [rows, cols]; weight: [cols].
    public func callAsFunction(x: CUdeviceptr, residual: CUdeviceptr, weight: CUdeviceptr, y: CUdeviceptr,
                               rows: Int, cols: Int, eps: Float, stream: GPUStream) throws {
        guard rows > 0 else { return }
        try kernel.launch(grid: (rows, 1, 1), block: (RMSNorm.threads(cols: cols), 1, 1), stream: stream, pdl: stream.pdl,
                          Params(x: x, residual: residual, weight: weight, y: y, rows: Int32(rows), cols: Int32(cols), eps: eps))
    }
}
