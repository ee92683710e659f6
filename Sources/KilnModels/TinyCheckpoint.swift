import Foundation
import KilnCore

extension ModelConfig {
    /// Every tensor a model of this config has, by canonical name, with its row-major shape, from the one model
    /// definition (`output.weight` only when embeddings are not tied; Q/K/V biases only with `attentionBias`; q/k norms
    /// only with `qkNorm`).
    public var canonicalTensorShapes: [(name: String, shape: [Int])] {
        Transformer(config: self).checkpointTensors(tiedOutput: tieWordEmbeddings).map { ($0.name, $0.shape) }
    }
}

/// Small random-weight checkpoints for tests and `kiln` self-checks: a Hugging Face folder
/// (config.json + safetensors, optionally sharded) or a GGUF file. No tokenizer files are written.
public enum TinyCheckpoint {
    /// Shape and storage of a tiny model. Defaults give a 2-layer GQA llama (4 heads, 2 KV heads, head dim 16).
    public struct Options {
        public var architecture: Architecture = .llama
        public var vocabSize = 96
        public var hiddenSize = 64
        public var intermediateSize = 96
        public var numLayers = 2
        public var numHeads = 4
        public var numKVHeads = 2
        public var headDim: Int? = nil
        public var contextLength = 256
        public var tieWordEmbeddings = false
        /// Safetensors element type (F32, F16 or BF16).
        public var dtype: DType = .bf16
        /// Number of safetensors shards; more than one writes `model.safetensors.index.json`.
        public var shards = 1
        /// Formats of the GGUF matrices, used round-robin (norms and biases are always F32); any format GGUF stores
        /// as one tensor (dense and GGUF blocks).
        public var ggufMatrixFormats: [WeightFormat] = [.dense(.f32), .dense(.f16), .gguf(.q8_0), .gguf(.q4_0), .gguf(.q4_1)]
        public var seed: UInt64 = 1
        /// Write the linear weights of the layers as fine-grained FP8 (F8_E4M3 `weight` + F32 `weight_scale_inv`,
        /// 128×128 blocks, with `quantization_config`), as transformers saves them; embeddings, norms and `lm_head` stay
        /// in `dtype`.
        public var fp8 = false
        /// Extra or replacing `config.json` entries (JSON values); `NSNull()` removes a key.
        public var configOverrides: [String: Any] = [:]
        public init() {}
    }

    /// The config as `HFConfig.modelConfig` should read it back.
    public static func modelConfig(_ o: Options) -> ModelConfig {
        ModelConfig(architecture: o.architecture, vocabSize: o.vocabSize, hiddenSize: o.hiddenSize,
                    intermediateSize: o.intermediateSize, numLayers: o.numLayers, numHeads: o.numHeads,
                    numKVHeads: o.numKVHeads, headDim: o.headDim, contextLength: o.contextLength, rmsNormEps: 1e-5,
                    ropeTheta: 10000, ropeStyle: .halves, tieWordEmbeddings: o.tieWordEmbeddings,
                    attentionBias: o.architecture == .qwen2, qkNorm: o.architecture == .qwen3)
    }

    /// The `config.json` object for `o` (with overrides applied).
    public static func configJSON(_ o: Options) -> [String: Any] {
        let cls = HFConfig.supportedClasses.first { $0.value == o.architecture }?.key ?? "LlamaForCausalLM"
        var j: [String: Any] = [
            "architectures": [cls], "model_type": o.architecture.rawValue, "vocab_size": o.vocabSize,
            "hidden_size": o.hiddenSize, "intermediate_size": o.intermediateSize, "num_hidden_layers": o.numLayers,
            "num_attention_heads": o.numHeads, "num_key_value_heads": o.numKVHeads,
            "max_position_embeddings": o.contextLength, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "tie_word_embeddings": o.tieWordEmbeddings, "hidden_act": "silu", "torch_dtype": "bfloat16",
            "bos_token_id": 1, "eos_token_id": 2,
        ]
        if let hd = o.headDim { j["head_dim"] = hd }
        if o.fp8 { j["quantization_config"] = HFQuantizationConfig(modulesToNotConvert: ["lm_head"]).json }
        for (k, v) in o.configOverrides { j[k] = v is NSNull ? nil : v }
        return j
    }

    /// Random non-zero weights by canonical name: matrices uniform in ±[0.02, 0.1], norms in [0.9, 1.1].
    public static func weights(_ o: Options) -> [(name: String, shape: [Int], values: [Float])] {
        var rng = SplitMix64(seed: o.seed)
        return modelConfig(o).canonicalTensorShapes.map { t in
            let n = t.shape.reduce(1, *)
            let isNorm = t.name.hasSuffix("norm.weight")
            let values = (0..<n).map { _ -> Float in
                let u = rng.unit()
                if isNorm { return 0.9 + 0.2 * u }
                let mag = 0.02 + 0.08 * rng.unit()
                return u < 0.5 ? -mag : mag
            }
            return (t.name, t.shape, values)
        }
    }

