import Foundation
import KilnCore
import KilnModels
import XCTest

/// Loaders hand out weight matrices as `QuantizedMatrix` in the format they are stored in, in place, strictly.
final class WeightSourceMatrixTests: XCTestCase {
    func testGGUFMatricesCarryTheirStoredFormat() throws {
        let dir = try TempDir()
        let path = dir.path + "/tiny.gguf"
        var o = TinyCheckpoint.Options()
        o.ggufMatrixFormats = [.gguf(.q4_1), .dense(.bf16), .gguf(.q8_0), .gguf(.q4_0), .dense(.f16), .dense(.f32)]
        let values = try TinyCheckpoint.writeGGUF(path: path, options: o)
        let expected = try TinyCheckpoint.ggufFormats(o)
        let m = try GGUFModel(path: path)
        var seen = Set<WeightFormat>()
        for t in m.config.canonicalTensorShapes {
            guard t.shape.count == 2 else { _ = try m.tensor(t.name, shape: t.shape); continue }
            let q = try m.matrix(t.name, rows: t.shape[0], cols: t.shape[1])
            XCTAssertEqual(q.format, expected[t.name], t.name)
            XCTAssertEqual(q.byteCount, q.format.byteCount(rows: t.shape[0], cols: t.shape[1]))
            // In place: the plane is the tensor's bytes in the mapped file.
            XCTAssertEqual(q.planes[0].bytes.baseAddress, try m.gguf.data(m.gguf.info(t.name)).baseAddress)
            // Dequantized within the format's rounding of values ≤ 0.1 in magnitude.
            let tol: Float = [.dense(.f32): 0, .dense(.f16): 1e-4, .bf16: 1e-3, .gguf(.q8_0): 0.1 / 127, .gguf(.q4_0): 0.2 / 8,
                              .gguf(.q4_1): 0.2 / 15][q.format]!
            let got = try q.dequantized(), want = values[t.name]!
            for i in 0..<want.count where abs(got[i] - want[i]) > tol { XCTFail("\(t.name) element \(i): \(got[i]) vs \(want[i])"); break }
            seen.insert(q.format)
        }
        XCTAssertEqual(seen.count, 6)
        try m.checkAllUsed()
    }

    func testGGUFMatrixWithWrongShapeNamesTheTensor() throws {
        let dir = try TempDir()
        let path = dir.path + "/tiny.gguf"
        try TinyCheckpoint.writeGGUF(path: path)
        let m = try GGUFModel(path: path)
        assertKilnError(try m.matrix("blk.0.attn_q.weight", rows: 64, cols: 32), path: path, "blk.0.attn_q.weight has shape [64, 64], expected [64, 32]")
        // A matrix read is a use: everything read as matrices or vectors leaves nothing unused; skipping one is an error.
        for t in m.config.canonicalTensorShapes where t.name != "blk.1.ffn_down.weight" {
            if t.shape.count == 2 { _ = try m.matrix(t.name, rows: t.shape[0], cols: t.shape[1]) } else { _ = try m.tensor(t.name, shape: t.shape) }
        }
        assertKilnError(try m.checkAllUsed(), path: path, "blk.1.ffn_down.weight")
    }

    func testHFMatricesAreDenseInTheCheckpointType() throws {
        let dir = try TempDir()
        let stored = try TinyCheckpoint.writeHF(folder: dir.path, architecture: .qwen2, dtype: .f16, seed: 4)
        let m = try HFModel(folder: dir.path)
        let q = try m.matrix("blk.1.ffn_gate.weight", rows: 96, cols: 64)
        XCTAssertEqual(q.format, .dense(.f16))
        XCTAssertEqual(q.rowBytes, 128)
        XCTAssertEqual(try q.dequantized(), stored["model.layers.1.mlp.gate_proj.weight"])
        assertKilnError(try m.matrix("blk.1.ffn_gate.weight", rows: 64, cols: 96), path: dir.path, "expected [64, 96]")
    }

    func testTinyCheckpointRejectsFormatsGGUFCannotStore() {
        var o = TinyCheckpoint.Options()
        o.ggufMatrixFormats = [.fp8E4M3(blockRows: 128, blockCols: 128)]
        XCTAssertThrowsError(try TinyCheckpoint.ggufWriter(o)) { XCTAssertTrue("\($0)".contains("fp8_e4m3_b128x128"), "\($0)") }
    }
}
