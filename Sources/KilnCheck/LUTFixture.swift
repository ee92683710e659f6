import Foundation
import KilnCore

/// A random lookup-table matrix in the checkpoint's canonical planes (codes packed little-endian along K, f16 scales and
/// offsets per group, an f32 table), owning its memory, as the conformance checks and the host tests need one:
/// random codes, scales of random sign in [0.5, 1.5) (never zero), offsets in ±[0.05, 0.5), and a random table
/// (2^bits distinct values in ±[0.1, 1), never zero) or a fixed one.
public final class LUTFixture {
    public let format: WeightFormat.LUTFormat
    public let rows: Int, cols: Int
    public let codes: [UInt8]          // [rows, ceil(cols·bits/8)]
    public let scales: [UInt16]        // [rows, cols/g] f16
    public let offsets: [UInt16]?      // [rows, cols/g] f16, affine only
    public let table: [Float]          // [2^bits]
    private let buffers: [UnsafeMutableRawBufferPointer]
    /// The format's matrix over this fixture's memory (valid while the fixture lives).
    public let matrix: QuantizedMatrix

    public init(rows: Int, cols: Int, format: WeightFormat.LUTFormat, table fixedTable: [Float]? = nil, rng: inout SplitMix64,
                name: String = "fixture.weight") throws {
        let groups = cols / format.groupSize, rowBytes = LUTCodes.rowBytes(cols: cols, bits: format.bits)
        func f16(_ lo: Float, _ hi: Float) -> UInt16 {
            let v = lo + (hi - lo) * rng.unit()
            return floatToHalf(rng.next() & 1 == 0 ? v : -v)
        }
        self.format = format; self.rows = rows; self.cols = cols
        codes = (0..<(rows * rowBytes)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        scales = (0..<(rows * groups)).map { _ in f16(0.5, 1.5) }
        offsets = format.hasOffsets ? (0..<(rows * groups)).map { _ in f16(0.05, 0.5) } : nil
        if let fixedTable { table = fixedTable } else {
            var t: [Float] = []
            while t.count < (1 << format.bits) {
                let v = (0.1 + 0.9 * rng.unit()) * (rng.next() & 1 == 0 ? 1 : -1)
                if !t.contains(v) { t.append(v) }
            }
            table = t
        }
        let le16 = { (v: [UInt16]) in v.flatMap { [UInt8($0 & 0xff), UInt8($0 >> 8)] } }
        var blobs: [(PlaneRole, [Int], DType, [UInt8])] = [(.codes, [rows, rowBytes], .u8, codes), (.scales, [rows, groups], .f16, le16(scales))]
        if let offsets { blobs.append((.offsets, [rows, groups], .f16, le16(offsets))) }
        blobs.append((.table, [table.count], .f32, table.flatMap { v in (0..<4).map { UInt8((v.bitPattern >> (8 * $0)) & 0xff) } }))
        buffers = blobs.map { UnsafeMutableRawBufferPointer.allocate(byteCount: $0.3.count, alignment: 16) }
        for (b, p) in zip(buffers, blobs) { b.copyBytes(from: p.3) }
        do {
            matrix = try QuantizedMatrix(name: name, rows: rows, cols: cols, format: .lut(format),
                                         planes: zip(blobs, buffers).map { .init($0.0, shape: $0.1, dtype: $0.2, bytes: UnsafeRawBufferPointer($1)) })
        } catch {
            buffers.forEach { $0.deallocate() }
            throw error
        }
    }

    deinit { buffers.forEach { $0.deallocate() } }

    /// Code (r, k) as the canonical layout stores it.
    public func code(_ r: Int, _ k: Int) -> Int {
        let rowBytes = LUTCodes.rowBytes(cols: cols, bits: format.bits), bit = k * format.bits
        let pair = Int(codes[r * rowBytes + bit / 8]) | (bit / 8 + 1 < rowBytes ? Int(codes[r * rowBytes + bit / 8 + 1]) << 8 : 0)
        return (pair >> (bit % 8)) & ((1 << format.bits) - 1)
    }

    /// The format's value of (r, k) in f32, by the CPU reference (`QuantizedMatrix.dequantize`).
    public func dequantized() throws -> [Float] { try matrix.dequantized() }

    /// The value gemm_lut's mma sees for (r, k): bf16(bf16(table[code]) · bf16(scale) + bf16(offset)) with one final
    /// rounding (fma.rn.bf16x2; the product of two bf16 values is exact in f32, the sum is rounded once to f32 here
    /// and then to bf16 — a double rounding the hardware does not do, far below any tolerance that uses this).
    /// `scalesAfterMMA` (`GemmLUT.scalesAfterMMA`): the decode kernel multiplies by the scale after the mmas, in f32, so
    /// its weight is bf16(table[code]) · bf16(scale) unrounded (exact in f32).
    public func kernelValue(_ r: Int, _ k: Int, scale: Float = 1, scalesAfterMMA: Bool = false) -> Float {
        let gi = r * (cols / format.groupSize) + k / format.groupSize
        let t = LUTFixture.bf16(table[code(r, k)])
        let s = LUTFixture.bf16(halfToFloat(scales[gi]) * scale)
        if scalesAfterMMA { return t * s }
        let o = offsets.map { LUTFixture.bf16(halfToFloat($0[gi]) * scale) } ?? 0
        return LUTFixture.bf16(t * s + o)
    }

    public static func bf16(_ v: Float) -> Float { bf16ToFloat(floatToBF16(v)) }
}

/// A random GGUF Q8_0 matrix (per block of 32: f16 d, then 32 signed bytes q; value q·d) owning its memory, as the
/// 8-bit gemm_lut checks and the host tests need one: codes over the whole int8 range, with −128 and 127 in every
/// block (elements b % 32 and (b + 7) % 32 of block b), and scales of random sign, never zero — `moderate`:
/// |d| ∈ [2⁻¹⁰, 2⁻⁶) (products of a tame size for GEMMs), `anyFinite`: any finite non-zero f16, subnormals included.
public final class Q8Fixture {
    public enum Scales { case moderate, anyFinite }
    public let rows: Int, cols: Int
    public let blocks: [UInt8]   // [rows · cols/32 blocks, 34 bytes]
    private let buffer: UnsafeMutableRawBufferPointer
    /// The Q8_0 matrix over this fixture's memory (valid while the fixture lives).
    public let matrix: QuantizedMatrix

