import Foundation
import KilnCore

/// Writes any loaded model as a Hugging Face folder (`config.json` + `model.safetensors`): the layers' linear weights as
/// fine-grained FP8 (`kiln quantize --to fp8`), lookup-table codes (`--to lut4`…) or every tensor in its source precision (tests convert a GGUF model to a
/// bf16 folder this way). Each tensor is read through the source's one CPU reference (`QuantizedMatrix.dequantize`).
///
/// Not yet: sharding (the whole file is built in memory, fine up to a few GB). The tokenizer of a GGUF source is written
/// by `HFTokenizerWriter` (KilnTokenizer), its config by `GGUFModel.huggingFaceConfig`.
public enum CheckpointExport {
    public struct Options {
        /// Quantize the layers' linear weights to fp8_e4m3_b128x128; else every tensor stays in source precision.
        public var fp8 = true
        /// Quantize `lm_head` too (an untied output layer only; embeddings always stay in source precision).
        public var quantizeOutput = false
        /// The source's own `config.json` object (Hugging Face sources), kept except for `quantization_config` and
        /// `torch_dtype`; nil writes one from `ModelConfig`.
        public var baseConfig: [String: Any]? = nil
        /// Quantize the layers' linear weights to this lookup-table format instead of FP8 (`LUTQuantizer`).
        public var lut: WeightFormat.LUTFormat? = nil
        /// The table of a `custom` lookup-table format (2^bits values).
        public var lutTable: [Float]? = nil
        /// Called per quantized matrix with its canonical name and relative reconstruction error ‖W − Ŵ‖ / ‖W‖.
        public var matrixError: ((String, Double) -> Void)? = nil
        public init() {}
    }

    /// The canonical tensors that become FP8 under `options`.
    static func quantizes(_ name: String, shape: [Int], _ o: Options) -> Bool {
        (o.fp8 || o.lut != nil) && shape.count == 2 && (name.hasPrefix("blk.") || (o.quantizeOutput && name == "output.weight"))
    }

    /// Writes `source` into `folder` (created if needed). `progress(done, total)` counts tensors.
    public static func write(_ source: WeightSource, to folder: String, options o: Options,
                             progress: (Int, Int) -> Void = { _, _ in }) throws {
        let c = source.config
        if o.quantizeOutput && c.tieWordEmbeddings {
            throw KilnError("\(source.sourcePath): the output layer is the tied embedding matrix, which stays in source precision (--quantize-output needs an untied lm_head)")
        }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let tensors = c.canonicalTensorShapes
        var writer = SafetensorsWriter()
        var groupQuantized: [String: LUTQuantizedMatrix] = [:]   // members of a fused group quantized with their first
        for (i, t) in tensors.enumerated() {
            guard let hf = HFModel.hfName(canonical: t.name) else {
                throw KilnError("\(source.sourcePath): tensor \(t.name) has no Hugging Face name")
            }
            let (values, dtype) = try read(source, t.name, t.shape)
            let rows = t.shape[0], cols = t.shape.count == 2 ? t.shape[1] : 1   // a vector as [n, 1] (a bias unpermutes as rows)
            let hfValues = c.ropeStyle == .interleaved ? unpermuteRoPE(values, t.name, rows: rows, cols: cols, c) : values
            if quantizes(t.name, shape: t.shape, o), let l = o.lut {   // LUTCheckpoint.swift
                let q: LUTQuantizedMatrix
                if let done = groupQuantized.removeValue(forKey: t.name) {
                    q = done
                } else if l.table == .learned, let group = LUTCheckpoint.fusedGroup(of: t.name, in: tensors), group.count > 1 {
                    // One learned table for the matrices the GPU stacks (it reads one table per stacked matrix).
                    let members = try group.map { m -> (weights: [Float], rows: Int, cols: Int, name: String) in
                        if m.name == t.name { return (hfValues, rows, cols, m.name) }   // already in Hugging Face row order
                        let values = try read(source, m.name, m.shape).0
                        let hfMember = c.ropeStyle == .interleaved ? unpermuteRoPE(values, m.name, rows: m.shape[0], cols: m.shape[1], c) : values
                        return (hfMember, m.shape[0], m.shape[1], m.name)
                    }
                    let qs = try LUTQuantizer.quantizeGroup(members, format: l)
                    for (m, mq) in zip(group, qs) where m.name != t.name { groupQuantized[m.name] = mq }
                    q = qs[group.firstIndex { $0.name == t.name }!]
                } else {
                    q = try LUTQuantizer.quantize(hfValues, rows: rows, cols: cols, format: l, table: o.lutTable, name: t.name)
                }
                LUTCheckpoint.add(q, hf: hf, to: &writer)
                o.matrixError?(t.name, q.relativeError)
            } else if quantizes(t.name, shape: t.shape, o) {
                let fp8 = FP8Planes(hfValues, rows: rows, cols: cols)
                writer.addRaw(hf, dtype: .f8_e4m3, shape: t.shape, bytes: fp8.codes)
                writer.addRaw(String(hf.dropLast(".weight".count)) + ".weight_scale_inv", dtype: .f32, shape: fp8.scaleShape,
                              bytes: encode(fp8.scaleInv, .f32))
            } else {
                try writer.add(hf, shape: t.shape, dtype: dtype, values: hfValues)
            }
            progress(i + 1, tensors.count)
        }
        writer.alignTensors()
        var config = try o.baseConfig ?? configJSON(c)
        config["quantization_config"] = o.lut.map { HFQuantizationConfig(format: .lut($0), modulesToNotConvert: o.quantizeOutput ? [] : ["lm_head"]).json }
            ?? (o.fp8 ? HFQuantizationConfig(modulesToNotConvert: o.quantizeOutput ? [] : ["lm_head"]).json : nil)
        let data = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
        guard FileManager.default.createFile(atPath: folder + "/config.json", contents: data) else {
            throw KilnError("\(folder)/config.json: cannot write")
        }
        try writer.write(to: folder + "/" + SafetensorsCheckpoint.singleFileName)
    }

