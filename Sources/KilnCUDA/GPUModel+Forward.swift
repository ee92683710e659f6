import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnModels

/// The GPU backend's operations of the one `Transformer` definition. How each runs here:
///   rmsNorm            rmsnorm.cu; after the first, x += branch is fused into it (ResidualRMSNorm)
///   linear             the GEMM the tuning table picks for (op, M, N, K); SwiGLU in the gate_up GEMM's epilogue
///                      when the kernel has one and gate_up rows are interleaved, else a GEMM and swiglu.cu
///   positionalEncoding rope_cache.cu: bias, q/k norm (qwen3), RoPE and the k/v cache write in one kernel
///   attention          attention_hopper.cu / attention.cu (prefill), attention_decode.cu (decode)
///   logits             the fp32-output GEMM over the rows that need logits
/// Granite's multipliers are folded into the weights at load (GPUWeights), so they cost nothing here.
extension GPUModel: DecoderOperations {
    /// How the attention kernels of the pass in progress address the cache.
    enum AttentionMode {
        /// `batch` sequences (seqOffset…) of `tokens` rows each, starting at position qStart.
        case prefill(batch: Int, tokens: Int, qStart: Int, seqOffset: Int)
        /// One row per sequence 0..<batch; positions and lengths come from the device buffers.
        case decode(batch: Int)
        /// The server's paged cache (GPUModel+Paged.swift): decode rows and prompt chunks of many sequences.
        case paged(PagedStep)
    }

    /// The pass in progress: its attention mode and where its logits go.
    struct Pass {
        var mode = AttentionMode.decode(batch: 1)
        /// Teacher forcing: every row's logits are copied to this host array from row `hostRow` on.
        var hostLogits: UnsafeMutablePointer<Float>? = nil
        var hostRow = 0
    }

    func bytes(_ b: DeviceBuffer<UInt16>, row: Int, width: Int) -> CUdeviceptr { b.address + UInt64(row * width * 2) }
    /// Layer `l`'s K and V caches ([maxBatch, kvHeads, maxSeq, headDim] bf16 each).
    func cache(layer l: Int) -> (k: CUdeviceptr, v: CUdeviceptr) {
        let offset = UInt64(l * layerCacheElements * 2)
        return (kCache.address + offset, vCache.address + offset)
    }

    public func embed(_ batch: StepBatch) throws {
        try embed(table: weights.embedding.address, ids: ids.address, out: x.address, tokens: batch.rows, dim: config.hiddenSize,
                  vocab: config.vocabSize, stream: stream)
    }

    public func rmsNorm(_ weight: WeightName, addingBranch: Bool, _ batch: StepBatch) throws {
        let w: DeviceBuffer<UInt16>
        switch weight {
        case .norm(layer: let l, .attention): w = weights.layers[l].attnNorm
        case .norm(layer: let l, .ffn): w = weights.layers[l].ffnNorm
        case .outputNorm: w = weights.outputNorm
        default: throw KilnError("rmsNorm: \(weight) is not a hidden-state norm")
        }
        let m = batch.rows, h = config.hiddenSize, eps = config.rmsNormEps
        // The linear layer that reads xn next (qkv after the attention norm, gate_up after the FFN norm): when it is FP8
        // and reads quantized activations, the norm writes them too (`normQuantizes`) and `project` skips the quantizer.
        var fp8Out: RMSNorm.FP8Output? = nil
        if case .norm(layer: let l, let which) = weight, let fp8,
           normQuantizes(which == .attention ? weights.layers[l].qkv : weights.layers[l].gateUp, m: m) {
            fp8Out = RMSNorm.FP8Output(codes: fp8.act.address, scales: fp8.scales.address)
        }
        if addingBranch {
            try resNorm(x: branch.address, residual: x.address, weight: w.address, y: xn.address, rows: m, cols: h, eps: eps, fp8: fp8Out,
                        stream: stream)
        } else {
            try norm(x: x.address, weight: w.address, y: xn.address, rows: m, cols: h, eps: eps, fp8: fp8Out, stream: stream)
        }
    }

    /// Whether the norm in front of linear layer `w` (which reads xn) quantizes for it: `w` is FP8 and these rows go to
    /// gemm_fp8_hopper (`fp8Prefill`, m > 16). Not at decode sizes: there the norm is a grid of m blocks whose length
    /// is the step's critical path, and the quantization in it cost more than the separate launch it saves (H100,
    /// Llama-3-8B FP8 bs 2: 3.808 ms/step fused against 3.731 separate; prefill 2 × 512: 24.43 ms against 24.74).
    func normQuantizes(_ w: GPUMatrix, m: Int) -> Bool {
        guard case .fp8 = w, norm.fusesFP8, m > 16, fp8Prefill else { return false }
        return true
    }

