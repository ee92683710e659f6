import Foundation
import KilnCore
import KilnModels
import XCTest

final class HFConfigTests: XCTestCase {
    /// transformers 5 writes rope_theta and the llama3 scaling inside `rope_parameters`.
    func testRopeParametersOfTransformers5() throws {
        let json = """
        {"architectures":["LlamaForCausalLM"],"vocab_size":128,"hidden_size":64,"intermediate_size":96,
         "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"rms_norm_eps":1e-5,
         "rope_parameters":{"rope_theta":500000.0,"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,
                            "high_freq_factor":4.0,"original_max_position_embeddings":8192}}
        """
        let cfg = try HFConfig.decode(json).modelConfig(path: "config.json")
        XCTAssertEqual(cfg.ropeTheta, 500000)
        XCTAssertEqual(cfg.ropeScaling, Llama3RopeScaling(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192))
        let plain = json.replacingOccurrences(of: #""rope_type":"llama3","#, with: #""rope_type":"default","#)
        let cfg2 = try HFConfig.decode(plain).modelConfig(path: "config.json")
        XCTAssertEqual(cfg2.ropeTheta, 500000)
        XCTAssertNil(cfg2.ropeScaling)
    }

    func testLlama31WithRopeScaling() throws {
        let json = """
        {"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":128256,"hidden_size":4096,
         "intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,
         "max_position_embeddings":131072,"rms_norm_eps":1e-05,"rope_theta":500000.0,"tie_word_embeddings":false,
         "rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192,"rope_type":"llama3"},
         "hidden_act":"silu","eos_token_id":[128001,128008,128009],"bos_token_id":128000}
        """
        let hf = try HFConfig.decode(json)
        let c = try hf.modelConfig(path: "config.json")
        XCTAssertEqual(c.architecture, .llama)
        XCTAssertEqual(c.numKVHeads, 8)
        XCTAssertEqual(c.headDim, 128)
        XCTAssertEqual(c.contextLength, 131072)
        XCTAssertEqual(c.ropeTheta, 500000)
        XCTAssertEqual(c.rmsNormEps, 1e-5)
        XCTAssertEqual(c.ropeStyle, .halves)
        XCTAssertFalse(c.attentionBias)
        XCTAssertEqual(c.ropeScaling, Llama3RopeScaling(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192))
        XCTAssertEqual(hf.eosTokenId?.ids, [128001, 128008, 128009])
    }

    func testOlderRopeScalingKeyAndHeadDim() throws {
        let json = """
        {"model_type":"llama","vocab_size":100,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
         "num_attention_heads":2,"head_dim":48,"rope_scaling":{"type":"llama3","factor":2}}
        """
        let c = try HFConfig.decode(json).modelConfig(path: "config.json")
        XCTAssertEqual(c.headDim, 48)
        XCTAssertEqual(c.qDim, 96)
        XCTAssertEqual(c.numKVHeads, 2, "no num_key_value_heads means MHA")
        XCTAssertEqual(c.ropeScaling?.factor, 2)
        XCTAssertEqual(c.ropeScaling?.highFreqFactor, 4)
        XCTAssertEqual(c.contextLength, 2048)
    }

    func testGranite() throws {
        let json = """
        {"architectures":["GraniteForCausalLM"],"model_type":"granite","vocab_size":49155,"hidden_size":2048,
         "intermediate_size":8192,"num_hidden_layers":40,"num_attention_heads":32,"num_key_value_heads":8,
         "embedding_multiplier":12.0,"attention_multiplier":0.015625,"residual_multiplier":0.22,"logits_scaling":8.0,
         "tie_word_embeddings":true,"rms_norm_eps":1e-05,"rope_theta":10000000.0,"max_position_embeddings":4096}
        """
        let c = try HFConfig.decode(json).modelConfig(path: "config.json")
        XCTAssertEqual(c.architecture, .granite)
        XCTAssertEqual(c.embeddingMultiplier, 12)
        XCTAssertEqual(c.attentionMultiplier, 0.015625)
        XCTAssertEqual(c.attentionScale, 0.015625)
        XCTAssertEqual(c.residualMultiplier, 0.22)
        XCTAssertEqual(c.logitsScaling, 8)
        XCTAssertTrue(c.tieWordEmbeddings)
    }

    func testQwen2ImpliesAttentionBias() throws {
        let json = """
        {"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","vocab_size":151936,"hidden_size":896,
         "intermediate_size":4864,"num_hidden_layers":24,"num_attention_heads":14,"num_key_value_heads":2,
         "rope_theta":1000000.0,"rms_norm_eps":1e-06,"tie_word_embeddings":true,"use_sliding_window":false,"sliding_window":32768}
        """
        let c = try HFConfig.decode(json).modelConfig(path: "config.json")
        XCTAssertEqual(c.architecture, .qwen2)
        XCTAssertTrue(c.attentionBias)
        XCTAssertEqual(c.headDim, 64)
        XCTAssertEqual(c.attentionScale, 0.125)
        XCTAssertEqual(c.embeddingMultiplier, 1)
    }

    /// Qwen/Qwen3-0.6B's config.json (abridged): q/k norms, no qkv bias, head_dim 128 while hidden / heads = 64.
    func testQwen3() throws {
        let json = """
        {"architectures":["Qwen3ForCausalLM"],"attention_bias":false,"attention_dropout":0.0,"bos_token_id":151643,
         "eos_token_id":151645,"head_dim":128,"hidden_act":"silu","hidden_size":1024,"initializer_range":0.02,
         "intermediate_size":3072,"max_position_embeddings":40960,"max_window_layers":28,"model_type":"qwen3",
         "num_attention_heads":16,"num_hidden_layers":28,"num_key_value_heads":8,"rms_norm_eps":1e-06,"rope_scaling":null,
         "rope_theta":1000000,"sliding_window":null,"tie_word_embeddings":true,"torch_dtype":"bfloat16",
         "use_cache":true,"use_sliding_window":false,"vocab_size":151936}
        """
        let c = try HFConfig.decode(json).modelConfig(path: "config.json")
        XCTAssertEqual(c.architecture, .qwen3)
        XCTAssertTrue(c.qkNorm)
        XCTAssertFalse(c.attentionBias)
        XCTAssertEqual(c.headDim, 128)
        XCTAssertEqual(c.qDim, 2048)
        XCTAssertEqual(c.kvDim, 1024)
        XCTAssertEqual(c.ropeStyle, .halves)
        XCTAssertTrue(c.tieWordEmbeddings)
        XCTAssertEqual(c.contextLength, 40960)
        // Other architectures have no q/k norm.
        XCTAssertFalse(try HFConfig.decode(json.replacingOccurrences(of: "Qwen3", with: "Qwen2").replacingOccurrences(of: "qwen3", with: "qwen2"))
            .modelConfig(path: "config.json").qkNorm)
    }

    func testTokenizerConfigForms() throws {
        let s = try HFTokenizerConfig.decode("""
        {"chat_template":"{{ bos_token }}","bos_token":"<s>","eos_token":{"content":"</s>","lstrip":false},"add_bos_token":true}
        """)
        XCTAssertEqual(s.chatTemplate, "{{ bos_token }}")
        XCTAssertEqual(s.bosToken, "<s>")
        XCTAssertEqual(s.eosToken, "</s>")
        XCTAssertEqual(s.addBosToken, true)
        let l = try HFTokenizerConfig.decode("""
        {"chat_template":[{"name":"tool_use","template":"T"},{"name":"default","template":"D"}],"bos_token":null}
        """)
        XCTAssertEqual(l.chatTemplate, "D")
        XCTAssertEqual(l.chatTemplates, ["tool_use": "T", "default": "D"])
        XCTAssertNil(l.bosToken)
        XCTAssertNil(l.addBosToken)
        let none = try HFTokenizerConfig.decode("{}")
        XCTAssertNil(none.chatTemplate)
        assertKilnError(try HFTokenizerConfig.decode(#"{"chat_template":42}"#, path: "/x/tokenizer_config.json"),
                        path: "/x/tokenizer_config.json", "chat_template")
    }

    func testGenerationConfigForms() throws {
        let one = try HFGenerationConfig.decode(#"{"bos_token_id":1,"eos_token_id":2,"temperature":0.6}"#)
        XCTAssertEqual(one.bosTokenId, 1)
        XCTAssertEqual(one.eosTokenIds, [2])
        XCTAssertEqual(one.temperature, 0.6)
        let many = try HFGenerationConfig.decode(#"{"eos_token_id":[128001,128009]}"#)
        XCTAssertEqual(many.eosTokenIds, [128001, 128009])
        XCTAssertNil(many.bosTokenId)
        assertKilnError(try HFGenerationConfig.decode(#"{"eos_token_id":"x"}"#, path: "/g/generation_config.json"),
                        path: "/g/generation_config.json", "eos_token_id")
    }
}
