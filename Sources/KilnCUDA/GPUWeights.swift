import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnModels

/// A model's weights on the GPU in the layout the engine's kernels want: q/k/v fused into one [qDim + 2·kvDim, hidden]
/// matrix and gate/up into one [2·ffn, hidden] matrix, so each sub-block reads its input once with one GEMM. The linear
/// layers are bf16 or FP8 (`GPUMatrix`, as `plan` says); embeddings, norms and the output layer are bf16.
///
/// Granite's multipliers are folded into weights at load (no extra kernels, no per-token cost):
///   residual_multiplier → attn_output and ffn_down rows;  embedding_multiplier → the embedding table
///   (and, when tied, divided back out of the logits through the final norm);  1/logits_scaling → final norm.
public final class GPUWeights {
    public struct Layer {
        public let attnNorm: DeviceBuffer<UInt16>   // [hidden]
        public let qkv: GPUMatrix                   // [qDim + 2·kvDim, hidden]
        public let qkvBias: DeviceBuffer<UInt16>?   // [qDim + 2·kvDim] (qwen2)
        public let qNorm: DeviceBuffer<UInt16>?     // [headDim] (qwen3)
        public let kNorm: DeviceBuffer<UInt16>?     // [headDim] (qwen3)
        public let o: GPUMatrix                     // [hidden, qDim]
        public let ffnNorm: DeviceBuffer<UInt16>    // [hidden]
        public let gateUp: GPUMatrix                // [2·ffn, hidden]: gate rows, then up rows (or interleaved, below; FP8 and LUT always)
        public let down: GPUMatrix                  // [hidden, ffn]
    }
    public let config: ModelConfig
    public let embedding: DeviceBuffer<UInt16>      // [vocab, hidden]
    public let layers: [Layer]
    public let outputNorm: DeviceBuffer<UInt16>     // [hidden]
    let untiedOutput: DeviceBuffer<UInt16>?         // [vocab, hidden]; nil when tied to the embedding
    public var output: DeviceBuffer<UInt16> { untiedOutput ?? embedding }
    public let invFreq: DeviceBuffer<Float>         // [headDim/2] RoPE inverse frequencies
    /// gate_up rows interleaved per 16-row tile (8 gate rows, then their 8 up rows) for gemm_splitk's
    /// SwiGLU epilogue; the prefill swiglu kernel then reads its input with `interleaved`.
    public private(set) var gateUpInterleaved = false
    public var byteCount: Int {
        ([embedding, outputNorm] + (untiedOutput.map { [$0] } ?? []) + layers.flatMap { [$0.attnNorm, $0.ffnNorm] }).reduce(0) { $0 + $1.byteCount }
            + layers.reduce(0) { $0 + $1.qkv.byteCount + $1.o.byteCount + $1.gateUp.byteCount + $1.down.byteCount }
    }
    /// Whether any gate_up matrix is FP8 (those are interleaved at load, so every layer must be).
    public var hasFP8GateUp: Bool { layers.contains { $0.gateUp.fp8Elements > 0 } }
    /// The largest FP8 matrix in elements: the bf16 scratch prefill dequantizes into (0 without FP8 weights).
    public var largestFP8Matrix: Int { layers.map { max($0.qkv.fp8Elements, $0.o.fp8Elements, $0.gateUp.fp8Elements, $0.down.fp8Elements) }.max() ?? 0 }
    /// Whether any gate_up matrix is lookup-table (interleaved at load, like FP8).
    public var hasLUTGateUp: Bool { layers.contains { $0.gateUp.lutElements > 0 } }
    /// The largest lookup-table matrix in elements: the bf16 scratch prefill dequantizes into (0 without LUT weights).
    public var largestLUTMatrix: Int { layers.map { max($0.qkv.lutElements, $0.o.lutElements, $0.gateUp.lutElements, $0.down.lutElements) }.max() ?? 0 }
    /// The lookup-table formats of the linear layers (every distinct one).
    public var lutFormats: [WeightFormat.LUTFormat] {
        var seen: [WeightFormat.LUTFormat] = []
        for l in layers {
            for m in [l.qkv, l.o, l.gateUp, l.down] { if case .lut(let x) = m, !seen.contains(x.format) { seen.append(x.format) } }
        }
        return seen
    }

