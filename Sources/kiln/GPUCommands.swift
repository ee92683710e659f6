import ArgumentParser
import Foundation
import KilnCore
import KilnCPU
import KilnCUDA
import KilnGPU
import KilnKernels
import KilnModels
import KilnTune
import KilnCheck

/// Which backend `--device auto` means: the GPU when a driver and a device are present, else the CPU.
enum DeviceChoice {
    static func resolve(_ requested: String) throws -> String {
        switch requested {
        case "cpu", "cuda": return requested
        case "auto":
            guard case .success = CUDADriver.loaded, ((try? Context.deviceCount()) ?? 0) > 0 else { return "cpu" }
            return "cuda"
        default: throw ValidationError("--device must be auto, cpu or cuda, got \(requested)")
        }
    }
}

/// GPU engine entry points for the CLI. Kept in their own file so the command files of the CPU
/// engine need only a line or two to reach them (see GPURun).
enum GPURun {
    static let log: (String) -> Void = { KilnLogHandler.write(KilnLogHandler.format(level: .info, message: $0)) }

    /// How the engine picks its GEMM kernels: the tuner's table for this GPU (tuning missing shapes first when asked),
    /// or the documented defaults alone.
    struct Tuning {
        var cachePath: String?
        var tuneMissing = false
        var defaultsOnly = false
        var engine = GPUEngineOptions()
        /// `--dummy-weights` with FP8 linear layers (`--weights fp8`).
        var dummyFP8 = false
        /// `--dummy-weights` with lookup-table linear layers (`--weights lut4-g64`, `lut3-g64`, `lut2-g64`).
        var dummyLUT: WeightFormat.LUTFormat? = nil
    }

    /// The tuning table for `config` on this GPU, or nil for the defaults.
    static func table(for config: ModelConfig, library: KernelLibrary, tuning: Tuning) throws -> TuneTable? {
        if tuning.defaultsOnly { return nil }
        let weights: DummyLinearFormat = tuning.dummyLUT.map { .lut($0) } ?? (tuning.dummyFP8 ? .fp8 : .bf16)
        return try TuneSession.loadOrTune(config: config, weights: weights, library: library, path: tuning.cachePath,
                                          tuneMissing: tuning.tuneMissing, pdl: tuning.engine.programmaticDependentLaunch, log: log)
    }

    /// A GPU model from `--dummy-weights` or a checkpoint (an already opened one, or a path). `maxRows`: token rows per
    /// forward chunk (1 puts every row through the decode GEMMs; `kiln logits --rows`).
    static func model(path: String?, dummy: String?, weights: WeightSource? = nil, maxBatch: Int, maxSeq: Int, maxRows: Int = 1024,
                      tuning: Tuning = Tuning()) throws -> GPUModel {
        let ctx = try Context(ordinal: 0)
        let library = try KernelLibrary(context: ctx)   // one library: kernels compiled for tuning serve the model too
        if let dummy {
            let table = try self.table(for: try DummyModels.config(dummy), library: library, tuning: tuning)
            return try GPUModel.dummy(dummy, context: ctx, library: library, maxBatch: maxBatch, maxSeq: maxSeq, maxRows: maxRows, tune: table,
                                      options: tuning.engine, fp8: tuning.dummyFP8, lut: tuning.dummyLUT, log: log)
        }
        guard let source = try weights ?? path.map({ try openModel(path: $0) }) else {
            throw KilnError("--device cuda needs -m PATH or --dummy-weights NAME")
        }
        let table = try self.table(for: source.config, library: library, tuning: tuning)
        return try GPUModel.load(source, context: ctx, library: library, maxBatch: maxBatch, maxSeq: maxSeq, maxRows: maxRows, tune: table,
                                 options: tuning.engine, log: log)
    }