    /// Whether the SwiGLU kernel in front of the down projection `w` writes its output as FP8 activations for it
    /// (swiglu_rows_fp8), as the norms do for qkv and gate_up (`normQuantizes`): `w` is FP8 and these rows go to
    /// gemm_fp8_hopper (m > 16). Decode's SwiGLU is the gate_up GEMM's epilogue, whose CTAs each hold a slice of a row's
    /// 128-feature blocks, so its down projection keeps the separate quantizer.
    func swigluQuantizes(_ w: GPUMatrix, m: Int) -> Bool {
        guard case .fp8 = w, options.fusedFP8SwiGLUQuant, m > 16, fp8Prefill, SwiGLU.quantizes(ffn: config.intermediateSize) else { return false }
        return true
    }

    public func linear(_ weight: WeightName, from input: Activation, to output: Activation, epilogue: LinearEpilogue, _ batch: StepBatch) throws {
        guard case .linear(layer: let l, let layer) = weight else { throw KilnError("linear: \(weight) is not a linear layer") }
        let lw = weights.layers[l], m = batch.rows, c = config, op = layer.rawValue
        switch (layer, epilogue) {
        case (.qkv, .none):
            try project(op, x: xn.address, w: lw.qkv, y: qkv.address, m: m, n: qkvDim, k: c.hiddenSize)
        case (.o, .none):
            try project(op, x: attn.address, w: lw.o, y: branch.address, m: m, n: c.hiddenSize, k: c.qDim)
        case (.gateUp, .swiglu):
            let f = c.intermediateSize, n = 2 * f
            // SwiGLU in the gate_up GEMM's epilogue (the decode path): act directly, no gate_up round trip. It needs the
            // interleaved rows and a kernel with the epilogue: every gemm_fp8 instance has it, the bf16 table's choice may not.
            let fused: Bool
            switch lw.gateUp {
            case .bf16: fused = gemm.choose(op: op, m: m, n: n, k: c.hiddenSize, outF32: false).hasSwiGLUEpilogue
            case .fp8, .lut: fused = m <= 16
            }
            if options.fusedSwiGLUEpilogue, weights.gateUpInterleaved, fused {
                try project(op, x: xn.address, w: lw.gateUp, y: act.address, m: m, n: n, k: c.hiddenSize, epilogue: .swiglu)
            } else {
                try project(op, x: xn.address, w: lw.gateUp, y: gateUp.address, m: m, n: n, k: c.hiddenSize)
                if swigluQuantizes(lw.down, m: m), let fp8 {
                    // down reads the FP8 activations this writes (`project` skips its quantizer); `act` is not written.
                    try swiglu.quantized(gateUp: gateUp.address, codes: fp8.act.address, scales: fp8.scales.address, rows: m, ffn: f,
                                         interleaved: weights.gateUpInterleaved, stream: stream)
                } else {
                    try swiglu(gateUp: gateUp.address, out: act.address, rows: m, ffn: f, interleaved: weights.gateUpInterleaved, stream: stream)
                }
            }
        case (.down, .none):
            try project(op, x: act.address, w: lw.down, y: branch.address, m: m, n: c.hiddenSize, k: c.intermediateSize)
        default: throw KilnError("linear: the GPU backend has no \(op) with the \(epilogue) epilogue")
        }
    }