    /// Writes a Hugging Face folder (created if needed) and returns the weights by HF name, as stored
    /// (rounded to `o.dtype`).
    @discardableResult
    public static func writeHF(folder: String, options o: Options) throws -> [String: [Float]] {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let json = try JSONSerialization.data(withJSONObject: configJSON(o), options: [.prettyPrinted, .sortedKeys])
        guard FileManager.default.createFile(atPath: folder + "/config.json", contents: json) else {
            throw KilnError("\(folder)/config.json: cannot write")
        }
        let shards = max(1, o.shards)
        var writers = [SafetensorsWriter](repeating: SafetensorsWriter(), count: shards)
        var stored: [String: [Float]] = [:]
        var weightMap: [String: String] = [:]
        func shardName(_ i: Int) -> String {
            shards == 1 ? SafetensorsCheckpoint.singleFileName : String(format: "model-%05d-of-%05d.safetensors", i + 1, shards)
        }
        for (i, w) in weights(o).enumerated() {
            guard let hf = HFModel.hfName(canonical: w.name) else { continue }
            if o.fp8, w.shape.count == 2, w.name.hasPrefix("blk.") {
                let scaleName = String(hf.dropLast(".weight".count)) + ".weight_scale_inv"
                let fp8 = FP8Planes(w.values, rows: w.shape[0], cols: w.shape[1])
                writers[i % shards].addRaw(hf, dtype: .f8_e4m3, shape: w.shape, bytes: fp8.codes)
                writers[i % shards].addRaw(scaleName, dtype: .f32, shape: fp8.scaleShape, bytes: encode(fp8.scaleInv, .f32))
                stored[hf] = fp8.dequantized
                stored[scaleName] = fp8.scaleInv
                weightMap[hf] = shardName(i % shards); weightMap[scaleName] = shardName(i % shards)
                continue
            }
            try writers[i % shards].add(hf, shape: w.shape, dtype: o.dtype, values: w.values)
            stored[hf] = w.values.map { roundTrip($0, o.dtype) }
            weightMap[hf] = shardName(i % shards)
        }
        for (i, var w) in writers.enumerated() {
            if o.fp8 { w.alignTensors() }
            try w.write(to: folder + "/" + shardName(i))
        }
        if shards > 1 {
            let index: [String: Any] = ["metadata": ["total_size": 0], "weight_map": weightMap]
            let data = try JSONSerialization.data(withJSONObject: index, options: [.prettyPrinted, .sortedKeys])
            guard FileManager.default.createFile(atPath: folder + "/" + SafetensorsCheckpoint.indexFileName, contents: data) else {
                throw KilnError("\(folder): cannot write index")
            }
        }
        return stored
    }

    /// Convenience form of `writeHF(folder:options:)`.
    @discardableResult
    public static func writeHF(folder: String, architecture: Architecture = .llama, dtype: DType = .bf16, shards: Int = 1,
                               tieWordEmbeddings: Bool = false, configOverrides: [String: Any] = [:], seed: UInt64 = 1) throws -> [String: [Float]] {
        var o = Options()
        o.architecture = architecture; o.dtype = dtype; o.shards = shards; o.tieWordEmbeddings = tieWordEmbeddings
        o.configOverrides = configOverrides; o.seed = seed
        return try writeHF(folder: folder, options: o)
    }

    /// The writer for a GGUF fixture (metadata of `o.architecture`, tensors by canonical name), so tests
    /// can add, drop or corrupt entries before writing. Returns the unquantized weights by canonical name.
    public static func ggufWriter(_ o: Options) throws -> (writer: GGUFWriter, weights: [String: [Float]]) {
        let cfg = modelConfig(o)
        let a = o.architecture.rawValue
        var w = GGUFWriter()
        w.set("general.architecture", a)
        w.set("general.name", "kiln-tiny-\(a)")
        w.set("\(a).vocab_size", uint32: UInt32(cfg.vocabSize))
        w.set("\(a).context_length", uint32: UInt32(cfg.contextLength))
        w.set("\(a).embedding_length", uint32: UInt32(cfg.hiddenSize))
        w.set("\(a).feed_forward_length", uint32: UInt32(cfg.intermediateSize))
        w.set("\(a).block_count", uint32: UInt32(cfg.numLayers))
        w.set("\(a).attention.head_count", uint32: UInt32(cfg.numHeads))
        w.set("\(a).attention.head_count_kv", uint32: UInt32(cfg.numKVHeads))
        if o.headDim != nil {   // as llama.cpp's converter writes head_dim
            w.set("\(a).attention.key_length", uint32: UInt32(cfg.headDim))
            w.set("\(a).attention.value_length", uint32: UInt32(cfg.headDim))
        }
        w.set("\(a).attention.layer_norm_rms_epsilon", float32: cfg.rmsNormEps)
        w.set("\(a).rope.freq_base", float32: cfg.ropeTheta)
        var byName: [String: [Float]] = [:]
        let formats = try ggufFormats(o)
        var blockRNG = SplitMix64(seed: o.seed ^ 0x6B71_7561_6E74)
        for t in weights(o) {
            let type = formats[t.name]?.singleTensorType ?? .f32
            if RandomGGUFBlocks.hasNoQuantizer(type) {
                // No quantizer for these types: the matrix is random blocks, and its values are what they decode to.
                let raw = try randomBlockTensor(t.name, shape: t.shape, type: type, rng: &blockRNG)
                w.tensors.append(raw.tensor)
                byName[t.name] = raw.values
                continue
            }
            try w.addTensor(t.name, shape: t.shape, type: type, values: t.values)
            byName[t.name] = t.values
        }
        return (w, byName)
    }

