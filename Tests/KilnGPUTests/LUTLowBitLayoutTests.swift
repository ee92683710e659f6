import XCTest
import KilnCore
@testable import KilnKernels
@testable import KilnCUDA
@testable import KilnCheck

/// An independent model of how a gemm_lut.cu lane turns its 3- or 2-bit chunk record into code pairs, written from the
/// kernel's operations (gemm_lut.cu: `pair_words<3>` and the 3-bit table entry; `select2` and the PTX ISA's `prmt`),
/// never from GemmLUT.lowBitPlace: lane (g, t) of tile `tile`, chunk `chunk`, register a_i of mma j holds the codes
/// of row 16·tile + g + 8·(i & 1), columns 64·chunk + 16t + 4j + 2·(i >> 1) and +1 (the mma's A fragment map).
enum LowBitLaneModel {
    static func word(_ bytes: [UInt8], _ at: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << (8 * UInt32($1)) }
    }

    /// PTX `prmt.b32 d, a, b, c` (default mode): byte n of d = byte (c >> 4n) & 7 of {a, b}, sign-replicated when
    /// bit 3 of that selector nibble is set.
    static func prmt(_ a: UInt32, _ b: UInt32, _ c: UInt32) -> UInt32 {
        let pool = (0..<4).map { UInt8(truncatingIfNeeded: a >> (8 * $0)) } + (0..<4).map { UInt8(truncatingIfNeeded: b >> (8 * $0)) }
        var d: UInt32 = 0
        for n in 0..<4 {
            let sel = Int((c >> (4 * UInt32(n))) & 15)
            var byte = pool[sel & 7]
            if sel & 8 != 0 { byte = byte & 0x80 != 0 ? 0xff : 0 }
            d |= UInt32(byte) << (8 * UInt32(n))
        }
        return d
    }

    /// The (even, odd) codes lane `lane` of the record at `record` gives register a_i of mma j.
    static func pair(_ codes: [UInt8], bits: Int, record: Int, lane: Int, j: Int, i: Int) -> (Int, Int) {
        if bits == 3 {
            // A0, A1 at 8·lane, B at 256 + 4·lane; the kernel's four pair words, byte i of word j.
            let a0 = word(codes, record + 8 * lane), a1 = word(codes, record + 8 * lane + 4), b = word(codes, record + 256 + 4 * lane)
            let m: UInt32 = 0x0F0F_0F0F
            let w = [(a0 & m) | (b & ~m), ((a0 >> 4) & m) | ((b >> 2) & ~m), (a1 & m) | ((b << 4) & ~m), ((a1 >> 4) & m) | ((b << 2) & ~m)][j]
            let e = Int((w >> (8 * UInt32(i))) & 0xff)
            return ((e & 3) | ((e >> 2) & 4), ((e >> 2) & 3) | ((e >> 3) & 4))   // the 3-bit table's entry e
        }
        // 2 bits: W0 (mmas 0, 1), W1 (2, 3) at 8·lane; selector group s = 2·(j & 1) + (i >> 1): x = 4 codes; the
        // top row's register from the low selector, the bottom row's from the high one (both prmt'd over a pool whose
        // bytes 2c, 2c+1 both hold c, so the result's bytes name the entries chosen).
        let w = word(codes, record + 8 * lane + 4 * (j / 2)), s = UInt32(2 * (j % 2) + i / 2)
        let x = (w >> (2 * s)) & 0x0303_0303
        let sel = i % 2 == 0 ? x &* 0x22 &+ 0x1010_1010 : UInt32((UInt64(x) * 0x22_0000) >> 32) &+ 0x1010
        let pool0: UInt32 = 0x0101_0000, pool1: UInt32 = 0x0303_0202   // byte 2c and 2c+1 = c
        let d = prmt(pool0, pool1, sel)
        let bytes = (0..<4).map { Int((d >> (8 * UInt32($0))) & 0xff) }
        precondition(bytes[0] == bytes[1] && bytes[2] == bytes[3], "a selector split a bf16 value")
        return (bytes[0], bytes[2])
    }

    /// Every code of an [n, k] matrix as the lanes read it from `codes` (rows padded to 16, columns to 64 included).
    static func readBack(_ codes: [UInt8], bits: Int, rows n: Int, cols k: Int) -> [[Int]] {
        let tiles = (n + 15) / 16, chunks = (k + 63) / 64
        var out = [[Int]](repeating: [Int](repeating: -1, count: chunks * 64), count: tiles * 16)
        for tile in 0..<tiles {
            for chunk in 0..<chunks {
                let record = (tile * chunks + chunk) * 128 * bits
                for lane in 0..<32 {
                    let g = lane / 4, t = lane % 4
                    for j in 0..<4 {
                        for i in 0..<4 {
                            let (even, odd) = pair(codes, bits: bits, record: record, lane: lane, j: j, i: i)
                            let row = 16 * tile + g + 8 * (i % 2), col = 64 * chunk + 16 * t + 4 * j + 2 * (i / 2)
                            XCTAssertEqual(out[row][col], -1, "row \(row) col \(col) read twice"); out[row][col] = even
                            XCTAssertEqual(out[row][col + 1], -1, "row \(row) col \(col + 1) read twice"); out[row][col + 1] = odd
                        }
                    }
                }
            }
        }
        return out
    }
}

