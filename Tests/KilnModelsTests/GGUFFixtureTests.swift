import Foundation
import KilnCore
import KilnModels
import XCTest

final class GGUFFixtureTests: XCTestCase {
    func testTinyGGUFAllTypesRoundTrip() throws {
        let dir = try TempDir()
        let path = dir.path + "/tiny.gguf"
        let weights = try TinyCheckpoint.writeGGUF(path: path)
        let m = try GGUFModel(path: path)
        XCTAssertEqual(m.config.numLayers, 2)
        XCTAssertEqual(m.config.numKVHeads, 2)
        XCTAssertEqual(m.config.vocabSize, 96)
        var seen = Set<DType>()
        for t in m.config.canonicalTensorShapes {
            let w = try m.tensor(t.name, shape: t.shape)
            seen.insert(w.dtype)
            var got = [Float](repeating: .nan, count: t.shape.reduce(1, *))
            got.withUnsafeMutableBufferPointer { QuantBlocks.dequantize(w.dtype, w.data.baseAddress!, $0.baseAddress!, count: $0.count) }
            let want = weights[t.name]!
            // Error bounds of each format for values of magnitude <= 0.1 (norms ~1.1 are F32).
            let tol: Float = [.f32: 0, .f16: 1e-4, .q8_0: 0.1 / 127, .q4_0: 0.2 / 8, .q4_1: 0.2 / 15][w.dtype]!
            for i in 0..<want.count where abs(got[i] - want[i]) > tol {
                XCTFail("\(t.name) (\(w.dtype)) element \(i): \(got[i]) vs \(want[i])"); break
            }
        }
        XCTAssertEqual(seen, [.f32, .f16, .q8_0, .q4_0, .q4_1])
        try m.checkAllUsed()
    }

    /// Known block bytes decoded by hand: Q8_0 with d = 0.5, Q4_1 with d = 1, m = -8.
    func testQuantizedValuesAgainstHandDecodedBlocks() throws {
        let q8: [Float] = (0..<32).map { Float($0 - 16) * 0.5 }      // exactly representable: q = i - 16, d = 0.5... amax 8 -> d = 8/127
        let q8Bytes = try TensorEncoding.encode(q8, as: .q8_0, rowLength: 32, name: "t")
        XCTAssertEqual(q8Bytes.count, 34)
        XCTAssertEqual(UInt16(q8Bytes[0]) | UInt16(q8Bytes[1]) << 8, floatToHalf(8.0 / 127))
        XCTAssertEqual(Int8(bitPattern: q8Bytes[2]), -127)   // -8 is the largest magnitude
        let q41: [Float] = (0..<32).map { Float($0 % 16) - 8 }  // 16 levels from -8 to 7: d = 1, m = -8
        let b = try TensorEncoding.encode(q41, as: .q4_1, rowLength: 32, name: "t")
        XCTAssertEqual(Array(b[0..<4]), [0x00, 0x3C, 0x00, 0xC8])   // f16 1.0, f16 -8.0
        XCTAssertEqual(b[4], 0x00)  // elements 0 and 16 are both level 0
        XCTAssertEqual(b[5], 0x11)
        var out = [Float](repeating: 0, count: 32)
        b.withUnsafeBytes { QuantBlocks.dequantize(.q4_1, $0.baseAddress!, &out, count: 32) }
        XCTAssertEqual(out, q41)
    }

    func testRealSmolLM2Opens() throws {
        guard FileManager.default.fileExists(atPath: smolLM2Path) else { throw KilnError("SmolLM2 not cached at \(smolLM2Path): run `kiln info` once (scripts/test.sh does)") }
        let m = try openModel(path: smolLM2Path)
        XCTAssertEqual(m.config.hiddenSize, 576)
        XCTAssertEqual(m.config.numLayers, 30)
        XCTAssertEqual(m.config.numKVHeads, 3)
        XCTAssertTrue(m.config.tieWordEmbeddings)
        XCTAssertFalse(m.has("output.weight"))
    }
}
