import Foundation
import KilnCore
import KilnModels
import XCTest

final class HFModelTests: XCTestCase {
    /// Loads every canonical tensor and compares it with what the fixture stored.
    private func loadAll(_ m: WeightSource, stored: [String: [Float]], file: StaticString = #filePath, line: UInt = #line) throws {
        for t in m.config.canonicalTensorShapes {
            let w = try m.tensor(t.name, shape: t.shape)
            let hf = HFModel.hfName(canonical: t.name)!
            var got = [Float](repeating: .nan, count: t.shape.reduce(1, *))
            got.withUnsafeMutableBufferPointer { QuantBlocks.dequantize(w.dtype, w.data.baseAddress!, $0.baseAddress!, count: $0.count) }
            XCTAssertEqual(got, stored[hf], t.name, file: file, line: line)
            XCTAssertTrue(got.allSatisfy { $0 != 0 }, "fixture weights must be non-zero", file: file, line: line)
        }
        try m.checkAllUsed()
    }

    func testNameMapping() {
        XCTAssertEqual(HFModel.hfName(canonical: "blk.11.attn_q.bias"), "model.layers.11.self_attn.q_proj.bias")
        XCTAssertEqual(HFModel.hfName(canonical: "blk.0.ffn_norm.weight"), "model.layers.0.post_attention_layernorm.weight")
        XCTAssertEqual(HFModel.hfName(canonical: "output.weight"), "lm_head.weight")
        XCTAssertNil(HFModel.hfName(canonical: "blk.01.attn_q.weight"))
        XCTAssertNil(HFModel.hfName(canonical: "blk.x.attn_q.weight"))
        XCTAssertEqual(HFModel.canonicalName(hf: "model.layers.3.mlp.down_proj.weight"), "blk.3.ffn_down.weight")
        XCTAssertEqual(HFModel.canonicalName(hf: "model.embed_tokens.weight"), "token_embd.weight")
        XCTAssertNil(HFModel.canonicalName(hf: "model.layers.3.mlp.down_proj.scales"))
    }

    func testTinyLlamaBF16() throws {
        let dir = try TempDir()
        let stored = try TinyCheckpoint.writeHF(folder: dir.path, architecture: .llama, dtype: .bf16, seed: 7)
        let m = try HFModel(folder: dir.path)
        XCTAssertEqual(m.config.hiddenSize, 64)
        XCTAssertEqual(m.config.numKVHeads, 2)
        XCTAssertEqual(m.config.ropeStyle, .halves)
        XCTAssertTrue(m.has("output.weight"))
        XCTAssertEqual(try m.tensor("blk.1.attn_k.weight", shape: [32, 64]).dtype, .bf16)
        try loadAll(m, stored: stored)
    }