    /// The GPU path of `kiln bench`: prompt processing and generation, md or json.
    static func bench(path: String?, dummy: String?, prompt: Int, generate: Int, repetitions: Int, batch: Int, json: Bool,
                      tuning: Tuning = Tuning(), printIds: Int? = nil, sampling: SamplingOptions? = nil) throws {
        let m = try model(path: path, dummy: dummy, maxBatch: batch, maxSeq: prompt + generate + 8, tuning: tuning)
        let r = try EngineBench.model(m, batch: batch, prompt: max(1, prompt), generate: generate, repetitions: repetitions, printIds: printIds,
                                     sampling: sampling)
        let name = dummy.map { "\($0) (dummy \(tuning.dummyLUT.map { WeightFormat.lut($0).name } ?? (tuning.dummyFP8 ? "fp8" : "bf16")))" } ?? URL(fileURLWithPath: path ?? "").lastPathComponent
        let ppMs = r.median(r.prefillMs), tgMs = r.median(r.decodeMsPerStep)
        if json {
            let obj: [String: Any] = ["model": name, "backend": "CUDA (Kiln kernels)", "kernels": tuning.defaultsOnly ? "defaults" : "tuned table", "device": m.context.info.name, "n_batch": batch,
                                      "n_prompt": prompt, "n_gen": generate, "temperature": Double(sampling?.temperature ?? 0), "pp_ms": ppMs, "pp_tokens_per_s": r.promptTokensPerSecond,
                                      "tg_ms_per_step": tgMs, "tg_chained_ms_per_step": r.median(r.chainedMsPerStep), "tg_tokens_per_s": r.decodeTokensPerSecond,
                                      "pp_samples_ms": r.prefillMs, "tg_samples_ms_per_step": r.decodeMsPerStep,
                                      "weights_gb": Double(m.weights.byteCount) / 1e9]
            print(String(decoding: try JSONSerialization.data(withJSONObject: obj, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self))
            return
        }
        print("| model | backend | batch | test | ms | t/s |")
        print("| ----- | ------- | ----: | ---: | -: | --: |")
        print("| \(name) | CUDA | \(batch) | pp\(prompt) | " + String(format: "%.2f | %.1f |", ppMs, r.promptTokensPerSecond))
        let tg = "tg\(generate)" + (sampling.map { String(format: " sampled T=%g", Double($0.temperature)) } ?? "")
        print("| \(name) | CUDA | \(batch) | \(tg) | " + String(format: "%.3f ms/step | %.1f |", tgMs, r.decodeTokensPerSecond))
        print("| \(name) | CUDA | \(batch) | \(tg) chained (no per-step id read) | " + String(format: "%.3f ms/step | %.1f |", r.median(r.chainedMsPerStep), Double(batch) / r.median(r.chainedMsPerStep) * 1000))
        print(String(format: "weights %.2f GB; decode reads them once per step: %.0f GB/s effective", Double(m.weights.byteCount) / 1e9,
                     Double(m.weights.byteCount) / (tgMs * 1e-3) / 1e9))
    }
}

/// `kiln bench-gpu`: the GPU engine benchmark (what `kiln bench --device cuda` runs).
struct GPUBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench-gpu", abstract: "Prompt processing and generation speed of the GPU engine.")
    @Option(name: .shortAndLong, help: "Model file or folder.") var model: String?
    @Option(name: .long, help: "Random weights made on the GPU: llama3-8b, llama3-70b, granite-8b or PATH/config.json.") var dummyWeights: String?
    @Option(name: .shortAndLong, parsing: .unconditional, help: "Prompt tokens per sequence (at least 1).") var p: Int = 512
    @Option(name: .shortAndLong, parsing: .unconditional, help: "Generated tokens per sequence (at least 0).") var n: Int = 256
    @Option(name: .shortAndLong, parsing: .unconditional, help: "Repetitions (at least 1).") var r: Int = 3
    @Option(name: .shortAndLong, parsing: .unconditional, help: "Sequences decoded together (1…8).") var batch: Int = 1
    @Option(name: .shortAndLong, help: "Output: md or json.") var o: String = "md"
    @Option(name: .long, parsing: .unconditional,
            help: "Sample on the device at this temperature (top-k 40, top-p 0.95, min-p 0.05, as kiln run) instead of greedy argmax.")
    var temp: Float?
    @OptionGroup var tuning: TuningOptions
    @OptionGroup(title: "Tensor parallelism") var tp: TensorParallelOptions
    func validate() throws {
        if let temp { guard temp.isFinite, temp > 0 else { throw ValidationError("--temp must be a positive number (leave it out for greedy), got \(temp)") } }
        guard (model == nil) != (dummyWeights == nil) else { throw ValidationError("give -m MODEL or --dummy-weights CFG") }
        try OptionCheck.atLeast(p, "-p", 1)
        try OptionCheck.atLeast(n, "-n", 0)
        try OptionCheck.atLeast(r, "-r", 1)
        try OptionCheck.range(batch, "-b/--batch", 1...8)
        try OptionCheck.oneOf(o, "-o", ["md", "json"])
        try InputFiles.requireModel(model)
    }
    func run() throws {
        let sampling = temp.map { t in var s = SamplingOptions(); s.temperature = t; s.seed = 1; return s }
        if let ranks = try tp.engineRanks(config: { try TensorParallelOptions.config(path: model, dummyWeights: dummyWeights) },
                                          requestedDevice: "cuda", device: "cuda") {
            return try GPUTensorParallelRun.bench(ranks: ranks, path: model, dummy: dummyWeights, prompt: p, generate: n, repetitions: r,
                                                  batch: batch, json: o == "json", tuning: tuning.value, sampling: sampling)
        }
        try GPURun.bench(path: model, dummy: dummyWeights, prompt: p, generate: n, repetitions: r, batch: batch, json: o == "json",
                         tuning: tuning.value, sampling: sampling)
    }
}

