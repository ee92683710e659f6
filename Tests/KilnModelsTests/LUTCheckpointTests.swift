import XCTest
import KilnCore
@testable import KilnModels

/// `quantization_config` of kiln-lut folders: the accepted object and the strict rejections (each naming its field).
final class LUTCheckpointTests: XCTestCase {
    let good: [String: Any] = ["quant_method": "kiln-lut", "bits": 3, "group_size": 64, "table": "learned", "offsets": true,
                               "modules_to_not_convert": ["lm_head"]]

    func parse(_ q: [String: Any]) throws -> HFQuantizationConfig? {
        try HFQuantizationConfig.parse(config: ["quantization_config": q], path: "cfg.json")
    }

    func testParsesAndWritesTheSameObject() throws {
        let q = try XCTUnwrap(try parse(good))
        XCTAssertEqual(q.format, .lut(.init(bits: 3, groupSize: 64, table: .learned, hasOffsets: true)))
        XCTAssertEqual(q.modulesToNotConvert, ["lm_head"])
        let back = try XCTUnwrap(try parse(q.json))
        XCTAssertEqual(back, q)
        XCTAssertEqual(q.json["quant_method"] as? String, "kiln-lut")
    }

    func testMalformedFieldsAreErrorsNamingThem() {
        let cases: [(String, Any?)] = [("bits", 5), ("bits", "4"), ("bits", nil), ("group_size", 48), ("group_size", nil),
                                       ("table", "nf5"), ("table", nil), ("offsets", nil), ("offsets", "no"), ("surprise", 1)]
        for (key, value) in cases {
            var q = good
            q[key] = value
            XCTAssertThrowsError(try parse(q), "\(key) = \(String(describing: value))") {
                XCTAssertTrue("\($0)".contains(key), "\(key): \($0)")
            }
        }
        var fp4 = good
        fp4["table"] = "fp4"
        XCTAssertThrowsError(try parse(fp4)) { XCTAssertTrue("\($0)".contains("fp4"), "\($0)") }
    }
}

/// A tiny model written as a kiln-lut folder by `CheckpointExport` loads back strictly.
final class LUTFolderTests: XCTestCase {
    func exportLUT(_ dir: TempDir, affine: Bool) throws -> (original: [String: [Float]], format: WeightFormat.LUTFormat) {
        var o = TinyCheckpoint.Options()
        o.dtype = .f32
        let original = try TinyCheckpoint.writeHF(folder: dir.path + "/src", options: o)
        var e = CheckpointExport.Options()
        let format = WeightFormat.LUTFormat(bits: 3, groupSize: 32, table: affine ? .int : .learned, hasOffsets: affine)
        e.lut = format
        try CheckpointExport.write(try HFModel(folder: dir.path + "/src"), to: dir.path + "/lut", options: e)
        return (Dictionary(uniqueKeysWithValues: original.compactMap { k, v in HFModel.canonicalName(hf: k).map { ($0, v) } }), format)
    }

    func testFolderRoundTrip() throws {
        for affine in [false, true] {
            let dir = try TempDir()
            let (original, format) = try exportLUT(dir, affine: affine)
            let m = try HFModel(folder: dir.path + "/lut")
            let matrices = try m.loadAllMatrices()
            XCTAssertEqual(matrices["output.weight"]?.format, .dense(.f32))
            for (name, q) in matrices where name.hasPrefix("blk.") {
                XCTAssertEqual(q.format, .lut(format), name)
                let got = try q.dequantized(), want = try XCTUnwrap(original[name], name)
                // 3 bits of uniform random weights: well under 25% relative error, never exact.
                let rel = LUTQuantizer.relativeError(want, got)
                XCTAssertLessThan(rel, 0.25, name); XCTAssertGreaterThan(rel, 0.001, name)
            }
        }
    }

