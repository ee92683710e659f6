import KilnCore
import KilnModels

/// A weight matrix `[rows, cols]` read in place from the model file, applied as `out[t, r] = Σ_c W[r, c] · x[t, c]`:
/// the CPU engine's product, and the one CPU reference of each weight format's product (its dequantization is
/// `QuantizedMatrix.dequantize`). Per format:
///  - dense f32 / f16 / bf16: float weights against float activations (`floatRows`);
///  - GGUF Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 / IQ4_NL: block by block against `Q8Activations` with integer dot products,
///    the way llama.cpp's CPU backend does (`quantRows` with the format's `Q8BlockProduct`; BlockProducts.swift,
///    KQuantLegacyProducts.swift); matrices are never dequantized whole.
///  - GGUF Q2_K / Q3_K / Q4_K / Q5_K / Q6_K / IQ4_XS: super-blocks against Q8_K activations (`superBlockRows`,
///    KQuantProducts.swift); without a Q8_K set attached, each row is dequantized to f32 by the format's reference and
///    multiplied in float (`dequantizedRows`, the fallback).
///  - FP8 e4m3 with block scales: `FP8Numerics` (W8A16 or W8A8, `FP8Linear.swift`).
///  - lookup tables (`WeightFormat.lut`): rows dequantized by the format's reference, float product (`LUTProducts.swift`).
public struct LinearWeight {
    public let name: String
    public let format: WeightFormat
    public let rows: Int
    public let cols: Int
    /// Bytes of one row of the single plane (dense elements or GGUF blocks; FP8 codes).
    public let rowBytes: Int
    public let data: UnsafeRawPointer
    /// FP8 only: `scale_inv` `[ceil(rows/blockRows), ceil(cols/blockCols)]` and the product's numerics.
    let fp8Scales: UnsafePointer<Float>?
    public let fp8Numerics: FP8Numerics
    /// Lookup-table formats only: codes, scales, offsets and table (`LUTProducts.swift`).
    var lutPlanes: LUTPlanes? = nil
    /// Q4_0 / Q4_1 / Q8_0 / Q5_0 / Q5_1 / IQ4_NL / Q4_K on CPUs with VNNI: the rows interleaved for the int8 product (`Int8Products.swift`), owned
    /// by the model.
    public var interleaved: UnsafeRawPointer? = nil

    /// The weight over `m`'s planes, without copying them (`m`'s source must stay alive). `fp8` picks the product
    /// numerics of FP8 matrices (ignored for other formats).
    public init(_ m: QuantizedMatrix, fp8: FP8Numerics = .w8a16) throws {
        fp8Numerics = fp8
        switch m.format {
        case .dense, .gguf: fp8Scales = nil
        case .fp8E4M3:
            name = m.name; format = m.format; rows = m.rows; cols = m.cols; rowBytes = m.cols
            data = m.planes[0].bytes.baseAddress!
            fp8Scales = m.planes[1].bytes.baseAddress!.assumingMemoryBound(to: Float.self)
            return
        case .lut:   // LUTProducts.swift
            name = m.name; format = m.format; rows = m.rows; cols = m.cols; rowBytes = m.planes[0].shape[1]
            data = m.planes[0].bytes.baseAddress!; fp8Scales = nil; lutPlanes = try LUTPlanes(m)
            return
        }
        guard let rb = m.rowBytes, let base = m.planes[0].bytes.baseAddress else {
            throw KilnError("tensor \(m.name): a \(m.format.name) matrix should be one plane")
        }
        name = m.name; format = m.format; rows = m.rows; cols = m.cols; rowBytes = rb; data = base
    }

    /// An f32 matrix `[rows, cols]` at `data` (memory owned by the caller, e.g. weights dequantized at load).
    public init(name: String, f32 data: UnsafeRawPointer, rows: Int, cols: Int) {
        self.name = name; format = .dense(.f32); self.rows = rows; self.cols = cols; rowBytes = 4 * cols; self.data = data
        fp8Scales = nil; fp8Numerics = .w8a16
    }

