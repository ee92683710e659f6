import Foundation
import KilnCore
import KilnGPU

/// rope.cu: rotary position embedding in place on [tokens, heads, headDim] (token stride given).
public struct RoPE {
    public static let file = "rope.cu"
    public static let dtypes: [DType] = [.bf16, .f16, .f32]

    /// How rotation pairs are formed: (x[2i], x[2i+1]) or (x[i], x[i + d/2]) (HF `rotate_half`).
    public enum Pairing: Int, Sendable, CaseIterable { case interleaved = 0, halves = 1 }

    /// Llama 3.1 "llama3" rope_scaling parameters.
    public struct Llama3Scaling: Sendable {
        public var factor: Double, lowFreqFactor: Double, highFreqFactor: Double, originalMaxPositions: Double
        public init(factor: Double = 8, lowFreqFactor: Double = 1, highFreqFactor: Double = 4, originalMaxPositions: Double = 8192) {
            self.factor = factor; self.lowFreqFactor = lowFreqFactor; self.highFreqFactor = highFreqFactor
            self.originalMaxPositions = originalMaxPositions
        }
    }

    public static var instances: [KernelInstance] {
        dtypes.flatMap { t in Pairing.allCases.map { KernelInstance(file, "kiln::rope<\(t.cudaName), \($0.rawValue)>", hot: true) } }
    }

    /// inv_freq[i] = theta^(-2i/d), then Llama 3.1's scaling: long wavelengths divided by `factor`,
    /// short ones kept, and a smooth blend between (as in Meta's reference and transformers).
    public static func inverseFrequencies(headDim: Int, theta: Double, scaling: Llama3Scaling? = nil) -> [Float] {
        (0..<(headDim / 2)).map { i in
            var f = 1.0 / pow(theta, Double(2 * i) / Double(headDim))
            if let s = scaling {
                let wavelen = 2 * Double.pi / f
                let lowWavelen = s.originalMaxPositions / s.lowFreqFactor
                let highWavelen = s.originalMaxPositions / s.highFreqFactor
                if wavelen > lowWavelen {
                    f /= s.factor
                } else if wavelen >= highWavelen {
                    let smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor)
                    f = (1 - smooth) * f / s.factor + smooth * f
                }
            }
            return Float(f)
        }
    }

    struct Params { var x: UInt64; var positions: UInt64; var invFreq: UInt64; var tokens: Int32; var heads: Int32; var headDim: Int32; var tokenStride: Int32 }

    public let dtype: DType, pairing: Pairing
    let kernel: Kernel
    public init(_ library: KernelLibrary, dtype: DType, pairing: Pairing) throws {
        self.dtype = dtype; self.pairing = pairing
        kernel = try library.kernel(RoPE.file, "kiln::rope<\(dtype.cudaName), \(pairing.rawValue)>")
    }

    /// x: [tokens, heads, headDim] with `tokenStride` elements between tokens (heads·headDim when dense);
    /// positions: int32 [tokens]; invFreq: f32 [headDim/2] from `inverseFrequencies`.
    public func callAsFunction(x: CUdeviceptr, positions: CUdeviceptr, invFreq: CUdeviceptr, tokens: Int, heads: Int, headDim: Int,
                               tokenStride: Int? = nil, stream: GPUStream) throws {
        let pairs = tokens * heads * headDim / 2
        guard pairs > 0 else { return }
        try kernel.launch(grid: ((pairs + 255) / 256, 1, 1), block: (256, 1, 1), stream: stream,
                          Params(x: x, positions: positions, invFreq: invFreq, tokens: Int32(tokens), heads: Int32(heads),
                                 headDim: Int32(headDim), tokenStride: Int32(tokenStride ?? heads * headDim)))
    }
}
