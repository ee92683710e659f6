import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnModels

/// The forward passes. Per layer (rows = token rows of this call):
///   xn = RMSNorm(x)  [layer 0]  or  x += branch; xn = RMSNorm(x)  [fused, later layers]
///   qkv = xn·Wqkv^T → bias + RoPE(q, k) + k, v into the cache (one kernel) → attention → branch = attn·Wo^T
///   x += branch; xn = RMSNorm(x) → gu = xn·Wgu^T → act = silu(gate)·up → branch = act·Wdown^T
///   (with interleaved Wgu rows, decode computes act in the gate_up GEMM's epilogue: GemmSplitK.Epilogue.swiglu)
/// and at the end x += branch; xn = RMSNorm(x)·w_out_norm → logits (fp32) → argmax on the GPU.
extension GPUModel {
    enum AttentionMode {
        /// `batch` sequences (seqOffset…) of `tokens` rows each, starting at position qStart.
        case prefill(batch: Int, tokens: Int, qStart: Int, seqOffset: Int)
        /// One row per sequence 0..<batch; positions and lengths come from the device buffers.
        case decode(batch: Int)
    }

    func bytes(_ b: DeviceBuffer<UInt16>, row: Int, width: Int) -> CUdeviceptr { b.address + UInt64(row * width * 2) }

    /// All layers and the final norm over `rows` rows whose embeddings are already in `x`.
    func runLayers(rows m: Int, mode: AttentionMode) throws {
        let c = config, h = c.hiddenSize, f = c.intermediateSize, w = weights
        let eps = c.rmsNormEps
        for (l, lw) in w.layers.enumerated() {
            if l == 0 {
                try norm(x: x.address, weight: lw.attnNorm.address, y: xn.address, rows: m, cols: h, eps: eps, stream: stream)
            } else {
                try resNorm(x: branch.address, residual: x.address, weight: lw.attnNorm.address, y: xn.address, rows: m, cols: h, eps: eps, stream: stream)
            }
            try gemm("qkv", x: xn.address, w: lw.qkv.address, y: qkv.address, m: m, n: qkvDim, k: h, stream: stream)
            let kc = kCache.address + UInt64(l * layerCacheElements * 2), vc = vCache.address + UInt64(l * layerCacheElements * 2)
            switch mode {
            case let .prefill(batch, tokens, qStart, seqOffset):
                try rope(qkv: qkv.address, bias: lw.qkvBias?.address ?? 0, positions: positions.address, invFreq: w.invFreq.address,
                         kcache: kc, vcache: vc, rows: m, tokensPerSeq: tokens, seqOffset: seqOffset, heads: c.numHeads,
                         kvHeads: c.numKVHeads, headDim: c.headDim, ldqkv: qkvDim, maxSeq: maxSeq, stream: stream)
                let seqBytes = UInt64(seqOffset * c.numKVHeads * maxSeq * c.headDim * 2)
                try attnPrefill(q: qkv.address, k: kc + seqBytes, v: vc + seqBytes, o: attn.address, batch: batch, tokens: tokens,
                                heads: c.numHeads, kvHeads: c.numKVHeads, maxS: maxSeq, ldq: qkvDim, qStart: qStart,
                                kvLen: qStart + tokens, scale: c.attentionScale, stream: stream)
            case let .decode(batch):
                try rope(qkv: qkv.address, bias: lw.qkvBias?.address ?? 0, positions: positions.address, invFreq: w.invFreq.address,
                         kcache: kc, vcache: vc, rows: batch, tokensPerSeq: 1, heads: c.numHeads, kvHeads: c.numKVHeads,
                         headDim: c.headDim, ldqkv: qkvDim, maxSeq: maxSeq, stream: stream)
                try attnDecode(q: qkv.address, k: kc, v: vc, o: attn.address, workspace: attnWorkspace.address, counters: attnCounters.address,
                               lens: lens.address, batch: batch, heads: c.numHeads, kvHeads: c.numKVHeads, maxS: maxSeq, ldq: qkvDim,
                               splits: decodeSplits, scale: c.attentionScale, stream: stream)
            }
            try gemm("o", x: attn.address, w: lw.o.address, y: branch.address, m: m, n: h, k: c.qDim, stream: stream)
            try resNorm(x: branch.address, residual: x.address, weight: lw.ffnNorm.address, y: xn.address, rows: m, cols: h, eps: eps, stream: stream)
            let gu = gemm.choose(op: "gate_up", m: m, n: 2 * f, k: h, outF32: false)
            if w.gateUpInterleaved, gu.hasSwiGLUEpilogue {
                // SwiGLU in the gate_up GEMM's epilogue (the decode path): act directly, no gate_up round trip.
                try gemm("gate_up", x: xn.address, w: lw.gateUp.address, y: act.address, m: m, n: 2 * f, k: h, epilogue: .swiglu,
                         choice: gu, stream: stream)
            } else {
                try gemm("gate_up", x: xn.address, w: lw.gateUp.address, y: gateUp.address, m: m, n: 2 * f, k: h, choice: gu, stream: stream)
                try swiglu(gateUp: gateUp.address, out: act.address, rows: m, ffn: f, interleaved: w.gateUpInterleaved, stream: stream)
            }
            try gemm("down", x: act.address, w: lw.down.address, y: branch.address, m: m, n: h, k: f, stream: stream)
        }
        try resNorm(x: branch.address, residual: x.address, weight: w.outputNorm.address, y: xn.address, rows: m, cols: h, eps: eps, stream: stream)
    }