    /// Whether this weight consumes Q8-quantized activations (otherwise it reads the float activations).
    public var usesQ8: Bool {
        switch format {
        case .gguf: return true   // Q8_0/Q8_1, or Q8_K for the super-block formats (`usesQ8K`, KQuantActivations.swift)
        default: return false
        }
    }

    /// Computes output rows `range` for `tokens` tokens. `x` holds the float activations `[tokens × cols]`;
    /// `act` must hold the same rows quantized when `usesQ8`. Writes `out[t * outStride + r]`.
    public func apply(rows range: Range<Int>, x: UnsafePointer<Float>, act: Q8Activations, tokens: Int,
                      out: UnsafeMutablePointer<Float>, outStride: Int) {
        if interleaved != nil, interleavedRows(range, act, tokens, out, outStride) { return }
        switch format {
        case .gguf(.q4_0): quantRows(Q4_0Blocks.self, range, act, tokens, out, outStride)
        case .gguf(.q4_1): quantRows(Q4_1Blocks.self, range, act, tokens, out, outStride)
        case .gguf(.q8_0): quantRows(Q8_0Blocks.self, range, act, tokens, out, outStride)
        case .gguf(.q5_0): quantRows(Q5_0Blocks.self, range, act, tokens, out, outStride)
        case .gguf(.q5_1): quantRows(Q5_1Blocks.self, range, act, tokens, out, outStride)
        case .gguf(.iq4_nl): quantRows(IQ4_NLBlocks.self, range, act, tokens, out, outStride)
        case .gguf(let block) where act.superBlocks != nil:   // KQuantProducts.swift
            superBlockRows(block, range, act.superBlocks!, tokens, out, outStride)
        case .gguf(let block): dequantizedRows(block, range, x, tokens, out, outStride)
        case .dense(.f32): floatRows(range, x, tokens, out, outStride)
        case .dense(let e): widenedRows(e, range, x, tokens, out, outStride)
        case .fp8E4M3(let br, let bc): fp8Rows(blockRows: br, blockCols: bc, range, x, tokens, out, outStride)
        case .lut: lutRows(lutPlanes!, range, x, tokens, out, outStride)
        }
    }

    /// Sums the eight Int16 lanes pairwise into four Int32 lanes (sign-extending shifts; no shuffles).
    @inline(__always) static func widenPairs(_ s: SIMD8<Int16>) -> SIMD4<Int32> {
        let s32 = unsafeBitCast(s, to: SIMD4<Int32>.self)
        return ((s32 &<< 16) &>> 16) &+ (s32 &>> 16)
    }

    /// The plain product of quantized rows, the reference the fast `quantRows` (BlockProducts.swift) is tested against:
    /// tokens four at a time so each unpacked weight block serves four tokens.
    func referenceQuantRows<F: Q8BlockProduct>(_: F.Type, _ range: Range<Int>, _ act: Q8Activations, _ tokens: Int,
                                           _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
        let nb = cols / 32
        let table = halfTable
        let qStride = act.maxCols, bStride = act.maxCols / 32
        for r in range {
            let row = data + r * rowBytes
            var t = 0
            while t + 4 <= tokens {
                var acc0 = SIMD4<Float>(), acc1 = SIMD4<Float>(), acc2 = SIMD4<Float>(), acc3 = SIMD4<Float>()
                var ex0: Float = 0, ex1: Float = 0, ex2: Float = 0, ex3: Float = 0
                let q0 = act.q + t * qStride, i0 = t * bStride
                for b in 0..<nb {
                    let blk = row + b * F.bytes
                    let w = F.unpack(blk)
                    let dw = table[Int(blk.loadUnaligned(as: UInt16.self))]
                    let mw = F.hasMin ? table[Int(blk.loadUnaligned(fromByteOffset: 2, as: UInt16.self))] : 0
                    @inline(__always) func one(_ k: Int, _ acc: inout SIMD4<Float>, _ ex: inout Float) {
                        let i = i0 + k * bStride + b
                        let dd = dw * act.d[i]
                        acc += SIMD4<Float>(F.dot(w, q0 + k * qStride + b * 32)) * dd
                        if F.offset != 0 { ex += dd * F.offset * act.sumQ[i] }
                        if F.hasMin { ex += mw * act.s[i] }
                    }
                    one(0, &acc0, &ex0); one(1, &acc1, &ex1); one(2, &acc2, &ex2); one(3, &acc3, &ex3)
                }
                out[t * outStride + r] = acc0.sum() + ex0
                out[(t + 1) * outStride + r] = acc1.sum() + ex1
                out[(t + 2) * outStride + r] = acc2.sum() + ex2
                out[(t + 3) * outStride + r] = acc3.sum() + ex3
                t += 4
            }
            while t < tokens {
                var acc = SIMD4<Float>(), ex: Float = 0
                let qa = act.q + t * qStride, i0 = t * bStride
                for b in 0..<nb {
                    let blk = row + b * F.bytes
                    let dd = table[Int(blk.loadUnaligned(as: UInt16.self))] * act.d[i0 + b]
                    acc += SIMD4<Float>(F.dot(F.unpack(blk), qa + b * 32)) * dd
                    if F.offset != 0 { ex += dd * F.offset * act.sumQ[i0 + b] }
                    if F.hasMin { ex += table[Int(blk.loadUnaligned(fromByteOffset: 2, as: UInt16.self))] * act.s[i0 + b] }
                }
                out[t * outStride + r] = acc.sum() + ex
                t += 1
            }
        }
    }

