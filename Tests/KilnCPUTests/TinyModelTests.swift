import Foundation
import XCTest
import KilnCore
import KilnModels
import KilnCPU

/// Tiny random models (llama, granite, qwen2, qwen3; F32 and quantized) against a naive forward pass written here:
/// plain loops over dequantized Float weights, Double accumulation, no shared code with KilnCPU's kernels.
final class TinyModelTests: XCTestCase {
    struct RNG { var s: UInt64
        mutating func next() -> Float { s = s &* 6364136223846793005 &+ 1442695040888963407; return Float((s >> 40) & 0xffffff) / Float(1 << 24) - 0.5 }
    }

    static func config(_ arch: Architecture, style: RopeStyle) -> ModelConfig {
        // qwen3: head_dim independent of hidden / heads (4 × 24 = 96 ≠ 64), as Qwen3 checkpoints have.
        ModelConfig(architecture: arch, vocabSize: 80, hiddenSize: 64, intermediateSize: 96, numLayers: 2, numHeads: 4,
                    numKVHeads: 2, headDim: arch == .qwen3 ? 24 : 16, contextLength: 64, rmsNormEps: 1e-5, ropeTheta: 10000, ropeStyle: style,
                    tieWordEmbeddings: arch == .llama || arch == .qwen3, attentionBias: arch == .qwen2, qkNorm: arch == .qwen3,
                    embeddingMultiplier: arch == .granite ? 3 : 1, attentionMultiplier: arch == .granite ? 0.2 : nil,
                    residualMultiplier: arch == .granite ? 0.5 : 1, logitsScaling: arch == .granite ? 4 : 1)
    }

    /// Builds random weights; matrices are stored as `dtype`, vectors as F32.
    static func weights(_ c: ModelConfig, dtype: DType, seed: UInt64) -> InMemoryWeights {
        var rng = RNG(s: seed)
        let w = InMemoryWeights(config: c, name: "tiny-\(c.architecture.rawValue)")
        func mat(_ name: String, _ r: Int, _ cols: Int) {
            w.add(name, shape: [r, cols], values: (0..<(r * cols)).map { _ in rng.next() * 2 / Float(cols).squareRoot() * 1.7 }, as: dtype)
        }
        func vec(_ name: String, _ n: Int, around: Float) { w.add(name, shape: [n], values: (0..<n).map { _ in around + rng.next() * 0.4 }) }
        mat("token_embd.weight", c.vocabSize, c.hiddenSize)
        if !c.tieWordEmbeddings { mat("output.weight", c.vocabSize, c.hiddenSize) }
        vec("output_norm.weight", c.hiddenSize, around: 1)
        for l in 0..<c.numLayers {
            let p = "blk.\(l)."
            vec(p + "attn_norm.weight", c.hiddenSize, around: 1); vec(p + "ffn_norm.weight", c.hiddenSize, around: 1)
            mat(p + "attn_q.weight", c.qDim, c.hiddenSize); mat(p + "attn_k.weight", c.kvDim, c.hiddenSize)
            mat(p + "attn_v.weight", c.kvDim, c.hiddenSize); mat(p + "attn_output.weight", c.hiddenSize, c.qDim)
            mat(p + "ffn_gate.weight", c.intermediateSize, c.hiddenSize); mat(p + "ffn_up.weight", c.intermediateSize, c.hiddenSize)
            mat(p + "ffn_down.weight", c.hiddenSize, c.intermediateSize)
            if c.attentionBias {
                vec(p + "attn_q.bias", c.qDim, around: 0); vec(p + "attn_k.bias", c.kvDim, around: 0); vec(p + "attn_v.bias", c.kvDim, around: 0)
            }
            if c.qkNorm { vec(p + "attn_q_norm.weight", c.headDim, around: 1); vec(p + "attn_k_norm.weight", c.headDim, around: 1) }
        }
        return w
    }

