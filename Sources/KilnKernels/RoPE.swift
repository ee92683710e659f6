import Foundation
import KilnCore
import KilnGPU

/// rope.cu: rotary position embedding in place on [tokens, heads, headDim] (token stride given).
public struct RoPE {
    public static let file = "rope.cu"
    public static let dtypes: [DType] = [.bf16, .f16, .f32]

    /// How rotation pairs are formed: (x[2i], x[2i+1]) or (x[i], x[i + d/2]) (HF `rotate_half`).
    public enum Pairing: Int, Sendable, CaseIterable { case interleaved = 0, halves = 1 }

    public static var instances: [KernelInstance] {
        dtypes.flatMap { t in Pairing.allCases.map { KernelInstance(file, "kiln::rope<\(t.cudaName), \($0.rawValue)>", hot: true) } }
    }

    struct Params { var x: UInt64; var positions: UInt64; var invFreq: UInt64; var tokens: Int32; var heads: Int32; var headDim: Int32; var tokenStride: Int32 }

    public let dtype: DType, pairing: Pairing
    let kernel: Kernel
    public init(_ library: KernelLibrary, dtype: DType, pairing: Pairing) throws {
        self.dtype = dtype; self.pairing = pairing
        kernel = try library.kernel(RoPE.file, "kiln::rope<\(dtype.cudaName), \(pairing.rawValue)>")
    }

    /// x: [tokens, heads, headDim] with `tokenStride` elements between tokens (heads·headDim when dense);
    /// positions: int32 [tokens]; invFreq: f32 [headDim/2] from KilnCore's `ropeInverseFrequencies`.
    public func callAsFunction(x: CUdeviceptr, positions: CUdeviceptr, invFreq: CUdeviceptr, tokens: Int, heads: Int, headDim: Int,
                               tokenStride: Int? = nil, stream: GPUStream) throws {
        let pairs = tokens * heads * headDim / 2
        guard pairs > 0 else { return }
        try kernel.launch(grid: ((pairs + 255) / 256, 1, 1), block: (256, 1, 1), stream: stream,
                          Params(x: x, positions: positions, invFreq: invFreq, tokens: Int32(tokens), heads: Int32(heads),
                                 headDim: Int32(headDim), tokenStride: Int32(tokenStride ?? heads * headDim)))
    }
}
