import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnModels

/// The server's KV cache on the GPU: one pool of fixed-size blocks for every sequence, addressed through block tables
/// (the scheduler's, `KilnEngine/Serving`), so sequences of any length share the memory and full blocks of a common
/// prefix are computed once.
public struct PagedKVConfig: Sendable, Equatable {
    /// Tokens per block (a multiple of 16: the decode kernel reads 16-key tiles from one block).
    public var blockSize: Int
    /// Blocks in the pool (the scheduler's; the GPU keeps one more for padding rows).
    public var blocks: Int
    /// Sequences running at once: rows of a decode step, slots of the sampling state.
    public var maxSequences: Int
    /// Positions per sequence.
    public var contextLength: Int
    public init(blockSize: Int = 16, blocks: Int, maxSequences: Int, contextLength: Int) {
        self.blockSize = blockSize; self.blocks = blocks; self.maxSequences = maxSequences; self.contextLength = contextLength
    }
    /// Entries per block-table row: the blocks of a full-length sequence.
    public var tableStride: Int { (contextLength + blockSize - 1) / blockSize }

    /// Bytes of one block over every layer (keys and values, bf16).
    public static func bytesPerBlock(_ c: ModelConfig, blockSize: Int) -> Int { c.numLayers * 2 * c.numKVHeads * blockSize * c.headDim * 2 }
}

/// One step of the paged cache, in the row order the kernels need: the decode sequences first (one row each, batch
/// indices 0..<decodeRows, read by the paged decode kernel), then the prompt chunks, those that end their prompt (and
/// so sample) before those that do not. Logits come for the first `logitRows` sequences.
public struct PagedStep: Sendable, Equatable {
    public struct Chunk: Sendable, Equatable {
        /// The chunk's sequence (its row of the block table) and first token row.
        public var sequence: Int, firstRow: Int
        /// Rows, and the position of the first (= tokens already in the sequence's cache).
        public var count: Int, start: Int
        public init(sequence: Int, firstRow: Int, count: Int, start: Int) {
            self.sequence = sequence; self.firstRow = firstRow; self.count = count; self.start = start
        }
    }
    public var decodeRows: Int
    public var chunks: [Chunk]
    public var logitRows: Int
    public init(decodeRows: Int, chunks: [Chunk], logitRows: Int) {
        self.decodeRows = decodeRows; self.chunks = chunks; self.logitRows = logitRows
    }
    public var rows: Int { decodeRows + chunks.reduce(0) { $0 + $1.count } }
    public var sequences: Int { decodeRows + chunks.count }
}

/// How a step's next tokens are chosen: argmax (every row greedy without penalties, no log-probabilities), else the
/// sampling kernel with each slot's settings, optionally writing the top log-probabilities.
public enum PagedSelection: Hashable, Sendable { case argmax, sample, sampleWithLogprobs }

/// The paged cache's device buffers besides the pool (GPUModel's kCache/vCache).
struct PagedState {
    let config: PagedKVConfig
    let gather: KVPages
    /// [maxRows] int32 each: every token row's sequence (its table row) and position.
    let rowSeq: DeviceBuffer<Int32>, rowPos: DeviceBuffer<Int32>
    /// [maxSequences, tableStride] int32 block ids; [maxSequences] keys per decode sequence after this step's write;
    /// [maxSequences] the sampling slot of each logits row.
    let table: DeviceBuffer<Int32>, lens: DeviceBuffer<Int32>, slots: DeviceBuffer<Int32>
    /// One sequence's keys and values gathered for the prefill attention kernels: [kvHeads, contextLength, headDim].
    let kScratch: DeviceBuffer<UInt16>, vScratch: DeviceBuffer<UInt16>
    /// Log-probabilities of the sampled rows: f32 [maxSequences, 1 + 20], int32 [maxSequences, 20].
    let logprobValues: DeviceBuffer<Float>, logprobIds: DeviceBuffer<Int32>
    /// Host staging of one step's ids, row places, lengths, slots and table rows (pinned, for asynchronous copies).
    let staging: PinnedBuffer<Int32>
    let maxRows: Int
    /// The block padding rows write into and read from.
    var trashBlock: Int32 { Int32(config.blocks) }
    /// The sampling slot of padding rows (greedy, never a sequence's).
    var trashSlot: Int32 { Int32(config.maxSequences) }

