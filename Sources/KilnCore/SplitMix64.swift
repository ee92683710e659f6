/// SplitMix64 (Steele, Lea and Flood): a tiny portable PRNG, so a seed gives the same samples, fixtures and random
/// test inputs on every platform. The one generator of the project: samplers, fixtures, conformance inputs, tuner.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits (sampling).
    public mutating func nextUnit() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }

    /// Uniform in [0, 1) with 24 bits (test fixtures).
    public mutating func unit() -> Float { Float(next() >> 40) / Float(1 << 24) }

    /// `n` values uniform in [lo, hi).
    public mutating func uniform(_ n: Int, _ lo: Float = -1, _ hi: Float = 1) -> [Float] {
        (0..<n).map { _ in Float.random(in: lo..<hi, using: &self) }
    }

    /// `n` values approximately normal(0, sigma) (a sum of four uniforms): enough spread for softmax-like checks.
    public mutating func normal(_ n: Int, sigma: Float = 1) -> [Float] {
        (0..<n).map { _ in
            var s: Float = 0
            for _ in 0..<4 { s += Float.random(in: -1..<1, using: &self) }
            return s * sigma * 0.866
        }
    }
}