    /// The fallback for super-block formats when no Q8_K activations are attached: each row dequantized to f32 once by
    /// the format's one reference, then dotted with every token in float (the same loop as widened half-precision rows).
    private func dequantizedRows(_ block: WeightFormat.GGUFBlock, _ range: Range<Int>, _ x: UnsafePointer<Float>, _ tokens: Int,
                                 _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: cols) { rowBuffer in
            let row = rowBuffer.baseAddress!
            for r in range {
                QuantBlocks.dequantize(block.dtype, data + r * rowBytes, row, count: cols)
                rowTimesTokens(row, r, x, tokens, out, outStride)
            }
        }
    }

    /// F32 weights against float activations (tests' tiny models and f32 files); F16/BF16 rows go through `widenedRows`.
    private func floatRows(_ range: Range<Int>, _ x: UnsafePointer<Float>, _ tokens: Int, _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
        let n8 = cols / 8 * 8
        for r in range {
            let row = data + r * rowBytes
            for t in 0..<tokens {
                let xt = x + t * cols
                var acc = SIMD8<Float>(), tail: Float = 0
                for c in stride(from: 0, to: n8, by: 8) {
                    acc += row.loadUnaligned(fromByteOffset: 4 * c, as: SIMD8<Float>.self) * UnsafeRawPointer(xt + c).loadUnaligned(as: SIMD8<Float>.self)
                }
                for c in n8..<cols { tail += row.loadUnaligned(fromByteOffset: 4 * c, as: Float.self) * xt[c] }
                out[t * outStride + r] = acc.sum() + tail
            }
        }
    }
}

/// The four `SIMD8<Int16>` vectors of one 32-element weight block, in the permuted order of `Q8Activations`.
typealias BlockVectors = (SIMD8<Int16>, SIMD8<Int16>, SIMD8<Int16>, SIMD8<Int16>)

/// The CPU product of one GGUF block format against Q8 activations: how its block is unpacked and dotted.
/// Specialised at compile time so each format gets its own tight loop; `block` ties it to its descriptor.
protocol Q8BlockProduct {
    static var block: WeightFormat.GGUFBlock { get }
    static var bytes: Int { get }
    /// Second half is the block minimum (Q4_1).
    static var hasMin: Bool { get }
    /// Constant subtracted from every quant (Q4_0's -8), applied through the activations' block sums.
    static var offset: Float { get }
    static func unpack(_ blk: UnsafeRawPointer) -> BlockVectors
    /// Integer dot product of an unpacked block with 32 activations (permuted layout), as four partial sums.
    static func dot(_ w: BlockVectors, _ a: UnsafePointer<Int16>) -> SIMD4<Int32>
}

