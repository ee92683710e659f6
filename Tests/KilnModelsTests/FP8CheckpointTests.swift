import Foundation
import KilnCore
import KilnModels
import XCTest

/// Hugging Face fine-grained FP8 folders (F8_E4M3 `weight` + F32 `weight_scale_inv`, `quantization_config`) load as
/// `fp8_e4m3_b128x128` matrices, strictly; every unsupported numerics field or malformed tensor is an error naming it.
final class FP8CheckpointTests: XCTestCase {
    /// A tiny FP8 folder with a hidden size of 160 and an FFN of 200: two 128-blocks along each axis, the second partial.
    func fp8Options() -> TinyCheckpoint.Options {
        var o = TinyCheckpoint.Options()
        o.hiddenSize = 160; o.intermediateSize = 200; o.numHeads = 5; o.numKVHeads = 1; o.fp8 = true
        return o
    }

    func testFP8FolderLoadsAsBlockScaledMatrices() throws {
        let dir = try TempDir()
        let o = fp8Options()
        let stored = try TinyCheckpoint.writeHF(folder: dir.path, options: o)
        let original = Dictionary(uniqueKeysWithValues: TinyCheckpoint.weights(o).map { ($0.name, $0.values) })
        let m = try HFModel(folder: dir.path)
        XCTAssertEqual(m.quantization, HFQuantizationConfig(modulesToNotConvert: ["lm_head"]))
        let matrices = try m.loadAllMatrices()
        let q = matrices["blk.0.ffn_down.weight"]!
        XCTAssertEqual(q.format, .fp8E4M3(blockRows: 128, blockCols: 128))
        XCTAssertEqual(q.planes.map(\.shape), [[160, 200], [2, 2]])
        // Embeddings and lm_head stay bf16.
        XCTAssertEqual(matrices["token_embd.weight"]!.format, .bf16)
        XCTAssertEqual(matrices["output.weight"]!.format, .bf16)
        for (name, matrix) in matrices where name.hasPrefix("blk.") {
            XCTAssertEqual(matrix.format.name, "fp8_e4m3_b128x128", name)
            let got = try matrix.dequantized(), want = original[name]!
            XCTAssertEqual(got, stored[HFModel.hfName(canonical: name)!]!, name)
            // Within e4m3's rounding of the original: half a step of 2⁻³ relative to each block's absmax (≤ 0.1) or
            // better; the subnormal floor (2⁻¹⁰ of the block scale) is far below.
            for i in 0..<want.count where abs(got[i] - want[i]) > max(abs(want[i]) / 16, 0.1 / 448 / 2 * 8) {
                XCTFail("\(name) element \(i): \(got[i]) vs \(want[i])"); break
            }
        }
    }

    /// Rewrites the tiny FP8 folder's safetensors with `edit` applied to its tensors (by HF name) and `config` edits.
    func malformed(_ dir: TempDir, config: [String: Any] = [:], quantization: [String: Any?]? = nil,
                   edit: (inout [String: SafetensorsWriter.Tensor]) -> Void = { _ in }) throws {
        var o = fp8Options()
        o.configOverrides = config
        if let quantization {
            var q = HFQuantizationConfig(modulesToNotConvert: ["lm_head"]).json
            for (k, v) in quantization { q[k] = v ?? nil }
            o.configOverrides["quantization_config"] = q
        }
        try TinyCheckpoint.writeHF(folder: dir.path, options: o)
        let file = try SafetensorsFile(path: dir.path + "/model.safetensors")
        var tensors: [String: SafetensorsWriter.Tensor] = [:]
        for t in file.tensors {
            tensors[t.name] = .init(name: t.name, dtypeName: SafetensorsFile.dtypeName(t.dtype)!, shape: t.shape, data: Array(try file.data(t)))
        }
        edit(&tensors)
        var w = SafetensorsWriter()
        w.tensors = tensors.values.sorted { $0.name < $1.name }
        w.alignTensors()
        try w.write(to: dir.path + "/model.safetensors")
    }

    let down = "model.layers.0.mlp.down_proj"

    func testMalformedFP8Folders() throws {
        func expect(_ words: String..., config: [String: Any] = [:], quantization: [String: Any?]? = nil,
                    edit: (inout [String: SafetensorsWriter.Tensor]) -> Void = { _ in }, line: UInt = #line) throws {
            let dir = try TempDir("malformed\(line)")
            try malformed(dir, config: config, quantization: quantization, edit: edit)
            assertKilnError(try HFModel(folder: dir.path).loadAllMatrices(), path: dir.path, words, line: line)
        }
        let down = self.down
        // Numerics fields Kiln does not implement, each named.
        try expect("activation_scheme", quantization: ["activation_scheme": "static"])
        try expect("weight_block_size", quantization: ["weight_block_size": [64, 64]])
        try expect("weight_block_size", quantization: ["weight_block_size": nil])
        try expect("scale_fmt", quantization: ["scale_fmt": "ue8m0"])
        try expect("quant_method", quantization: ["quant_method": "gptq"])
        try expect("unknown quantization_config field \"bits\"", quantization: ["bits": 8])
        // An FP8 weight with its scale in BF16, or of the wrong shape, or missing; a scale of a bf16 weight.
        try expect("\(down).weight_scale_inv is bf16", "only F32") { t in
            let s = t[down + ".weight_scale_inv"]!
            t[down + ".weight_scale_inv"] = .init(name: s.name, dtypeName: "BF16", shape: s.shape, data: encode(decode(s.data, .f32), .bf16))
        }
        try expect("\(down).weight_scale_inv has shape [1, 1]") { t in
            t[down + ".weight_scale_inv"] = .init(name: down + ".weight_scale_inv", dtypeName: "F32", shape: [1, 1], data: encode([1], .f32))
        }
        try expect("has no \(down).weight_scale_inv") { t in t[down + ".weight_scale_inv"] = nil }
        try expect("\(down).weight_scale_inv scales \(down).weight, which is bf16") { t in
            t[down + ".weight"] = .init(name: down + ".weight", dtypeName: "BF16", shape: [160, 200], data: [UInt8](repeating: 0, count: 2 * 160 * 200))
        }
        // FP8 weights without a quantization_config; a scale nothing uses (strict loading).
        try expect("no quantization_config", config: ["quantization_config": NSNull()])
        try expect("unused tensor", "model.layers.0.mlp.extra.weight_scale_inv") { t in
            t["model.layers.0.mlp.extra.weight_scale_inv"] = .init(name: "model.layers.0.mlp.extra.weight_scale_inv", dtypeName: "F32", shape: [1, 1], data: encode([1], .f32))
        }
    }

    func testBookkeepingFieldsAreAccepted() throws {
        let dir = try TempDir()
        try malformed(dir, quantization: ["dequantize": false, "modules_to_convert": NSNull(), "scale_fmt": "float",
                                          "activation_scheme": "DYNAMIC", "modules_to_not_convert": ["lm_head", "model.embed_tokens"]])
        let m = try HFModel(folder: dir.path)
        XCTAssertEqual(m.quantization?.modulesToNotConvert, ["lm_head", "model.embed_tokens"])
        XCTAssertEqual(try m.loadAllMatrices().count, m.config.canonicalTensorShapes.filter { $0.shape.count == 2 }.count)
    }
}
