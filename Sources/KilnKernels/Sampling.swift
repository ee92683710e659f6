import KilnCore
import KilnGPU

/// sampling.cu: greedy argmax, and sampling with per-row settings in the CPU Sampler's semantics (penalties, top-k,
/// top-p and min-p at temperature 1, temperature, one draw), on the device, so only ids cross to the host.
///
/// What the caller allocates for `sample` (R rows, V vocabulary):
///   - `params`: `RowParams` [R] (device; fill with `RowParams(options)` and upload; may change between launches,
///     also between replays of a captured graph, since the kernel reads it from device memory);
///   - `state`: a `SamplingState` (per-row step counters, and the penalty buffers when asked for);
///   - `out`: int32 [R], the sampled ids (the next step's input ids);
///   - optionally `logprobs`: f32 [R, 1 + N] and int32 [R, N] for N <= 20 top log-probabilities.
public struct Sampling {
    public static let file = "sampling.cu"
    public static let instances = [KernelInstance(file, "kiln::argmax", hot: true), KernelInstance(file, "kiln::sample", hot: true)]
    /// The most top log-probabilities one launch returns per row.
    public static let maxTopLogprobs = 20

    /// One row's settings: `SampleRowParams` in sampling.cu, field for field (40 bytes).
    public struct RowParams: Equatable {
        public var temperature: Float        // <= 0: greedy
        public var topK: Int32               // <= 0 or >= vocab: the whole vocabulary
        public var topP: Float               // >= 1: off
        public var minP: Float               // <= 0: off
        public var repeatPenalty: Float      // 1: off
        public var repeatLastN: Int32        // the repetition window; < 0: the whole history; 0: off
        public var presencePenalty: Float
        public var frequencyPenalty: Float
        public var seed: UInt64

        /// The same settings the CPU `Sampler` applies for `options`.
        public init(_ options: SamplingOptions) {
            temperature = options.temperature
            topK = Int32(clamping: options.topK)
            topP = options.topP; minP = options.minP
            repeatPenalty = options.repeatPenalty
            repeatLastN = Int32(clamping: options.repeatLastN)
            presencePenalty = options.presencePenalty; frequencyPenalty = options.frequencyPenalty
            seed = options.seed
        }

        /// Whether the row needs the penalty buffers of a `SamplingState`.
        public var hasPenalties: Bool { (repeatPenalty != 1 && repeatLastN != 0) || presencePenalty != 0 || frequencyPenalty != 0 }
        /// Whether its next token needs the `sample` kernel: a draw, or penalties; else argmax gives the same token.
        public var needsSampleKernel: Bool { temperature > 0 || hasPenalties }
    }

    /// One row's progress: `SampleRowState` in sampling.cu (16 bytes). The kernel advances it every launch.
    public struct RowState: Equatable {
        /// Draws made: with the seed, the position in the row's random stream.
        public var step: UInt64
        /// The ring's next slot (its oldest token once full).
        public var recentPosition: Int32
        var reserved: Int32 = 0
        public init(step: UInt64, recentPosition: Int32) { self.step = step; self.recentPosition = recentPosition }
    }

    /// Where the log-probabilities go: `values` f32 [rows, 1 + count] (the chosen token's, then the `count` highest,
    /// best first) and `ids` int32 [rows, count]. Log-softmax of the penalized logits at temperature 1.
    public struct LogprobOutput {
        public var values: CUdeviceptr, ids: CUdeviceptr, count: Int
        public init(values: CUdeviceptr, ids: CUdeviceptr, count: Int) { self.values = values; self.ids = ids; self.count = count }
    }

    struct ArgmaxParams { var logits: UInt64; var out: UInt64; var rows: Int32; var cols: Int32 }
    struct SampleParams {
        var logits, params, state, out, logprobs, topIds, counts, recentCounts, recent, support: UInt64
        var logitsStride: Int64
        var rows, vocab, topLogprobs, recentCapacity: Int32
        var rowSlots: UInt64
    }

    let argmaxKernel: Kernel, sampleKernel: Kernel
    /// `defines` lets the self-test of `kiln check` build the deliberately wrong variant (KILN_BREAK).
    public init(_ library: KernelLibrary, defines: [String: String] = [:]) throws {
        argmaxKernel = try library.kernel(Sampling.file, "kiln::argmax", defines: defines)
        sampleKernel = try library.kernel(Sampling.file, "kiln::sample", defines: defines)
    }

    /// out[r] = index of the largest logit of row r (lowest index on ties; NaN ignored). out: int32 [rows].
    public func argmax(logits: CUdeviceptr, out: CUdeviceptr, rows: Int, cols: Int, stream: GPUStream) throws {
        guard rows > 0 else { return }
        try argmaxKernel.launch(grid: (rows, 1, 1), block: (1024, 1, 1), stream: stream,
                                ArgmaxParams(logits: logits, out: out, rows: Int32(rows), cols: Int32(cols)))
    }

