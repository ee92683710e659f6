import KilnCore
import KilnCPUSIMD

/// The VNNI product of Q4_0 / Q4_1 / Q8_0 / Q5_0 / Q5_1 / IQ4_NL weights against `Q8Activations` (and of Q4_K and
/// Q6_K against its Q8_K set) (KilnCPUSIMD's int8_products.c), used
/// instead of `quantRows` (BlockProducts.swift) on CPUs with AVX-VNNI or AVX512-VNNI.
///
/// It reads an interleaved copy of the matrix made at load (`makeInterleaved`): per group of eight rows and per
/// block, the eight rows' scales in one vector and their quants four to a 32-bit lane, so one `vpdpbusd` advances
/// eight rows by four products and a block's scaling is one multiply and one FMA per token for eight outputs (the same
/// repacking idea as llama.cpp's interleaved Q4_0 layouts). The integer dots are the same exact sums as `quantRows`;
/// only the float summation order differs.
public enum Int8Products {
    /// 0: no VNNI (the Swift products run); 1: AVX-VNNI; 2: AVX512-VNNI.
    public static let level = Int(kiln_int8_dot_level())
    /// The instruction set `level` names, for logs.
    public static var instructionSet: String { ["none", "AVX-VNNI", "AVX512-VNNI"][level] }

    /// Whether `f` is a 256-element super-block format (read against the Q8_K activations).
    static func isSuperBlock(_ f: kiln_interleaved_format) -> Bool { f == KILN_INTERLEAVED_Q4_K || f == KILN_INTERLEAVED_Q6_K }

    /// The interleaved layout of `format`, if it has one.
    static func interleavedFormat(_ format: WeightFormat) -> kiln_interleaved_format? {
        switch format {
        case .gguf(.q4_0): return KILN_INTERLEAVED_Q4_0
        case .gguf(.q4_1): return KILN_INTERLEAVED_Q4_1
        case .gguf(.q8_0): return KILN_INTERLEAVED_Q8_0
        case .gguf(.q5_0): return KILN_INTERLEAVED_Q5_0
        case .gguf(.q5_1): return KILN_INTERLEAVED_Q5_1
        case .gguf(.iq4_nl): return KILN_INTERLEAVED_IQ4_NL
        case .gguf(.q4_k): return KILN_INTERLEAVED_Q4_K
        case .gguf(.q6_k): return KILN_INTERLEAVED_Q6_K
        default: return nil
        }
    }
}

extension LinearWeight {
    /// An interleaved copy of this matrix for the VNNI product (the caller owns it; 64-byte aligned), or nil where
    /// the CPU has no VNNI or the format has no interleaved layout. `force` makes one regardless of the CPU (tests).
    public func makeInterleaved(force: Bool = false) -> UnsafeMutableRawPointer? {
        guard force || Int8Products.level > 0, let f = Int8Products.interleavedFormat(format) else { return nil }
        let blockSize = Int8Products.isSuperBlock(f) ? 256 : 32
        guard cols % blockSize == 0 else { return nil }
        let blocks = cols / blockSize
        let bytes = (rows + 7) / 8 * blocks * Int(kiln_interleaved_record_bytes(f))
        let p = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        kiln_interleave_rows(f, data.assumingMemoryBound(to: UInt8.self), Int64(rowBytes), Int32(rows), Int32(blocks),
                             p.assumingMemoryBound(to: UInt8.self))
        return p
    }

    /// Output rows `range` for `tokens` tokens from the interleaved copy (`interleaved` must be set); false where the
    /// CPU has no VNNI (nothing written).
    @discardableResult
    func interleavedRows(_ range: Range<Int>, _ act: Q8Activations, _ tokens: Int, _ out: UnsafeMutablePointer<Float>,
                         _ outStride: Int) -> Bool {
        guard let records = interleaved, let f = Int8Products.interleavedFormat(format) else { return false }
        // The activations the format reads: Q8_K (d per 256, sums per 16) for super-blocks, else Q8_0/Q8_1 (per 32).
        let q: UnsafeMutablePointer<Int8>, maxCols: Int, d: UnsafeMutablePointer<Float>, sums: UnsafeMutablePointer<Float>
        var s: UnsafePointer<Float>? = nil
        let blockSize: Int, sumSize: Int
        if Int8Products.isSuperBlock(f) {
            guard let k = act.superBlocks else { return false }
            (q, maxCols, d, sums, blockSize, sumSize) = (k.q8, k.maxCols, k.d, k.bsums, 256, 16)
        } else {
            (q, maxCols, d, sums, blockSize, sumSize) = (act.q8, act.maxCols, act.d, act.sumQ, 32, 32)
            s = UnsafePointer(act.s)
        }
        var p = kiln_int8_product(
            format: f, records: records.assumingMemoryBound(to: UInt8.self), blocks: Int32(cols / blockSize),
            row_begin: Int32(range.lowerBound), row_end: Int32(range.upperBound),
            q: UnsafePointer(q), q_stride: Int64(maxCols), d: UnsafePointer(d), sum_q: UnsafePointer(sums), s: s,
            scale_stride: Int64(maxCols / blockSize), sum_stride: Int64(maxCols / sumSize),
            tokens: Int32(tokens), out: out, out_stride: Int64(outStride))
        return kiln_int8_product_run(&p) == 0
    }
}