    /// y = x · Wᵀ for a linear layer in its format: bf16 through the tuned GEMMs; FP8 through the activation quantizer
    /// and then gemm_fp8 at m ≤ 16 (decode) or, with `fp8PrefillKernel`, gemm_fp8_hopper (prefill, chunks included; else
    /// prefill dequantizes the layer into the bf16 scratch for the bf16 GEMMs); lookup tables through gemm_lut at m ≤ 16,
    /// else gemm_lut_hopper on the permuted activations (`lutPrefillKernel`) or dequantized (kiln_lut{B}_dequant) likewise.
    func project(_ op: String, x: CUdeviceptr, w: GPUMatrix, y: CUdeviceptr, m: Int, n: Int, k: Int, epilogue: GemmSplitK.Epilogue = .bf16) throws {
        switch w {
        case .bf16(let b):
            try gemm(op, x: x, w: b.address, y: y, m: m, n: n, k: k, epilogue: epilogue, stream: stream)
        case let .fp8(codes, scale8):
            guard let fp8 else { throw KilnError("linear \(op): FP8 weights without the FP8 scratch (GPUModel.init makes it)") }
            // xn's (act's) quantized copy is already in the scratch when the norm (SwiGLU) wrote it (`normQuantizes`, `swigluQuantizes`).
            let quantized = (x == xn.address && normQuantizes(w, m: m)) || (x == act.address && swigluQuantizes(w, m: m))
            if m <= 16 {
                if !quantized { try fp8.quantize(x: x, xq: fp8.act.address, xs: fp8.scales.address, m: m, k: k, stream: stream) }
                try gemm.fp8(op, xq: fp8.act.address, xs: fp8.scales.address, w: codes.address, scale8: scale8.address, y: y, m: m, n: n, k: k,
                             epilogue: epilogue, stream: stream)
            } else if fp8Prefill, epilogue == .bf16 {
                if !quantized { try fp8.quantize(x: x, xq: fp8.act.address, xs: fp8.scales.address, m: m, k: k, stream: stream) }
                try gemm.fp8Prefill(op, xq: fp8.act.address, xs: fp8.scales.address, w: codes.address, scale8: scale8.address, y: y,
                                    m: m, n: n, k: k, stream: stream)
            } else {
                guard let dense = fp8.dense else { throw KilnError("linear \(op): no FP8 prefill kernel for the \(epilogue) epilogue") }
                try fp8.dequantize(w: codes.address, scale8: scale8.address, y: dense.address, n: n, k: k, stream: stream)
                try gemm(op, x: x, w: dense.address, y: y, m: m, n: n, k: k, epilogue: epilogue, stream: stream)
            }
        case .lut(let l):
            guard let lut else { throw KilnError("linear \(op): lookup-table weights without the LUT scratch (GPUModel.init makes it)") }
            if m <= 16 {
                try gemm.lut(op, x: x, w: l, y: y, m: m, epilogue: epilogue, stream: stream)
                return
            }
            switch lut {
            case let .kernel(permute, permuted):
                guard epilogue == .bf16 else { throw KilnError("linear \(op): gemm_lut_hopper has no \(epilogue) epilogue") }
                try permute(x: x, xPermuted: permuted.address, m: m, k: k, stream: stream)
                try gemm.lutPrefill(op, xPermuted: permuted.address, w: l, y: y, m: m, stream: stream)
            case let .dequantize(dequantize, dense):
                try dequantize(codes: l.codes.address, scales: l.scales.address, offsets: l.offsets?.address ?? 0, table: l.table.address,
                               y: dense.address, n: n, k: k, group: l.format.groupSize, bits: l.format.bits, stream: stream)
                try gemm(op, x: x, w: dense.address, y: y, m: m, n: n, k: k, epilogue: epilogue, stream: stream)
            }
        }
    }

    public func positionalEncoding(layer l: Int, _ batch: StepBatch) throws {
        let c = config, lw = weights.layers[l]
        let (kc, vc) = cache(layer: l)
        let (rows, tokensPerSeq, seqOffset): (Int, Int, Int)
        switch pass.mode {
        case let .prefill(b, tokens, _, offset): (rows, tokensPerSeq, seqOffset) = (b * tokens, tokens, offset)
        case let .decode(b): (rows, tokensPerSeq, seqOffset) = (b, 1, 0)
        case .paged(let step):
            guard let paged else { throw KilnError("a paged pass without the paged cache") }
            return try pagedPositionalEncoding(layer: l, rows: step.rows, paged: paged)
        }
        try rope(qkv: qkv.address, bias: lw.qkvBias?.address ?? 0, qNorm: lw.qNorm?.address ?? 0, kNorm: lw.kNorm?.address ?? 0,
                 eps: c.rmsNormEps, positions: positions.address, invFreq: weights.invFreq.address, kcache: kc, vcache: vc,
                 rows: rows, tokensPerSeq: tokensPerSeq, seqOffset: seqOffset, heads: c.numHeads, kvHeads: c.numKVHeads,
                 headDim: c.headDim, ldqkv: qkvDim, maxSeq: maxSeq, stream: stream)
    }

