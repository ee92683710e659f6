import KilnCore

/// Every IEEE half converted to Float, so block scales cost one load instead of a branchy conversion
/// (the baseline x86-64 target has no F16C instructions). 256 KiB, built once.
public let halfTable: UnsafeMutablePointer<Float> = {
    let t = UnsafeMutablePointer<Float>.allocate(capacity: 65536)
    for i in 0..<65536 { t[i] = halfToFloat(UInt16(i)) }
    return t
}()

/// Activations quantized to 8 bits per 32-element block, as llama.cpp quantizes them before a
/// quantized dot product (`quantize_row_q8_0` / `q8_1`): this is what makes Kiln's logits agree with llama.cpp's.
///
/// Layout, per token and block: 32 `Int16` values (int8 range, widened once here so the weight loop only widens weights)
/// in the order [even 0..14][odd 1..15][even 16..30][odd 17..31], which is the order the weight unpacking produces
/// (see `LinearKernels`). Per block: `d` (the scale, rounded to half as llama.cpp stores it), `sumQ` (sum of the
/// quantized values, for Q4_0's -8 offset) and `s` (half-rounded d·sumQ, llama.cpp's Q8_1 `s`, for Q4_1's minimum).
public final class Q8Activations {
    public let maxTokens: Int
    public let maxCols: Int
    /// Columns of the rows quantized last.
    public private(set) var cols = 0
    /// `d` and `s` again, block-major, so a tile of consecutive tokens reads its scales with one vector load.
    let dByBlock: UnsafeMutablePointer<Float>  // [maxCols/32 × maxTokens]
    let sByBlock: UnsafeMutablePointer<Float>  // [maxCols/32 × maxTokens]
    let q: UnsafeMutablePointer<Int16>     // [maxTokens × maxCols]
    /// The same values as int8 in natural order, for the VNNI product (Int8Products.swift).
    let q8: UnsafeMutablePointer<Int8>     // [maxTokens × maxCols]
    let d: UnsafeMutablePointer<Float>     // [maxTokens × maxCols/32]
    let sumQ: UnsafeMutablePointer<Float>  // [maxTokens × maxCols/32]
    let s: UnsafeMutablePointer<Float>     // [maxTokens × maxCols/32]
    /// The same rows quantized to Q8_K for the super-block formats (KQuantActivations.swift), when the model has any.
    public var superBlocks: Q8KActivations?

    public init(maxTokens: Int, maxCols: Int) {
        self.maxTokens = maxTokens
        self.maxCols = (maxCols + 31) / 32 * 32
        q = .allocate(capacity: maxTokens * self.maxCols)
        q8 = .allocate(capacity: maxTokens * self.maxCols)
        q8.initialize(repeating: 0, count: maxTokens * self.maxCols)
        let nb = maxTokens * self.maxCols / 32
        d = .allocate(capacity: nb); sumQ = .allocate(capacity: nb); s = .allocate(capacity: nb)
        dByBlock = .allocate(capacity: nb); sByBlock = .allocate(capacity: nb)
        dByBlock.initialize(repeating: 0, count: nb); sByBlock.initialize(repeating: 0, count: nb)
        q.initialize(repeating: 0, count: maxTokens * self.maxCols)
        d.initialize(repeating: 0, count: nb); sumQ.initialize(repeating: 0, count: nb); s.initialize(repeating: 0, count: nb)
    }

    deinit { q.deallocate(); q8.deallocate(); d.deallocate(); sumQ.deallocate(); s.deallocate(); dByBlock.deallocate(); sByBlock.deallocate() }

    /// Position of element `j` of a block in the permuted layout.
    @inline(__always) static func slot(_ j: Int) -> Int {
        let half = j & 16, k = j & 15
        return half + (k & 1) * 8 + (k >> 1)
    }

    /// Quantizes `tokens` rows of `cols` floats (row stride `cols`); `cols` must be a multiple of 32.
    public func quantize(_ x: UnsafePointer<Float>, tokens: Int, cols: Int) {
        precondition(cols % 32 == 0 && cols <= maxCols && tokens <= maxTokens)
        self.cols = cols
        for t in 0..<tokens { quantizeRow(x + t * cols, token: t) }
    }

    /// Quantizes rows `range` only (so a thread pool can split the work).
    public func quantize(_ x: UnsafePointer<Float>, rows range: Range<Int>, cols: Int) {
        self.cols = cols
        for t in range { quantizeRow(x + t * cols, token: t) }
    }

    @inline(__always) private func quantizeRow(_ x: UnsafePointer<Float>, token t: Int) {
        let nb = cols / 32
        for b in 0..<nb {
            let src = x + b * 32
            var amax: Float = 0
            for j in 0..<32 { amax = max(amax, abs(src[j])) }
            let scale = amax / 127
            let inv: Float = amax != 0 ? 127 / amax : 0
            let dst = q + t * maxCols + b * 32, dst8 = q8 + t * maxCols + b * 32
            var sum: Int32 = 0
            for j in 0..<32 {
                // llama.cpp's AVX quantizer rounds half to even.
                let v = Int16((src[j] * inv).rounded(.toNearestOrEven))
                dst[Q8Activations.slot(j)] = v
                dst8[j] = Int8(truncatingIfNeeded: v)
                sum &+= Int32(v)
            }
            let i = t * (maxCols / 32) + b
            d[i] = Float(Float16(scale))
            sumQ[i] = Float(sum)
            s[i] = Float(Float16(scale * Float(sum)))
            dByBlock[b * maxTokens + t] = d[i]; sByBlock[b * maxTokens + t] = s[i]
        }
    }
}
