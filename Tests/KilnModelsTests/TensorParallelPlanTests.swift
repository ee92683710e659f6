import Foundation
import KilnCore
import KilnModels
import XCTest

/// The tensor-parallel plan on Llama-3-8B and -70B shapes; every expected number below is worked out by hand from
/// the published config.json files (8B: hidden 4096, ffn 14336, 32 heads, 8 KV heads, head dim 128, vocab 128256;
/// 70B: hidden 8192, ffn 28672, 64 heads, 8 KV heads, head dim 128, vocab 128256), not read from the plan.
final class TensorParallelPlanTests: XCTestCase {
    static func llama3(hidden: Int, ffn: Int, layers: Int, heads: Int) throws -> ModelConfig {
        let json = """
        {"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":128256,"hidden_size":\(hidden),
         "intermediate_size":\(ffn),"num_hidden_layers":\(layers),"num_attention_heads":\(heads),"num_key_value_heads":8,
         "max_position_embeddings":8192,"rms_norm_eps":1e-05,"rope_theta":500000.0,"tie_word_embeddings":false,
         "hidden_act":"silu","bos_token_id":128000,"eos_token_id":128001}
        """
        return try HFConfig.decode(json).modelConfig(path: "config.json")
    }
    static func llama3_8B() throws -> ModelConfig { try llama3(hidden: 4096, ffn: 14336, layers: 32, heads: 32) }
    static func llama3_70B() throws -> ModelConfig { try llama3(hidden: 8192, ffn: 28672, layers: 80, heads: 64) }

    func shapes(_ p: TensorParallelPlan) -> [String] { p.gemmShapes.map { "\($0.op) \($0.n)x\($0.k)" } }

    func testLlama3_8BPerRankGEMMs() throws {
        let c = try Self.llama3_8B()
        // TP2: 16 q heads + 2·4 KV heads of 128 → qkv 3072 rows; o reads 16·128 = 2048; ffn 7168 per rank.
        XCTAssertEqual(shapes(try TensorParallelPlan(config: c, ranks: 2)),
                       ["qkv 3072x4096", "o 4096x2048", "gate_up 14336x4096", "down 4096x7168", "logits 64128x4096"])
        // TP4: (8 + 2·2)·128 = 1536; o reads 1024; ffn 3584.
        XCTAssertEqual(shapes(try TensorParallelPlan(config: c, ranks: 4)),
                       ["qkv 1536x4096", "o 4096x1024", "gate_up 7168x4096", "down 4096x3584", "logits 32064x4096"])
        // TP8: (4 + 2·1)·128 = 768; one KV head per GPU.
        XCTAssertEqual(shapes(try TensorParallelPlan(config: c, ranks: 8)),
                       ["qkv 768x4096", "o 4096x512", "gate_up 3584x4096", "down 4096x1792", "logits 16032x4096"])
        // TP1 is the unsplit model.
        XCTAssertEqual(shapes(try TensorParallelPlan(config: c, ranks: 1)),
                       ["qkv 6144x4096", "o 4096x4096", "gate_up 28672x4096", "down 4096x14336", "logits 128256x4096"])
    }

    func testLlama3_70BPerRankGEMMs() throws {
        let c = try Self.llama3_70B()
        // TP2: (32 + 2·4)·128 = 5120; o reads 4096; ffn 14336.
        XCTAssertEqual(shapes(try TensorParallelPlan(config: c, ranks: 2)),
                       ["qkv 5120x8192", "o 8192x4096", "gate_up 28672x8192", "down 8192x14336", "logits 64128x8192"])
        XCTAssertEqual(shapes(try TensorParallelPlan(config: c, ranks: 4)),
                       ["qkv 2560x8192", "o 8192x2048", "gate_up 14336x8192", "down 8192x7168", "logits 32064x8192"])
        XCTAssertEqual(shapes(try TensorParallelPlan(config: c, ranks: 8)),
                       ["qkv 1280x8192", "o 8192x1024", "gate_up 7168x8192", "down 8192x3584", "logits 16032x8192"])
        let r8 = try TensorParallelPlan(config: c, ranks: 8).rankConfig
        XCTAssertEqual([r8.numHeads, r8.numKVHeads, r8.headDim, r8.hiddenSize, r8.intermediateSize, r8.vocabSize],
                       [8, 1, 128, 8192, 3584, 16032])
    }

    func testLayerSplits() throws {
        let p = try TensorParallelPlan(config: try Self.llama3_8B(), ranks: 2)
        XCTAssertEqual(p.split(.qkv), .columnParallel)
        XCTAssertEqual(p.split(.gateUp), .columnParallel)
        XCTAssertEqual(p.split(.o), .rowParallel)
        XCTAssertEqual(p.split(.down), .rowParallel)
        XCTAssertEqual(LinearLayer.allCases.filter(p.allReducesAfter), [.o, .down])
        XCTAssertFalse(try TensorParallelPlan(config: try Self.llama3_8B(), ranks: 1).allReducesAfter(.o))
    }

