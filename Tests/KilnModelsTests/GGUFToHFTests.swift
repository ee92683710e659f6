import Foundation
import XCTest
import KilnCore
@testable import KilnModels

/// A GGUF model written as a Hugging Face folder (`kiln quantize`'s GGUF path, here in source precision so values
/// compare exactly): llama.cpp's converter permuted the Q/K rows of llama models (`permute` in convert_hf_to_gguf.py:
/// `w.reshape(n_head, 2, rows / n_head / 2, cols).swapaxes(1, 2)`), so applying that permutation to the written
/// q_proj / k_proj must give the GGUF rows back bit for bit; qwen2 keeps its rows. The llama3 RoPE scaling that llama.cpp
/// stores as `rope_freqs.weight` comes back as `rope_scaling`.
final class GGUFToHFTests: XCTestCase {
    /// llama.cpp's `permute(weights, n_head)`, written from its reshape/swapaxes definition: output row
    /// (h, j, i) ← input row (h, i, j) for the [n_head, 2, headDim/2] view of the rows.
    func llamaCppPermute(_ w: [Float], rows: Int, cols: Int, heads: Int) -> [Float] {
        let half = rows / heads / 2
        var out = [Float](repeating: .nan, count: w.count)
        for h in 0..<heads {
            for i in 0..<2 {
                for j in 0..<half {
                    let src = h * 2 * half + i * half + j, dst = h * 2 * half + j * 2 + i
                    for k in 0..<cols { out[dst * cols + k] = w[src * cols + k] }
                }
            }
        }
        return out
    }

    func export(_ o: TinyCheckpoint.Options, extra: (inout GGUFWriter) throws -> Void = { _ in }) throws -> (folder: String, gguf: [String: [Float]], config: [String: Any]) {
        let dir = NSTemporaryDirectory() + "kiln-gguf-hf-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var (writer, weights) = try TinyCheckpoint.ggufWriter(o)
        try extra(&writer)
        try writer.write(to: dir + "/model.gguf")
        let model = try GGUFModel(path: dir + "/model.gguf")
        var options = CheckpointExport.Options()
        options.fp8 = false
        options.baseConfig = try model.huggingFaceConfig()
        try CheckpointExport.write(model, to: dir + "/hf", options: options)
        return (dir, weights, options.baseConfig!)
    }

    func testLlamaQKRowsRoundTripExactly() throws {
        var o = TinyCheckpoint.Options()
        o.ggufMatrixFormats = [.dense(.f32)]
        let (dir, gguf, _) = try export(o)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let hf = try SafetensorsCheckpoint(folder: dir + "/hf")
        let c = TinyCheckpoint.modelConfig(o)
        for l in 0..<c.numLayers {
            let q = try hf.floats("model.layers.\(l).self_attn.q_proj.weight"), k = try hf.floats("model.layers.\(l).self_attn.k_proj.weight")
            XCTAssertEqual(llamaCppPermute(q, rows: c.qDim, cols: c.hiddenSize, heads: c.numHeads), gguf["blk.\(l).attn_q.weight"])
            XCTAssertEqual(llamaCppPermute(k, rows: c.kvDim, cols: c.hiddenSize, heads: c.numKVHeads), gguf["blk.\(l).attn_k.weight"])
            XCTAssertNotEqual(q, gguf["blk.\(l).attn_q.weight"], "the rows must move")
            XCTAssertEqual(try hf.floats("model.layers.\(l).self_attn.v_proj.weight"), gguf["blk.\(l).attn_v.weight"])
            XCTAssertEqual(try hf.floats("model.layers.\(l).mlp.down_proj.weight"), gguf["blk.\(l).ffn_down.weight"])
        }
        XCTAssertEqual(try hf.floats("model.embed_tokens.weight"), gguf["token_embd.weight"])
        XCTAssertEqual(try hf.floats("lm_head.weight"), gguf["output.weight"])
        // The folder reads back as the same model, RoPE now in halves (the rows' new order).
        var want = try GGUFModel(path: dir + "/model.gguf").config
        want.ropeStyle = .halves
        XCTAssertEqual(try HFModel(folder: dir + "/hf").config, want)
    }