/// gemm_lut's 3- and 2-bit device layout: what the loader writes (`LUTDevicePlanes`, `GemmLUT.restructure`) read back
/// by the lane model above gives every original code (from the fixture's canonical bits, decoded here), padding reads
/// code 0, and the whole product over the model's weights matches the format's CPU reference.
final class LUTLowBitLayoutTests: XCTestCase {
    /// Code (r, c) of a canonical row-major plane packed little-endian along K, decoded bit by bit.
    func canonicalCode(_ f: LUTFixture, _ r: Int, _ c: Int) -> Int {
        let rowBytes = (f.cols * f.format.bits + 7) / 8
        var v = 0
        for b in 0..<f.format.bits {
            let bit = c * f.format.bits + b
            v |= Int(f.codes[r * rowBytes + bit / 8] >> UInt8(bit % 8) & 1) << b
        }
        return v
    }

    func testRestructuredCodesReadBackToTheOriginals() throws {
        var rng = SplitMix64(seed: 31)
        for bits in [3, 2] {
            for (n, k, g) in [(37, 96, 32), (16, 64, 64), (1, 32, 32), (50, 320, 64), (24, 1152, 128)] {
                let f = try LUTFixture(rows: n, cols: k, format: .init(bits: bits, groupSize: g, table: .learned, hasOffsets: false), rng: &rng)
                let planes = try LUTDevicePlanes(parts: [f.matrix], interleaveHalves: false, scale: 1)
                XCTAssertEqual(planes.codes.count, ((n + 15) / 16) * ((k + 63) / 64) * 128 * bits)
                let back = LowBitLaneModel.readBack(planes.codes, bits: bits, rows: n, cols: k)
                var wrong = 0
                for r in 0..<back.count {
                    for c in 0..<back[r].count {
                        let want = r < n && c < k ? canonicalCode(f, r, c) : 0   // padding stays zero
                        if back[r][c] != want { wrong += 1 }
                    }
                }
                XCTAssertEqual(wrong, 0, "\(bits) bits, [\(n), \(k)]: \(wrong) codes read back wrong")
            }
        }
    }

