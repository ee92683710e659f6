import KilnCore
import KilnGPU

/// copy.cu: the float4 device-to-device copy `kiln doctor` measures bandwidth with.
public struct Copy {
    public static let file = "copy.cu"
    public static let instances = [KernelInstance(file, "kiln::copy_f4", hot: true)]
    public struct Params { var src: UInt64; var dst: UInt64; var n4: Int64 }

    let kernel: Kernel
    let context: Context
    public init(_ library: KernelLibrary) throws {
        kernel = try library.kernel(Copy.file, "kiln::copy_f4")
        context = library.context!
    }

    /// Copies `bytes` (a multiple of 16, both addresses 16-byte aligned).
    public func callAsFunction(from src: CUdeviceptr, to dst: CUdeviceptr, bytes: Int, stream: GPUStream) throws {
        precondition(bytes % 16 == 0 && src % 16 == 0 && dst % 16 == 0)
        let n4 = bytes / 16
        guard n4 > 0 else { return }
        try kernel.launch(grid: (gridStrideBlocks(n4 / 2, threads: 256, context: context), 1, 1), block: (256, 1, 1), stream: stream,
                          Params(src: src, dst: dst, n4: Int64(n4)))
    }
}