    /// Samples one token per row of `logits` (f32 [rows, vocab]) with that row's `params` (RowParams [rows]) and
    /// writes it to `out` (int32 [rows]); advances `state`. Only device addresses are captured, so it can sit in
    /// a CUDA graph: new settings are uploaded to `params` between replays.
    /// `logitsStride`: elements between rows (default vocab; 0 makes every row read row 0, for many draws of one row).
    /// `support`: int32 [rows, 2] or 0: the kept set's size and its lowest-ranked id (what `kiln check` compares).
    /// `rowSlots`: int32 [rows] or 0: row r uses the settings (`params`) and state of slot rowSlots[r] (< state.rows), for
    /// sequences that change rows between steps (the server); 0: row r uses slot r.
    public func sample(logits: CUdeviceptr, rows: Int, vocab: Int, params: CUdeviceptr, state: SamplingState, out: CUdeviceptr,
                       logprobs: LogprobOutput? = nil, logitsStride: Int? = nil, support: CUdeviceptr = 0, rowSlots: CUdeviceptr = 0,
                       stream: GPUStream) throws {
        guard rows > 0 else { return }
        guard rowSlots != 0 || rows <= state.rows, vocab == state.vocab else {
            throw KilnError("sampling \(rows) rows of vocabulary \(vocab) with a state made for \(state.rows) rows of \(state.vocab)")
        }
        if let lp = logprobs, !(0...Sampling.maxTopLogprobs).contains(lp.count) {
            throw KilnError("top log-probabilities: \(lp.count) asked for, at most \(Sampling.maxTopLogprobs)")
        }
        let p = SampleParams(logits: logits, params: params, state: state.rowState.address, out: out,
                             logprobs: logprobs?.values ?? 0, topIds: logprobs?.ids ?? 0,
                             counts: state.counts?.address ?? 0, recentCounts: state.recentCounts?.address ?? 0,
                             recent: state.recent?.address ?? 0, support: support, logitsStride: Int64(logitsStride ?? vocab),
                             rows: Int32(rows), vocab: Int32(vocab), topLogprobs: Int32(logprobs?.count ?? 0),
                             recentCapacity: Int32(state.recentCapacity), rowSlots: rowSlots)
        try sampleKernel.launch(grid: (rows, 1, 1), block: (1024, 1, 1), stream: stream, p)
    }
}

/// The device state of sampling for up to `rows` sequences: per-row step counters (the random streams) and, with
/// `penalties`, the generated-token counts (presence/frequency) and the repetition window (a count per token and a
/// ring of the last `recentCapacity` tokens). Memory with penalties: rows × (2·vocab + recentCapacity) × 4 bytes.
public final class SamplingState {
    public let rows: Int, vocab: Int, recentCapacity: Int
    public let rowState: DeviceBuffer<Sampling.RowState>   // [rows]
    public let counts: DeviceBuffer<Int32>?                // [rows, vocab]: generated tokens
    public let recentCounts: DeviceBuffer<Int32>?          // [rows, vocab]: occurrences in the repetition window
    public let recent: DeviceBuffer<Int32>?                // [rows, recentCapacity]: the window's ring, -1 = empty

    public init(context: Context, rows: Int, vocab: Int, penalties: Bool, recentCapacity: Int = 64) throws {
        guard rows > 0, vocab > 0, recentCapacity >= 0 else {
            throw KilnError("sampling state: \(rows) rows, vocabulary \(vocab), window \(recentCapacity)")
        }
        self.rows = rows; self.vocab = vocab; self.recentCapacity = penalties ? recentCapacity : 0
        rowState = try DeviceBuffer(context, [Sampling.RowState](repeating: .init(step: 0, recentPosition: 0), count: rows))
        counts = penalties ? try DeviceBuffer(context, [Int32](repeating: 0, count: rows * vocab)) : nil
        recentCounts = penalties ? try DeviceBuffer(context, [Int32](repeating: 0, count: rows * vocab)) : nil
        recent = penalties && recentCapacity > 0 ? try DeviceBuffer(context, [Int32](repeating: -1, count: rows * recentCapacity)) : nil
    }

    /// Starts row `row` as a sequence whose tokens so far are `history` (the prompt's `promptLength`, default all of
    /// it, then any generated ones, as the CPU `Sampler` takes them): random stream at `step`, the generated tokens
    /// counted, and the repetition window holding the last `repeatLastN` tokens of `history` (all of it when < 0).
    /// `repeatLastN` must be the row's `RowParams.repeatLastN` (the kernel's ring length). Synchronous (set-up).
    public func reset(row: Int, history: [Int32] = [], promptLength: Int? = nil, repeatLastN: Int = 0, step: UInt64 = 0) throws {
        guard (0..<rows).contains(row) else { throw KilnError("sampling state: row \(row) outside 0..<\(rows)") }
        guard history.allSatisfy({ $0 >= 0 && Int($0) < vocab }) else {
            throw KilnError("sampling state: a history token outside the vocabulary of \(vocab)")
        }
        let window = repeatLastN < 0 ? history[...] : history.suffix(repeatLastN)
        if let counts, let recentCounts {
            guard repeatLastN <= recentCapacity else {
                throw KilnError("repetition window of \(repeatLastN) tokens; the sampling state holds \(recentCapacity)")
            }
            var generated = [Int32](repeating: 0, count: vocab)
            for t in history.dropFirst(min(history.count, max(0, promptLength ?? history.count))) { generated[Int(t)] += 1 }
            try generated.withUnsafeBytes { try counts.upload(bytes: $0, atByte: row * vocab * 4) }
            var occurrences = [Int32](repeating: 0, count: vocab)
            for t in window { occurrences[Int(t)] += 1 }
            try occurrences.withUnsafeBytes { try recentCounts.upload(bytes: $0, atByte: row * vocab * 4) }
            if let recent {
                var ring = [Int32](repeating: -1, count: recentCapacity)
                if repeatLastN > 0 { for (i, t) in window.enumerated() { ring[i] = t } }
                try ring.withUnsafeBytes { try recent.upload(bytes: $0, atByte: row * recentCapacity * 4) }
            }
        }
        let position = repeatLastN > 0 ? Int32(window.count % repeatLastN) : 0
        try [Sampling.RowState(step: step, recentPosition: position)].withUnsafeBytes {
            try rowState.upload(bytes: $0, atByte: row * MemoryLayout<Sampling.RowState>.stride)
        }
    }
}