    /// `learned`: q/k/v of a layer carry one table, gate/up one table (the GPU stacks them and reads one table per
    /// stacked matrix); o and down their own.
    func testLearnedTablesAreSharedPerFusedGroup() throws {
        let dir = try TempDir()
        _ = try exportLUT(dir, affine: false)
        let m = try HFModel(folder: dir.path + "/lut")
        let matrices = try m.loadAllMatrices()
        func table(_ name: String) throws -> [Float] {
            let bytes = try XCTUnwrap(matrices[name], name).planes.last!.bytes
            return (0..<(bytes.count / 4)).map { bytes.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) }
        }
        for l in 0..<m.config.numLayers {
            let p = "blk.\(l)."
            let q = try table(p + "attn_q.weight"), gate = try table(p + "ffn_gate.weight")
            XCTAssertEqual(q.count, 8)
            XCTAssertEqual(try table(p + "attn_k.weight"), q); XCTAssertEqual(try table(p + "attn_v.weight"), q)
            XCTAssertEqual(try table(p + "ffn_up.weight"), gate)
            XCTAssertNotEqual(gate, q)
            XCTAssertNotEqual(try table(p + "attn_output.weight"), q)
            XCTAssertNotEqual(try table(p + "ffn_down.weight"), gate)
        }
    }

    /// A GGUF source (llama: Q/K rows interleaved for RoPE, which the export turns into Hugging Face's halves): every
    /// learned matrix, fused groups included, reconstructs the plain export of the same file (the per-tensor path),
    /// so no member of a group is permuted twice or not at all.
    func testLearnedGroupsFromGGUFKeepHuggingFaceRowOrder() throws {
        let dir = try TempDir()
        var o = TinyCheckpoint.Options()
        o.ggufMatrixFormats = [.dense(.f32)]
        try TinyCheckpoint.writeGGUF(path: dir.path + "/tiny.gguf", options: o)
        var plain = CheckpointExport.Options()
        plain.fp8 = false
        try CheckpointExport.write(try GGUFModel(path: dir.path + "/tiny.gguf"), to: dir.path + "/plain", options: plain)
        var e = CheckpointExport.Options()
        e.lut = WeightFormat.LUTFormat(bits: 4, groupSize: 32, table: .learned, hasOffsets: false)
        try CheckpointExport.write(try GGUFModel(path: dir.path + "/tiny.gguf"), to: dir.path + "/lut", options: e)
        let plainModel = try HFModel(folder: dir.path + "/plain"), lutModel = try HFModel(folder: dir.path + "/lut")   // own the mapped files
        let want = try plainModel.loadAllMatrices(), got = try lutModel.loadAllMatrices()
        var checked = 0
        for (name, q) in got where name.hasPrefix("blk.") {
            let rel = LUTQuantizer.relativeError(try XCTUnwrap(want[name], name).dequantized(), try q.dequantized())
            XCTAssertLessThan(rel, 0.2, name); XCTAssertGreaterThan(rel, 0.001, name)
            checked += 1
        }
        XCTAssertEqual(checked, 14)
        withExtendedLifetime((plainModel, lutModel)) {}
    }

    /// Rewrites the folder's safetensors with `edit` applied to the tensor list.
    func rewrite(_ folder: String, _ edit: (inout [SafetensorsWriter.Tensor]) -> Void) throws {
        let m = try HFModel(folder: folder)
        var tensors: [SafetensorsWriter.Tensor] = []
        for name in m.checkpoint.tensors.keys.sorted() {
            let t = try XCTUnwrap(m.checkpoint.info(name))
            tensors.append(.init(name: name, dtypeName: try XCTUnwrap(SafetensorsFile.dtypeName(t.info.dtype)), shape: t.info.shape,
                                 data: Array(try t.file.data(t.info))))
        }
        edit(&tensors)
        var w = SafetensorsWriter()
        w.tensors = tensors
        w.alignTensors()
        try w.write(to: folder + "/model.safetensors")
    }

    func testMalformedPlanesAreErrorsNamingTheTensor() throws {
        let plane = "model.layers.1.mlp.down_proj.weight"
        let cases: [(String, (inout [SafetensorsWriter.Tensor]) -> Void)] = [
            ("_scales", { $0.removeAll { $0.name == plane + "_scales" } }),
            ("_table", { ts in if let i = ts.firstIndex(where: { $0.name == plane + "_table" }) { ts[i].dtypeName = "F16"; ts[i].data.removeLast(ts[i].data.count / 2) } }),
            ("_codes", { ts in if let i = ts.firstIndex(where: { $0.name == plane + "_codes" }) { ts[i].shape[1] -= 1; ts[i].data.removeLast(ts[i].shape[0]) } }),
            ("_offsets", { ts in if let i = ts.firstIndex(where: { $0.name == plane + "_scales" }) { var o = ts[i]; o.name = plane + "_offsets"; ts.append(o) } }),
        ]
        for (what, edit) in cases {
            let dir = try TempDir()
            _ = try exportLUT(dir, affine: false)
            try rewrite(dir.path + "/lut", edit)
            XCTAssertThrowsError(try HFModel(folder: dir.path + "/lut").loadAllMatrices(), what) {
                XCTAssertTrue("\($0)".contains(plane + what), "\(what): \($0)")
            }
        }
    }
}