    /// The naive reference: logits `[tokens][vocab]` for every position.
    static func reference(_ src: WeightSource, _ tokens: [Int]) throws -> [[Double]] {
        let c = src.config
        func load(_ name: String, _ shape: [Int]) throws -> [Double] {
            let t = try src.tensor(name, shape: shape)
            var f = [Float](repeating: 0, count: shape.reduce(1, *))
            f.withUnsafeMutableBufferPointer { QuantBlocks.dequantize(t.dtype, t.data.baseAddress!, $0.baseAddress!, count: $0.count) }
            return f.map(Double.init)
        }
        func matvec(_ w: [Double], _ x: [Double]) -> [Double] {
            let cols = x.count, rows = w.count / cols
            return (0..<rows).map { r in (0..<cols).reduce(0.0) { $0 + w[r * cols + $1] * x[$1] } }
        }
        func norm(_ x: [Double], _ w: [Double]) -> [Double] {
            let ms = x.reduce(0) { $0 + $1 * $1 } / Double(x.count)
            return x.indices.map { x[$0] / (ms + Double(c.rmsNormEps)).squareRoot() * w[$0] }
        }
        func rope(_ v: inout [Double], heads: Int, pos: Int) {
            let d = c.headDim
            for h in 0..<heads {
                for i in 0..<(d / 2) {
                    let angle = Double(pos) * pow(Double(c.ropeTheta), -2.0 * Double(i) / Double(d))
                    let (a, b) = c.ropeStyle == .interleaved ? (h * d + 2 * i, h * d + 2 * i + 1) : (h * d + i, h * d + i + d / 2)
                    let x0 = v[a], x1 = v[b]
                    v[a] = x0 * cos(angle) - x1 * sin(angle); v[b] = x0 * sin(angle) + x1 * cos(angle)
                }
            }
        }
        let h = c.hiddenSize, d = c.headDim
        let embd = try load("token_embd.weight", [c.vocabSize, h])
        var xs = tokens.map { t in (0..<h).map { embd[t * h + $0] * Double(c.embeddingMultiplier) } }
        for l in 0..<c.numLayers {
            let p = "blk.\(l)."
            let wq = try load(p + "attn_q.weight", [c.qDim, h]), wk = try load(p + "attn_k.weight", [c.kvDim, h])
            let wv = try load(p + "attn_v.weight", [c.kvDim, h]), wo = try load(p + "attn_output.weight", [h, c.qDim])
            let an = try load(p + "attn_norm.weight", [h]), fn = try load(p + "ffn_norm.weight", [h])
            let wg = try load(p + "ffn_gate.weight", [c.intermediateSize, h]), wu = try load(p + "ffn_up.weight", [c.intermediateSize, h])
            let wd = try load(p + "ffn_down.weight", [h, c.intermediateSize])
            var qs: [[Double]] = [], ks: [[Double]] = [], vs: [[Double]] = []
            for (pos, x) in xs.enumerated() {
                let xn = norm(x, an)
                var q = matvec(wq, xn), k = matvec(wk, xn), v = matvec(wv, xn)
                if c.attentionBias {
                    let bq = try load(p + "attn_q.bias", [c.qDim]), bk = try load(p + "attn_k.bias", [c.kvDim]), bv = try load(p + "attn_v.bias", [c.kvDim])
                    q = q.indices.map { q[$0] + bq[$0] }; k = k.indices.map { k[$0] + bk[$0] }; v = v.indices.map { v[$0] + bv[$0] }
                }
                if c.qkNorm {
                    // Qwen3: each head of q and k RMS-normalized with one [headDim] weight, before RoPE.
                    let qn = try load(p + "attn_q_norm.weight", [d]), kn = try load(p + "attn_k_norm.weight", [d])
                    q = (0..<c.numHeads).flatMap { norm(Array(q[($0 * d)..<($0 * d + d)]), qn) }
                    k = (0..<c.numKVHeads).flatMap { norm(Array(k[($0 * d)..<($0 * d + d)]), kn) }
                }
                rope(&q, heads: c.numHeads, pos: pos); rope(&k, heads: c.numKVHeads, pos: pos)
                qs.append(q); ks.append(k); vs.append(v)
            }
            for pos in xs.indices {
                var att = [Double](repeating: 0, count: c.qDim)
                for hd in 0..<c.numHeads {
                    let g = hd / (c.numHeads / c.numKVHeads)
                    let scores = (0...pos).map { j in (0..<d).reduce(0.0) { $0 + qs[pos][hd * d + $1] * ks[j][g * d + $1] } * Double(c.attentionScale) }
                    let m = scores.max()!
                    let e = scores.map { exp($0 - m) }, total = e.reduce(0, +)
                    for j in 0...pos { for i in 0..<d { att[hd * d + i] += e[j] / total * vs[j][g * d + i] } }
                }
                let o = matvec(wo, att)
                xs[pos] = xs[pos].indices.map { xs[pos][$0] + Double(c.residualMultiplier) * o[$0] }
                let xn = norm(xs[pos], fn)
                let gate = matvec(wg, xn), up = matvec(wu, xn)
                let hid = gate.indices.map { gate[$0] / (1 + exp(-gate[$0])) * up[$0] }
                let down = matvec(wd, hid)
                xs[pos] = xs[pos].indices.map { xs[pos][$0] + Double(c.residualMultiplier) * down[$0] }
            }
        }
        let on = try load("output_norm.weight", [h])
        let out = c.tieWordEmbeddings ? embd : try load("output.weight", [c.vocabSize, h])
        return xs.map { x in matvec(out, norm(x, on)).map { $0 / Double(c.logitsScaling) } }
    }