    init(config: ModelConfig, embedding: DeviceBuffer<UInt16>, layers: [Layer], outputNorm: DeviceBuffer<UInt16>,
         untiedOutput: DeviceBuffer<UInt16>?, invFreq: DeviceBuffer<Float>) {
        self.config = config; self.embedding = embedding; self.layers = layers; self.outputNorm = outputNorm
        self.untiedOutput = untiedOutput; self.invFreq = invFreq
    }

    /// Permutes every bf16 layer's gate_up rows into the interleaved layout (once; later calls do nothing), through
    /// one temporary [2·ffn, hidden] buffer. FP8 gate_up matrices are interleaved at load already.
    func interleaveGateUp(swiglu: SwiGLU, context: Context, stream: GPUStream) throws {
        guard !gateUpInterleaved else { return }
        let f = config.intermediateSize, h = config.hiddenSize
        let bf16Layers = layers.compactMap { $0.gateUp.bf16Buffer }
        let tmp = try DeviceBuffer<UInt16>(context, count: bf16Layers.isEmpty ? 1 : 2 * f * h)
        for g in bf16Layers {
            try stream.copy(from: g.address, to: tmp.address, bytes: 2 * 2 * f * h)
            try swiglu.interleaveGateUp(src: tmp.address, dst: g.address, ffn: f, hidden: h, stream: stream)
        }
        try stream.synchronize()
        gateUpInterleaved = true
    }

