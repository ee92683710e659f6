import KilnCore

/// Activations quantized to llama.cpp's Q8_K (`quantize_row_q8_K_ref`, which its x86 CPU backend uses): one f32 scale
/// per 256-element super-block and the sum of every 16 quants, the activation side of the K-quant and IQ4_XS products.
///
/// Per super-block: amax = max |x| and `max` the first element reaching it (signed); iscale = -127 / max (ggml's
/// choice, so the largest element quantizes to -127 and d is negative when max is positive); q = min(127,
/// round-half-even(iscale · x)); d = 1 / iscale in f32 (not rounded to half, unlike Q8_0); bsums = Σ q over each 16.
/// An all-zero super-block has d = 0, q = 0 and bsums 0.
///
/// Layout, per token: the 256 quants of a super-block as `Int16` in `Q8Activations`'s per-32 permuted order
/// ([even 0..14][odd 1..15][even 16..30][odd 17..31] of each 32, `Q8Activations.slot`), which is the order the weight
/// unpacking of `KQuantProducts` produces; `bsums` as Float (exact: |Σ| ≤ 2032) so the products' minimum terms are
/// float multiply-adds.
public final class Q8KActivations {
    public let maxTokens: Int
    public let maxCols: Int
    /// Columns of the rows quantized last.
    public private(set) var cols = 0
    let q: UnsafeMutablePointer<Int16>      // [maxTokens × maxCols]
    /// The same quants as int8 in natural order, for the VNNI Q4_K product (Int8Products.swift).
    let q8: UnsafeMutablePointer<Int8>      // [maxTokens × maxCols]
    let d: UnsafeMutablePointer<Float>      // [maxTokens × maxCols/256]
    let bsums: UnsafeMutablePointer<Float>  // [maxTokens × maxCols/16]

    public init(maxTokens: Int, maxCols: Int) {
        self.maxTokens = maxTokens
        self.maxCols = (maxCols + 255) / 256 * 256
        let n = maxTokens * self.maxCols
        q = .allocate(capacity: n); d = .allocate(capacity: n / 256); bsums = .allocate(capacity: n / 16)
        q8 = .allocate(capacity: n); q8.initialize(repeating: 0, count: n)
        q.initialize(repeating: 0, count: n); d.initialize(repeating: 0, count: n / 256); bsums.initialize(repeating: 0, count: n / 16)
    }

    deinit { q.deallocate(); q8.deallocate(); d.deallocate(); bsums.deallocate() }

    /// Quantizes `tokens` rows of `cols` floats (row stride `cols`); `cols` must be a multiple of 256.
    public func quantize(_ x: UnsafePointer<Float>, tokens: Int, cols: Int) {
        quantize(x, rows: 0..<tokens, cols: cols)
    }

    /// Quantizes rows `range` only (so a thread pool can split the work).
    public func quantize(_ x: UnsafePointer<Float>, rows range: Range<Int>, cols: Int) {
        precondition(cols % 256 == 0 && cols <= maxCols && range.upperBound <= maxTokens)
        self.cols = cols
        for t in range { quantizeRow(x + t * cols, token: t) }
    }

    /// The quantized value of element `j` (0..<cols) of token `t`, in natural order (tests, references).
    public func value(token t: Int, _ j: Int) -> Int16 { q[t * maxCols + (j & ~31) + Q8Activations.slot(j & 31)] }
    /// The scale of super-block `b` of token `t`.
    public func scale(token t: Int, block b: Int) -> Float { d[t * (maxCols / 256) + b] }
    /// The sum of quants `16g ..< 16g + 16` of token `t`.
    public func blockSum(token t: Int, group g: Int) -> Float { bsums[t * (maxCols / 16) + g] }

    @inline(__always) private func quantizeRow(_ x: UnsafePointer<Float>, token t: Int) {
        for b in 0..<(cols / 256) {
            let src = x + 256 * b
            var amax: Float = 0, signedMax: Float = 0
            for j in 0..<256 {
                let a = abs(src[j])
                if a > amax { amax = a; signedMax = src[j] }
            }
            let dst = q + t * maxCols + 256 * b, sums = bsums + t * (maxCols / 16) + 16 * b
            guard amax != 0 else {
                dst.update(repeating: 0, count: 256); sums.update(repeating: 0, count: 16)
                (q8 + t * maxCols + 256 * b).update(repeating: 0, count: 256)
                d[t * (maxCols / 256) + b] = 0
                continue
            }
            let iscale = -127 / signedMax
            for g in 0..<16 {
                var sum: Int32 = 0
                for j in (16 * g)..<(16 * g + 16) {
                    let v = Int16(min(127, (iscale * src[j]).rounded(.toNearestOrEven)))
                    dst[(j & ~31) + Q8Activations.slot(j & 31)] = v
                    q8[t * maxCols + 256 * b + j] = Int8(truncatingIfNeeded: v)
                    sum &+= Int32(v)
                }
                sums[g] = Float(sum)
            }
            d[t * (maxCols / 256) + b] = 1 / iscale
        }
    }
}

extension LinearWeight {
    /// Whether this weight's product reads Q8_K activations (`Q8Activations.superBlocks`) rather than Q8_0/Q8_1.
    public var usesQ8K: Bool {
        if case .gguf(let b) = format { return KQuantProducts.superBlockFormats.contains(b) }
        return false
    }
}

extension CPUModel {
    /// Whether any matrix of the model reads Q8_K activations (the forward pass then quantizes them too).
    var needsQ8K: Bool {
        layers.contains { l in [l.q, l.k, l.v, l.o, l.gate, l.up, l.down].contains { $0.usesQ8K } } || output.usesQ8K
    }

    /// The forward pass's Q8_K hook: quantizes `x` ([tokens × cols]) into `buffers.act.superBlocks` when the model has
    /// K-quant matrices and `cols` is whole super-blocks (only matrices of such widths are K-quants).
    func quantizeSuperBlocks(_ x: UnsafePointer<Float>, tokens n: Int, cols: Int) {
        guard let k = buffers.act.superBlocks, cols % 256 == 0 else { return }
        if n == 1 { k.quantize(x, tokens: 1, cols: cols); return }
        pool.run { i, p in k.quantize(x, rows: ThreadPool.slice(n, i, p), cols: cols) }
    }
}