/// 4-bit weights: every product fits in Int16 (15 × 127) and so does the sum of four, so the products are summed
/// in 16 bits (`pmullw`, `paddw`) and widened once. Written this way because LLVM turns the pairwise `pmaddwd`
/// pattern into extra shuffles here, doubling the instruction count on the baseline x86-64 target.
@inline(__always) private func dot4Bit(_ w: BlockVectors, _ a: UnsafePointer<Int16>) -> SIMD4<Int32> {
    let p = UnsafeRawPointer(a)
    let s = w.0 &* p.loadUnaligned(as: SIMD8<Int16>.self) &+ w.1 &* p.loadUnaligned(fromByteOffset: 16, as: SIMD8<Int16>.self)
        &+ w.2 &* p.loadUnaligned(fromByteOffset: 32, as: SIMD8<Int16>.self) &+ w.3 &* p.loadUnaligned(fromByteOffset: 48, as: SIMD8<Int16>.self)
    return LinearWeight.widenPairs(s)
}

/// Splits 16 bytes of nibbles, read as eight 16-bit lanes, into elements (0,2..14), (1..15), (16..30), (17..31).
@inline(__always) private func unpackNibbles(_ p: UnsafeRawPointer) -> BlockVectors {
    let v = p.loadUnaligned(as: SIMD8<Int16>.self)
    let m = SIMD8<Int16>(repeating: 0x0f)
    return (v & m, (v &>> 8) & m, (v &>> 4) & m, (v &>> 12) & m)
}

enum Q4_0Blocks: Q8BlockProduct {
    static var block: WeightFormat.GGUFBlock { .q4_0 }
    static var bytes: Int { 18 }
    static var hasMin: Bool { false }
    static var offset: Float { -8 }
    @inline(__always) static func unpack(_ blk: UnsafeRawPointer) -> BlockVectors { unpackNibbles(blk + 2) }
    @inline(__always) static func dot(_ w: BlockVectors, _ a: UnsafePointer<Int16>) -> SIMD4<Int32> { dot4Bit(w, a) }
}

enum Q4_1Blocks: Q8BlockProduct {
    static var block: WeightFormat.GGUFBlock { .q4_1 }
    static var bytes: Int { 20 }
    static var hasMin: Bool { true }
    static var offset: Float { 0 }
    @inline(__always) static func unpack(_ blk: UnsafeRawPointer) -> BlockVectors { unpackNibbles(blk + 4) }
    @inline(__always) static func dot(_ w: BlockVectors, _ a: UnsafePointer<Int16>) -> SIMD4<Int32> { dot4Bit(w, a) }
}

enum Q8_0Blocks: Q8BlockProduct {
    static var block: WeightFormat.GGUFBlock { .q8_0 }
    static var bytes: Int { 34 }
    static var hasMin: Bool { false }
    static var offset: Float { 0 }
    /// Sign-extends even bytes with a shift pair and odd bytes with an arithmetic shift.
    @inline(__always) static func unpack(_ blk: UnsafeRawPointer) -> BlockVectors {
        let a = blk.loadUnaligned(fromByteOffset: 2, as: SIMD8<Int16>.self)
        let b = blk.loadUnaligned(fromByteOffset: 18, as: SIMD8<Int16>.self)
        return ((a &<< 8) &>> 8, a &>> 8, (b &<< 8) &>> 8, b &>> 8)
    }
    /// 8-bit products (up to 127²) fit in Int16 but their sums do not: widen each product vector.
    @inline(__always) static func dot(_ w: BlockVectors, _ a: UnsafePointer<Int16>) -> SIMD4<Int32> {
        let p = UnsafeRawPointer(a)
        return LinearWeight.widenPairs(w.0 &* p.loadUnaligned(as: SIMD8<Int16>.self))
            &+ LinearWeight.widenPairs(w.1 &* p.loadUnaligned(fromByteOffset: 16, as: SIMD8<Int16>.self))
            &+ LinearWeight.widenPairs(w.2 &* p.loadUnaligned(fromByteOffset: 32, as: SIMD8<Int16>.self))
            &+ LinearWeight.widenPairs(w.3 &* p.loadUnaligned(fromByteOffset: 48, as: SIMD8<Int16>.self))
    }
}
