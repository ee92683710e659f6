import Foundation
import KilnCore
import KilnModels
import XCTest

/// A GGUF model with tensors of a type Kiln cannot run (IQ3_S, IQ2_XXS here): `kiln info` lists those types, and
/// opening it as a model (what `kiln run` does before loading anything) fails naming a tensor and the types.
final class UnsupportedGGUFTypeTests: XCTestCase {
    func testInfoListsAndModelRefusesUnrunnableTypes() throws {
        var o = TinyCheckpoint.Options()
        o.hiddenSize = 256; o.intermediateSize = 512
        var (w, _) = try TinyCheckpoint.ggufWriter(o)
        let retyped = ["blk.0.ffn_down.weight": UInt32(21), "blk.1.ffn_down.weight": 21, "blk.1.attn_q.weight": 16]
        for i in w.tensors.indices { if let t = retyped[w.tensors[i].name] { w.tensors[i].rawType = t } }
        let path = NSTemporaryDirectory() + "kiln-unsupported-\(UUID().uuidString.prefix(8)).gguf"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try w.write(to: path)

        let summary = try ModelSummary(path: path)
        XCTAssertEqual(summary.unsupportedTensorTypes.map(\.type), ["IQ3_S", "IQ2_XXS"])
        XCTAssertEqual(summary.unsupportedTensorTypes.map(\.count), [2, 1])
        XCTAssertTrue(summary.render().contains("cannot run:     IQ3_S ×2, IQ2_XXS ×1"), summary.render())

        XCTAssertThrowsError(try GGUFModel(path: path)) { error in
            let message = (error as? KilnError)?.message ?? "\(error)"
            for words in [path, "3 tensor(s)", "IQ2_XXS, IQ3_S", "blk.", "supported: F32"] {
                XCTAssertTrue(message.contains(words), "\"\(words)\" not in: \(message)")
            }
        }
    }

    func testRunnableFileListsNothing() throws {
        var o = TinyCheckpoint.Options()
        o.hiddenSize = 256; o.intermediateSize = 512
        o.ggufMatrixFormats = [.gguf(.q6_k), .gguf(.q5_0)]
        let path = NSTemporaryDirectory() + "kiln-runnable-\(UUID().uuidString.prefix(8)).gguf"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try TinyCheckpoint.writeGGUF(path: path, options: o)
        let summary = try ModelSummary(path: path)
        XCTAssertTrue(summary.unsupportedTensorTypes.isEmpty)
        XCTAssertFalse(summary.render().contains("cannot run"))
        XCTAssertNoThrow(try GGUFModel(path: path))
    }
}
