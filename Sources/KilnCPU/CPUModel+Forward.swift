import Foundation
import KilnCore
import KilnModels

extension CPUModel {
    /// Runs `tokens` (at most `maxBatch`) at the cache's next positions, appends their keys and values to `cache`,
    /// and returns the requested logits: `[vocab]` for `.last`, `[tokens × vocab]` for `.all`, `[k × vocab]` for `.lastTokens(k)`.
    ///
    /// The returned buffer belongs to the model and is overwritten by the next call. Exceeding the cache's
    /// capacity is an error (nothing is written then).
    public func forward(_ tokens: UnsafeBufferPointer<Int32>, cache: KVCache, logits request: LogitsRequest) throws -> UnsafeBufferPointer<Float> {
        if pass.caches.count != 1 { pass.caches.removeAll(keepingCapacity: true); pass.caches.append(cache) } else { pass.caches[0] = cache }
        // The one-sequence batch is kept and rewritten in place, so a decode step allocates nothing.
        pass.single.sequences[0] = StepBatch.Sequence(id: 0, start: cache.count, count: tokens.count)
        pass.single.logits = request
        return try forward(tokens, batch: pass.single)
    }

    /// Runs the rows of several sequences in one pass: `tokens` holds each sequence's rows in `batch` order, and
    /// `batch.sequences[i].id` indexes `caches`; each sequence's `start` must equal its cache's count. Returns the logits
    /// of every sequence's requested rows, sequence after sequence (`[rows × vocab]`).
    public func forward(_ tokens: UnsafeBufferPointer<Int32>, batch: StepBatch, caches: [KVCache]) throws -> UnsafeBufferPointer<Float> {
        pass.caches = caches
        return try forward(tokens, batch: batch)
    }

    private func forward(_ tokens: UnsafeBufferPointer<Int32>, batch: StepBatch) throws -> UnsafeBufferPointer<Float> {
        try config.checkTokenIDs(tokens)
        try beginPass(tokens, batch: batch)
        try transformer.forward(self, batch)
        return finishPass(batch)
    }

    /// Checks the batch against the caches and prepares the pass state (ids, RoPE angles); the ids are not checked
    /// against the vocabulary here, because a tensor-parallel rank holds only a slice of it (`SimulatedTensorParallel`).
    func beginPass(_ tokens: UnsafeBufferPointer<Int32>, batch: StepBatch) throws {
        let n = tokens.count, c = config
        guard n > 0 else { throw KilnError("forward pass needs at least one token") }
        guard n <= maxBatch else { throw KilnError("batch of \(n) tokens exceeds the maximum batch \(maxBatch)") }
        guard batch.rows == n else { throw KilnError("the batch describes \(batch.rows) rows but \(n) tokens were given") }
        for s in batch.sequences {
            guard s.id >= 0, s.id < pass.caches.count else { throw KilnError("sequence \(s.id) has no KV cache") }
            let cache = pass.caches[s.id]
            guard cache.layers == c.numLayers, cache.kvDim == c.kvDim else { throw KilnError("KV cache was made for a different model") }
            guard s.start == cache.count else { throw KilnError("sequence \(s.id) starts at \(s.start) but its cache holds \(cache.count) tokens") }
            guard cache.count + s.count <= cache.capacity else {
                throw KilnError("context limit reached: \(cache.count) + \(s.count) tokens exceed the context of \(cache.capacity) tokens")
            }
        }
        pass.ids = tokens
        pass.logitRows = 0
        prepareRope(batch)
    }

    /// Advances the caches past the pass and returns its logits (the model's buffer).
    func finishPass(_ batch: StepBatch) -> UnsafeBufferPointer<Float> {
        for s in batch.sequences { pass.caches[s.id].count += s.count }
        return UnsafeBufferPointer(start: buffers.logits, count: pass.logitRows * config.vocabSize)
    }

