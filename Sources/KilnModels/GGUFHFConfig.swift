import Foundation
import KilnCore

/// The Hugging Face `config.json` of a GGUF model, for a folder written from it (`kiln quantize`): the model shape as
/// `CheckpointExport.configJSON` writes it from the `ModelConfig` Kiln loaded (LlamaForCausalLM, Qwen2ForCausalLM,
/// Qwen3ForCausalLM, GraniteForCausalLM), plus what only the GGUF metadata knows: the BOS / EOS ids, and the `llama3`
/// RoPE scaling that llama.cpp's converter stores as a `rope_freqs.weight` tensor instead of metadata (Llama 3.1+).
/// Tensor names map through `HFModel.hfName` and the Q/K rows are un-permuted by `CheckpointExport` (llama, granite).
extension GGUFModel {
    public func huggingFaceConfig() throws -> [String: Any] {
        var c = config
        if c.ropeScaling == nil, has(Transformer(config: c).ropeFreqs.name) {
            c.ropeScaling = try ropeScalingFromFreqFactors()
        }
        var j = try CheckpointExport.configJSON(c)
        // GGUF stores these as f32: written as their shortest decimal (1e-05, not 9.999999747378752e-06).
        j["rms_norm_eps"] = Double("\(c.rmsNormEps)") ?? Double(c.rmsNormEps)
        j["rope_theta"] = Double("\(c.ropeTheta)") ?? Double(c.ropeTheta)
        if let bos = gguf["tokenizer.ggml.bos_token_id"]?.int { j["bos_token_id"] = bos }
        if let eos = gguf["tokenizer.ggml.eos_token_id"]?.int { j["eos_token_id"] = eos }
        return j
    }

    /// The `llama3` scaling whose per-pair factors are exactly the file's `rope_freqs.weight` (to f32 rounding).
    /// llama.cpp writes that tensor from the checkpoint's `rope_scaling`, whose factor is the largest entry; the other
    /// fields are fitted from Meta's published values (low 1, high 4, original context 8192, as Llama 3.1 / 3.2 / 3.3
    /// use), and a file they do not reproduce is an error rather than a silently different model.
    func ropeScalingFromFreqFactors() throws -> Llama3RopeScaling {
        let part = Transformer(config: config).ropeFreqs
        let t = try tensor(part.name, shape: part.shape)
        guard t.dtype == .f32, let base = t.data.baseAddress, t.data.count >= 4 * part.shape[0] else {
            throw KilnError("\(sourcePath): tensor \(part.name) of type \(t.dtype.rawValue): expected \(part.shape[0]) f32 values")
        }
        let factors = (0..<part.shape[0]).map { base.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) }
        guard let factor = factors.max(), factor >= 1 else {
            throw KilnError("\(sourcePath): tensor \(part.name) has no factor ≥ 1, which no llama3 rope_scaling gives")
        }
        let candidate = Llama3RopeScaling(factor: Double(factor), lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192)
        let plain = ropeInverseFrequencies(headDim: config.headDim, theta: config.ropeTheta)
        let scaled = ropeInverseFrequencies(headDim: config.headDim, theta: config.ropeTheta, scaling: candidate)
        for i in factors.indices where abs(Double(plain[i]) / Double(scaled[i]) - Double(factors[i])) > 1e-4 * Double(factors[i]) {
            throw KilnError("\(sourcePath): tensor \(part.name)[\(i)] = \(factors[i]) is not what llama3 rope_scaling (factor \(factor), low 1, high 4, original context 8192) gives (\(plain[i] / scaled[i])); cannot write it as a Hugging Face rope_scaling")
        }
        return candidate
    }
}
