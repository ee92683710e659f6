import Foundation
import KilnCore
@testable import KilnCPU
import KilnModels
import XCTest

/// A tiny GGUF model whose matrices are random blocks of the K-quants, i-quants and Q5_0/Q5_1 (TinyCheckpoint writes
/// them, round-robin) loads through the real GGUF loader and runs on the CPU engine; its logits match the naive
/// reference, which computes in Double from the same weights dequantized to f32 (`TinyModelTests.reference`), within
/// the activation quantization's tolerance (Q8_K / Q8_0 / Q8_1 as llama.cpp quantizes them; the same 3e-2 as the
/// Q4_0/Q4_1/Q8_0 models of TinyModelTests), and to float rounding with `floatWeights` (no activation quantization).
final class KQuantTinyModelTests: XCTestCase {
    static let formats: [WeightFormat] = [.gguf(.q4_k), .gguf(.q5_k), .gguf(.q6_k), .gguf(.iq4_xs), .gguf(.q5_0),
                                          .gguf(.q5_1), .gguf(.iq4_nl), .gguf(.q2_k), .gguf(.q3_k)]

    func testRandomBlockModelMatchesTheDequantizedReference() throws {
        var o = TinyCheckpoint.Options()
        // Every matrix has 256 or 512 columns, whole super-blocks for the 256-element types.
        o.hiddenSize = 256; o.intermediateSize = 512; o.numHeads = 4; o.numKVHeads = 2; o.seed = 22
        o.ggufMatrixFormats = Self.formats
        let path = NSTemporaryDirectory() + "kiln-kquant-\(UUID().uuidString.prefix(8)).gguf"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try TinyCheckpoint.writeGGUF(path: path, options: o)

        let source = try GGUFModel(path: path)
        // Each new type really is in the file, as its GGML type.
        let stored = Set(source.gguf.tensors.map(\.typeName))
        for name in ["Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "Q5_0", "Q5_1", "IQ4_NL", "Q2_K", "Q3_K"] {
            XCTAssertTrue(stored.contains(name), "no \(name) tensor in the fixture (types: \(stored.sorted()))")
        }

        // `kiln info` lists nothing it cannot run (Q2_K and Q3_K included).
        XCTAssertEqual(try ModelSummary(path: path).unsupportedTensorTypes.map(\.type), [])

        let tokens = [3, 17, 42, 5, 79, 0, 11, 64]
        let expected = try TinyModelTests.reference(source, tokens)
        let v = source.config.vocabSize
        let scale = expected.joined().map(abs).max()!
        XCTAssertGreaterThan(scale, 0.5, "logits too small to be a meaningful test")
        let model = try CPUModel(weights: try GGUFModel(path: path), threads: 2, maxBatch: 3)
        XCTAssertNotNil(model.buffers.act.superBlocks, "the K-quant matrices should read Q8_K activations")
        let batched = try model.forward(tokens.map(Int32.init), cache: model.makeCache(), logits: .all)
        let cache = try model.makeCache()
        var stepped: [Float] = []
        for t in tokens { stepped += try model.forward([Int32(t)], cache: cache, logits: .last) }
        let float = try CPUModel(weights: try GGUFModel(path: path), threads: 2, maxBatch: 3, floatWeights: true)
        XCTAssertNil(float.buffers.act.superBlocks, "floatWeights dequantizes every GGUF matrix at load")
        let floatLogits = try float.forward(tokens.map(Int32.init), cache: float.makeCache(), logits: .all)
        for (name, got, tolerance) in [("batched", batched, 3e-2), ("stepped", stepped, 3e-2), ("float weights", floatLogits, 5e-3)] {
            XCTAssertEqual(got.count, tokens.count * v)
            var worst = 0.0
            for (p, row) in expected.enumerated() { for i in 0..<v { worst = max(worst, abs(Double(got[p * v + i]) - row[i])) } }
            XCTAssertLessThan(worst / scale, tolerance, "\(name): max error \(worst) of scale \(scale)")
        }
    }
}
