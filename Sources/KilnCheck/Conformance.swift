import Foundation
import KilnCore
import KilnCUDA
import KilnTune

/// Error bounds for one comparison: |got − want| ≤ atol + rtol·|want| elementwise; NaN never passes.
public struct Tolerance: Sendable {
    public var rtol: Float, atol: Float
    public init(rtol: Float, atol: Float) { self.rtol = rtol; self.atol = atol }
    public static let exact = Tolerance(rtol: 0, atol: 0)

    /// Bounds for results rounded once to `dtype` after f32 arithmetic (half an ulp of the type, plus
    /// room for a different summation order moving a value across a rounding boundary).
    public static func forOutput(_ dtype: DType) -> Tolerance {
        switch dtype {
        case .bf16: return Tolerance(rtol: 1.0 / 64, atol: 1e-3)   // 8 mantissa bits: ulp = 2^-7 relative
        case .f16: return Tolerance(rtol: 2e-3, atol: 1e-4)        // 11 bits: ulp = 2^-10 relative
        default: return Tolerance(rtol: 2e-5, atol: 1e-5)
        }
    }
}

/// How a result differs from the reference.
public struct Mismatch: Sendable, CustomStringConvertible {
    public var badCount: Int, total: Int
    public var firstIndex: Int, got: Float, want: Float
    public var description: String {
        badCount < 0 ? "length \(total) where \(firstIndex) expected"
            : "\(badCount)/\(total) elements out of tolerance, first at [\(firstIndex)]: got \(got), want \(want)"
    }
}

public enum Conformance {
    /// The comparison every check uses, on plain arrays (so it is tested without a GPU): nil when
    /// every element is within tolerance. NaN or ±inf in `got` fails unless `want` has the same
    /// infinity; NaN in `want` fails too (a reference never produces one on the check inputs).
    public static func compare(_ got: [Float], _ want: [Float], tolerance: Tolerance) -> Mismatch? {
        guard got.count == want.count else { return Mismatch(badCount: -1, total: got.count, firstIndex: want.count, got: 0, want: 0) }
        var bad = 0, first = -1
        for i in 0..<got.count {
            let g = got[i], w = want[i]
            let ok: Bool
            if g.isNaN || w.isNaN { ok = false }
            else if g.isInfinite || w.isInfinite { ok = g == w }
            else { ok = abs(g - w) <= tolerance.atol + tolerance.rtol * abs(w) }
            if !ok { bad += 1; if first < 0 { first = i } }
        }
        guard bad > 0 else { return nil }
        return Mismatch(badCount: bad, total: got.count, firstIndex: first, got: got[first], want: want[first])
    }

    /// Integer results (token ids) must match exactly.
    public static func compare(_ got: [Int32], _ want: [Int32]) -> Mismatch? {
        compare(got.map { Float($0) }, want.map { Float($0) }, tolerance: .exact)
    }
}

