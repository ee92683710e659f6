import KilnCore

/// How a model is split over `ranks` GPUs (Megatron-style tensor parallelism), derived from the one model
/// definition: each rank runs the same `Transformer` with `rankConfig` (a 1/N-wide model: 1/N of the q heads, KV heads,
/// FFN width and vocabulary, the full hidden size), and every checkpoint tensor of that rank is a slice of the full
/// tensor of the same name, cut where the rank's shape is smaller.
///
/// Lives in KilnModels, not KilnCore, because it is computed from `Transformer.parts`/`checkpointTensors` and
/// `ModelConfig`, which live here; every backend (the CPU simulation, a GPU per rank) and the tuner read the same plan.
///
/// What that gives, layer by layer:
/// - **qkv, gate_up: column-parallel.** Output rows are split. q, k and v are sliced separately, so each rank holds
///   whole heads: q heads `[r·H/N, (r+1)·H/N)` and KV heads `[r·KV/N, (r+1)·KV/N)`, the KV heads its q heads read under
///   grouped-query attention (q head h reads KV head h / (H/KV)). gate and up are sliced separately with the same row
///   range, so rank r's fused [gate_r; up_r] pairs gate row j with up row j, as the SwiGLU epilogue needs.
/// - **o, down: row-parallel.** Input columns are split to match the column-parallel layer before them (rank r's
///   attention heads, rank r's FFN columns); each rank's product is a partial sum over its columns and an all-reduce
///   (sum over ranks) after the GEMM restores the full branch.
/// - **embedding and output: vocabulary-parallel.** Rank r holds vocabulary rows `[r·V', (r+1)·V')` with V' = ⌈V/N⌉
///   (a vocabulary N does not divide, such as Granite's 49155, is padded with zero rows at the end). The output
///   projection gives each rank its slice of the logits, gathered along the vocabulary; the embedding lookup writes
///   the rows of ids in the rank's range and zeros elsewhere, and an all-reduce of the residual joins them (with tied
///   embeddings the one slice serves both).
/// - Norms, q/k norms, `rope_freqs`: replicated. q/k/v biases follow their rows.
///
/// ```swift
/// let plan = try TensorParallelPlan(config: cfg, ranks: 4)
/// plan.split(.o)                     // .rowParallel: all-reduce after it
/// plan.slice("blk.0.attn_q.weight", rank: 1)   // rows 1024..<2048 of [4096, 4096] (Llama-3-8B)
/// plan.gemmShapes                    // the per-rank GEMMs the tuner tunes
/// ```
public struct TensorParallelPlan: Sendable {
    /// How a linear layer's weight is divided.
    public enum Split: String, Sendable {
        /// Output rows (features) split; the output stays split, no communication.
        case columnParallel = "column-parallel"
        /// Input columns split; each rank's output is a partial sum, all-reduced.
        case rowParallel = "row-parallel"
    }

    /// The part of one full checkpoint tensor a rank holds: `rows` × `cols` of a row-major `[rows, cols]` matrix (vectors
    /// as `[n]`: `rows` only, `cols` = 0..<1). Rows past the tensor's end (the padded vocabulary) read as zeros.
    public struct Slice: Sendable, Equatable {
        public var name: String
        /// The full tensor's shape, as the checkpoint stores it.
        public var fullShape: [Int]
        public var rows: Range<Int>
        public var cols: Range<Int>
        public init(name: String, fullShape: [Int], rows: Range<Int>, cols: Range<Int>) {
            self.name = name; self.fullShape = fullShape; self.rows = rows; self.cols = cols
        }
        /// The rank's shape (same rank as `fullShape`).
        public var shape: [Int] { fullShape.count == 2 ? [rows.count, cols.count] : [rows.count] }
        /// Whether the rank holds the whole tensor.
        public var isWhole: Bool { shape == fullShape }
    }

    /// The unsharded model.
    public let config: ModelConfig
    /// Number of ranks (GPUs), N.
    public let ranks: Int
    /// The model each rank runs: 1/N of the heads, KV heads, FFN width and (padded) vocabulary; the hidden size, head
    /// size and everything else unchanged.
    public let rankConfig: ModelConfig

    /// Checks that `ranks` divides the heads and the FFN width; the error names the numbers, e.g. "--tp 3: 8 KV heads are
    /// not divisible by 3". The vocabulary need not divide: it is padded to N·⌈V/N⌉.
    public init(config c: ModelConfig, ranks n: Int) throws {
        guard n >= 1 else { throw KilnError("--tp \(n): the number of GPUs must be at least 1") }
        for (count, what) in [(c.numKVHeads, "KV heads"), (c.numHeads, "attention heads"),
                              (c.intermediateSize, "FFN width (intermediate size)")] where count % n != 0 {
            let noun = what.hasSuffix("heads") ? "\(count) \(what) are" : "the \(what) \(count) is"
            throw KilnError("--tp \(n): \(noun) not divisible by \(n)")
        }
        config = c
        ranks = n
        var r = c
        r.numHeads = c.numHeads / n
        r.numKVHeads = c.numKVHeads / n
        r.headDim = c.headDim               // explicit: hidden / (heads/N) would be N times too wide
        r.intermediateSize = c.intermediateSize / n
        r.vocabSize = (c.vocabSize + n - 1) / n   // padded: the last rank's rows past the vocabulary are zeros
        rankConfig = r
    }