    public init(rows: Int, cols: Int, scales: Scales, rng: inout SplitMix64, name: String = "fixture.q8_0.weight") throws {
        self.rows = rows; self.cols = cols
        let count = rows * cols / 32
        var bytes = [UInt8](repeating: 0, count: count * 34)
        for b in 0..<count {
            var d: UInt16
            repeat {
                let bits = rng.next()
                switch scales {
                case .moderate: d = UInt16(truncatingIfNeeded: (bits & 0x3ff) | UInt64(5 + (bits >> 10) % 4) << 10)   // exponent field 5…8
                case .anyFinite: d = UInt16(truncatingIfNeeded: bits) & 0x7fff
                }
                if bits >> 63 == 1 { d |= 0x8000 }
            } while d & 0x7c00 == 0x7c00 || d & 0x7fff == 0
            bytes[b * 34] = UInt8(d & 0xff); bytes[b * 34 + 1] = UInt8(d >> 8)
            for e in 0..<32 { bytes[b * 34 + 2 + e] = UInt8(truncatingIfNeeded: rng.next()) }
            bytes[b * 34 + 2 + b % 32] = 0x80            // −128
            bytes[b * 34 + 2 + (b + 7) % 32] = 0x7f      // 127
        }
        blocks = bytes
        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 16)
        buffer.copyBytes(from: bytes)
        do {
            matrix = try QuantizedMatrix(name: name, rows: rows, cols: cols, format: .gguf(.q8_0), data: UnsafeRawBufferPointer(buffer))
        } catch {
            buffer.deallocate()
            throw error
        }
    }

    deinit { buffer.deallocate() }

    /// The signed code of (r, k), decoded here from the block bytes.
    public func q(_ r: Int, _ k: Int) -> Int { Int(Int8(bitPattern: blocks[(r * (cols / 32) + k / 32) * 34 + 2 + k % 32])) }
    /// The f16 scale of (r, k)'s block, as f32.
    public func d(_ r: Int, _ k: Int) -> Float {
        let base = (r * (cols / 32) + k / 32) * 34
        return halfToFloat(UInt16(blocks[base]) | UInt16(blocks[base + 1]) << 8)
    }
    /// The weight 8-bit gemm_lut's mma sees: bf16(q · f16(d · scale)), one rounding of a product that is exact in f32.
    public func kernelValue(_ r: Int, _ k: Int, scale: Float = 1) -> Float {
        LUTFixture.bf16(Float(q(r, k)) * halfToFloat(floatToHalf(d(r, k) * scale)))
    }
}
