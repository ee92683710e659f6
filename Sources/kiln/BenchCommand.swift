import ArgumentParser
import Foundation
import KilnCore
import KilnEngine
import KilnModels

/// `kiln bench`: llama-bench style prompt-processing and generation rates.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Measure prompt processing (pp) and token generation (tg) speed, like llama-bench.",
        discussion: """
            kiln bench [model]     prompt processing and generation (CPU, or --device cuda / --dummy-weights)
            kiln bench kernels     every GEMM shape of a model at M = 1…1024, Kiln against cuBLASLt (GPU)
            kiln bench tokenizer   single-threaded encoding speed of a model's tokenizer in MB/s
            kiln bench serve       load on a running `kiln serve` (--url): requests/s, output tokens/s, TTFT and ITL percentiles
            """)

    /// One command with a positional target (not subcommands), so -m, -r and --dummy-weights mean the same for all three.
    enum Target: String, ExpressibleByArgument, CaseIterable { case model, kernels, tokenizer, serve }
    @Argument(help: "What to measure: model, kernels, tokenizer or serve.") var target: Target = .model

    @Option(name: .shortAndLong, help: "Model file (GGUF) or Hugging Face folder; default: SmolLM2-135M-Instruct.") var model: String?
    @Option(name: .shortAndLong, parsing: .unconditional, help: "Prompt tokens, at least 0 (0 skips the pp test).") var p: Int = 128
    @Option(name: .shortAndLong, parsing: .unconditional, help: "Generated tokens, at least 0 (0 skips the tg test).") var n: Int = 64
    @Option(name: .shortAndLong, parsing: .unconditional, help: "Repetitions (at least 1).") var r: Int = 3
    @Option(name: [.short, .customLong("depth")], parsing: .unconditional,
            help: "CPU only: tokens already in the KV cache before each test (llama-bench's -d), at least 0.") var d: Int = 0
    @Option(name: .shortAndLong, parsing: .unconditional, help: "Threads (default: all cores).") var threads: Int?
    @Option(name: .shortAndLong, help: "Output: md or json.") var o: String = "md"
    @Option(name: .long, help: "Device: auto (the GPU when one is present), cpu or cuda.") var device: String = "auto"
    @Option(name: .long, help: "cuda only: random weights made on the GPU: llama3-8b, llama3-70b, granite-8b or PATH/config.json.")
    var dummyWeights: String?
    @Option(name: .shortAndLong, parsing: .unconditional, help: "cuda only: sequences decoded together (1…8).") var batch: Int = 1
    @OptionGroup(title: "GPU kernel choice (--device cuda)") var tuning: TuningOptions
    @Option(name: .long, parsing: .unconditional,
            help: "cuda only: print the first N greedy ids of each sequence of the warm-up run (decode-path A/B checks).")
    var printIds: Int?
    @Option(name: .customLong("m"), help: "kernels only: M values, comma-separated (default: 1,2,4,8,16,64,512,1024).")
    var kernelMs: String?
    @Option(name: .shortAndLong, help: "tokenizer only: text file to encode (default: the licences in /usr/share/common-licenses).")
    var file: String?
    @Flag(name: .shortAndLong, help: "Debug logs: load time per phase.") var verbose = false
    @OptionGroup(title: "kiln bench serve") var serve: ServeBenchOptions
    @OptionGroup(title: "Tensor parallelism (kiln bench [model])") var tp: TensorParallelOptions

    func validate() throws {
        try OptionCheck.atLeast(p, "-p", 0, note: " (0 skips the pp test)")
        try OptionCheck.atLeast(n, "-n", 0, note: " (0 skips the tg test)")
        try OptionCheck.atLeast(r, "-r", 1)
        try OptionCheck.atLeast(d, "-d", 0)
        try OptionCheck.threads(threads)
        try OptionCheck.range(batch, "-b/--batch", 1...8)
        if let printIds { try OptionCheck.atLeast(printIds, "--print-ids", 1) }
        try OptionCheck.oneOf(o, "-o", ["md", "json"])
        try OptionCheck.oneOf(device, "--device", OptionCheck.devices)
        if let kernelMs { _ = try TuneCommand.parseMs(kernelMs) }
        try InputFiles.requireModel(model)
        if let file { _ = try InputFiles.readText(file) }
        if target == .serve { try serve.check() }
        if tp.requested != nil && target != .model { throw ValidationError("--tp applies to `kiln bench [model]`, not to bench \(target.rawValue)") }
    }

    func run() throws {
        switch target {
        case .kernels:
            return try BenchKernels.run(model: model, dummyWeights: dummyWeights ?? "llama3-8b", tuning: tuning.value,
                                        ms: try kernelMs.map { try TuneCommand.parseMs($0) })
        case .tokenizer: return try BenchTokenizer.run(model: model, file: file, repeats: r)
        case .serve:
            return try serve.run(json: o == "json", model: model, threads: threads, verbose: verbose,
                                 gpu: dummyWeights != nil || (try DeviceChoice.resolve(device)) == "cuda", dummy: dummyWeights, tuning: tuning.value)
        case .model: break
        }
        let backend = try DeviceChoice.resolve(device)
        if let ranks = try tp.engineRanks(config: { try TensorParallelOptions.config(path: model, dummyWeights: dummyWeights) },
                                          requestedDevice: device, device: dummyWeights != nil ? "cuda" : backend) {
            return try GPUTensorParallelRun.bench(ranks: ranks, path: model, dummy: dummyWeights, prompt: p, generate: n, repetitions: r,
                                                  batch: batch, json: o == "json", tuning: tuning.value, printIds: printIds)
        }
        if backend == "cuda" || dummyWeights != nil {
            try GPURun.bench(path: model, dummy: dummyWeights, prompt: p, generate: n, repetitions: r, batch: batch, json: o == "json",
                             tuning: tuning.value, printIds: printIds)
            return
        }
        let logger = makeLogger(verbose: verbose)
        let loaded = try LoadedModel.load(path: model, threads: threads, device: backend, logger: logger)
        let m = loaded.model
        let rows = try Benchmark.run(model: m, prompt: p, generate: n, repetitions: r, depth: d)
        let name = URL(fileURLWithPath: loaded.path).lastPathComponent
        let size = (try? FileManager.default.attributesOfItem(atPath: loaded.path)[.size] as? Int) ?? 0
        let c = m.config
        let params = Transformer(config: c).checkpointTensors(tiedOutput: c.tieWordEmbeddings).reduce(0) { $0 + $1.shape.reduce(1, *) }
        let nThreads = m.pool.threadCount
        if o == "json" {
            let list: [[String: Any]] = rows.map { row in
                ["model_filename": loaded.path, "model_type": "\(c.architecture.rawValue) \(name)", "model_size": size,
                 "model_n_params": params, "backends": "CPU", "n_batch": m.maxBatch, "n_threads": nThreads,
                 "n_prompt": row.nPrompt, "n_gen": row.nGen, "n_depth": d, "test_time": ISO8601DateFormatter().string(from: Date()),
                 "avg_ns": Int(row.averageNs), "stddev_ns": Int(row.stddevNs), "avg_ts": row.averageRate, "stddev_ts": row.stddevRate,
                 "samples_ns": row.samplesNs.map { Int($0) }, "samples_ts": row.rates]
            }
            let data = try JSONSerialization.data(withJSONObject: list, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("| model | size | params | backend | threads | test | t/s |")
        print("| ----- | ---: | -----: | ------- | ------: | ---: | --: |")
        let sizeText = String(format: "%.2f MiB", Double(size) / 1_048_576)
        let paramText = String(format: "%.2f M", Double(params) / 1e6)
        for row in rows {
            print("| \(name) | \(sizeText) | \(paramText) | CPU | \(nThreads) | \(row.test) | \(String(format: "%.2f ± %.2f", row.averageRate, row.stddevRate)) |")
        }
    }
}