    /// Every one of the 2^bits codes at every place of a record: a matrix of one code value reads back as that value
    /// (a bit dropped or moved by the map would show up for some value).
    func testEveryCodeValueAtEveryPlace() throws {
        for bits in [3, 2] {
            for v in 0..<(1 << bits) {
                var row = [UInt8](repeating: 0, count: 64 * bits / 8)
                let values = [UInt8](repeating: UInt8(v), count: 64)
                values.withUnsafeBufferPointer { p in LUTCodes.pack(p.baseAddress!, count: 64, bits: bits, into: &row) }
                let dev = row.withUnsafeBufferPointer { p in GemmLUT.restructure(rows: 16, cols: 64, group: 64, bits: bits) { _ in p.baseAddress! } }
                let back = LowBitLaneModel.readBack(dev, bits: bits, rows: 16, cols: 64)
                XCTAssertTrue(back.allSatisfy { $0.allSatisfy { $0 == v } }, "\(bits) bits, code \(v)")
            }
        }
    }

    /// y = x·Wᵀ over the weights the lanes would feed the mma (the model's codes, the scale words as the kernel reads
    /// them, the kernel's roundings) against the CPU reference, for stacked parts with a folded scale and for gate/up
    /// interleaved per 16-row tile.
    func testProductOverTheLaneModelMatchesTheReference() throws {
        var rng = SplitMix64(seed: 32)
        for bits in [3, 2] {
            for affine in [false, true] {
                let (k, g, m) = (320, 64, 3)
                let fmt = WeightFormat.LUTFormat(bits: bits, groupSize: g, table: .nf, hasOffsets: affine)
                let table = LUTTables.normalFloat(bits: bits)
                let parts = try [40, 24].map { try LUTFixture(rows: $0, cols: k, format: fmt, table: table, rng: &rng) }
                let x = roundTo(rng.uniform(m * k, -1, 1), .bf16)
                for interleave in [false, true] {
                    let used = interleave ? [parts[0], try LUTFixture(rows: 40, cols: k, format: fmt, table: table, rng: &rng)] : parts
                    let scale: Float = interleave ? 1 : 0.5
                    let planes = try LUTDevicePlanes(parts: used.map(\.matrix), interleaveHalves: interleave, scale: scale)
                    let n = planes.rows, back = LowBitLaneModel.readBack(planes.codes, bits: bits, rows: n, cols: k)
                    let layout = GemmLUT.DeviceLayout(rows: n, cols: k, group: g, bits: bits)
                    // Kernel row r → (part, row): stacked, or per 16-row tile 8 gate rows then the same 8 up rows.
                    func source(_ r: Int) -> (LUTFixture, Int) {
                        if interleave { return (used[(r % 16) / 8], (r / 16) * 8 + r % 8) }
                        return r < 40 ? (used[0], r) : (used[1], r - 40)
                    }
                    let refs = try used.map { try ConformanceSuite.lutReferences(x: x, m: m, fixture: $0, n: $0.rows, scale: scale, out: .f32) }
                    var got = [Double](repeating: 0, count: m * n), want = got, bound = got
                    for r in 0..<n {
                        let (f, sr) = source(r)
                        let ref = refs[used.firstIndex { $0 === f }!]
                        for c in 0..<k {
                            let sIndex = ((r / 16) * layout.paddedGroups + c / g) * 8 + r % 8
                            let top = r % 16 < 8
                            func half(_ w: UInt32) -> Float { bf16ToFloat(UInt16(top ? w & 0xffff : w >> 16)) }
                            let s = half(planes.scales[sIndex]), o = planes.offsets.map { half($0[sIndex]) } ?? 0
                            let w = LUTFixture.bf16(LUTFixture.bf16(table[back[r][c]]) * s + o)
                            for i in 0..<m { got[i * n + r] += Double(x[i * k + c]) * Double(w) }
                        }
                        for i in 0..<m {
                            want[i * n + r] = Double(ref.rounded[i * f.rows + sr]); bound[i * n + r] = Double(ref.roundedBound[i * f.rows + sr])
                        }
                    }
                    XCTAssertNil(ConformanceSuite.compareBounded(got.map { Float($0) }, want.map { Float($0) }, bound: bound.map { Float($0) }),
                                 "\(bits) bits affine \(affine) interleave \(interleave)")
                }
            }
        }
    }
}