    init(config: PagedKVConfig, model c: ModelConfig, library: KernelLibrary, maxRows: Int) throws {
        guard config.blockSize >= 16, config.blockSize % 16 == 0 else {
            throw KilnError("paged KV cache: block size \(config.blockSize) must be a multiple of 16 on the GPU")
        }
        guard config.blocks >= 1, config.maxSequences >= 1, config.contextLength >= 2 else {
            throw KilnError("paged KV cache: \(config.blocks) blocks, \(config.maxSequences) sequences, context \(config.contextLength)")
        }
        guard let ctx = library.context else { throw KilnError("paged KV cache needs a GPU context") }
        self.config = config; self.maxRows = maxRows
        gather = try KVPages(library)
        rowSeq = try DeviceBuffer(ctx, count: maxRows); rowPos = try DeviceBuffer(ctx, count: maxRows)
        table = try DeviceBuffer(ctx, count: config.maxSequences * config.tableStride)
        lens = try DeviceBuffer(ctx, count: config.maxSequences); slots = try DeviceBuffer(ctx, count: config.maxSequences)
        let scratch = c.numKVHeads * config.contextLength * c.headDim
        kScratch = try DeviceBuffer(ctx, count: scratch); vScratch = try DeviceBuffer(ctx, count: scratch)
        logprobValues = try DeviceBuffer(ctx, count: config.maxSequences * (1 + Sampling.maxTopLogprobs))
        logprobIds = try DeviceBuffer(ctx, count: config.maxSequences * Sampling.maxTopLogprobs)
        staging = try PinnedBuffer(ctx, count: 3 * maxRows + 2 * config.maxSequences + config.maxSequences * config.tableStride)
    }

    // Offsets of the staging areas (int32 elements).
    var idsAt: Int { 0 }
    var rowSeqAt: Int { maxRows }
    var rowPosAt: Int { 2 * maxRows }
    var lensAt: Int { 3 * maxRows }
    var slotsAt: Int { 3 * maxRows + config.maxSequences }
    var tableAt: Int { 3 * maxRows + 2 * config.maxSequences }
}

/// What the host writes for one step (filled by the serving engine, in `PagedStep` order).
public struct PagedStepInputs: Equatable {
    /// [rows] token ids, and each row's sequence and position.
    public var ids: [Int32] = [], rowSequence: [Int32] = [], rowPosition: [Int32] = []
    /// [sequences] keys after this step's write (read for decode sequences).
    public var lengths: [Int32] = []
    /// [logitRows] the sampling slot of each logits row.
    public var slots: [Int32] = []
    /// [sequences] each sequence's block ids.
    public var tables: [[Int32]] = []
    public init() {}
}

extension GPUModel {
    public var pagedConfig: PagedKVConfig? { paged?.config }

    /// Sets slot `slot`'s sampling (a request joined, or came back after preemption): its settings, its random stream at
    /// `step` draws, and the penalty state from `history` (prompt, then the `history.count − promptLength` generated).
    public func configureSlot(_ slot: Int, options: SamplingOptions, history: [Int32], promptLength: Int, step: Int) throws {
        guard let paged, slot >= 0, slot < paged.config.maxSequences else { throw KilnError("sampling slot \(slot) outside the paged cache's sequences") }
        _ = try setSamplingRow(slot, options: options, history: history, promptLength: promptLength, step: step)
    }