    /// The format each matrix of the GGUF fixture is stored in, by canonical name (vectors are F32 and not listed).
    public static func ggufFormats(_ o: Options) throws -> [String: WeightFormat] {
        let formats = o.ggufMatrixFormats.isEmpty ? [WeightFormat.dense(.f32)] : o.ggufMatrixFormats
        for f in formats where f.singleTensorType == nil {
            throw KilnError("TinyCheckpoint: GGUF stores no \(f.name) matrices (one tensor per matrix: dense or GGUF blocks)")
        }
        var out: [String: WeightFormat] = [:]
        for (i, t) in modelConfig(o).canonicalTensorShapes.filter({ $0.shape.count == 2 }).enumerated() {
            out[t.name] = formats[i % formats.count]
        }
        return out
    }

    /// A `[rows, cols]` tensor of random `type` blocks scaled so its values stay within about ±0.1, with those values.
    static func randomBlockTensor(_ name: String, shape: [Int], type: DType, rng: inout SplitMix64) throws -> (tensor: GGUFWriter.Tensor, values: [Float]) {
        let n = shape.reduce(1, *)
        guard let raw = GGUFWriter.rawType(type), (shape.last ?? 0) % type.blockSize == 0 else {
            throw KilnError("TinyCheckpoint: tensor \(name) of shape \(shape) cannot be \(type.rawValue) (rows of whole \(type.blockSize)-element blocks)")
        }
        let bytes = RandomGGUFBlocks.make(type, blocks: n / type.blockSize, scaleMagnitude: 0.1 / RandomGGUFBlocks.codeRange(type), rng: &rng)
        var values = [Float](repeating: 0, count: n)
        bytes.withUnsafeBytes { src in values.withUnsafeMutableBufferPointer { QuantBlocks.dequantize(type, src.baseAddress!, $0.baseAddress!, count: n) } }
        return (GGUFWriter.Tensor(name: name, dims: shape.reversed().map { UInt64($0) }, rawType: raw, data: bytes), values)
    }

    /// Writes a GGUF file with all five tensor types (by default) and llama-style metadata; no tokenizer.
    @discardableResult
    public static func writeGGUF(path: String, options o: Options = Options()) throws -> [String: [Float]] {
        let (w, weights) = try ggufWriter(o)
        try w.write(to: path)
        return weights
    }

    static func roundTrip(_ v: Float, _ t: DType) -> Float {
        switch t {
        case .f16: return halfToFloat(floatToHalf(v))
        case .bf16: return bf16ToFloat(floatToBF16(v))
        default: return v
        }
    }
}

/// A `[rows, cols]` f32 matrix quantized to fine-grained FP8 (128×128 blocks) by KilnCore's quantizer, with the values
/// it stands for; the writer of FP8 checkpoints (`TinyCheckpoint`, `kiln quantize`).
public struct FP8Planes {
    public let codes: [UInt8]        // [rows, cols] e4m3
    public let scaleInv: [Float]     // [ceil(rows/128), ceil(cols/128)]
    public let scaleShape: [Int]
    public let rows: Int, cols: Int
    public static let block = 128

    public init(_ values: [Float], rows: Int, cols: Int) {
        precondition(values.count == rows * cols)
        self.rows = rows; self.cols = cols
        scaleShape = [(rows + Self.block - 1) / Self.block, (cols + Self.block - 1) / Self.block]
        var codes = [UInt8](repeating: 0, count: rows * cols), scaleInv = [Float](repeating: 0, count: scaleShape[0] * scaleShape[1])
        values.withUnsafeBufferPointer { v in
            FP8BlockQuantizer.quantize(v.baseAddress!, rows: rows, cols: cols, blockRows: Self.block, blockCols: Self.block,
                                       codes: &codes, scaleInv: &scaleInv)
        }
        self.codes = codes; self.scaleInv = scaleInv
    }

    /// The values the planes stand for (e4m3 × scale_inv), row-major.
    public var dequantized: [Float] {
        (0..<(rows * cols)).map { i in E4M3.decode(codes[i]) * scaleInv[(i / cols / Self.block) * scaleShape[1] + (i % cols) / Self.block] }
    }
}