    /// Rank 1 of 4 on Llama-3-8B, tensor by tensor.
    func testLlama3_8BRankSlices() throws {
        let p = try TensorParallelPlan(config: try Self.llama3_8B(), ranks: 4)
        func s(_ name: String) throws -> TensorParallelPlan.Slice { try XCTUnwrap(p.slice(name, rank: 1)) }
        // q: heads 8..<16 → rows 1024..<2048; k, v: KV heads 2..<4 → rows 256..<512 (the KV heads of q heads 8..<16: 8/4 = 2).
        XCTAssertEqual(try s("blk.3.attn_q.weight").rows, 1024..<2048)
        XCTAssertEqual(try s("blk.3.attn_q.weight").cols, 0..<4096)
        XCTAssertEqual(try s("blk.3.attn_k.weight").rows, 256..<512)
        XCTAssertEqual(try s("blk.3.attn_v.weight").rows, 256..<512)
        // o: all 4096 output rows, input columns of heads 8..<16.
        XCTAssertEqual(try s("blk.3.attn_output.weight").rows, 0..<4096)
        XCTAssertEqual(try s("blk.3.attn_output.weight").cols, 1024..<2048)
        // gate and up: the same 3584 rows each, so gate row j pairs with up row j.
        XCTAssertEqual(try s("blk.3.ffn_gate.weight").rows, 3584..<7168)
        XCTAssertEqual(try s("blk.3.ffn_up.weight").rows, 3584..<7168)
        XCTAssertEqual(try s("blk.3.ffn_down.weight").cols, 3584..<7168)
        XCTAssertEqual(try s("blk.3.ffn_down.weight").rows, 0..<4096)
        // vocabulary-parallel: rows 32064..<64128 of the embedding and the output.
        XCTAssertEqual(try s("token_embd.weight").rows, 32064..<64128)
        XCTAssertEqual(try s("output.weight").rows, 32064..<64128)
        XCTAssertEqual(p.vocabRange(rank: 1), 32064..<64128)
        // replicated
        XCTAssertTrue(try s("blk.3.attn_norm.weight").isWhole)
        XCTAssertTrue(try s("output_norm.weight").isWhole)
    }

    /// The ranks' slices of every tensor cover it exactly once.
    func testSlicesPartitionEveryTensor() throws {
        let c = try Self.llama3_8B()
        let p = try TensorParallelPlan(config: c, ranks: 4)
        let perRank = (0..<4).map { p.slices(rank: $0, tiedOutput: false) }
        for (i, full) in Transformer(config: c).checkpointTensors(tiedOutput: false).enumerated() {
            let parts = perRank.map { $0[i] }
            let elements = full.shape.reduce(1, *)
            let covered = parts.reduce(0) { $0 + $1.shape.reduce(1, *) }
            if parts.allSatisfy(\.isWhole) { XCTAssertEqual(covered, 4 * elements, full.name); continue }
            XCTAssertEqual(covered, elements, full.name)
            for a in 0..<4 { for b in (a + 1)..<4 {
                XCTAssertTrue(!parts[a].rows.overlaps(parts[b].rows) || !parts[a].cols.overlaps(parts[b].cols), full.name)
            } }
        }
    }

    /// A vocabulary the ranks do not divide is padded: Granite-3 8B's 49155 over 2 GPUs is 2 × 24578 rows, the last
    /// one past the vocabulary (zeros), and rank 1's real vocabulary is 24578..<49155.
    func testVocabularyIsPaddedWhenTheRanksDoNotDivideIt() throws {
        let granite = ModelConfig(architecture: .granite, vocabSize: 49_155, hiddenSize: 4096, intermediateSize: 12_800, numLayers: 40,
                                  numHeads: 32, numKVHeads: 8, contextLength: 4096, rmsNormEps: 1e-5, ropeTheta: 10_000_000,
                                  tieWordEmbeddings: true)
        let p = try TensorParallelPlan(config: granite, ranks: 2)
        XCTAssertEqual(p.rankConfig.vocabSize, 24_578)
        XCTAssertEqual(p.paddedVocabSize, 49_156)
        XCTAssertEqual(p.vocabRange(rank: 0), 0..<24_578)
        XCTAssertEqual(p.vocabRange(rank: 1), 24_578..<49_155)
        XCTAssertEqual(p.slice("token_embd.weight", rank: 1, tiedOutput: true)?.rows, 24_578..<49_156)
        XCTAssertNil(p.slice("output.weight", rank: 1, tiedOutput: true))
        XCTAssertEqual(p.gemmShapes.last.map { "\($0.op) \($0.n)x\($0.k)" }, "logits 24578x4096")
        XCTAssertTrue(p.summary.contains("vocabulary padded to 49156"), p.summary)
        // Divisible vocabularies have no padding.
        XCTAssertEqual(try TensorParallelPlan(config: try Self.llama3_8B(), ranks: 8).paddedVocabSize, 128_256)
    }

    func testIndivisibleCountsNameTheNumbers() throws {
        let c = try Self.llama3_8B()
        XCTAssertThrowsError(try TensorParallelPlan(config: c, ranks: 3)) {
            XCTAssertEqual(($0 as? KilnError)?.message, "--tp 3: 8 KV heads are not divisible by 3")
        }
        XCTAssertThrowsError(try TensorParallelPlan(config: c, ranks: 16)) {
            XCTAssertEqual(($0 as? KilnError)?.message, "--tp 16: 8 KV heads are not divisible by 16")
        }
        var odd = c
        odd.intermediateSize = 14000
        XCTAssertThrowsError(try TensorParallelPlan(config: odd, ranks: 64)) {   // 8 KV heads: fails on those first
            XCTAssertEqual(($0 as? KilnError)?.message, "--tp 64: 8 KV heads are not divisible by 64")
        }
        odd.numKVHeads = 32
        XCTAssertThrowsError(try TensorParallelPlan(config: odd, ranks: 32)) {   // 14000 = 32·437.5
            XCTAssertEqual(($0 as? KilnError)?.message, "--tp 32: the FFN width (intermediate size) 14000 is not divisible by 32")
        }
        XCTAssertThrowsError(try TensorParallelPlan(config: c, ranks: 0)) {
            XCTAssertEqual(($0 as? KilnError)?.message, "--tp 0: the number of GPUs must be at least 1")
        }
    }
}
