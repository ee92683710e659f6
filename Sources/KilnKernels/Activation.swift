import KilnCore
import KilnGPU

/// activation.cu: out = silu(gate) · up, elementwise (SwiGLU).
public struct SiLUMul {
    public static let file = "activation.cu"
    public static let dtypes: [DType] = [.bf16, .f16, .f32]
    public static var instances: [KernelInstance] { dtypes.map { KernelInstance(file, "kiln::silu_mul<\($0.cudaName)>", hot: true) } }
    struct Params { var gate: UInt64; var up: UInt64; var out: UInt64; var n: Int64 }

    public let dtype: DType
    let kernel: Kernel
    let context: Context
    public init(_ library: KernelLibrary, dtype: DType) throws {
        self.dtype = dtype
        kernel = try library.kernel(SiLUMul.file, "kiln::silu_mul<\(dtype.cudaName)>")
        context = library.context!
    }

    /// gate, up, out: `count` elements each; out may alias gate or up.
    public func callAsFunction(gate: CUdeviceptr, up: CUdeviceptr, out: CUdeviceptr, count: Int, stream: GPUStream) throws {
        guard count > 0 else { return }
        // Each thread handles two 8-element packs per iteration.
        let blocks = gridStrideBlocks(max(1, (count + 15) / 16), threads: 256, context: context)
        try kernel.launch(grid: (blocks, 1, 1), block: (256, 1, 1), stream: stream, Params(gate: gate, up: up, out: out, n: Int64(count)))
    }
}