    /// Runs the CPU model in batches of 3 (prefill path) and token by token (decode path); both must match the reference.
    func check(_ arch: Architecture, style: RopeStyle, dtype: DType, tolerance: Double, seed: UInt64) throws {
        let c = Self.config(arch, style: style)
        let tokens = [3, 17, 42, 5, 79, 0, 11, 64]
        let expected = try Self.reference(Self.weights(c, dtype: dtype, seed: seed), tokens)
        let model = try CPUModel(weights: Self.weights(c, dtype: dtype, seed: seed), threads: 2, maxBatch: 3)
        let batched = try model.forward(tokens.map(Int32.init), cache: model.makeCache(), logits: .all)
        let cache = try model.makeCache()
        var stepped: [Float] = []
        for t in tokens { stepped += try model.forward([Int32(t)], cache: cache, logits: .last) }
        let scale = expected.joined().map(abs).max()!
        XCTAssertGreaterThan(scale, 0.5, "logits too small to be a meaningful test")
        for (name, got) in [("batched", batched), ("stepped", stepped)] {
            XCTAssertEqual(got.count, tokens.count * c.vocabSize)
            var worst = 0.0
            for (p, row) in expected.enumerated() {
                for v in 0..<c.vocabSize { worst = max(worst, abs(Double(got[p * c.vocabSize + v]) - row[v])) }
            }
            XCTAssertLessThan(worst / scale, tolerance, "\(arch) \(style) \(dtype) \(name): max error \(worst) of scale \(scale)")
        }
    }

    // F32 weights: differences come only from half-precision attention (as llama.cpp's F16 cache) and float rounding.
    func testLlamaInterleavedF32() throws { try check(.llama, style: .interleaved, dtype: .f32, tolerance: 5e-3, seed: 1) }
    func testGraniteInterleavedF32() throws { try check(.granite, style: .interleaved, dtype: .f32, tolerance: 5e-3, seed: 2) }
    func testQwen2HalvesF32() throws { try check(.qwen2, style: .halves, dtype: .f32, tolerance: 5e-3, seed: 3) }
    func testLlamaHalvesF16() throws { try check(.llama, style: .halves, dtype: .f16, tolerance: 5e-3, seed: 4) }
    // Quantized weights are dequantized exactly by the reference; the error is the 8-bit activation quantization.
    func testLlamaQ4_1() throws { try check(.llama, style: .interleaved, dtype: .q4_1, tolerance: 3e-2, seed: 5) }
    func testQwen2Q4_0() throws { try check(.qwen2, style: .halves, dtype: .q4_0, tolerance: 3e-2, seed: 6) }
    func testGraniteQ8_0() throws { try check(.granite, style: .interleaved, dtype: .q8_0, tolerance: 3e-2, seed: 7) }
    func testQwen3HalvesF32() throws { try check(.qwen3, style: .halves, dtype: .f32, tolerance: 5e-3, seed: 9) }
    func testQwen3Q8_0() throws { try check(.qwen3, style: .halves, dtype: .q8_0, tolerance: 3e-2, seed: 10) }

