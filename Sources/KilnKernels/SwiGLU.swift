import KilnCore
import KilnGPU

/// swiglu.cu: out[m, f] = silu(gu[m, f]) · gu[m, F + f] on the fused gate_up GEMM output (bf16), or on
/// the per-16-row interleaved layout of GPUWeights.interleaveGateUp (`interleaved`); and that permutation.
public struct SwiGLU {
    public static let file = "swiglu.cu"
    public static let instances = [KernelInstance(file, "kiln::swiglu_rows", hot: true), KernelInstance(file, "kiln::swiglu_rows_fp8", hot: true),
                                   KernelInstance(file, "kiln::interleave_gate_up", hot: false)]
    struct Params { var gateUp, out: UInt64; var rows, ffn, interleaved, pad: Int32 }   // pad: sizeof(SwiGLUParams) = 32
    struct FP8Params { var gateUp, codes, scales: UInt64; var rows, ffn, interleaved, pad: Int32 }   // sizeof(SwiGLUFP8Params) = 40
    struct InterleaveParams { var src, dst: UInt64; var ffn, hidden: Int32 }
    let kernel: Kernel
    let fp8Kernel: Kernel
    let interleave: Kernel
    let context: Context
    public init(_ library: KernelLibrary) throws {
        kernel = try library.kernel(SwiGLU.file, "kiln::swiglu_rows")
        fp8Kernel = try library.kernel(SwiGLU.file, "kiln::swiglu_rows_fp8")
        interleave = try library.kernel(SwiGLU.file, "kiln::interleave_gate_up")
        context = library.context!
    }
    /// gateUp: bf16 [rows, 2·ffn] ([gate | up], or interleaved per 8 features); out: bf16 [rows, ffn].
    public func callAsFunction(gateUp: CUdeviceptr, out: CUdeviceptr, rows: Int, ffn: Int, interleaved: Bool = false, stream: GPUStream) throws {
        guard rows > 0, ffn > 0 else { return }
        guard !interleaved || ffn % 8 == 0 else { throw KilnError("swiglu: the interleaved layout needs ffn % 8 == 0 (got \(ffn))") }
        let work = ffn % 8 == 0 ? rows * ffn / 8 : rows * ffn
        try kernel.launch(grid: (gridStrideBlocks(work, threads: 256, context: context), 1, 1), block: (256, 1, 1), stream: stream, pdl: stream.pdl,
                          Params(gateUp: gateUp, out: out, rows: Int32(rows), ffn: Int32(ffn), interleaved: interleaved ? 1 : 0, pad: 0))
    }
    /// Whether `quantized` serves this width (ffn % 8 == 0).
    public static func quantizes(ffn: Int) -> Bool { ffn > 0 && ffn % 8 == 0 }

    /// SwiGLU straight into the FP8 GEMM's activation format: codes e4m3 [rows, ffn] and scales f32 [rows, ⌈ffn/128⌉],
    /// bit for bit the plain kernel's bf16 output put through FP8ActivationQuantizer (swiglu.cu says how).
    public func quantized(gateUp: CUdeviceptr, codes: CUdeviceptr, scales: CUdeviceptr, rows: Int, ffn: Int, interleaved: Bool = false,
                          stream: GPUStream) throws {
        guard rows > 0 else { return }
        guard SwiGLU.quantizes(ffn: ffn) else { throw KilnError("swiglu_rows_fp8: ffn \(ffn) must be a positive multiple of 8") }
        let items = rows * ((ffn + 127) / 128)
        try fp8Kernel.launch(grid: ((items + 3) / 4, 1, 1), block: (128, 1, 1), stream: stream, pdl: stream.pdl,
                             FP8Params(gateUp: gateUp, codes: codes, scales: scales, rows: Int32(rows), ffn: Int32(ffn),
                                       interleaved: interleaved ? 1 : 0, pad: 0))
    }

    /// dst [2·ffn, hidden] = src [gate | up] with rows interleaved per 16-row tile (8 gate rows, then their 8 up rows).
    public func interleaveGateUp(src: CUdeviceptr, dst: CUdeviceptr, ffn: Int, hidden: Int, stream: GPUStream) throws {
        guard ffn % 8 == 0, hidden % 8 == 0 else { throw KilnError("interleave_gate_up: ffn \(ffn) and hidden \(hidden) must be multiples of 8") }
        try interleave.launch(grid: (gridStrideBlocks(2 * ffn * hidden / 8, threads: 256, context: context), 1, 1), block: (256, 1, 1), stream: stream,
                              InterleaveParams(src: src, dst: dst, ffn: Int32(ffn), hidden: Int32(hidden)))
    }
}