    /// A tensor as f32 values through the format's CPU reference, and the element type it is written in when it stays
    /// unquantized: its own when that is f32/f16/bf16, else bf16 (GGUF blocks, FP8).
    static func read(_ source: WeightSource, _ name: String, _ shape: [Int]) throws -> ([Float], DType) {
        if shape.count == 2 {
            let m = try source.matrix(name, rows: shape[0], cols: shape[1])
            if case .dense(let e) = m.format { return (try m.dequantized(), e.dtype) }
            return (try m.dequantized(), .bf16)
        }
        let t = try source.tensor(name, shape: shape)
        let n = shape.reduce(1, *)
        guard let base = t.data.baseAddress, let bytes = t.dtype.byteCount(elements: n), bytes <= t.data.count,
              [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1].contains(t.dtype) else {
            throw KilnError("\(source.sourcePath): tensor \(name) of type \(t.dtype.rawValue) cannot be read as \(n) floats")
        }
        var out = [Float](repeating: 0, count: n)
        out.withUnsafeMutableBufferPointer { QuantBlocks.dequantize(t.dtype, base, $0.baseAddress!, count: n) }
        return (out, [.f32, .f16, .bf16].contains(t.dtype) ? t.dtype : .bf16)
    }

    /// llama.cpp's converter permutes the Q/K rows of llama and granite so RoPE rotates interleaved pairs; Hugging Face
    /// rotates halves. Per head, GGUF row 2j + h is HF row h·headDim/2 + j (the inverse of llama.cpp's `permute`).
    static func unpermuteRoPE(_ v: [Float], _ name: String, rows: Int, cols: Int, _ c: ModelConfig) -> [Float] {
        guard name.hasPrefix("blk."), name.hasSuffix(".attn_q.weight") || name.hasSuffix(".attn_k.weight")
                || name.hasSuffix(".attn_q.bias") || name.hasSuffix(".attn_k.bias") else { return v }
        let hd = c.headDim, half = hd / 2
        var out = v
        for head in 0..<(rows / hd) {
            for j in 0..<half {
                for h in 0..<2 {
                    let src = (head * hd + 2 * j + h) * cols, dst = (head * hd + h * half + j) * cols
                    for k in 0..<cols { out[dst + k] = v[src + k] }
                }
            }
        }
        return out
    }

    /// A Hugging Face `config.json` object that `HFConfig.modelConfig` reads back as `c` (RoPE as halves, which the
    /// writer's row order provides).
    public static func configJSON(_ c: ModelConfig) throws -> [String: Any] {
        guard let cls = HFConfig.supportedClasses.first(where: { $0.value == c.architecture })?.key else {
            throw KilnError("no Hugging Face class for architecture \(c.architecture.rawValue)")
        }
        var j: [String: Any] = [
            "architectures": [cls], "model_type": c.architecture.rawValue, "vocab_size": c.vocabSize,
            "hidden_size": c.hiddenSize, "intermediate_size": c.intermediateSize, "num_hidden_layers": c.numLayers,
            "num_attention_heads": c.numHeads, "num_key_value_heads": c.numKVHeads, "head_dim": c.headDim,
            "max_position_embeddings": c.contextLength, "rms_norm_eps": Double(c.rmsNormEps), "rope_theta": Double(c.ropeTheta),
            "tie_word_embeddings": c.tieWordEmbeddings, "hidden_act": "silu", "torch_dtype": "bfloat16",
        ]
        if c.architecture == .llama || c.architecture == .granite { j["attention_bias"] = c.attentionBias }
        if let s = c.ropeScaling {
            j["rope_scaling"] = ["rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.lowFreqFactor,
                                 "high_freq_factor": s.highFreqFactor, "original_max_position_embeddings": s.originalMaxPositionEmbeddings]
        }
        if c.architecture == .granite {
            j["embedding_multiplier"] = Double(c.embeddingMultiplier); j["residual_multiplier"] = Double(c.residualMultiplier)
            j["logits_scaling"] = Double(c.logitsScaling)
            if let a = c.attentionMultiplier { j["attention_multiplier"] = Double(a) }
        }
        return j
    }
}
