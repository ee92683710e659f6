import XCTest
import KilnCore
import KilnModels
@testable import KilnKernels
@testable import KilnCUDA

/// Q4_0, Q4_1 and IQ4_NL as members of the LUT family: the repack at load (nibbles re-paired, d and m as scale and
/// offset, the member's table) through the model of gemm_lut's lanes equals x·Wᵀ with W decoded here from the block
/// bytes as GGML lays them out (d f16, [m f16,] 16 code bytes: element j < 16 in the low nibble of byte j, element
/// j + 16 in the high nibble), to the kernel's bf16 roundings; and that decoding agrees with the CPU reference.
final class LUTGGUFMemberTests: XCTestCase {
    static let iq4: [Float] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]

    /// (value, |table·d|, |m|) of element c of row r, decoded from the raw blocks.
    func decode(_ bytes: [UInt8], type: DType, cols: Int, _ r: Int, _ c: Int) -> (value: Float, td: Float, m: Float) {
        let b = r * (cols / 32) + c / 32, e = c % 32, base = b * type.blockBytes
        func f16(_ o: Int) -> Float { halfToFloat(UInt16(bytes[base + o]) | UInt16(bytes[base + o + 1]) << 8) }
        let d = f16(0), codes = base + (type == .q4_1 ? 4 : 2)
        let q = Int(e < 16 ? bytes[codes + e] & 0xF : bytes[codes + e - 16] >> 4)
        switch type {
        case .q4_0: return (d * Float(q - 8), abs(d * Float(q - 8)), 0)
        case .q4_1: let m = f16(2); return (d * Float(q) + m, abs(d * Float(q)), abs(m))
        default: return (d * Self.iq4[q], abs(d * Self.iq4[q]), 0)
        }
    }

    func testMembersThroughTheKernelLayout() throws {
        var rng = SplitMix64(seed: 41)
        for type in [DType.q4_0, .q4_1, .iq4_nl] {
            let (n, k, m) = (40, 96, 3)   // a partial row tile and a partial 64-column chunk
            let bytes = RandomGGUFBlocks.make(type, blocks: n * k / 32, scaleMagnitude: type == .iq4_nl ? 0.01 : 0.1, rng: &rng)
            try bytes.withUnsafeBytes { raw in
                let q = try QuantizedMatrix(name: "blk.0.attn_output.weight", rows: n, cols: k, format: WeightFormat(stored: type)!, data: raw)
                XCTAssertNil(GPUWeights.lutUnsupported([q], interleaveHalves: false), type.rawValue)
                let planes = try LUTDevicePlanes(parts: [q], interleaveHalves: false, scale: 1)
                XCTAssertEqual(planes.format.groupSize, 32)
                XCTAssertEqual(planes.format.hasOffsets, type == .q4_1)
                let reference = try q.dequantized()
                let x = roundTo(rng.uniform(m * k, -1, 1), .bf16)
                let y = GemmLUTWarpModel.run(planes, x: x, m: m, epilogueRows: n)
                for r in 0..<n {
                    for c in 0..<k { XCTAssertEqual(decode(bytes, type: type, cols: k, r, c).value, reference[r * k + c], "\(type.rawValue) (\(r), \(c))") }
                    for i in 0..<m {
                        var want = 0.0, bound = 1e-6
                        for c in 0..<k {
                            let w = decode(bytes, type: type, cols: k, r, c), xv = Double(abs(x[i * k + c]))
                            want += Double(x[i * k + c]) * Double(w.value)
                            bound += xv * (3 * Double(w.td) + 2 * Double(w.m)) / 512   // table·d, m and the sum rounded to bf16
                        }
                        XCTAssertEqual(y[i * n + r], want, accuracy: bound, "\(type.rawValue) row \(r) token \(i)")
                    }
                }
            }
        }
    }

    func testPlanAndRefusals() {
        for t in [WeightFormat.gguf(.q4_0), .gguf(.q4_1), .gguf(.iq4_nl), .gguf(.q8_0)] {
            XCTAssertEqual(GPUWeights.plan(t, nativeLUT: true, nativeQ8: true), .native, t.name)
            XCTAssertEqual(GPUWeights.plan(t), .convert(to: .bf16), t.name)
        }
        for t in [WeightFormat.gguf(.q5_0), .gguf(.q4_k), .gguf(.iq4_xs)] {   // Q8_0: LUTQ8Tests
            XCTAssertEqual(GPUWeights.plan(t, nativeLUT: true), .convert(to: .bf16), t.name)
            XCTAssertNil(LUTDevicePlanes.ggufMember(t))
        }
        XCTAssertEqual(LUTDevicePlanes.ggufMember(.gguf(.iq4_nl))?.table, Self.iq4)
        XCTAssertEqual(LUTDevicePlanes.ggufMember(.gguf(.q4_0))?.table, (0..<16).map { Float($0 - 8) })
        XCTAssertEqual(LUTDevicePlanes.ggufMember(.gguf(.q4_1))?.table, (0..<16).map { Float($0) })
    }
}