    public func attention(layer l: Int, _ batch: StepBatch) throws {
        let c = config
        let (kc, vc) = cache(layer: l)
        switch pass.mode {
        case let .prefill(b, tokens, qStart, seqOffset):
            let seqBytes = UInt64(seqOffset * c.numKVHeads * maxSeq * c.headDim * 2)
            try attnPrefill(q: qkv.address, k: kc + seqBytes, v: vc + seqBytes, o: attn.address, batch: b, tokens: tokens,
                            heads: c.numHeads, kvHeads: c.numKVHeads, maxS: maxSeq, ldq: qkvDim, qStart: qStart,
                            kvLen: qStart + tokens, scale: c.attentionScale, stream: stream)
        case let .decode(b):
            try attnDecode(q: qkv.address, k: kc, v: vc, o: attn.address, workspace: attnWorkspace.address, counters: attnCounters.address,
                           lens: lens.address, batch: b, heads: c.numHeads, kvHeads: c.numKVHeads, maxS: maxSeq, ldq: qkvDim,
                           splits: decodeSplits, scale: c.attentionScale, stream: stream)
        case .paged(let step):
            guard let paged else { throw KilnError("a paged pass without the paged cache") }
            try pagedAttention(layer: l, step: step, paged: paged)
        }
    }

    public func logits(_ batch: StepBatch) throws {
        let h = config.hiddenSize, v = config.vocabSize
        if let host = pass.hostLogits {
            // Teacher forcing: every row, 16 at a time (the fp32 logits buffer holds 16 rows), copied out as it goes.
            let rows = batch.rows
            var r = 0
            while r < rows {
                let m = min(16, rows - r)
                try gemm("logits", x: bytes(xn, row: r, width: h), w: weights.output.address, y: logits.address, m: m, n: v, k: h,
                         outF32: true, stream: stream)
                try stream.copy(from: logits.address, to: UnsafeMutableRawPointer(hostLogits.pointer), bytes: 4 * m * v)
                try stream.synchronize()
                (host + (pass.hostRow + r) * v).update(from: hostLogits.pointer, count: m * v)
                r += m
            }
            pass.hostRow += rows
            return
        }
        switch pass.mode {
        case .paged(let step):
            try pagedLogits(step: step)
        case .decode(let b):
            try gemm("logits", x: xn.address, w: weights.output.address, y: logits.address, m: b, n: v, k: h, outF32: true, stream: stream)
        case let .prefill(b, tokens, _, seqOffset):
            // The last row of each sequence of this chunk, gathered into `last` rows seqOffset…, then their logits.
            for i in 0..<b {
                try stream.copy(from: bytes(xn, row: i * tokens + tokens - 1, width: h), to: bytes(last, row: seqOffset + i, width: h), bytes: h * 2)
            }
            try gemm("logits", x: bytes(last, row: seqOffset, width: h), w: weights.output.address,
                     y: logits.address + UInt64(4 * seqOffset * v), m: b, n: v, k: h, outF32: true, stream: stream)
        }
    }
}

// MARK: passes