    /// Runs one step over the paged cache and returns the chosen next token of each of the first `step.logitRows`
    /// sequences (with `.sampleWithLogprobs`, their log-probabilities are then in `pagedLogprobs`). A step of decode rows
    /// only is replayed from a CUDA graph per batch bucket (padding rows go to a spare block and slot); others run eagerly.
    public func runPaged(_ step: PagedStep, inputs: PagedStepInputs, selection: PagedSelection) throws -> [Int32] {
        guard let paged else { throw KilnError("runPaged: this model has the static KV cache (load it with a paged configuration)") }
        let rows = step.rows, sequences = step.sequences
        guard rows >= 1, rows <= paged.maxRows, sequences <= paged.config.maxSequences, step.logitRows <= sequences,
              inputs.ids.count == rows, inputs.rowSequence.count == rows, inputs.rowPosition.count == rows,
              inputs.lengths.count == sequences, inputs.tables.count == sequences, inputs.slots.count == step.logitRows else {
            throw KilnError("paged step: \(rows) rows of \(sequences) sequences (at most \(paged.maxRows) and \(paged.config.maxSequences)) with inconsistent inputs")
        }
        // Pure decode: the bucket's graph, its padding rows pointed at the spare block and slot.
        let bucket = step.chunks.isEmpty ? GPUModel.pagedBucket(for: rows, max: paged.config.maxSequences) : rows
        let padding = bucket - rows
        let h = paged.staging
        func put(_ values: [Int32], at offset: Int) { for (i, v) in values.enumerated() { h[offset + i] = v } }
        put(inputs.ids + [Int32](repeating: 0, count: padding), at: paged.idsAt)
        put(inputs.rowSequence + (rows..<bucket).map(Int32.init), at: paged.rowSeqAt)
        put(inputs.rowPosition + [Int32](repeating: 0, count: padding), at: paged.rowPosAt)
        put(inputs.lengths + [Int32](repeating: 1, count: padding), at: paged.lensAt)
        put(inputs.slots + [Int32](repeating: paged.trashSlot, count: padding), at: paged.slotsAt)
        let stride = paged.config.tableStride
        for (j, t) in inputs.tables.enumerated() {
            guard t.count <= stride else { throw KilnError("paged step: sequence \(j) has \(t.count) blocks, the table holds \(stride)") }
            put(t, at: paged.tableAt + j * stride)
        }
        for j in sequences..<(sequences + padding) { h[paged.tableAt + j * stride] = paged.trashBlock }
        let n = sequences + padding
        func upload(_ offset: Int, _ count: Int, to dst: CUdeviceptr) throws {
            if count > 0 { try stream.copy(from: UnsafeRawPointer(h.pointer + offset), to: dst, bytes: 4 * count) }
        }
        try upload(paged.idsAt, bucket, to: ids.address)
        try upload(paged.rowSeqAt, bucket, to: paged.rowSeq.address)
        try upload(paged.rowPosAt, bucket, to: paged.rowPos.address)
        try upload(paged.lensAt, n, to: paged.lens.address)
        try upload(paged.slotsAt, step.logitRows + padding, to: paged.slots.address)
        // Table rows hold only the blocks in use; the rest of a row is never read.
        try upload(paged.tableAt, n * stride, to: paged.table.address)

        let logits = step.logitRows + padding
        if step.chunks.isEmpty {
            // The bucket's rows (padding included); its first step runs eagerly, so every kernel it needs is loaded (and
            // configured) outside a capture, and the next one is captured.
            let padded = PagedStep(decodeRows: bucket, chunks: [], logitRows: bucket)
            let key = PagedGraphKey(bucket: bucket, selection: selection)
            if let graph = pagedGraphs[key] {
                try graph.launch(on: stream)
            } else if pagedWarm.contains(key) {
                let graph = try Graph.capture(on: stream) { try enqueuePaged(padded, selection: selection) }.instantiate()
                pagedGraphs[key] = graph
                try graph.launch(on: stream)
            } else {
                try enqueuePaged(padded, selection: selection)
                pagedWarm.insert(key)
            }
        } else {
            try enqueuePaged(step, selection: selection)
        }
        if logits > 0 { try stream.copy(from: ids.address, to: UnsafeMutableRawPointer(hostInts.pointer), bytes: 4 * logits) }
        try stream.synchronize()
        return (0..<step.logitRows).map { hostInts[$0] }
    }

    /// The log-probabilities of the last `.sampleWithLogprobs` step's first `rows` logits rows: per row, the chosen
    /// token's and the `top` best (ids and values), as the sampling kernel wrote them (log-softmax of the penalized logits).
    public func pagedLogprobs(rows: Int, top: Int) throws -> [PagedLogprobs] {
        guard let paged, rows >= 0, rows <= paged.config.maxSequences, (0...Sampling.maxTopLogprobs).contains(top) else {
            throw KilnError("paged log-probabilities: \(rows) rows, top \(top)")
        }
        let k = Sampling.maxTopLogprobs
        var values = [Float](repeating: .nan, count: rows * (1 + k)), idsOut = [Int32](repeating: -1, count: rows * k)
        try values.withUnsafeMutableBytes { try stream.copy(from: paged.logprobValues.address, to: $0.baseAddress!, bytes: $0.count) }
        try idsOut.withUnsafeMutableBytes { try stream.copy(from: paged.logprobIds.address, to: $0.baseAddress!, bytes: $0.count) }
        try stream.synchronize()
        return (0..<rows).map { r in
            PagedLogprobs(chosen: values[r * (1 + k)], topIds: Array(idsOut[(r * k)..<(r * k + top)]),
                          topValues: Array(values[(r * (1 + k) + 1)..<(r * (1 + k) + 1 + top)]))
        }
    }

