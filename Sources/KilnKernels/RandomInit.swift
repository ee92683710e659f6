import KilnCore
import KilnGPU

/// random_init.cu: reproducible random bf16 tensors made on the GPU (dummy weights).
public struct RandomInit {
    public static let file = "random_init.cu"
    public static let instances = [KernelInstance(file, "kiln::random_bf16", hot: false), KernelInstance(file, "kiln::random_e4m3", hot: false)]
    struct Params { var y: UInt64; var n: Int64; var seed: UInt64; var center, halfWidth, minMag: Float }
    let kernel: Kernel
    let e4m3Kernel: Kernel
    let context: Context
    public init(_ library: KernelLibrary) throws {
        kernel = try library.kernel(RandomInit.file, "kiln::random_bf16")
        e4m3Kernel = try library.kernel(RandomInit.file, "kiln::random_e4m3")
        context = library.context!
    }
    /// `count` random finite e4m3 codes (normal magnitudes 2⁻⁶…416, hashed signs; never zero or NaN) at `y`.
    public func e4m3(y: CUdeviceptr, count: Int, seed: UInt64, stream: GPUStream) throws {
        guard count > 0 else { return }
        try e4m3Kernel.launch(grid: (gridStrideBlocks(count, threads: 256, context: context), 1, 1), block: (256, 1, 1), stream: stream,
                              Params(y: y, n: Int64(count), seed: seed, center: 0, halfWidth: 0, minMag: 0))
    }
    /// y[i] = center ± (minMag + (halfWidth − minMag)·u), u ∈ [0, 1) and the sign hashed from (seed, i).
    public func callAsFunction(y: CUdeviceptr, count: Int, seed: UInt64, center: Float, halfWidth: Float, minMag: Float, stream: GPUStream) throws {
        guard count > 0 else { return }
        try kernel.launch(grid: (gridStrideBlocks(count, threads: 256, context: context), 1, 1), block: (256, 1, 1), stream: stream,
                          Params(y: y, n: Int64(count), seed: seed, center: center, halfWidth: halfWidth, minMag: minMag))
    }
}