    /// Stages int32 values into a device buffer through pinned memory, in stream order. Waits for the
    /// stream first, since the pinned staging area may still be read by an earlier copy (prefill only).
    func stage(_ values: [Int32], to dst: CUdeviceptr, hostOffset: Int) throws {
        try stream.synchronize()
        for (i, v) in values.enumerated() { hostInts[hostOffset + i] = v }
        try stream.copy(from: UnsafeRawPointer(hostInts.pointer + hostOffset), to: dst, bytes: 4 * values.count)
    }

    /// Runs `prompts` (token ids, one array per sequence, sequence b in cache slot b) through the model from
    /// an empty cache and returns the greedy next token of each. Equal-length prompts go through together
    /// (one GEMM for all rows); others one sequence at a time. Chunks of at most `maxRows` rows.
    public func prefill(_ prompts: [[Int32]]) throws -> [Int32] {
        let b = prompts.count
        guard b >= 1, b <= maxBatch else { throw KilnError("batch of \(b) sequences outside 1…\(maxBatch)") }
        guard prompts.allSatisfy({ !$0.isEmpty && $0.count < maxSeq }) else { throw KilnError("each prompt needs 1…\(maxSeq - 1) tokens (the cache holds \(maxSeq))") }
        guard prompts.joined().allSatisfy({ $0 >= 0 && Int($0) < config.vocabSize }) else { throw KilnError("token id outside the vocabulary (0…\(config.vocabSize - 1))") }
        let groups: [Range<Int>] = Set(prompts.map(\.count)).count == 1 ? [0..<b] : (0..<b).map { $0..<($0 + 1) }
        for g in groups {
            try forwardRows(prompts: Array(prompts[g]), seqOffset: g.lowerBound) { _, tokens in
                // Gather the last row of each sequence of the final chunk into `last`.
                for (i, s) in g.enumerated() {
                    try stream.copy(from: bytes(xn, row: i * tokens + tokens - 1, width: config.hiddenSize), to: bytes(last, row: s, width: config.hiddenSize),
                                    bytes: config.hiddenSize * 2)
                }
            }
        }
        try gemm("logits", x: last.address, w: weights.output.address, y: logits.address, m: b, n: config.vocabSize, k: config.hiddenSize,
                 outF32: true, stream: stream)
        try sampling.argmax(logits: logits.address, out: ids.address, rows: b, cols: config.vocabSize, stream: stream)
        for s in 0..<b { sequenceLengths[s] = prompts[s].count }
        // Decode state: the next row of sequence s sits at position len(s) and sees len(s) + 1 keys.
        try stage(prompts.map { Int32($0.count) }, to: positions.address, hostOffset: maxRows)
        try stage(prompts.map { Int32($0.count + 1) }, to: lens.address, hostOffset: maxRows + maxBatch)
        try stream.copy(from: ids.address, to: UnsafeMutableRawPointer(hostInts.pointer), bytes: 4 * b)
        try stream.synchronize()
        return (0..<b).map { hostInts[$0] }
    }

    /// Prefill body shared by `prefill` and `logits(tokens:)`: embeds and runs every chunk of the
    /// sequences seqOffset…, calling `onFinalChunk` after the last one (rows, tokens per sequence).
    func forwardRows(prompts: [[Int32]], seqOffset: Int, onChunk: ((Int, Int, Int) throws -> Void)? = nil,
                     onFinalChunk: (Int, Int) throws -> Void) throws {
        let b = prompts.count, n = prompts[0].count
        let chunk = max(1, maxRows / b)
        var start = 0
        while start < n {
            let t = min(chunk, n - start), rows = b * t
            try stage(prompts.flatMap { $0[start..<(start + t)] }, to: ids.address, hostOffset: 0)
            // The rope kernel reads positions[seqOffset + i] for the first row of sequence i of this chunk.
            try stage(Array(repeating: Int32(start), count: b), to: positions.address + UInt64(4 * seqOffset), hostOffset: maxRows)
            try embed(table: weights.embedding.address, ids: ids.address, out: x.address, tokens: rows, dim: config.hiddenSize,
                      vocab: config.vocabSize, stream: stream)
            try runLayers(rows: rows, mode: .prefill(batch: b, tokens: t, qStart: start, seqOffset: seqOffset))
            try onChunk?(start, rows, t)
            start += t
            if start >= n { try onFinalChunk(rows, t) }
        }
    }

    /// Teacher-forced logits of every position of one sequence (fp32 [tokens, vocab]), for correctness
    /// checks against other implementations. Uses cache slot 0.
    public func logits(tokens: [Int32]) throws -> [Float] {
        guard !tokens.isEmpty, tokens.count < maxSeq else { throw KilnError("need 1…\(maxSeq - 1) tokens") }
        guard tokens.allSatisfy({ $0 >= 0 && Int($0) < config.vocabSize }) else { throw KilnError("token id outside the vocabulary") }
        let v = config.vocabSize
        var out = [Float](repeating: .nan, count: tokens.count * v)
        try forwardRows(prompts: [tokens], seqOffset: 0, onChunk: { start, rows, _ in
            var r = 0
            while r < rows {
                let m = min(16, rows - r)
                try self.gemm("logits", x: self.bytes(self.xn, row: r, width: self.config.hiddenSize), w: self.weights.output.address,
                              y: self.logits.address, m: m, n: v, k: self.config.hiddenSize, outF32: true, stream: self.stream)
                try self.stream.copy(from: self.logits.address, to: UnsafeMutableRawPointer(self.hostLogits.pointer), bytes: 4 * m * v)
                try self.stream.synchronize()
                out.withUnsafeMutableBufferPointer { o in
                    (o.baseAddress! + (start + r) * v).update(from: self.hostLogits.pointer, count: m * v)
                }
                r += m
            }
        }, onFinalChunk: { _, _ in })
        return out
    }
}