    /// The model definition of one rank.
    public var rankTransformer: Transformer { Transformer(config: rankConfig) }

    /// How `layer`'s weight is divided: read off the definition (a smaller output on a rank is column-parallel, a
    /// smaller input row-parallel). With one rank nothing is split and every layer reads as column-parallel.
    public func split(_ layer: LinearLayer) -> Split {
        rankTransformer.inputs(layer) < Transformer(config: config).inputs(layer) ? .rowParallel : .columnParallel
    }

    /// Whether the backend sums the ranks' outputs of `layer` (all-reduce) before the residual add.
    public func allReducesAfter(_ layer: LinearLayer) -> Bool { ranks > 1 && split(layer) == .rowParallel }

    /// Every checkpoint tensor of rank `rank` as a slice of the full tensor, in checkpoint order (`rope_freqs`, when a
    /// file has it, is replicated and not listed).
    public func slices(rank: Int, tiedOutput: Bool) -> [Slice] {
        precondition(rank >= 0 && rank < ranks, "rank \(rank) of \(ranks)")
        let full = Transformer(config: config).checkpointTensors(tiedOutput: tiedOutput)
        let mine = rankTransformer.checkpointTensors(tiedOutput: tiedOutput)
        // Same definition, same order: the configs differ only in sizes.
        return zip(full, mine).map { f, m in
            precondition(f.name == m.name, "tensor order differs: \(f.name) vs \(m.name)")
            return slice(full: f, rankShape: m.shape, rank: rank)
        }
    }

    /// Rank `rank`'s slice of the checkpoint tensor `name`, or nil when the model has no such tensor.
    public func slice(_ name: String, rank: Int, tiedOutput: Bool = false) -> Slice? {
        slices(rank: rank, tiedOutput: tiedOutput).first { $0.name == name }
    }

    private func slice(full f: Transformer.Part, rankShape: [Int], rank: Int) -> Slice {
        let rows = rankShape[0], cols = f.shape.count == 2 ? rankShape[1] : 1
        let fullCols = f.shape.count == 2 ? f.shape[1] : 1
        // The dimension the rank holds less of is cut into N equal consecutive pieces; the rank takes piece `rank`.
        let rowRange = rows < f.shape[0] ? (rank * rows)..<((rank + 1) * rows) : 0..<f.shape[0]
        let colRange = cols < fullCols ? (rank * cols)..<((rank + 1) * cols) : 0..<fullCols
        return Slice(name: f.name, fullShape: f.shape, rows: rowRange, cols: colRange)
    }

    /// Rank `rank`'s range of the real vocabulary: its rows of the embedding and output, its columns of the gathered
    /// logits (the last rank's padded rows excluded).
    public func vocabRange(rank: Int) -> Range<Int> {
        let v = rankConfig.vocabSize
        return min(config.vocabSize, rank * v)..<min(config.vocabSize, (rank + 1) * v)
    }

    /// The gather of the logits on host memory: rank `rank`'s `[rows × V/N]` slice written into `[rows × V]` rows at its
    /// vocabulary columns (`vocabRange`; the last rank's padded columns dropped).
    public func placeLogitsSlice(_ slice: UnsafePointer<Float>, rank: Int, rows: Int, into full: UnsafeMutablePointer<Float>) {
        let cols = vocabRange(rank: rank), width = rankConfig.vocabSize, v = config.vocabSize
        for row in 0..<rows { (full + row * v + cols.lowerBound).update(from: slice + row * width, count: cols.count) }
    }

    /// The vocabulary padded to a multiple of the ranks (N·⌈V/N⌉).
    public var paddedVocabSize: Int { ranks * rankConfig.vocabSize }

    /// Every GEMM of a rank's decode step as (op, N, K): the shapes the tuner tunes for `--tp N` (each GPU runs these).
    public var gemmShapes: [(op: String, n: Int, k: Int)] { rankTransformer.gemmShapes }

    /// One line for logs: "--tp 2: per GPU qkv column-parallel 3072×4096, o row-parallel 4096×2048 (+all-reduce), …".
    public var summary: String {
        let t = rankTransformer
        let layers = LinearLayer.allCases.map { l in
            "\(l.rawValue) \(split(l).rawValue) \(t.outputs(l))×\(t.inputs(l))" + (allReducesAfter(l) ? " (+all-reduce)" : "")
        }
        let padding = paddedVocabSize > config.vocabSize ? ", vocabulary padded to \(paddedVocabSize)" : ""
        let vocab = ["embedding vocab-parallel \(rankConfig.vocabSize)×\(config.hiddenSize) (+all-reduce)",
                     "logits vocab-parallel \(rankConfig.vocabSize)×\(config.hiddenSize) (+gather\(padding))"]
        return "--tp \(ranks): per GPU " + (layers + vocab).joined(separator: ", ")
    }
}
