import Foundation
import KilnCore
import KilnModels
import XCTest

/// Malformed safetensors files, config.json and index.json, each generated here; every one must
/// fail with a one-line KilnError naming the file and the problem.
final class MalformedSafetensorsTests: XCTestCase {
    /// 40 bytes of F32 data: tensor "w" [2, 4] at 0..<32, "v" [2] at 32..<40.
    static let data = f32Bytes([0.5, -1, 1.5, -2, 2.5, -3, 3.5, -4, 0.125, 0.25])
    static func entry(_ name: String, dtype: String = "F32", shape: String, offsets: String) -> String {
        "\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":\(shape),\"data_offsets\":\(offsets)}"
    }
    static let vEntry = entry("v", shape: "[2]", offsets: "[32,40]")

    func testMalformedFiles() throws {
        let dir = try TempDir()
        var cases: [(String, [UInt8], [String])] = []
        func add(_ name: String, _ bytes: [UInt8], _ words: String...) { cases.append((name, bytes, words)) }
        /// A file whose header is `{<w entry>,v}` with w's fields replaced.
        func w(_ name: String, dtype: String = "F32", shape: String = "[2,4]", offsets: String = "[0,32]", _ words: String...) {
            let h = "{" + Self.entry("w", dtype: dtype, shape: shape, offsets: offsets) + "," + Self.vEntry + "}"
            cases.append((name, safetensorsBytes(header: h, data: Self.data), words))
        }
        func header(_ name: String, _ h: String, _ words: String...) {
            cases.append((name, safetensorsBytes(header: h, data: Self.data), words))
        }
        let valid = safetensorsBytes(header: "{" + Self.entry("w", shape: "[2,4]", offsets: "[0,32]") + "," + Self.vEntry + "}", data: Self.data)

        add("empty", [], "truncated")
        add("five-bytes", [8, 0, 0, 0, 0], "truncated")
        add("length-past-eof", safetensorsBytes(header: "{}", data: [], lengthOverride: 4096), "past the end")
        add("length-huge", safetensorsBytes(header: "{}", data: [], lengthOverride: 1 << 40), "limit")
        add("length-2^63", safetensorsBytes(header: "{}", data: [], lengthOverride: 1 << 63), "limit")
        add("length-0", safetensorsBytes(header: "", data: [], lengthOverride: 0), "too short")
        add("gguf-as-safetensors", try TinyCheckpoint.ggufWriter(TinyCheckpoint.Options()).writer.bytes(), "limit", "past the end")
        header("not-json", "hello world", "not a JSON object")
        header("broken-json", "{\"w\": {\"dtype\": ", "invalid JSON")
        header("header-array", "[1, 2, 3]", "not a JSON object")
        header("entry-not-object", "{\"w\": \"F32\"}", "field w has the wrong type")
        add("header-not-utf8", safetensorsBytes(header: "{\"w\u{1}\":1}", data: []).map { $0 == 1 ? 0xFF : $0 }, "invalid JSON", "wrong type")
        w("unknown-dtype", dtype: "Q9", "tensor w has unknown dtype \"Q9\"")
        w("unsupported-dtype-i64", dtype: "I64", shape: "[4]", "tensor w has unsupported dtype I64")
        w("unsupported-dtype-f8-e5m2", dtype: "F8_E5M2", shape: "[32]", "tensor w has unsupported dtype F8_E5M2")
        header("missing-dtype", "{\"w\":{\"shape\":[2,4],\"data_offsets\":[0,32]}}", "tensor w has no dtype")
        header("missing-shape", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,32]}}", "tensor w has no shape")
        header("missing-offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,4]}}", "tensor w has no data_offsets")
        w("offsets-reversed", offsets: "[32,0]", "reversed")
        w("offsets-past-end", shape: "[20]", offsets: "[0,80]", "past the end")
        w("offsets-beyond-2^63", offsets: "[0,18446744073709551615]", "past the end")
        w("offsets-mismatch-shape", shape: "[2,3]", "shape [2, 3] of F32 needs 24")
        w("offsets-three-numbers", offsets: "[0,16,32]", "[begin, end]")
        w("offsets-negative", offsets: "[-8,32]", "tensor w has an invalid data_offsets")
        w("shape-negative", shape: "[-2,-4]", "tensor w has an invalid shape")
        w("shape-fraction", shape: "[2.5,4]", "tensor w has an invalid shape")
        w("shape-string", shape: "\"2x4\"", "tensor w has an invalid shape")
        w("shape-zero", shape: "[0,4]", offsets: "[0,0]", "invalid dimension 0 = 0")
        w("shape-nine-dims", shape: "[1,1,1,1,1,1,1,1,8]", "9 dimensions")
        w("shape-overflow", shape: "[1099511627775,1099511627775,1099511627775]", "absurd element count")
        header("overlap", "{" + Self.entry("w", shape: "[2,4]", offsets: "[0,32]") + "," + Self.entry("v", shape: "[2]", offsets: "[24,32]") + "}", "overlap")
        w("misaligned-f32", shape: "[7]", offsets: "[2,30]", "not aligned")
        header("metadata-not-strings", "{\"__metadata__\":{\"format\":3}}", "__metadata__")
        header("empty-name", "{\"\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "empty name")
        add("data-cut", Array(valid.dropLast(4)), "past the end")

        XCTAssertGreaterThanOrEqual(cases.count, 30)
        for (name, bytes, words) in cases {
            let path = dir.file(name + ".safetensors", bytes)
            assertKilnError(try SafetensorsFile(path: path), path: path, words)
        }
        // The base file itself is fine.
        XCTAssertEqual(try SafetensorsFile(path: dir.file("valid.safetensors", valid)).floats("v"), [0.125, 0.25])
    }

    /// Every prefix of a valid fixture fails cleanly.
    func testEveryTruncation() throws {
        let dir = try TempDir()
        try TinyCheckpoint.writeHF(folder: dir.path + "/hf", dtype: .f32)
        let full = [UInt8](try XCTUnwrap(FileManager.default.contents(atPath: dir.path + "/hf/model.safetensors")))
        let headerLength = full[0..<8].reversed().reduce(0) { $0 << 8 | Int($1) }
        XCTAssertGreaterThan(headerLength, 1000)
        let offsets = Array(stride(from: 0, to: headerLength + 24, by: 7)) + Array(stride(from: headerLength + 24, to: full.count, by: 1999))
        for n in offsets {
            let path = dir.file("cut.safetensors", Array(full[0..<n]))
            assertKilnError(try SafetensorsFile(path: path), path: path, "truncated", "past the end")
        }
        // The header JSON itself cut short, with a length field that agrees, so the JSON parser sees the cut.
        for k in stride(from: 0, to: headerLength, by: 9) {
            let path = dir.file("cut-json.safetensors", u64Bytes(UInt64(k)) + Array(full[8..<8 + k]))
            assertKilnError(try SafetensorsFile(path: path), path: path, "too short", "invalid JSON", "not a JSON object", "past the end")
        }
    }

    /// A fixture folder whose config.json is replaced by `json`.
    private func folderWithConfig(_ dir: TempDir, _ name: String, _ json: String) throws -> String {
        let folder = dir.path + "/" + name
        try TinyCheckpoint.writeHF(folder: folder)
        FileManager.default.createFile(atPath: folder + "/config.json", contents: Data(json.utf8))
        return folder
    }

    func testMalformedConfigs() throws {
        let dir = try TempDir()
        let good = TinyCheckpoint.configJSON(TinyCheckpoint.Options())
        func json(_ changes: [String: Any?]) -> String {
            var j = good
            for (k, v) in changes { j[k] = v ?? nil }
            return String(decoding: try! JSONSerialization.data(withJSONObject: j, options: [.sortedKeys]), as: UTF8.self)
        }
        let cases: [(String, String, [String])] = [
            ("not-json", "{\"hidden_size\": 64,,}", ["invalid JSON"]),
            ("empty", "", ["invalid JSON"]),
            ("array", "[]", ["wrong type"]),
            ("missing-hidden-size", json(["hidden_size": nil]), ["missing field hidden_size"]),
            ("hidden-size-string", json(["hidden_size": "64"]), ["field hidden_size has the wrong type"]),
            ("hidden-size-negative", json(["hidden_size": -64]), ["hidden_size = -64"]),
            ("layers-zero", json(["num_hidden_layers": 0]), ["num_hidden_layers = 0"]),
            ("vocab-huge", json(["vocab_size": 1 << 40]), ["vocab_size"]),
            ("kv-heads-zero", json(["num_key_value_heads": 0]), ["num_key_value_heads = 0"]),
            ("kv-heads-3", json(["num_key_value_heads": 3]), ["not a multiple"]),
            ("heads-not-dividing", json(["num_attention_heads": 5, "num_key_value_heads": 5]), ["not a multiple"]),
            ("unknown-architecture", json(["architectures": ["MistralForCausalLM"]]), ["unsupported architecture \"MistralForCausalLM\""]),
            ("unknown-model-type", json(["architectures": nil, "model_type": "gpt2"]), ["model_type \"gpt2\""]),
            ("no-architecture", json(["architectures": nil, "model_type": nil]), ["missing field architectures"]),
            ("two-architectures", json(["architectures": ["LlamaForCausalLM", "Qwen2ForCausalLM"]]), ["architectures"]),
            ("arch-type-disagree", json(["model_type": "qwen2"]), ["model_type"]),
            ("rope-scaling-yarn", json(["rope_scaling": ["rope_type": "yarn", "factor": 4.0]]), ["rope_scaling"]),
            ("rope-scaling-factor-0", json(["rope_scaling": ["rope_type": "llama3", "factor": 0.0]]), ["rope_scaling.factor"]),
            ("rope-scaling-not-object", json(["rope_scaling": 8]), ["rope_scaling"]),
            ("hidden-act-gelu", json(["hidden_act": "gelu"]), ["hidden_act"]),
            ("eps-zero", json(["rms_norm_eps": 0.0]), ["rms_norm_eps"]),
            ("theta-negative", json(["rope_theta": -1.0]), ["rope_theta"]),
            ("head-dim-odd", json(["head_dim": 15]), ["head dim 15"]),
            ("granite-multiplier-negative", json(["architectures": ["GraniteForCausalLM"], "model_type": "granite", "residual_multiplier": -1.0]), ["residual_multiplier"]),
        ]
        for (name, text, words) in cases {
            let folder = try folderWithConfig(dir, name, text)
            assertKilnError(try openModel(path: folder), path: folder + "/config.json", words)
        }
    }

    func testMalformedIndexAndFolders() throws {
        let dir = try TempDir()
        func sharded(_ name: String) throws -> String {
            let folder = dir.path + "/" + name
            try TinyCheckpoint.writeHF(folder: folder, shards: 2)
            return folder
        }
        let indexName = "/model.safetensors.index.json"
        func withIndex(_ name: String, _ text: String, _ words: String...) throws {
            let folder = try sharded(name)
            FileManager.default.createFile(atPath: folder + indexName, contents: Data(text.utf8))
            assertKilnError(try openModel(path: folder), path: folder + indexName, words)
        }
        try withIndex("index-not-json", "{\"weight_map\": [", "invalid JSON")
        try withIndex("index-no-weight-map", "{\"metadata\": {}}", "missing field weight_map")
        try withIndex("index-map-not-strings", "{\"weight_map\": {\"a\": 1}}", "wrong type")
        try withIndex("index-empty-map", "{\"weight_map\": {}}", "empty")
        try withIndex("index-escaping-path", "{\"weight_map\": {\"model.norm.weight\": \"../model-00001-of-00002.safetensors\"}}", "not a file name")
        try withIndex("index-tensor-nowhere", "{\"weight_map\": {\"model.ghost.weight\": \"model-00001-of-00002.safetensors\"}}", "model.ghost.weight", "no shard has it")

        let missing = try sharded("shard-missing")
        try FileManager.default.removeItem(atPath: missing + "/model-00002-of-00002.safetensors")
        assertKilnError(try openModel(path: missing), path: missing + indexName, "model-00002-of-00002.safetensors listed in weight_map is missing")

        // Index disagreeing with where a tensor really is.
        let moved = try sharded("index-wrong-shard")
        let idx = try XCTUnwrap(String(data: FileManager.default.contents(atPath: moved + indexName)!, encoding: .utf8))
        let swapped = idx.replacingOccurrences(of: "\"model.embed_tokens.weight\" : \"model-00001-of-00002.safetensors\"",
                                               with: "\"model.embed_tokens.weight\" : \"model-00002-of-00002.safetensors\"")
        XCTAssertNotEqual(idx, swapped)
        FileManager.default.createFile(atPath: moved + indexName, contents: Data(swapped.utf8))
        assertKilnError(try openModel(path: moved), path: moved + indexName, "model.embed_tokens.weight")

        // A corrupt shard is named by its own path.
        let corrupt = try sharded("shard-corrupt")
        let shard = corrupt + "/model-00002-of-00002.safetensors"
        FileManager.default.createFile(atPath: shard, contents: Data([1, 2, 3]))
        assertKilnError(try openModel(path: corrupt), path: shard, "truncated")

        // No weights at all.
        let bare = dir.path + "/no-weights"
        try TinyCheckpoint.writeHF(folder: bare)
        try FileManager.default.removeItem(atPath: bare + "/model.safetensors")
        assertKilnError(try openModel(path: bare), path: bare, "no model.safetensors")

        // Weights of the wrong size for the config: named with both shapes when loaded.
        let wrong = dir.path + "/wrong-size"
        try TinyCheckpoint.writeHF(folder: wrong)
        var o = TinyCheckpoint.Options(); o.hiddenSize = 32; o.numHeads = 2; o.numKVHeads = 1
        FileManager.default.createFile(atPath: wrong + "/config.json",
                                       contents: try JSONSerialization.data(withJSONObject: TinyCheckpoint.configJSON(o)))
        let m = try openModel(path: wrong)
        assertKilnError(try m.tensor("token_embd.weight", shape: [96, 32]), path: wrong + "/model.safetensors", "[96, 64], expected [96, 32]")
    }
}