/// Kernel-choice options shared by the GPU commands.
struct TuningOptions: ParsableArguments {
    @Flag(name: .long, help: "Tune the GEMM shapes that have no entry in the tuning table before starting (kiln tune).") var tune = false
    @Option(name: .long, help: "Tuning table to use instead of $KILN_HOME/tune/<gpu>.json.") var tuneCache: String?
    @Flag(name: .long, help: "Ignore the tuning table: use the documented default kernels.") var defaultKernels = false
    @Flag(name: .long, help: "A/B: no programmatic dependent launch between the decode kernels (on by default: 4.29 vs 4.44 ms/step, H200).")
    var noPdl = false
    @Flag(name: .long, help: "A/B: prefill attention on the mma.sync kernel instead of wgmma on Hopper.") var mmaAttention = false
    @Flag(name: .long, help: "A/B: SwiGLU as its own kernel instead of in the gate_up GEMM's epilogue on the decode path.")
    var noFusedSwiglu = false
    @Option(name: .long, help: "With --dummy-weights: the linear layers' format, bf16, fp8 (e4m3 with 128×128 block scales, on gemm_fp8), lut4|lut3|lut2-g32|g64|g128[-nf|-int|-fp4][-affine] (4-, 3- or 2-bit lookup table, nf by default, fp4 4-bit only, on gemm_lut; e.g. lut3-g64), or q4_0 / q4_1 / q8_0 (GGUF's, as gemm_lut holds them).")
    var weights: String = "bf16"
    @Flag(name: .long, help: "A/B: FP8 checkpoints converted to bf16 at load instead of running on the FP8 kernels.") var noFp8Kernels = false
    @Flag(name: .long, help: "A/B: 4-bit lookup-table checkpoints converted to bf16 at load instead of running on gemm_lut.") var noLutKernels = false
    @Flag(name: .long, help: "GGUF Q8_0 layers on gemm_lut's 8-bit kernels instead of converted to bf16 at load (off until a Q8_0 checkpoint has run end to end against the CPU engine on a device).") var q8Kernels = false
    @Flag(name: .long, help: "A/B: lookup-table prefill (more than 16 rows) dequantizes each layer to bf16 for the bf16 GEMMs instead of running on gemm_lut_hopper (Hopper).")
    var noLutPrefillKernel = false
    @Flag(name: .long, help: "A/B: FP8 prefill dequantizes each layer to bf16 for the bf16 GEMMs instead of running on gemm_fp8_hopper (Hopper).")
    var noFp8PrefillKernel = false
    @Flag(name: .long, help: "A/B: on Hopper, GEMMs of 17-63 rows and the fp32 logits above 16 rows in gemm_splitk's 16-row passes instead of one gemm_hopper pass over the weights.")
    var noHopperServeGemms = false
    @Flag(name: .long, help: "A/B: FP8 prefill quantizes the activations of qkv and gate_up in a separate kernel instead of in the RMSNorm before them.")
    var noFusedFp8Quant = false
    @Flag(name: .long, help: "A/B: FP8 prefill quantizes the down projection's activations in a separate kernel instead of in the SwiGLU kernel before it.")
    var noFp8SwigluQuant = false
    func validate() throws {
        do { _ = try DummyLinearFormat(parsing: weights) } catch let e as KilnError { throw ValidationError(e.message) }
    }
    var engine: GPUEngineOptions {
        var o = GPUEngineOptions()
        o.programmaticDependentLaunch = !noPdl; o.mmaPrefillAttention = mmaAttention; o.fusedSwiGLUEpilogue = !noFusedSwiglu
        o.fp8Kernels = !noFp8Kernels; o.lutKernels = !noLutKernels; o.q8Kernels = q8Kernels; o.lutPrefillKernel = !noLutPrefillKernel; o.fp8PrefillKernel = !noFp8PrefillKernel; o.hopperServeGEMMs = !noHopperServeGemms
        o.fusedFP8NormQuant = !noFusedFp8Quant; o.fusedFP8SwiGLUQuant = !noFp8SwigluQuant
        return o
    }
    var value: GPURun.Tuning {
        let format = (try? DummyLinearFormat(parsing: weights)) ?? .bf16
        var lut: WeightFormat.LUTFormat? = nil
        if case .lut(let l) = format { lut = l }
        return GPURun.Tuning(cachePath: tuneCache, tuneMissing: tune, defaultsOnly: defaultKernels, engine: engine, dummyFP8: format == .fp8,
                             dummyLUT: lut)
    }
}

