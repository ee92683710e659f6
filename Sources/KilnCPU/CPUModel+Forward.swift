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
        let n = tokens.count, c = config
        guard n > 0 else { throw KilnError("forward pass needs at least one token") }
        guard n <= maxBatch else { throw KilnError("batch of \(n) tokens exceeds the maximum batch \(maxBatch)") }
        guard cache.layers == c.numLayers, cache.kvDim == c.kvDim else { throw KilnError("KV cache was made for a different model") }
        guard cache.count + n <= cache.capacity else {
            throw KilnError("context limit reached: \(cache.count) + \(n) tokens exceed the context of \(cache.capacity) tokens")
        }
        for t in tokens where t < 0 || Int(t) >= c.vocabSize {
            throw KilnError("token id \(t) is outside the vocabulary (\(c.vocabSize) tokens)")
        }
        let b = buffers, h = c.hiddenSize, start = cache.count
        embed(tokens, into: b.x)
        prepareRope(start: start, count: n)
        for l in 0..<c.numLayers { layer(l, tokens: n, start: start, cache: cache) }
        cache.count = start + n

        // Final norm and output projection, for the last token or all of them.
        let m = request.count(of: n), first = n - m
        rmsNorm(b.x + first * h, outputNorm, into: b.xn, tokens: m)
        quantizeIfBlocked(b.xn, tokens: m, cols: h)
        project(output, b.logits, x: b.xn, tokens: m)
        let count = m * c.vocabSize
        if c.logitsScaling != 1 {
            let s = 1 / c.logitsScaling
            for i in 0..<count { b.logits[i] *= s }
        }
        return UnsafeBufferPointer(start: b.logits, count: count)
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
            }
            i = j
        }
        return result
    }

    private func layer(_ l: Int, tokens n: Int, start: Int, cache: KVCache) {
        let c = config, b = buffers, w = layers[l], h = c.hiddenSize
        // Attention block.
        rmsNorm(b.x, w.attnNorm, into: b.xn, tokens: n)
        quantizeIfBlocked(b.xn, tokens: n, cols: h)
        project(w.q, b.q, w.k, b.k, w.v, b.v, x: b.xn, tokens: n)
        if let qb = w.qBias, let kb = w.kBias, let vb = w.vBias {
            addBias(b.q, qb, tokens: n); addBias(b.k, kb, tokens: n); addBias(b.v, vb, tokens: n)
        }
        applyRope(b.q, heads: c.numHeads, tokens: n)
        applyRope(b.k, heads: c.numKVHeads, tokens: n)
        for t in 0..<n {
            let kr = cache.keyRow(l, start + t), vr = cache.valueRow(l, start + t)
            for i in 0..<c.kvDim {
                kr[i] = halfTable[Int(floatToHalf(b.k[t * c.kvDim + i]))]
                vr[i] = halfTable[Int(floatToHalf(b.v[t * c.kvDim + i]))]
            }
        }
        attention(layer: l, tokens: n, start: start, cache: cache, out: b.xn)
        quantizeIfBlocked(b.xn, tokens: n, cols: c.qDim)
        project(w.o, b.branch, x: b.xn, tokens: n)
        addResidual(tokens: n)
        // Feed-forward block (SwiGLU).
        rmsNorm(b.x, w.ffnNorm, into: b.xn, tokens: n)
        quantizeIfBlocked(b.xn, tokens: n, cols: h)
        swiGLU(w, tokens: n)
        quantizeIfBlocked(b.gate, tokens: n, cols: c.intermediateSize)
        project(w.down, b.branch, x: b.gate, tokens: n)
        addResidual(tokens: n)
    }

    private func embed(_ tokens: UnsafeBufferPointer<Int32>, into x: UnsafeMutablePointer<Float>) {
        let h = config.hiddenSize
        let rowBytes = tokenEmbedding.rowBytes, base = tokenEmbedding.data.baseAddress!
        for (t, id) in tokens.enumerated() {
            QuantBlocks.dequantize(tokenEmbedding.dtype, base + Int(id) * rowBytes, x + t * h, count: h)
            if config.embeddingMultiplier != 1 {
                for i in 0..<h { x[t * h + i] *= config.embeddingMultiplier }
            }
        }
    }

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

    private func quantizeIfBlocked(_ x: UnsafePointer<Float>, tokens n: Int, cols: Int) {
        guard cols % 32 == 0 else { return }
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

    private func addBias(_ y: UnsafeMutablePointer<Float>, _ bias: [Float], tokens n: Int) {
        let d = bias.count
        for t in 0..<n { for i in 0..<d { y[t * d + i] += bias[i] } }
    }

    private func addResidual(tokens n: Int) {
        let b = buffers, count = n * config.hiddenSize, s = config.residualMultiplier
        if s == 1 { for i in 0..<count { b.x[i] += b.branch[i] } } else { for i in 0..<count { b.x[i] += s * b.branch[i] } }
    }

    private func prepareRope(start: Int, count n: Int) {
        let half = config.headDim / 2, b = buffers
        for t in 0..<n {
            let pos = Double(start + t)
            for i in 0..<half {
                let angle = pos * Double(invFreq[i])
                b.ropeCos[t * half + i] = Float(cos(angle)); b.ropeSin[t * half + i] = Float(sin(angle))
            }
        }
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