    /// Uploads every tensor of `source`, each as `plan(format)` says (today: bf16 copied as is, every other format
    /// dequantized by its CPU reference and rounded to bf16), and logs one line per format. Strict: unused tensors
    /// are an error, as on the CPU.
    /// `nativeFP8`: FP8 128×128 block-scaled linear layers stay FP8 for gemm_fp8.cu (the GPU has e4m3 tensor cores);
    /// otherwise they are converted to bf16 like every other format.
    /// `nativeLUT`: 4-, 3- and 2-bit lookup-table linear layers whose parts share one table stay in their format for gemm_lut.cu
    /// (GPUWeights+LUT.swift); other LUT layers are converted to bf16, each such layer logged with the reason.
    /// `nativeQ8`: GGUF Q8_0 layers too (gemm_lut's 8-bit member; off by default until `kiln check` has run those
    /// kernels on a device — GPUEngineOptions.q8Kernels).
    public static func load(_ source: WeightSource, context: Context, nativeFP8: Bool = false, nativeLUT: Bool = false,
                            nativeQ8: Bool = false, log: (String) -> Void = { _ in }) throws -> GPUWeights {
        let c = source.config
        let h = c.hiddenSize, qkvRows = c.qkvDim
        let emb = c.embeddingMultiplier
        let model = Transformer(config: c)
        func alloc(_ n: Int) throws -> DeviceBuffer<UInt16> { try DeviceBuffer<UInt16>(context, count: n) }
        var planned: [String: [String]] = [:]   // what happened to a format → name patterns, for one log line each
        func record(_ name: String, _ format: WeightFormat, native: Bool = false) {
            let pattern = name.split(separator: ".").map { Int($0) == nil ? String($0) : "*" }.joined(separator: ".")
            let what = native ? Plan.native.describe(format) : GPUWeights.plan(format).describe(format)
            if !(planned[what]?.contains(pattern) ?? false) { planned[what, default: []].append(pattern) }
        }
        /// Writes tensor `name` ([rows, cols] or [n]) scaled by `scale` into `dst` at element `offset`, as `plan` says.
        func put(_ name: String, _ shape: [Int], into dst: DeviceBuffer<UInt16>, at offset: Int = 0, scale: Float = 1) throws {
            let m: QuantizedMatrix
            if shape.count == 2 { m = try source.matrix(name, rows: shape[0], cols: shape[1]) } else {
                do { m = try QuantizedMatrix(source.tensor(name, shape: shape)) } catch let e as KilnError where !e.message.hasPrefix(source.sourcePath) {
                    throw KilnError("\(source.sourcePath): \(e.message)")
                }
            }
            let plan = GPUWeights.plan(m.format)
            record(name, m.format)
            if plan == .native && scale == 1 {
                try dst.upload(bytes: m.planes[0].bytes, atByte: 2 * offset)
                return
            }
            let converted: [UInt16]
            do { converted = try GPUWeights.bf16(m, scale: scale) } catch let e as KilnError { throw KilnError("\(source.sourcePath): \(e.message)") }
            try converted.withUnsafeBytes { try dst.upload(bytes: $0, atByte: 2 * offset) }
        }
        /// A (fused) linear layer: its checkpoint matrices stacked row after row, times the layer's output scale; FP8
        /// as stored where gemm_fp8.cu can read it (`fp8Matrix`), else bf16.
        func linear(_ layer: LinearLayer, _ i: Int) throws -> GPUMatrix {
            let parts = model.parts(layer, layer: i)
            if nativeFP8 {
                let ms = try parts.map { try source.matrix($0.name, rows: $0.shape[0], cols: $0.shape[1]) }
                if let m = try GPUWeights.fp8Matrix(ms, interleaveHalves: layer == .gateUp, scale: c.outputScale(layer), context: context) {
                    for (p, q) in zip(parts, ms) { record(p.name, q.format, native: true) }
                    return m
                }
            }
            if nativeLUT {
                let ms = try parts.map { try source.matrix($0.name, rows: $0.shape[0], cols: $0.shape[1]) }
                if LUTDevicePlanes.lutView(ms[0].format) != nil, nativeQ8 || ms[0].format != .gguf(.q8_0) {   // LUT, or a GGUF member (Q4_0, Q4_1, IQ4_NL, Q8_0)
                    if let m = try GPUWeights.lutMatrix(ms, interleaveHalves: layer == .gateUp, scale: c.outputScale(layer), context: context) {
                        for (p, q) in zip(parts, ms) { record(p.name, q.format, native: true) }
                        return m
                    }
                    log("layer \(i) \(layer.rawValue): converted to bf16 (\(GPUWeights.lutUnsupported(ms, interleaveHalves: layer == .gateUp) ?? "?"))")
                }
            }
            let dst = try alloc(model.outputs(layer) * model.inputs(layer))
            var offset = 0
            for p in parts {
                try put(p.name, p.shape, into: dst, at: offset, scale: c.outputScale(layer))
                offset += p.shape[0] * p.shape[1]
            }
            return .bf16(dst)
        }
        func vector(_ part: Transformer.Part?) throws -> DeviceBuffer<UInt16>? {
            guard let part else { return nil }
            let dst = try alloc(part.shape[0])
            try put(part.name, part.shape, into: dst)
            return dst
        }
        let embedding = try alloc(c.vocabSize * h)
        try put(model.embedding.name, model.embedding.shape, into: embedding, scale: emb)
        var layers: [Layer] = []
        for i in 0..<c.numLayers {
            var bias: DeviceBuffer<UInt16>? = nil
            if let parts = model.qkvBiasParts(layer: i) {
                let b = try alloc(qkvRows)
                var offset = 0
                for p in parts { try put(p.name, p.shape, into: b, at: offset); offset += p.shape[0] }
                bias = b
            }
            layers.append(Layer(attnNorm: try vector(model.norm(.attention, layer: i))!, qkv: try linear(.qkv, i), qkvBias: bias,
                                qNorm: try vector(model.norm(.query, layer: i)), kNorm: try vector(model.norm(.key, layer: i)),
                                o: try linear(.o, i), ffnNorm: try vector(model.norm(.ffn, layer: i))!, gateUp: try linear(.gateUp, i),
                                down: try linear(.down, i)))
            // A progress line per quarter of the model (8B checkpoints take seconds), not one per layer.
            if (i + 1) % max(1, c.numLayers / 4) == 0 || i + 1 == c.numLayers { log("uploading weights: layer \(i + 1)/\(c.numLayers)") }
        }
        let tied = !source.has(model.output.name)
        // logits = norm(x)·w_norm·W_out / logits_scaling; a tied W_out carries the embedding multiplier, so divide it out too.
        let outScale = c.logitsScale / (tied ? emb : 1)
        let on = try alloc(h)
        try put(model.outputNorm.name, model.outputNorm.shape, into: on, scale: outScale)
        var out: DeviceBuffer<UInt16>? = nil
        if !tied { out = try alloc(c.vocabSize * h); try put(model.output.name, model.output.shape, into: out!) }
        var freqFactors: [Float]? = nil
        if source.has(model.ropeFreqs.name) {
            let t = try source.tensor(model.ropeFreqs.name, shape: model.ropeFreqs.shape)
            var ff = [Float](repeating: 0, count: c.headDim / 2)
            ff.withUnsafeMutableBufferPointer { QuantBlocks.dequantize(t.dtype, t.data.baseAddress!, $0.baseAddress!, count: c.headDim / 2) }
            freqFactors = ff
        }
        let inv = try DeviceBuffer<Float>(context, ropeInverseFrequencies(headDim: c.headDim, theta: c.ropeTheta, scaling: c.ropeScaling, freqFactors: freqFactors))
        try source.checkAllUsed()
        for (what, names) in planned.sorted(by: { $0.key < $1.key }) { log("weights \(names.joined(separator: ", ")): \(what)") }
        return GPUWeights(config: c, embedding: embedding, layers: layers, outputNorm: on, untiedOutput: out, invFreq: inv)
    }