    func testShardedQwen2F32WithBiases() throws {
        let dir = try TempDir()
        let stored = try TinyCheckpoint.writeHF(folder: dir.path, architecture: .qwen2, dtype: .f32, shards: 3, seed: 3)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.path + "/model.safetensors.index.json"))
        let m = try HFModel(folder: dir.path)
        XCTAssertEqual(m.checkpoint.files.count, 3)
        XCTAssertTrue(m.config.attentionBias)
        XCTAssertTrue(m.has("blk.0.attn_v.bias"))
        try loadAll(m, stored: stored)
    }

    /// Qwen3: q/k norm weights under HF's self_attn.q_norm / k_norm names, head_dim independent of hidden / heads.
    func testTinyQwen3WithQKNorms() throws {
        let dir = try TempDir()
        var o = TinyCheckpoint.Options()
        o.architecture = .qwen3; o.headDim = 24; o.dtype = .f32; o.seed = 12
        let stored = try TinyCheckpoint.writeHF(folder: dir.path, options: o)
        XCTAssertNotNil(stored["model.layers.1.self_attn.q_norm.weight"])
        XCTAssertEqual(stored["model.layers.0.self_attn.k_norm.weight"]?.count, 24)
        let m = try HFModel(folder: dir.path)
        XCTAssertEqual(m.config.architecture, .qwen3)
        XCTAssertTrue(m.config.qkNorm)
        XCTAssertFalse(m.config.attentionBias)
        XCTAssertEqual(m.config.qDim, 96)
        XCTAssertEqual(HFModel.hfName(canonical: "blk.1.attn_q_norm.weight"), "model.layers.1.self_attn.q_norm.weight")
        XCTAssertEqual(HFModel.canonicalName(hf: "model.layers.0.self_attn.k_norm.weight"), "blk.0.attn_k_norm.weight")
        try loadAll(m, stored: stored)
    }

    func testTiedEmbeddingsHaveNoOutput() throws {
        let dir = try TempDir()
        try TinyCheckpoint.writeHF(folder: dir.path, architecture: .granite, tieWordEmbeddings: true,
                                   configOverrides: ["embedding_multiplier": 12.0, "logits_scaling": 8.0])
        let m = try openModel(path: dir.path)
        XCTAssertTrue(m is HFModel)
        XCTAssertFalse(m.has("output.weight"))
        XCTAssertEqual(m.config.embeddingMultiplier, 12)
        assertKilnError(try m.tensor("output.weight", shape: [96, 64]), path: dir.path, "lm_head.weight")
        for t in m.config.canonicalTensorShapes { _ = try m.tensor(t.name, shape: t.shape) }
        try m.checkAllUsed()
    }

    func testStrictLoading() throws {
        let dir = try TempDir()
        try TinyCheckpoint.writeHF(folder: dir.path)
        let m = try HFModel(folder: dir.path)
        let file = dir.path + "/model.safetensors"
        // Mis-shaped: both shapes named.
        assertKilnError(try m.tensor("blk.0.attn_q.weight", shape: [64, 32]), path: file, "[64, 64], expected [64, 32]")
        assertKilnError(try m.tensor("blk.5.attn_q.weight", shape: [64, 64]), path: dir.path, "model.layers.5.self_attn.q_proj.weight")
        assertKilnError(try m.tensor("blk.0.attn_q.scales", shape: [1]), path: dir.path, "unknown tensor name")
        _ = try m.tensor("token_embd.weight", shape: [96, 64])
        assertKilnError(try m.checkAllUsed(), path: dir.path, "unused tensor")
    }

    func testOpenModelDispatchesOnContent() throws {
        let dir = try TempDir()
        // A GGUF without the extension is still a GGUF.
        let gguf = dir.path + "/weights.bin"
        try TinyCheckpoint.writeGGUF(path: gguf)
        XCTAssertTrue(try openModel(path: gguf) is GGUFModel)
        XCTAssertEqual(try ModelFiles.locate(gguf).kind, .gguf)
        // A safetensors file named .gguf is not.
        let hf = dir.path + "/hf"
        try TinyCheckpoint.writeHF(folder: hf)
        let fake = dir.path + "/fake.gguf"
        try FileManager.default.copyItem(atPath: hf + "/model.safetensors", toPath: fake)
        assertKilnError(try openModel(path: fake), path: fake, "not a GGUF file")
        let files = try ModelFiles.locate(hf)
        XCTAssertEqual(files.kind, .huggingFace)
        XCTAssertNil(files.tokenizerJSONPath)
        XCTAssertNil(try files.loadTokenizerConfig())
        _ = dir.file("hf/generation_config.json", text: #"{"eos_token_id":[2,5]}"#)
        XCTAssertEqual(try ModelFiles.locate(hf).loadGenerationConfig()?.eosTokenIds, [2, 5])
        assertKilnError(try openModel(path: dir.path), path: dir.path, "config.json")
        assertKilnError(try openModel(path: dir.path + "/missing"), path: dir.path + "/missing", "no such file")
        assertKilnError(try openModel(path: dir.file("tiny", [1, 2])), path: dir.path + "/tiny", "not a model file")
    }
}
