import KilnKernels

/// One point of the search: an instance of an op's instance list and a launch-time split count.
public struct GemmCandidate: Hashable, Sendable, CustomStringConvertible {
    public enum Kernel: Hashable, Sendable {
        case splitK(GemmSplitK.Config), stream(GemmStream.Config), swapAB(GemmSwapAB.Config), hopper(GemmHopper.Config)
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
        }
    }
    public var description: String { name + (split > 1 ? " split \(split)" : "") }
    /// Whether the kernel can apply SwiGLU in its epilogue (GemmSplitK.Epilogue.swiglu): the decode GEMMs.
    public var hasSwiGLUEpilogue: Bool {
        switch kernel { case .splitK, .stream, .swapAB: return true; case .hopper: return false }
    }
}