    /// `m` (a converted format, or native bf16 with a Granite multiplier folded in) as bf16 bits `[rows × cols]`:
    /// the format's CPU dequantization times `scale`, rounded to nearest even. Row by row, so a 1 GB embedding never
    /// needs a 2 GB f32 copy on the host.
    static func bf16(_ m: QuantizedMatrix, scale: Float) throws -> [UInt16] {
        let rowLen = m.cols
        var fbuf = [Float](repeating: 0, count: rowLen)
        var hbuf = [UInt16](repeating: 0, count: m.rows * rowLen)
        try fbuf.withUnsafeMutableBufferPointer { fp in
            for r in 0..<m.rows {
                try m.dequantize(rows: r..<(r + 1), into: fp.baseAddress!)
                for j in 0..<rowLen { hbuf[r * rowLen + j] = floatToBF16(fp[j] * scale) }
            }
        }
        return hbuf
    }

    /// What the GPU does with weights of a format: run them as stored, or convert them at load.
    public enum Plan: Equatable, Sendable {
        /// The engine's kernels read this format as stored.
        case native
        /// Converted once at load (through the format's CPU dequantization, then rounded to nearest even), because no
        /// kernel reads the stored format.
        case convert(to: WeightFormat)

        public func describe(_ format: WeightFormat) -> String {
            switch self {
            case .native: return "\(format.name), native"
            case .convert(let to):
                if case .dense = format { return "\(format.name) → \(to.name) (the GPU engine computes in bf16)" }
                return "\(format.name) → \(to.name), no native GPU kernel yet"
            }
        }
    }

    /// The per-format choice, explicit: bf16 is native; FP8 with 128×128 blocks is native where the GPU has e4m3
    /// tensor cores (`nativeFP8`; linear layers only — the embedding and output layer stay bf16, and a layer whose
    /// shapes gemm_fp8 cannot read is converted); every other format (f32/f16, GGUF blocks, lookup tables) is converted
    /// to bf16 at load until kernels for it exist (the lookup-table issue).
    /// `nativeLUT`: 4-, 3- and 2-bit lookup tables with groups of 32, 64 or 128 are native (gemm_lut; a fused layer whose parts
    /// have different tables is still converted, logged per layer at load), and so are the GGUF members of the family,
    /// Q4_0, Q4_1, IQ4_NL and Q8_0 (8-bit codes; repacked at load, `LUTDevicePlanes+GGUF.swift`); linear layers only.
    /// Q8_0 only with `nativeQ8` as well (GPUEngineOptions.q8Kernels: its kernels have not run on a device yet).
    public static func plan(_ format: WeightFormat, nativeFP8: Bool = false, nativeLUT: Bool = false, nativeQ8: Bool = false) -> Plan {
        switch format {
        case .dense(.bf16): return .native
        case .fp8E4M3 where nativeFP8 && format == GPUMatrix.fp8Format: return .native
        case .lut(let l) where nativeLUT && GemmLUT.bitWidths.contains(l.bits) && GemmLUT.groupSizes.contains(l.groupSize): return .native
        case .gguf where nativeLUT && LUTDevicePlanes.ggufMember(format) != nil && (nativeQ8 || format != .gguf(.q8_0)): return .native
        case .dense(.f32), .dense(.f16), .gguf, .fp8E4M3, .lut: return .convert(to: .bf16)
        }
    }