    /// Convenience for arrays (tests, perplexity): runs `tokens` in batches of `maxBatch`, returning copies of the logits.
    public func forward(_ tokens: [Int32], cache: KVCache, logits request: LogitsRequest) throws -> [Float] {
        var result: [Float] = []
        var i = 0
        while i < tokens.count {
            let j = min(tokens.count, i + maxBatch)
            let out = try tokens[i..<j].withUnsafeBufferPointer { try forward($0, cache: cache, logits: request) }
            switch request {
            case .all: result.append(contentsOf: out)
            case .last: if j == tokens.count { result = Array(out) }
            case .lastTokens: throw KilnError("lastTokens is only supported by the single-batch forward")
            case .none: break
            }
            i = j
        }
        return result
    }

    /// Each row's RoPE angles (cos, sin per dimension pair) at its sequence position.
    private func prepareRope(_ batch: StepBatch) {
        let half = config.headDim / 2, b = buffers
        var row = 0
        for s in batch.sequences {
            for t in 0..<s.count {
                let pos = Double(s.start + t)
                for i in 0..<half {
                    let angle = pos * Double(invFreq[i])
                    b.ropeCos[row * half + i] = Float(cos(angle)); b.ropeSin[row * half + i] = Float(sin(angle))
                }
                row += 1
            }
        }
    }
}

// MARK: the decoder's operations on the CPU

extension CPUModel: DecoderOperations {
    public func embed(_ batch: StepBatch) throws {
        let h = config.hiddenSize
        for (t, id) in pass.ids.enumerated() { embedRow(Int(id), into: buffers.x + t * h) }
    }

    /// Row `row` of this model's embedding table times the embedding multiplier, into `out` [hidden]. (A tensor-parallel
    /// rank's table holds a slice of the vocabulary: `row` is then the id less the slice's start.)
    func embedRow(_ row: Int, into out: UnsafeMutablePointer<Float>) {
        let h = config.hiddenSize
        QuantBlocks.dequantize(tokenEmbedding.dtype, tokenEmbedding.data.baseAddress! + row * tokenEmbedding.rowBytes, out, count: h)
        if config.embeddingMultiplier != 1 {
            for i in 0..<h { out[i] *= config.embeddingMultiplier }
        }
    }

    public func rmsNorm(_ weight: WeightName, addingBranch: Bool, _ batch: StepBatch) throws {
        let b = buffers, h = config.hiddenSize, n = batch.rows
        if addingBranch { for i in 0..<(n * h) { b.x[i] += b.branch[i] } }
        switch weight {
        case .norm(layer: let l, .attention): rmsNorm(b.x, layers[l].attnNorm, into: b.xn, tokens: n)
        case .norm(layer: let l, .ffn): rmsNorm(b.x, layers[l].ffnNorm, into: b.xn, tokens: n)
        case .outputNorm:
            // Only the rows whose logits are wanted, packed into the first rows of xn.
            var out = 0, row = 0
            for s in batch.sequences {
                let m = batch.logits.count(of: s.count)
                rmsNorm(b.x + (row + s.count - m) * h, outputNorm, into: b.xn + out * h, tokens: m)
                out += m; row += s.count
            }
            pass.logitRows = out
        default: throw KilnError("rmsNorm: \(weight) is not a hidden-state norm")
        }
    }

    public func linear(_ weight: WeightName, from input: Activation, to output: Activation, epilogue: LinearEpilogue, _ batch: StepBatch) throws {
        guard case .linear(layer: let l, let layer) = weight else { throw KilnError("linear: \(weight) is not a linear layer") }
        let b = buffers, w = layers[l], n = batch.rows, c = config
        switch (layer, epilogue) {
        case (.qkv, .none):
            quantizeIfBlocked(b.xn, tokens: n, cols: c.hiddenSize)
            project(w.q, b.q, w.k, b.k, w.v, b.v, x: b.xn, tokens: n)
        case (.o, .none):
            quantizeIfBlocked(b.xn, tokens: n, cols: c.qDim)
            project(w.o, b.branch, x: b.xn, tokens: n)
        case (.gateUp, .swiglu):
            quantizeIfBlocked(b.xn, tokens: n, cols: c.hiddenSize)
            swiGLU(w, tokens: n)
        case (.down, .none):
            quantizeIfBlocked(b.gate, tokens: n, cols: c.intermediateSize)
            project(w.down, b.branch, x: b.gate, tokens: n)
        default: throw KilnError("linear: the CPU backend has no \(layer.rawValue) with the \(epilogue) epilogue")
        }
        let s = c.outputScale(layer)
        if s != 1 { for i in 0..<(n * c.hiddenSize) { b.branch[i] *= s } }   // Granite: o and down, whose output is `branch`
    }