    /// The smallest decode batch bucket holding `rows` (graphs are captured per bucket): 1, 2, 4, 8, then multiples of 8
    /// up to 64, of 32 beyond; at most `max`.
    static func pagedBucket(for rows: Int, max: Int) -> Int {
        let b = rows <= 8 ? (rows <= 1 ? 1 : 1 << (Int.bitWidth - (rows - 1).leadingZeroBitCount))
            : rows <= 64 ? (rows + 7) / 8 * 8 : (rows + 31) / 32 * 32
        return Swift.min(b, max)
    }

    /// Enqueues one paged step: the Transformer over its rows, then the choice of the next tokens into `ids`.
    func enqueuePaged(_ step: PagedStep, selection: PagedSelection) throws {
        pass.mode = .paged(step)
        // The operations size their launches by the batch's rows; attention and logits follow `step` (pass.mode).
        let sequences = (0..<step.decodeRows).map { StepBatch.Sequence(id: $0, start: 0, count: 1) }
            + step.chunks.map { StepBatch.Sequence(id: $0.sequence, start: $0.start, count: $0.count) }
        try transformer.forward(self, StepBatch(sequences: sequences, logits: step.logitRows > 0 ? .last : .none))
        guard let paged, step.logitRows > 0 else { return }
        switch selection {
        case .argmax:
            try sampling.argmax(logits: logits.address, out: ids.address, rows: step.logitRows, cols: config.vocabSize, stream: stream)
        case .sample, .sampleWithLogprobs:
            let lp = selection == .sampleWithLogprobs
                ? Sampling.LogprobOutput(values: paged.logprobValues.address, ids: paged.logprobIds.address, count: Sampling.maxTopLogprobs) : nil
            try sampling.sample(logits: logits.address, rows: step.logitRows, vocab: config.vocabSize, params: samplingParams.address,
                                state: samplingState, out: ids.address, logprobs: lp, rowSlots: paged.slots.address, stream: stream)
        }
    }
}

struct PagedGraphKey: Hashable { var bucket: Int; var selection: PagedSelection }

/// One row's log-probabilities from the sampling kernel: the chosen token's, and the best ones (best first).
public struct PagedLogprobs: Sendable, Equatable {
    public var chosen: Float
    public var topIds: [Int32], topValues: [Float]
}

// MARK: the operations over the paged cache (called from GPUModel+Forward.swift)

extension GPUModel {
    func pagedPositionalEncoding(layer l: Int, rows: Int, paged: PagedState) throws {
        let c = config, lw = weights.layers[l]
        let (kc, vc) = cache(layer: l)
        try rope.paged(qkv: qkv.address, bias: lw.qkvBias?.address ?? 0, qNorm: lw.qNorm?.address ?? 0, kNorm: lw.kNorm?.address ?? 0,
                       eps: c.rmsNormEps, invFreq: weights.invFreq.address, kcache: kc, vcache: vc, rows: rows,
                       places: RoPECache.PagedRows(rowSeq: paged.rowSeq.address, rowPos: paged.rowPos.address, table: paged.table.address,
                                                   tableStride: paged.config.tableStride, page: paged.config.blockSize),
                       heads: c.numHeads, kvHeads: c.numKVHeads, headDim: c.headDim, ldqkv: qkvDim, stream: stream)
    }

    /// Decode rows through the paged decode kernel; each prompt chunk gathers its sequence's keys and values (the
    /// cached prefix and the chunk's own, written just before) and runs the prefill kernel over them.
    func pagedAttention(layer l: Int, step: PagedStep, paged: PagedState) throws {
        let c = config, stride = paged.config.tableStride, page = paged.config.blockSize
        let (kc, vc) = cache(layer: l)
        if step.decodeRows > 0 {
            let splits = Attention.defaultSplits(batch: step.decodeRows, kvHeads: c.numKVHeads, multiprocessors: context.info.multiprocessors)
            try attnDecode.paged(q: qkv.address, k: kc, v: vc, o: attn.address, workspace: attnWorkspace.address, counters: attnCounters.address,
                                 lens: paged.lens.address, table: paged.table.address, tableStride: stride, page: page, batch: step.decodeRows,
                                 heads: c.numHeads, kvHeads: c.numKVHeads, ldq: qkvDim, splits: splits, scale: c.attentionScale, stream: stream)
        }
        for chunk in step.chunks {
            let keys = chunk.start + chunk.count
            try paged.gather.gather(kPool: kc, vPool: vc, table: paged.table.address + UInt64(4 * chunk.sequence * stride),
                                    kOut: paged.kScratch.address, vOut: paged.vScratch.address, length: keys, kvHeads: c.numKVHeads,
                                    headDim: c.headDim, page: page, capacity: paged.config.contextLength, stream: stream)
            try attnPrefill(q: bytes(qkv, row: chunk.firstRow, width: qkvDim), k: paged.kScratch.address, v: paged.vScratch.address,
                            o: bytes(attn, row: chunk.firstRow, width: c.qDim), batch: 1, tokens: chunk.count, heads: c.numHeads,
                            kvHeads: c.numKVHeads, maxS: paged.config.contextLength, ldq: qkvDim, qStart: chunk.start, kvLen: keys,
                            scale: c.attentionScale, stream: stream)
        }
    }

