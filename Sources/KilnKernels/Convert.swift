import KilnCore
import KilnGPU

/// convert.cu: f32 ↔ bf16 ↔ f16, round to nearest even.
public struct Convert {
    public static let file = "convert.cu"
    public static let pairs: [(DType, DType)] = [(.f32, .bf16), (.bf16, .f32), (.f32, .f16), (.f16, .f32), (.bf16, .f16), (.f16, .bf16)]
    public static var instances: [KernelInstance] {
        pairs.map { KernelInstance(file, "kiln::convert<\($0.0.cudaName), \($0.1.cudaName)>", hot: false) }
    }
    struct Params { var x: UInt64; var y: UInt64; var n: Int64 }

    public let from: DType, to: DType
    let kernel: Kernel
    let context: Context
    public init(_ library: KernelLibrary, from: DType, to: DType) throws {
        self.from = from; self.to = to
        kernel = try library.kernel(Convert.file, "kiln::convert<\(from.cudaName), \(to.cudaName)>")
        context = library.context!
    }

    public func callAsFunction(x: CUdeviceptr, y: CUdeviceptr, count: Int, stream: GPUStream) throws {
        guard count > 0 else { return }
        let blocks = gridStrideBlocks((count + 7) / 8, threads: 256, context: context)
        try kernel.launch(grid: (blocks, 1, 1), block: (256, 1, 1), stream: stream, Params(x: x, y: y, n: Int64(count)))
    }
}