    /// Sequences of different lengths in one forward pass (each with its own cache) give the logits they give alone.
    func testSequencesOfDifferentLengthsInOneBatch() throws {
        let c = Self.config(.qwen2, style: .halves)
        let model = try CPUModel(weights: Self.weights(c, dtype: .f32, seed: 11), threads: 2, maxBatch: 8)
        let a: [Int32] = [3, 17, 42, 5], b: [Int32] = [79, 11]
        let alone = [try model.forward(a, cache: model.makeCache(), logits: .last), try model.forward(b, cache: model.makeCache(), logits: .last)]
        // Prefill both together, then one decode row each, again together.
        let ca = try model.makeCache(), cb = try model.makeCache()
        let batch = StepBatch(sequences: [.init(id: 0, start: 0, count: a.count), .init(id: 1, start: 0, count: b.count)], logits: .last)
        let together = Array(try (a + b).withUnsafeBufferPointer { try model.forward($0, batch: batch, caches: [ca, cb]) })
        XCTAssertEqual(together.count, 2 * c.vocabSize)
        XCTAssertEqual(Array(together[0..<c.vocabSize]), alone[0])
        XCTAssertEqual(Array(together[c.vocabSize...]), alone[1])
        let next: [Int32] = [7, 9]
        let step = StepBatch(sequences: [.init(id: 0, start: a.count, count: 1), .init(id: 1, start: b.count, count: 1)], logits: .last)
        let decoded = Array(try next.withUnsafeBufferPointer { try model.forward($0, batch: step, caches: [ca, cb]) })
        let aloneNext = [try model.forward(a + [7], cache: model.makeCache(), logits: .last), try model.forward(b + [9], cache: model.makeCache(), logits: .last)]
        for (i, want) in aloneNext.enumerated() {
            let got = decoded[(i * c.vocabSize)..<((i + 1) * c.vocabSize)]
            let worst = zip(got, want).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(worst, 1e-4, "sequence \(i): batched decode differs from the sequence alone by \(worst)")
        }
        // A sequence whose start disagrees with its cache is an error, not silent garbage.
        let wrong = StepBatch(sequences: [.init(id: 0, start: 0, count: 1)], logits: .last)
        XCTAssertThrowsError(try [Int32(1)].withUnsafeBufferPointer { try model.forward($0, batch: wrong, caches: [ca]) }) { e in
            XCTAssertTrue("\(e)".contains("starts at 0"), "\(e)")
        }
    }

    func testContextLimitIsAnError() throws {
        let c = Self.config(.llama, style: .interleaved)
        let model = try CPUModel(weights: Self.weights(c, dtype: .f32, seed: 8), threads: 1, maxBatch: 8)
        let cache = try model.makeCache(capacity: 4)
        _ = try model.forward([1, 2, 3], cache: cache, logits: .last)
        XCTAssertThrowsError(try model.forward([4, 5], cache: cache, logits: .last)) { e in
            XCTAssertTrue("\(e)".contains("context limit"), "\(e)")
        }
        XCTAssertThrowsError(try model.forward([Int32(c.vocabSize)], cache: model.makeCache(), logits: .last))
    }
}

/// Qwen3 through the real loaders: a tiny Hugging Face folder and a GGUF file written by TinyCheckpoint (q/k norms under
/// each format's own names) run on the CPU engine and agree with the naive reference.
final class TinyQwen3CheckpointTests: XCTestCase {
    func testHuggingFaceFolderAndGGUF() throws {
        var o = TinyCheckpoint.Options()
        o.architecture = .qwen3; o.headDim = 24; o.dtype = .f32; o.seed = 21; o.ggufMatrixFormats = [.dense(.f32)]
        let dir = NSTemporaryDirectory() + "kiln-qwen3-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try TinyCheckpoint.writeHF(folder: dir + "/hf", options: o)
        try TinyCheckpoint.writeGGUF(path: dir + "/tiny.gguf", options: o)
        let tokens = [5, 60, 7, 33, 90, 1]
        for source in [try HFModel(folder: dir + "/hf") as WeightSource, try GGUFModel(path: dir + "/tiny.gguf")] {
            XCTAssertEqual(source.config.architecture, .qwen3)
            XCTAssertTrue(source.config.qkNorm)
            XCTAssertEqual(source.config.headDim, 24)
            let expected = try TinyModelTests.reference(source, tokens)
            let model = try CPUModel(weights: source, threads: 2, maxBatch: 4)
            let got = try model.forward(tokens.map(Int32.init), cache: model.makeCache(), logits: .all)
            let v = source.config.vocabSize
            let scale = expected.joined().map(abs).max()!
            var worst = 0.0
            for (p, row) in expected.enumerated() { for i in 0..<v { worst = max(worst, abs(Double(got[p * v + i]) - row[i])) } }
            XCTAssertLessThan(worst / scale, 5e-3, "\(source.sourcePath): max error \(worst) of scale \(scale)")
        }
    }
}