    public func positionalEncoding(layer l: Int, _ batch: StepBatch) throws {
        let c = config, b = buffers, w = layers[l], n = batch.rows
        if let bias = w.qkvBias {
            bias.withUnsafeBufferPointer { bp in
                addBias(b.q, bp.baseAddress!, c.qDim, tokens: n)
                addBias(b.k, bp.baseAddress! + c.qDim, c.kvDim, tokens: n)
                addBias(b.v, bp.baseAddress! + c.qDim + c.kvDim, c.kvDim, tokens: n)
            }
        }
        if let qn = w.qNorm, let kn = w.kNorm {
            headNorm(b.q, qn, heads: c.numHeads, tokens: n)
            headNorm(b.k, kn, heads: c.numKVHeads, tokens: n)
        }
        applyRope(b.q, heads: c.numHeads, tokens: n)
        applyRope(b.k, heads: c.numKVHeads, tokens: n)
        var row = 0
        for s in batch.sequences {
            let cache = pass.caches[s.id]
            for t in 0..<s.count {
                storeHalf(b.k + row * c.kvDim, into: cache.keyRow(l, s.start + t), c.kvDim)
                storeHalf(b.v + row * c.kvDim, into: cache.valueRow(l, s.start + t), c.kvDim)
                row += 1
            }
        }
    }

    public func attention(layer l: Int, _ batch: StepBatch) throws {
        var row = 0
        for s in batch.sequences {
            attention(layer: l, rows: row..<(row + s.count), start: s.start, cache: pass.caches[s.id], out: buffers.xn)
            row += s.count
        }
    }

    public func logits(_ batch: StepBatch) throws {
        let b = buffers, m = pass.logitRows, c = config
        quantizeIfBlocked(b.xn, tokens: m, cols: c.hiddenSize)
        project(output, b.logits, x: b.xn, tokens: m)
        if c.logitsScaling != 1 {
            let s = c.logitsScale
            for i in 0..<(m * c.vocabSize) { b.logits[i] *= s }
        }
    }
}

// MARK: the pieces

extension CPUModel {
    /// y = x / sqrt(mean(x²) + eps) · weight, per token.
    func rmsNorm(_ x: UnsafePointer<Float>, _ weight: [Float], into y: UnsafeMutablePointer<Float>, tokens n: Int) {
        let h = config.hiddenSize, eps = config.rmsNormEps
        weight.withUnsafeBufferPointer { w in
            for t in 0..<n {
                let xt = x + t * h, yt = y + t * h
                var ss: Float = 0
                for i in 0..<h { ss += xt[i] * xt[i] }
                let scale = 1 / (ss / Float(h) + eps).squareRoot()
                for i in 0..<h { yt[i] = xt[i] * scale * w[i] }
            }
        }
    }

    /// RMSNorm of every head of `x` ([tokens × heads × headDim]) in place, with one [headDim] weight (qwen3's q/k norm).
    private func headNorm(_ x: UnsafeMutablePointer<Float>, _ weight: [Float], heads: Int, tokens n: Int) {
        let d = config.headDim, eps = config.rmsNormEps
        weight.withUnsafeBufferPointer { w in
            for r in 0..<(n * heads) {
                let v = x + r * d
                var ss: Float = 0
                for i in 0..<d { ss += v[i] * v[i] }
                let scale = 1 / (ss / Float(d) + eps).squareRoot()
                for i in 0..<d { v[i] = v[i] * scale * w[i] }
            }
        }
    }

