import ArgumentParser
import Foundation
import KilnCore
import KilnCUDA
import KilnGPU
import KilnKernels
import KilnModels
import KilnTune
import KilnCheck

/// `kiln tune`: exhaustive, verified search of every GEMM shape of a model at each M bucket; the winners go to
/// the tuning table of this GPU ($KILN_HOME/tune/<gpu>.json, or --tune-cache), which the engine loads at start.
/// `--weights FORMAT` tunes the linear layers' GEMMs on that weight format instead (gemm_lut for the lookup-table
/// formats, gemm_fp8 / gemm_fp8_hopper for fp8), under that format's key in the same table: other entries are kept.
struct TuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tune", abstract: "Time every kernel configuration for a model's GEMM shapes and save the fastest verified ones.")

    @Option(name: .shortAndLong, help: "Model file or folder whose shapes to tune.") var model: String?
    @Option(name: .long, help: "Shapes of a preset instead: llama3-8b, llama3-70b, granite-8b or PATH/config.json.") var dummyWeights: String?
    @Option(name: .customLong("m"), help: "M buckets, comma-separated (default: 1,2,4,8,16 and 64…4096 on Hopper).") var mList: String?
    @Option(name: .long, help: "Tuning table to read and write (default: $KILN_HOME/tune/<gpu>.json).") var tuneCache: String?
    @Option(name: .long, parsing: .unconditional, help: "Timed samples per candidate (median; at least 20).") var runs: Int = 20
    @Option(name: .long, parsing: .unconditional,
            help: "After tuning, compare decode ms/token with the defaults and the tuned table at this batch size (0: skip; at most 8).")
    var benchBatch: Int = 0
    @Option(name: .long, parsing: .unconditional, help: "Generated tokens for --bench-batch (at least 1).") var benchTokens: Int = 64
    @Option(name: .long, help: "The weights' format whose GEMMs to tune: bf16 (every shape, the default), fp8 (gemm_fp8 at M ≤ 16, gemm_fp8_hopper at M ≥ 64), lut4|lut3|lut2-g32|g64|g128[-nf|-int|-fp4][-affine] or q4_0 / q4_1 / q8_0 (gemm_lut, M ≤ 16), as --dummy-weights … --weights takes them; the logits stay bf16.")
    var weights: String = "bf16"
    @Flag(name: .long, help: "Print every rejected candidate and why.") var verbose = false
    @Flag(name: .long, help: "A/B: time without programmatic dependent launch (the engine's --no-pdl).") var noPdl = false
    @Option(name: .customLong("tp"), parsing: .unconditional,
            help: "Tune the per-GPU shapes of the model split over N GPUs (tensor parallelism; 1: the whole model).") var tp: Int = 1

    func validate() throws {
        guard (model == nil) != (dummyWeights == nil) else { throw ValidationError("give -m MODEL or --dummy-weights CFG") }
        try OptionCheck.range(runs, "--runs", 20...100_000)
        try OptionCheck.range(benchBatch, "--bench-batch", 0...8, note: " (0: skip)")
        try OptionCheck.atLeast(benchTokens, "--bench-tokens", 1)
        try OptionCheck.atLeast(tp, "--tp", 1)
        if tp > 1 && benchBatch > 0 { throw ValidationError("--bench-batch runs the whole model on one GPU: it cannot be combined with --tp \(tp)") }
        if let mList { _ = try TuneCommand.parseMs(mList) }
        _ = try TuneCommand.parseWeights(weights)
        try InputFiles.requireModel(model)
    }

    static func parseMs(_ text: String?) throws -> [Int] {
        guard let text else { return MBucket.all.filter { $0 <= 16 || $0 >= 64 } }
        let raw = try text.split(separator: ",").map { s -> Int in
            guard let v = Int(s.trimmingCharacters(in: .whitespaces)), v >= 1 else { throw ValidationError("--m: \"\(s)\" is not a positive integer") }
            return v
        }
        var out: [Int] = []
        for v in raw.map(MBucket.bucket(for:)) where !out.contains(v) { out.append(v) }
        return out
    }

    /// `--weights`: the spellings `--dummy-weights … --weights` accepts (DummyLinearFormat), as a validation error naming them.
    static func parseWeights(_ text: String) throws -> DummyLinearFormat {
        do { return try DummyLinearFormat(parsing: text) } catch let e as KilnError { throw ValidationError(e.message) }
    }

    func run() throws {
        let err: (String) -> Void = { FileHandle.standardError.write(($0 + "\n").data(using: .utf8)!) }
        let t0 = DispatchTime.now().uptimeNanoseconds
        let full = try model.map { try openModel(path: $0).config } ?? DummyModels.config(dummyWeights!)
        // With --tp N each GPU runs the model of the plan's rank config; its GEMMs are the shapes to tune.
        let config = tp > 1 ? try TensorParallelPlan(config: full, ranks: tp).rankConfig : full
        if tp > 1 { print("tuning the per-GPU shapes of --tp \(tp)") }
        let ms = try TuneCommand.parseMs(mList)
        let format = try TuneCommand.parseWeights(weights)
        let ctx = try Context(ordinal: 0)
        let library = try KernelLibrary(context: ctx)
        var (table, path) = try TuneSession.load(context: ctx, path: tuneCache, log: err)
        print("tuning for \(table.key)")
        let copy = try GPUBench.copyBandwidth(library: library)
        print("copy bandwidth: " + String(format: "%.0f GB/s", copy.gbps))
        let shapes = GemmShape.of(config, weights: format)
        for s in shapes { if let why = GemmTuner.unsupported(s) { throw KilnError("cannot tune \(s): \(why)") } }
        if format != .bf16 { print("weights \(shapes.first?.format.name ?? format.name): the linear layers' GEMMs (the logits stay bf16: tune them without --weights)") }
        var rows: [GemmTuner.Row] = []
        do {
            let tuner = try GemmTuner(library: library, shapes: shapes, pdl: !noPdl, log: verbose ? err : { _ in })
            tuner.runs = runs
            let plan = tuner.plan(shapes, ms: ms)
            let skipped = ms.filter { m in !shapes.contains { GemmSearch.tunable($0, m: m, limits: tuner.limits) } }
            if plan.isEmpty, format != .bf16 {
                throw KilnError("nothing to tune: the dispatch reads no \(format.name) entry at M = \(ms.map(String.init).joined(separator: ",")) on "
                                + "\(ctx.info.name) (\(ctx.info.arch); gemm_lut serves M ≤ 16, gemm_fp8 M ≤ 16 with e4m3 tensor cores, gemm_fp8_hopper M ≥ 64 on Hopper)")
            }
            if !skipped.isEmpty { err("note: M = \(skipped.map(String.init).joined(separator: ", ")): the dispatch takes no table entry there; skipped") }
            let total = plan.reduce(0) { $0 + $1.2 }
            print("\(plan.count) shape/M pairs, \(total) candidates (instance lists × split counts, after the validity rules)")
            let bar = ProgressBar(total: total)
            rows = try tuner.tune(shapes, ms: ms, into: &table, progress: bar)
            bar.finish()
        }
        table.entries.sort { ($0.format.name, $0.op, $0.n, $0.k, $0.mBucket) < ($1.format.name, $1.op, $1.n, $1.k, $1.mBucket) }
        try table.save(path: path)
        let secs = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        for line in GemmTuner.report(rows, copyGBps: copy.gbps) { print(line) }
        let rejected = rows.reduce(0) { $0 + $1.rejected.count }
        print(String(format: "tuned in %.1f s (start-up and kernel compilation included); %d candidates failed verification and were never eligible", secs, rejected))
        print("saved \(table.entries.count) entries to \(path)")
        fflush(stdout)   // a log redirected to a file keeps these lines even if something later kills the process
        if benchBatch > 0 { try bench(config: config, format: format, ctx: ctx, library: library, table: table, err: err) }
    }

    /// Decode ms per step (one token per sequence) with the default kernels and with the table, same model shapes.
    /// With --weights, the dummy model's linear layers are in that format (a checkpoint runs in its own).
    func bench(config: ModelConfig, format: DummyLinearFormat, ctx: Context, library: KernelLibrary, table: TuneTable,
               err: @escaping (String) -> Void) throws {
        var lut: WeightFormat.LUTFormat? = nil
        if case .lut(let l) = format { lut = l }
        var results: [(String, EngineBench.ModelResult)] = []
        for (label, tune) in [("defaults", nil), ("tuned", table)] as [(String, TuneTable?)] {
            let maxSeq = 128 + benchTokens + 8
            let m: GPUModel
            var engine = GPUEngineOptions()
            engine.programmaticDependentLaunch = !noPdl
            if let dummyWeights {
                m = try GPUModel.dummy(dummyWeights, context: ctx, library: library, maxBatch: benchBatch, maxSeq: maxSeq, tune: tune, options: engine,
                                       fp8: format == .fp8, lut: lut, log: err)
            } else {
                m = try GPUModel.load(try openModel(path: model!), context: ctx, library: library, maxBatch: benchBatch, maxSeq: maxSeq, tune: tune,
                                      options: engine, log: err)
            }
            results.append((label, try EngineBench.model(m, batch: benchBatch, prompt: 128, generate: benchTokens, repetitions: 3)))
        }
        print("| kernels | batch | decode ms/token (per step) | chained ms/step | tokens/s |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for (label, r) in results {
            print("| \(label) | \(benchBatch) | " + String(format: "%.3f | %.3f | %.1f |", r.median(r.decodeMsPerStep), r.median(r.chainedMsPerStep), r.decodeTokensPerSecond))
        }
    }
}
