import KilnCore
import KilnGPU

/// softmax.cu: softmax over each row in f32 arithmetic.
public struct Softmax {
    public static let file = "softmax.cu"
    public static let dtypes: [DType] = [.f32, .bf16]
    public static var instances: [KernelInstance] { dtypes.map { KernelInstance(file, "kiln::softmax<\($0.cudaName)>", hot: true) } }
    struct Params { var x: UInt64; var y: UInt64; var rows: Int32; var cols: Int32 }

    public let dtype: DType
    let kernel: Kernel
    public init(_ library: KernelLibrary, dtype: DType) throws {
        self.dtype = dtype
        kernel = try library.kernel(Softmax.file, "kiln::softmax<\(dtype.cudaName)>")
    }

    /// x, y: [rows, cols]; y may alias x.
    public func callAsFunction(x: CUdeviceptr, y: CUdeviceptr, rows: Int, cols: Int, stream: GPUStream) throws {
        guard rows > 0 else { return }
        let threads = min(512, max(32, (cols + 31) / 32 * 32))
        try kernel.launch(grid: (rows, 1, 1), block: (threads, 1, 1), stream: stream, Params(x: x, y: y, rows: Int32(rows), cols: Int32(cols)))
    }
}