    private func quantizeIfBlocked(_ x: UnsafePointer<Float>, tokens n: Int, cols: Int) {
        guard cols % 32 == 0 else { return }
        quantizeSuperBlocks(x, tokens: n, cols: cols)   // Q8_K for K-quant matrices (KQuantActivations.swift)
        let act = buffers.act
        if n == 1 { act.quantize(x, tokens: 1, cols: cols); return }
        pool.run { i, p in act.quantize(x, rows: ThreadPool.slice(n, i, p), cols: cols) }
    }

    /// Up to three matrices over the same input in one parallel section: their rows are split evenly over threads.
    /// (Fixed parameters rather than arrays, so a decode step allocates nothing.)
    private func project(_ w0: LinearWeight, _ o0: UnsafeMutablePointer<Float>,
                         _ w1: LinearWeight? = nil, _ o1: UnsafeMutablePointer<Float>? = nil,
                         _ w2: LinearWeight? = nil, _ o2: UnsafeMutablePointer<Float>? = nil,
                         x: UnsafePointer<Float>, tokens n: Int) {
        let act = buffers.act
        let total = w0.rows + (w1?.rows ?? 0) + (w2?.rows ?? 0)
        pool.run { i, p in
            let mine = ThreadPool.slice(total, i, p)
            @inline(__always) func part(_ w: LinearWeight, _ out: UnsafeMutablePointer<Float>, _ offset: Int) {
                let lo = max(mine.lowerBound, offset), hi = min(mine.upperBound, offset + w.rows)
                if lo < hi { w.apply(rows: (lo - offset)..<(hi - offset), x: x, act: act, tokens: n, out: out, outStride: w.rows) }
            }
            part(w0, o0, 0)
            if let w1, let o1 { part(w1, o1, w0.rows) }
            if let w2, let o2 { part(w2, o2, w0.rows + (w1?.rows ?? 0)) }
        }
    }

    /// gate/up projections and silu(gate)·up, written over `gate`; each thread owns a slice of the intermediate
    /// features, so it can apply the activation to its own rows without another barrier.
    private func swiGLU(_ w: LayerWeights, tokens n: Int) {
        let b = buffers, f = config.intermediateSize
        let act = b.act, xn = b.xn, gate = b.gate, up = b.up
        pool.run { i, p in
            let mine = ThreadPool.slice(f, i, p)
            guard !mine.isEmpty else { return }
            w.gate.apply(rows: mine, x: xn, act: act, tokens: n, out: gate, outStride: f)
            w.up.apply(rows: mine, x: xn, act: act, tokens: n, out: up, outStride: f)
            for t in 0..<n {
                for j in mine {
                    let g = gate[t * f + j]
                    gate[t * f + j] = g / (1 + exp(-g)) * up[t * f + j]
                }
            }
        }
    }

    private func addBias(_ y: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>, _ d: Int, tokens n: Int) {
        for t in 0..<n { for i in 0..<d { y[t * d + i] += bias[i] } }
    }

    /// Rotates each head's dimension pairs: (2i, 2i+1) when interleaved, (i, i + d/2) for halves.
    private func applyRope(_ x: UnsafeMutablePointer<Float>, heads: Int, tokens n: Int) {
        let d = config.headDim, half = d / 2, b = buffers
        let interleaved = config.ropeStyle == .interleaved
        for t in 0..<n {
            let cs = b.ropeCos + t * half, sn = b.ropeSin + t * half
            for hd in 0..<heads {
                let v = x + (t * heads + hd) * d
                for i in 0..<half {
                    let (a, bIdx) = interleaved ? (2 * i, 2 * i + 1) : (i, i + half)
                    let x0 = v[a], x1 = v[bIdx]
                    v[a] = x0 * cs[i] - x1 * sn[i]
                    v[bIdx] = x0 * sn[i] + x1 * cs[i]
                }
            }
        }
    }
}
