import KilnCore
import KilnGPU

/// sampling.cu: greedy argmax and top-k/top-p sampling over f32 logit rows.
public struct Sampling {
    public static let file = "sampling.cu"
    public static let instances = [KernelInstance(file, "kiln::argmax", hot: true), KernelInstance(file, "kiln::sample_top_k_top_p", hot: true)]
    /// Largest top-k the kernel handles; top_k <= 0 or above it means this cap.
    public static let maxTopK = 1024

    struct ArgmaxParams { var logits: UInt64; var out: UInt64; var rows: Int32; var cols: Int32 }
    struct SampleParams {
        var logits: UInt64; var uniforms: UInt64; var out: UInt64
        var rows: Int32; var cols: Int32; var topK: Int32; var topP: Float; var invTemperature: Float
    }

    let argmaxKernel: Kernel, sampleKernel: Kernel
    public init(_ library: KernelLibrary) throws {
        argmaxKernel = try library.kernel(Sampling.file, "kiln::argmax")
        sampleKernel = try library.kernel(Sampling.file, "kiln::sample_top_k_top_p")
    }

    /// out[r] = index of the largest logit of row r (lowest index on ties; NaN ignored). out: int32 [rows].
    public func argmax(logits: CUdeviceptr, out: CUdeviceptr, rows: Int, cols: Int, stream: GPUStream) throws {
        guard rows > 0 else { return }
        try argmaxKernel.launch(grid: (rows, 1, 1), block: (1024, 1, 1), stream: stream,
                                ArgmaxParams(logits: logits, out: out, rows: Int32(rows), cols: Int32(cols)))
    }

    /// Samples one token per row at `temperature` (> 0) from the top-k, then top-p, candidates,
    /// using uniforms[r] ∈ [0,1) from the host (f32 [rows]). out: int32 [rows].
    public func sample(logits: CUdeviceptr, uniforms: CUdeviceptr, out: CUdeviceptr, rows: Int, cols: Int,
                       topK: Int, topP: Float, temperature: Float, stream: GPUStream) throws {
        guard rows > 0 else { return }
        precondition(temperature > 0, "temperature 0 is greedy: use argmax")
        try sampleKernel.launch(grid: (rows, 1, 1), block: (1024, 1, 1), stream: stream,
                                SampleParams(logits: logits, uniforms: uniforms, out: out, rows: Int32(rows), cols: Int32(cols),
                                             topK: Int32(topK), topP: topP, invTemperature: 1 / temperature))
    }
}