    func testQwen2RowsStay() throws {
        var o = TinyCheckpoint.Options()
        o.architecture = .qwen2
        o.ggufMatrixFormats = [.dense(.f32)]
        let (dir, gguf, config) = try export(o)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertEqual(config["architectures"] as? [String], ["Qwen2ForCausalLM"])
        let hf = try SafetensorsCheckpoint(folder: dir + "/hf")
        XCTAssertEqual(try hf.floats("model.layers.1.self_attn.q_proj.weight"), gguf["blk.1.attn_q.weight"])
        XCTAssertEqual(try hf.floats("model.layers.1.self_attn.k_proj.bias"), gguf["blk.1.attn_k.bias"])
        XCTAssertEqual(try HFModel(folder: dir + "/hf").config, try GGUFModel(path: dir + "/model.gguf").config)
    }

    /// Each architecture's folder names its transformers class and reads back as the GGUF's model (RoPE in halves).
    func testEveryArchitectureReadsBack() throws {
        for (arch, cls) in [(Architecture.llama, "LlamaForCausalLM"), (.qwen2, "Qwen2ForCausalLM"), (.qwen3, "Qwen3ForCausalLM"),
                            (.granite, "GraniteForCausalLM")] {
            var o = TinyCheckpoint.Options()
            o.architecture = arch
            o.headDim = 24   // not hidden / heads, as Qwen3 has it: head_dim must travel
            let (dir, _, config) = try export(o)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            XCTAssertEqual(config["architectures"] as? [String], [cls])
            XCTAssertEqual(config["head_dim"] as? Int, 24)
            var want = try GGUFModel(path: dir + "/model.gguf").config
            want.ropeStyle = .halves
            XCTAssertEqual(try HFModel(folder: dir + "/hf").config, want, arch.rawValue)
        }
    }

    /// llama.cpp's converter (LlamaModel.generate_extra_tensors) turns `rope_scaling` {factor, low_freq_factor,
    /// high_freq_factor, original_max_position_embeddings} into one factor per dimension pair; written here from it.
    func llamaCppRopeFactors(headDim: Int, theta: Double, factor: Double, low: Double, high: Double, original: Double) -> [Float] {
        (0..<(headDim / 2)).map { i in
            let freq = 1 / pow(theta, Double(2 * i) / Double(headDim))
            let wavelen = 2 * Double.pi / freq
            if wavelen < original / high { return 1 }
            if wavelen > original / low { return Float(factor) }
            let smooth = (original / wavelen - low) / (high - low)
            return Float(1 / ((1 - smooth) / factor + smooth))
        }
    }

    func testRopeFreqsBecomeLlama3RopeScaling() throws {
        var o = TinyCheckpoint.Options()
        o.ggufMatrixFormats = [.dense(.f32)]
        let factors = llamaCppRopeFactors(headDim: 16, theta: 10000, factor: 8, low: 1, high: 4, original: 8192)
        XCTAssertTrue(factors.contains(1) && factors.contains(8) && factors.contains { $0 > 1 && $0 < 8 }, "all three regimes: \(factors)")
        let (dir, _, config) = try export(o) { try $0.addTensor("rope_freqs.weight", shape: [8], type: .f32, values: factors) }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let scaling = try XCTUnwrap(config["rope_scaling"] as? [String: Any])
        XCTAssertEqual(scaling["rope_type"] as? String, "llama3")
        XCTAssertEqual(scaling["factor"] as? Double, 8)
        XCTAssertEqual(scaling["low_freq_factor"] as? Double, 1)
        XCTAssertEqual(scaling["high_freq_factor"] as? Double, 4)
        XCTAssertEqual(scaling["original_max_position_embeddings"] as? Int, 8192)

        // A factor no llama3 scaling gives is refused, naming the tensor.
        var wrong = factors
        wrong[5] *= 1.5
        XCTAssertThrowsError(try export(o) { try $0.addTensor("rope_freqs.weight", shape: [8], type: .f32, values: wrong) }) {
            XCTAssertTrue("\($0)".contains("rope_freqs.weight[5]"), "\($0)")
        }
    }
}