extension GPUModel {
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
        guard prompts.joined().allSatisfy({ $0 >= 0 && Int($0) < vocabularySize }) else { throw KilnError("token id outside the vocabulary (0…\(vocabularySize - 1))") }
        let groups: [Range<Int>] = Set(prompts.map(\.count)).count == 1 ? [0..<b] : (0..<b).map { $0..<($0 + 1) }
        for g in groups { try forwardRows(prompts: Array(prompts[g]), seqOffset: g.lowerBound, from: 0) }
        try chooseNext(batch: b, sampled: deviceSampled[0..<b].contains(true))
        for s in 0..<b { sequenceLengths[s] = prompts[s].count }
        // Decode state: the next row of sequence s sits at position len(s) and sees len(s) + 1 keys.
        try stage(prompts.map { Int32($0.count) }, to: positions.address, hostOffset: maxRows)
        try stage(prompts.map { Int32($0.count + 1) }, to: lens.address, hostOffset: maxRows + maxBatch)
        try stream.copy(from: ids.address, to: UnsafeMutableRawPointer(hostInts.pointer), bytes: 4 * b)
        try stream.synchronize()
        return (0..<b).map { hostInts[$0] }
    }

    /// Prefill body shared by `prefill`, `extend` and `logits(tokens:)`: runs every chunk of the equal-length sequences
    /// seqOffset…, whose caches already hold `first` tokens, through the Transformer (the logits operation gathers what
    /// the pass asks for).
    func forwardRows(prompts: [[Int32]], seqOffset: Int, from first: Int) throws {
        let b = prompts.count, n = prompts[0].count
        let chunk = max(1, maxRows / b)
        var done = 0
        while done < n {
            let t = min(chunk, n - done), rows = b * t, start = first + done
            try stage(prompts.flatMap { $0[done..<(done + t)] }, to: ids.address, hostOffset: 0)
            // The rope kernel reads positions[seqOffset + i] for the first row of sequence i of this chunk.
            try stage(Array(repeating: Int32(start), count: b), to: positions.address + UInt64(4 * seqOffset), hostOffset: maxRows)
            pass.mode = .prefill(batch: b, tokens: t, qStart: start, seqOffset: seqOffset)
            let final = done + t >= n
            let batch = StepBatch(sequences: (0..<b).map { StepBatch.Sequence(id: seqOffset + $0, start: start, count: t) },
                                  logits: pass.hostLogits != nil ? .all : final ? .last : .none)
            precondition(batch.rows == rows)
            try runForward(batch)
            done += t
        }
    }

    /// Appends `tokens` to sequence `s` (after the `sequenceLengths[s]` tokens its cache holds: a chat's next turn) and
    /// returns its next token (greedy, or drawn on the device after `configureSampling`); its logits stay in row s of the
    /// logits buffer and the next decode step feeds the token.
    public func extend(sequence s: Int, with tokens: [Int32]) throws -> Int32 {
        guard s >= 0, s < maxBatch else { throw KilnError("sequence \(s) outside 0…\(maxBatch - 1)") }
        let first = sequenceLengths[s]
        guard !tokens.isEmpty, first + tokens.count < maxSeq else {
            throw KilnError("context limit reached: \(first) + \(tokens.count) tokens exceed the context of \(maxSeq - 1) tokens")
        }
        guard tokens.allSatisfy({ $0 >= 0 && Int($0) < vocabularySize }) else { throw KilnError("token id outside the vocabulary (0…\(vocabularySize - 1))") }
        try forwardRows(prompts: [tokens], seqOffset: s, from: first)
        let v = UInt64(4 * vocabularySize)
        if deviceSampled[s] {
            // The sampling kernel indexes its settings and state by launch row, so it runs rows 0…s; the rows before s
            // would draw again (advancing their streams), which only sequence 0 avoids.
            guard s == 0 else { throw KilnError("device sampling after a prefill is supported for sequence 0 only (asked for \(s))") }
            try chooseNext(batch: 1, sampled: true)
        } else {
            try sampling.argmax(logits: samplingLogits + UInt64(s) * v, out: ids.address + UInt64(4 * s), rows: 1, cols: vocabularySize, stream: stream)
        }
        try setLength(sequence: s, first + tokens.count)
        try stream.copy(from: ids.address + UInt64(4 * s), to: UnsafeMutableRawPointer(hostInts.pointer), bytes: 4)
        try stream.synchronize()
        return hostInts[0]
    }

    /// Forgets the positions of sequence `s` from `n` on (a conversation rewound to its common prefix).
    public func truncate(sequence s: Int, to n: Int) throws {
        guard s >= 0, s < maxBatch, n >= 0 else { throw KilnError("truncate: sequence \(s) or length \(n) out of range") }
        try setLength(sequence: s, min(n, sequenceLengths[s]))
    }

    /// The host's and the decode graph's view of sequence `s`'s length: the next row sits at position n and sees n + 1 keys.
    private func setLength(sequence s: Int, _ n: Int) throws {
        sequenceLengths[s] = n
        try stage([Int32(n)], to: positions.address + UInt64(4 * s), hostOffset: maxRows)
        try stage([Int32(n + 1)], to: lens.address + UInt64(4 * s), hostOffset: maxRows + maxBatch)
    }

    /// Teacher-forced logits of every position of one sequence (fp32 [tokens, vocab]), for correctness
    /// checks against other implementations. Uses cache slot 0.
    public func logits(tokens: [Int32]) throws -> [Float] {
        guard !tokens.isEmpty, tokens.count < maxSeq else { throw KilnError("need 1…\(maxSeq - 1) tokens") }
        guard tokens.allSatisfy({ $0 >= 0 && Int($0) < vocabularySize }) else { throw KilnError("token id outside the vocabulary") }
        var out = [Float](repeating: .nan, count: tokens.count * config.vocabSize)
        try out.withUnsafeMutableBufferPointer { o in
            pass.hostLogits = o.baseAddress; pass.hostRow = 0
            defer { pass.hostLogits = nil }
            try forwardRows(prompts: [tokens], seqOffset: 0, from: 0)
        }
        return out
    }
}