/// `kiln bench kernels`: every GEMM shape of a model at M = 1…1024, Kiln against cuBLASLt.
enum BenchKernels {
    static func run(model: String?, dummyWeights: String, tuning: GPURun.Tuning, ms: [Int]?) throws {
        let c = try model.map { try openModel(path: $0).config } ?? DummyModels.config(dummyWeights)
        let ctx = try Context(ordinal: 0)
        let library = try KernelLibrary(context: ctx)
        let table = try GPURun.table(for: c, library: library, tuning: tuning)
        if let lut = tuning.dummyLUT {   // --weights lut4-… / lut3-… / lut2-…: the LUT GEMMs (decode, then prefill) against Kiln's bf16 GEMM
            try EngineBench.lutKernels(config: c, format: lut, library: library, tune: table, ms: ms ?? EngineBench.kernelMs,
                                       pdl: tuning.engine.programmaticDependentLaunch, log: { print($0) })
            return try EngineBench.lutPrefillKernels(config: c, format: lut, library: library, tune: table, ms: ms ?? EngineBench.kernelMs,
                                                     log: { print($0) })
        }
        if tuning.dummyFP8 {   // --weights fp8: gemm_fp8 (decode) and gemm_fp8_hopper (prefill, TFLOP/s) against Kiln's bf16 GEMMs
            return try EngineBench.fp8Kernels(config: c, library: library, tune: table, ms: ms ?? EngineBench.fp8KernelMs,
                                              pdl: tuning.engine.programmaticDependentLaunch, log: { print($0) })
        }
        try EngineBench.kernels(config: c, library: library, tune: table, ms: ms ?? EngineBench.kernelMs,
                                pdl: tuning.engine.programmaticDependentLaunch, log: { print($0) })
    }
}

