import Foundation
import KilnCore
import KilnCUDA
import KilnTune

/// CPU references for every GPU kernel: plain loops in f32/f64 that read like the math. Inputs
/// are the exact values the GPU sees (already rounded to the element type); outputs are exact
/// (unrounded) results, and the comparison's tolerance accounts for the GPU's rounding.
public enum Reference {
    /// y = x / sqrt(mean(x²) + eps) · w per row.
    public static func rmsNorm(_ x: [Float], weight: [Float], rows: Int, cols: Int, eps: Float) -> [Float] {
        var y = [Float](repeating: 0, count: rows * cols)
        for r in 0..<rows {
            var ss = 0.0
            for c in 0..<cols { ss += Double(x[r * cols + c]) * Double(x[r * cols + c]) }
            let scale = 1 / (ss / Double(cols) + Double(eps)).squareRoot()
            for c in 0..<cols { y[r * cols + c] = Float(Double(x[r * cols + c]) * scale * Double(weight[c])) }
        }
        return y
    }

    /// (residual + x rounded to `dtype`, rmsNorm of it).
    public static func residualRMSNorm(_ x: [Float], residual: [Float], weight: [Float], rows: Int, cols: Int, eps: Float,
                                       dtype: DType) -> (residual: [Float], y: [Float]) {
        let h = roundTo(zip(x, residual).map { $0 + $1 }, dtype)
        return (h, rmsNorm(h, weight: weight, rows: rows, cols: cols, eps: eps))
    }

    /// Rotary embedding in place on [tokens, heads, headDim] with a token stride.
    public static func rope(_ x: [Float], positions: [Int32], invFreq: [Float], tokens: Int, heads: Int, headDim: Int,
                            tokenStride: Int, interleaved: Bool) -> [Float] {
        var y = x
        let half = headDim / 2
        for t in 0..<tokens {
            for h in 0..<heads {
                let base = t * tokenStride + h * headDim
                for i in 0..<half {
                    // The angle is formed in f32 exactly as the kernel does; sin/cos then in f64.
                    let angle = Double(Float(positions[t]) * invFreq[i])
                    let (s, c) = (sin(angle), cos(angle))
                    let i0 = base + (interleaved ? 2 * i : i), i1 = base + (interleaved ? 2 * i + 1 : i + half)
                    let x0 = Double(x[i0]), x1 = Double(x[i1])
                    y[i0] = Float(x0 * c - x1 * s)
                    y[i1] = Float(x0 * s + x1 * c)
                }
            }
        }
        return y
    }

    public static func siluMul(gate: [Float], up: [Float]) -> [Float] {
        zip(gate, up).map { g, u in Float(Double(g) / (1 + exp(-Double(g))) * Double(u)) }
    }

    public static func softmax(_ x: [Float], rows: Int, cols: Int) -> [Float] {
        var y = [Float](repeating: 0, count: rows * cols)
        for r in 0..<rows {
            let row = x[(r * cols)..<((r + 1) * cols)]
            let m = Double(row.max() ?? 0)
            let e = row.map { exp(Double($0) - m) }
            let s = e.reduce(0, +)
            for c in 0..<cols { y[r * cols + c] = Float(e[c] / s) }
        }
        return y
    }

    /// Index of the largest value (lowest index on ties; NaN ignored; 0 when none).
    public static func argmax(_ row: ArraySlice<Float>) -> Int32 {
        var best = -Float.infinity, bi = -1
        for (i, v) in zip(0..., row) where !v.isNaN {
            if v > best || (v == best && bi < 0) { best = v; bi = i }
        }
        return Int32(max(0, bi))
    }

    /// Embedding rows gathered (no conversion: the comparison rounds to the output type).
    public static func embedding(table: [Float], ids: [Int32], dim: Int) -> [Float] {
        ids.flatMap { id in table[(Int(id) * dim)..<(Int(id) * dim + dim)] }
    }
}

