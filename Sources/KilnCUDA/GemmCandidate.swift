import KilnKernels

/// One point of the search: an instance of an op's instance list and a launch-time split count.
/// The bf16 families (gemm_splitk, gemm_stream, gemm_swapab, gemm_hopper) and the weight-format families that read
/// other weights: gemm_lut (lookup-table codes, M ≤ 16), gemm_lut_hopper (their prefill), gemm_fp8 (FP8, M ≤ 16) and
/// gemm_fp8_hopper (FP8 prefill).
public struct GemmCandidate: Hashable, Sendable, CustomStringConvertible {
    public enum Kernel: Hashable, Sendable {
        case splitK(GemmSplitK.Config), stream(GemmStream.Config), swapAB(GemmSwapAB.Config), hopper(GemmHopper.Config)
        case lut(GemmLUT.Config), lutHopper(GemmLUTHopper.Config), fp8(GemmFP8.Config), fp8Hopper(GemmFP8Hopper.Config)
    }
    public var kernel: Kernel
    public var split: Int
    public init(_ kernel: Kernel, split: Int = 1) { self.kernel = kernel; self.split = split }
    public var name: String {
        switch kernel {
        case .splitK(let c): return c.name
        case .stream(let c): return c.name
        case .swapAB(let c): return c.name
        case .hopper(let c): return c.name
        case .lut(let c): return c.name
        case .lutHopper(let c): return c.name
        case .fp8(let c): return c.name
        case .fp8Hopper(let c): return c.name
        }
    }
    public var description: String { name + (split > 1 ? " split \(split)" : "") }
    /// Whether the kernel can apply SwiGLU in its epilogue (GemmSplitK.Epilogue.swiglu): the decode GEMMs.
    public var hasSwiGLUEpilogue: Bool {
        switch kernel { case .splitK, .stream, .swapAB, .lut, .fp8: return true; case .hopper, .lutHopper, .fp8Hopper: return false }
    }
    /// Whether the kernel reads bf16 weights (GemmDispatch's callAsFunction); the others have their own entry points.
    public var readsBF16: Bool {
        switch kernel { case .splitK, .stream, .swapAB, .hopper: return true; case .lut, .lutHopper, .fp8, .fp8Hopper: return false }
    }
}