    /// Random bf16 weights made on the GPU (no checkpoint read): matrices ±[0.005, 0.035) (σ ≈ 0.02),
    /// norms 1 ± 0.1, biases ±[0.005, 0.035). Never zero, reproducible from `seed`.
    /// `fp8`: the linear layers FP8 instead (`dummyFP8`), for FP8 benchmarks; `lut`: 4-bit lookup-table linear layers of
    /// that format (`LUTDevicePlanes(dummyRows:…)`; gate_up as if interleaved — the rows are random either way).
    public static func dummy(config c: ModelConfig, context: Context, library: KernelLibrary, fp8: Bool = false,
                             lut: WeightFormat.LUTFormat? = nil, seed: UInt64 = 1) throws -> GPUWeights {
        let stream = try GPUStream(context)
        let rand = try RandomInit(library)
        var tensorSeed = seed &* 1_000_003
        func make(_ n: Int, norm: Bool = false) throws -> DeviceBuffer<UInt16> {
            let b = try DeviceBuffer<UInt16>(context, count: n)
            tensorSeed &+= 1
            try rand(y: b.address, count: n, seed: tensorSeed, center: norm ? 1 : 0, halfWidth: norm ? 0.1 : 0.035,
                     minMag: norm ? 0 : 0.005, stream: stream)
            return b
        }
        func matrix(_ rows: Int, _ cols: Int) throws -> GPUMatrix {
            if let lut {
                tensorSeed &+= 1
                return try dummyLUT(rows: rows, cols: cols, format: lut, seed: tensorSeed, context: context)
            }
            guard fp8 else { return .bf16(try make(rows * cols)) }
            tensorSeed &+= 1
            return try dummyFP8(rows: rows, cols: cols, seed: tensorSeed, rand: rand, context: context, stream: stream)
        }
        let h = c.hiddenSize, f = c.intermediateSize
        let embedding = try make(c.vocabSize * h)
        let layers = try (0..<c.numLayers).map { _ in
            Layer(attnNorm: try make(h, norm: true), qkv: try matrix(c.qkvDim, h),
                  qkvBias: c.attentionBias ? try make(c.qkvDim) : nil,
                  qNorm: c.qkNorm ? try make(c.headDim, norm: true) : nil, kNorm: c.qkNorm ? try make(c.headDim, norm: true) : nil,
                  o: try matrix(h, c.qDim),
                  ffnNorm: try make(h, norm: true), gateUp: try matrix(2 * f, h), down: try matrix(h, f))
        }
        let on = try make(h, norm: true)
        let out = c.tieWordEmbeddings ? nil : try make(c.vocabSize * h)
        let inv = try DeviceBuffer<Float>(context, ropeInverseFrequencies(headDim: c.headDim, theta: c.ropeTheta, scaling: c.ropeScaling))
        try stream.synchronize()
        return GPUWeights(config: c, embedding: embedding, layers: layers, outputNorm: on, untiedOutput: out, invFreq: inv)
    }
}

/// The `--dummy-weights` model shapes.
public enum DummyModels {
    public static let names = ["llama3-8b", "llama3-70b", "granite-8b"]

    /// A preset name or a path to a Hugging Face config.json.
    public static func config(_ spec: String) throws -> ModelConfig {
        let llama3 = Llama3RopeScaling(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192)
        switch spec {
        case "llama3-8b":
            return ModelConfig(architecture: .llama, vocabSize: 128_256, hiddenSize: 4096, intermediateSize: 14_336, numLayers: 32,
                               numHeads: 32, numKVHeads: 8, contextLength: 131_072, rmsNormEps: 1e-5, ropeTheta: 500_000, ropeScaling: llama3)
        case "llama3-70b":
            return ModelConfig(architecture: .llama, vocabSize: 128_256, hiddenSize: 8192, intermediateSize: 28_672, numLayers: 80,
                               numHeads: 64, numKVHeads: 8, contextLength: 131_072, rmsNormEps: 1e-5, ropeTheta: 500_000, ropeScaling: llama3)
        case "granite-8b":
            // ibm-granite/granite-3.x-8b: 40 layers, 4096 wide, 12800 ffn, 49155 vocab, tied embeddings, μP multipliers.
            return ModelConfig(architecture: .granite, vocabSize: 49_155, hiddenSize: 4096, intermediateSize: 12_800, numLayers: 40,
                               numHeads: 32, numKVHeads: 8, contextLength: 131_072, rmsNormEps: 1e-5, ropeTheta: 10_000_000,
                               tieWordEmbeddings: true, embeddingMultiplier: 12, attentionMultiplier: 0.0078125,
                               residualMultiplier: 0.22, logitsScaling: 16)
        default:
            guard spec.hasSuffix(".json") || FileManager.default.fileExists(atPath: spec + "/config.json") else {
                throw KilnError("--dummy-weights \(spec): expected one of \(names.joined(separator: ", ")) or a path to a config.json")
            }
            let path = spec.hasSuffix(".json") ? spec : spec + "/config.json"
            let c = try HFConfig.load(path: path).modelConfig(path: path)
            try c.validate(source: path)
            return c
        }
    }
}