    /// Logits of the step's first `logitRows` sequences: decode rows are their own last rows; each sampling chunk's last
    /// row is gathered after them.
    func pagedLogits(step: PagedStep) throws {
        let h = config.hiddenSize, v = config.vocabSize
        guard step.logitRows > 0 else { return }
        var input = xn.address
        if step.logitRows > step.decodeRows {
            if step.decodeRows > 0 { try stream.copy(from: xn.address, to: last.address, bytes: step.decodeRows * h * 2) }
            for (i, chunk) in step.chunks.prefix(step.logitRows - step.decodeRows).enumerated() {
                try stream.copy(from: bytes(xn, row: chunk.firstRow + chunk.count - 1, width: h), to: bytes(last, row: step.decodeRows + i, width: h),
                                bytes: h * 2)
            }
            input = last.address
        }
        try gemm("logits", x: input, w: weights.output.address, y: logits.address, m: step.logitRows, n: v, k: h, outF32: true, stream: stream)
    }
}

// MARK: sizing the pool

extension GPUModel {
    /// A model over the server's paged cache with the pool sized from the GPU's free memory after the weights: the
    /// activations for `maxRows` rows and `sequences` logits rows, then `headroom` bytes (the CUDA context's own use,
    /// graphs, the penalty buffers made on first use), then as many blocks as fit — at least one sequence's context, at
    /// most every sequence's (`kvBlocks` overrides). Logs what it chose.
    public static func paged(weights: GPUWeights, library: KernelLibrary, sequences: Int, context: Int, maxRows: Int, blockSize: Int = 16,
                             kvBlocks: Int? = nil, headroom: Int = 2 << 30, tune: TuneTable? = nil,
                             options: GPUEngineOptions = GPUEngineOptions(), log: @escaping (String) -> Void = { _ in }) throws -> GPUModel {
        guard let ctx = library.context else { throw KilnError("paged GPU model needs a GPU context") }
        let c = weights.config
        guard context >= 2, context <= c.contextLength else { throw KilnError("context \(context) outside 2…\(c.contextLength) (the model's)") }
        let perBlock = PagedKVConfig.bytesPerBlock(c, blockSize: blockSize)
        let stride = (context + blockSize - 1) / blockSize
        let blocks: Int
        if let kvBlocks {
            blocks = kvBlocks
        } else {
            let free = try ctx.memoryInfo().free
            let activations = GPUMemoryPlan.activationBytes(c, denseScratch: max(weights.largestFP8Matrix, weights.largestLUTMatrix), maxRows: maxRows,
                                                            maxBatch: sequences + 1, context: context)
            let budget = free - activations - headroom
            blocks = min(sequences * stride, budget / perBlock)
            guard blocks >= stride else {
                throw KilnError("the KV cache does not fit: \(free >> 20) MiB free after the weights leaves room for \(max(0, blocks)) blocks of \(blockSize) positions, one sequence of \(context) needs \(stride) (lower -c/--context or --token-budget)")
            }
        }
        let config = PagedKVConfig(blockSize: blockSize, blocks: blocks, maxSequences: sequences, contextLength: context)
        log(String(format: "paged KV cache: %d blocks of %d positions (%.2f GiB, %d tokens), %d sequences of up to %d positions", blocks, blockSize,
                   Double((blocks + 1) * perBlock) / Double(1 << 30), blocks * blockSize, sequences, context))
        return try GPUModel(weights: weights, library: library, maxRows: maxRows, tune: tune, options: options, paged: config, log: log)
    }
}
