import Foundation

/// Llama 3.1 `rope_scaling` of type `llama3`.
public struct Llama3RopeScaling: Equatable, Sendable {
    /// Meta's Llama 3.1 values (factor 8, low 1, high 4, original context 8192).
    public static let llama31 = Llama3RopeScaling(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192)
    public var factor: Double
    public var lowFreqFactor: Double
    public var highFreqFactor: Double
    public var originalMaxPositionEmbeddings: Int
    public init(factor: Double, lowFreqFactor: Double, highFreqFactor: Double, originalMaxPositionEmbeddings: Int) {
        self.factor = factor; self.lowFreqFactor = lowFreqFactor; self.highFreqFactor = highFreqFactor
        self.originalMaxPositionEmbeddings = originalMaxPositionEmbeddings
    }
}

/// RoPE inverse frequency of each dimension pair: θ^(-2i/d), divided by llama.cpp's `rope_freqs` factors when a file
/// has them, else adjusted by Llama 3.1's `llama3` scaling (long wavelengths divided by `factor`, short ones kept, a
/// smooth blend between, as Meta's reference and transformers do). The one definition: the CPU engine, the GPU
/// weights and the GPU conformance checks all use it.
public func ropeInverseFrequencies(headDim: Int, theta: Float, scaling: Llama3RopeScaling? = nil, freqFactors: [Float]? = nil) -> [Float] {
    let half = headDim / 2
    var out = [Float](repeating: 0, count: half)
    for i in 0..<half {
        var f = pow(Double(theta), -2.0 * Double(i) / Double(headDim))
        if let ff = freqFactors {
            f /= Double(ff[i])
        } else if let s = scaling {
            let old = Double(s.originalMaxPositionEmbeddings)
            let lowWavelen = old / s.lowFreqFactor, highWavelen = old / s.highFreqFactor
            let wavelen = 2 * Double.pi / f
            if wavelen > lowWavelen {
                f /= s.factor
            } else if wavelen >= highWavelen {
                let smooth = (old / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor)
                f = (1 - smooth) * f / s.factor + smooth * f
            }
        }
        out[i] = Float(f)
    }
    return out
}