/// `kiln logits` (hidden, for correctness scripts): teacher-forced logits of every position, raw
/// little-endian fp32 [tokens, vocab]. On cuda the kernel options apply (`--no-fp8-prefill-kernel`, `--no-fp8-kernels`, …), and
/// `--rows` picks the GEMM path: the rows go through the model in chunks of at most that many, so `--rows 1` runs every
/// linear layer at M = 1 (the decode GEMMs: gemm_fp8's split-K kernels for FP8 layers) and chunks above 16 rows the
/// prefill path (gemm_fp8_hopper on Hopper; with --no-fp8-prefill-kernel or elsewhere each FP8 layer dequantized to bf16).
struct LogitsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logits", abstract: "Dump teacher-forced logits (fp32) for a token file.",
                                                    shouldDisplay: false)
    @Option(name: .shortAndLong, help: "Model file or folder.") var model: String
    @Option(name: .long, help: "Token ids, whitespace-separated text.") var tokens: String
    @Option(name: .long, help: "Output file (raw fp32, [tokens, vocab]).") var out: String
    @Option(name: .long, help: "cpu or cuda.") var device: String = "cuda"
    @Flag(name: .long, help: "cpu only: dequantize quantized weights to f32 (float activations, no Q8 activation rounding).")
    var cpuFloat = false
    @Option(name: .long, help: "cpu only: numerics of FP8 block-scaled layers, w8a16 (weights dequantized, the default) or w8a8 (activations quantized per 1×128 block as transformers does).")
    var cpuFp8: String?
    @Option(name: .long, parsing: .unconditional,
            help: "cuda only: the most token rows per forward chunk (default 1024); 1 runs every row through the decode GEMMs (M = 1), more than 16 the prefill GEMMs.")
    var rows: Int?
    @OptionGroup var tuning: TuningOptions
    @OptionGroup(title: "Tensor parallelism (--device cuda)") var tp: TensorParallelOptions

    /// The rows per chunk when --rows is left out: the engine's default (GPUModel.init).
    static let defaultRows = 1024

    func validate() throws {
        try OptionCheck.oneOf(device, "--device", ["cpu", "cuda"])
        if let rows {
            try OptionCheck.atLeast(rows, "--rows", 1)
            guard device == "cuda" else { throw ValidationError("--rows applies to --device cuda only (the CPU engine runs all rows at once)") }
        }
        if let cpuFp8 {
            try OptionCheck.oneOf(cpuFp8, "--cpu-fp8", FP8Numerics.allCases.map(\.rawValue))
            guard device == "cpu" else { throw ValidationError("--cpu-fp8 applies to --device cpu only") }
        }
    }

    func run() throws {
        guard let text = try? String(contentsOfFile: tokens, encoding: .utf8) else { throw KilnError("\(tokens): cannot read") }
        let ids = try text.split(whereSeparator: { $0.isWhitespace || $0 == "," }).map { s -> Int32 in
            guard let v = Int32(s) else { throw KilnError("\(tokens): \"\(s)\" is not a token id") }
            return v
        }
        let logits: [Float]
        switch device {
        case "cuda":
            if let ranks = try tp.engineRanks(config: { try openModel(path: model).config }, requestedDevice: device, device: device) {
                logits = try GPUTensorParallelRun.engine(ranks: ranks, path: model, dummy: nil, maxBatch: 1, maxSeq: ids.count + 8,
                                                         maxRows: rows ?? Self.defaultRows, tuning: tuning.value).logits(tokens: ids)
                break
            }
            logits = try GPURun.model(path: model, dummy: nil, maxBatch: 1, maxSeq: ids.count + 8, maxRows: rows ?? Self.defaultRows,
                                      tuning: tuning.value).logits(tokens: ids)
        case "cpu":
            _ = try tp.engineRanks(config: { try openModel(path: model).config }, requestedDevice: device, device: device)
            let numerics = cpuFp8.flatMap(FP8Numerics.init(rawValue:)) ?? .default
            let m = try CPUModel(weights: try openModel(path: model), floatWeights: cpuFloat, fp8: numerics)
            logits = try m.forward(ids, cache: try m.makeCache(capacity: ids.count + 8), logits: .all)
        default: throw KilnError("--device \(device): expected cpu or cuda")
        }
        try logits.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: out)) }
        print("wrote \(ids.count) × \(logits.count / max(1, ids.count)) logits to \(out)")
    }
}
