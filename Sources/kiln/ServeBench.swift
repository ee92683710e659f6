import ArgumentParser
import Foundation
import KilnEngine
import KilnServer
import KilnModels
import KilnTokenizer
import Logging

/// `kiln bench serve`'s options (an option group of `kiln bench`).
struct ServeBenchOptions: ParsableArguments {
    @Option(name: .long, help: "serve only: the server's base URL (plain http); without it, an in-process CPU server on a free port (-m, -t).")
    var url: String?
    @Option(name: [.customShort("c"), .customLong("context")], parsing: .unconditional,
            help: "serve only, in-process: context per sequence (default 1024).") var context = 1024
    @Option(name: .long, parsing: .unconditional, help: "serve only: clients sending requests at once.") var concurrency = 8
    @Option(name: .long, parsing: .unconditional, help: "serve only: requests in all (default: 4 per client).") var requests: Int?
    @Option(name: .customLong("prompt-tokens"), help: "serve only: prompt length range in tokens, MIN-MAX or N.") var promptTokens = "64-256"
    @Option(name: .customLong("output-tokens"), help: "serve only: output length range in tokens, MIN-MAX or N.") var outputTokens = "32-128"
    @Option(name: .customLong("api-key"), help: "serve only: bearer key for the server.") var apiKey: String?
    @Option(name: .long, parsing: .unconditional, help: "serve only: seed of the random lengths and prompts.") var seed: UInt64 = 1
    @Option(name: .customLong("shared-prefix"), parsing: .unconditional,
            help: "serve only: tokens every prompt starts with (a common system prompt), before its own --prompt-tokens; the report adds the first request's TTFT and the others'.")
    var sharedPrefix = 0
    @Flag(name: .customLong("engine-only"),
          help: "serve only, no --url: drive the serving engine directly (no HTTP, no tokenizer): what the engine sustains (with --device cuda, also --dummy-weights).")
    var engineOnly = false
    @Option(name: .customLong("max-sequences"), parsing: .unconditional, help: "serve only, in-process: sequences running at once (default: --concurrency).")
    var maxSequences: Int?
    @Option(name: .customLong("token-budget"), parsing: .unconditional, help: "serve only, in-process GPU: token rows per step (default 2048).")
    var tokenBudget: Int?

    /// "A-B" or "N" as a range of at least 1.
    static func range(_ text: String, _ name: String) throws -> ClosedRange<Int> {
        let parts = text.split(separator: "-").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard (1...2).contains(parts.count), let lo = parts.first!, let hi = parts.last!, lo >= 1, hi >= lo else {
            throw ValidationError("\(name) must be MIN-MAX or N with 1 ≤ MIN ≤ MAX, got '\(text)'")
        }
        return lo...hi
    }

    func check() throws {
        try OptionCheck.range(concurrency, "--concurrency", 1...4096)
        if let requests { try OptionCheck.atLeast(requests, "--requests", 1) }
        _ = try Self.range(promptTokens, "--prompt-tokens")
        _ = try Self.range(outputTokens, "--output-tokens")
        try OptionCheck.atLeast(sharedPrefix, "--shared-prefix", 0)
        if let maxSequences { try OptionCheck.range(maxSequences, "--max-sequences", 1...4096) }
        if let tokenBudget { try OptionCheck.atLeast(tokenBudget, "--token-budget", 1) }
        if engineOnly, url != nil { throw ValidationError("--engine-only drives an in-process engine; it does not take --url") }
    }

    var loadOptions: LoadGenerator.Options {
        get throws {
            LoadGenerator.Options(url: url ?? "", model: nil, apiKey: apiKey, concurrency: concurrency, requests: requests ?? 4 * concurrency,
                                  promptTokens: try Self.range(promptTokens, "--prompt-tokens"),
                                  outputTokens: try Self.range(outputTokens, "--output-tokens"), seed: seed, sharedPrefix: sharedPrefix)
        }
    }

    /// The in-process engine: the GPU's (a checkpoint or --dummy-weights) or the CPU's, with the checkpoint's tokenizer
    /// and chat template (none for --dummy-weights). The checkpoint is opened once for both.
    func engine(model: String?, threads: Int?, logger: Logger, gpu: Bool, dummy: String?, tuning: GPURun.Tuning) throws
        -> (engine: any ServingEngine, tokenizer: Tokenizer?, template: String?) {
        let sequences = maxSequences ?? concurrency
        if gpu {
            let shape = GPURun.ServingShape(sequences: sequences, context: context, tokenBudget: tokenBudget, kvBlocks: nil,
                                            maxWaiting: max(concurrency, 1))
            if let dummy { return (try GPURun.servingEngine(path: nil, dummy: dummy, shape: shape, tuning: tuning), nil, nil) }
            let path = try model ?? ModelStore.defaultModelPath()
            let source = try openModel(path: path)
            let (tokenizer, template) = try loadTokenizer(weights: source, path: path)
            return (try GPURun.servingEngine(path: nil, dummy: nil, weights: source, shape: shape, tuning: tuning), tokenizer, template)
        }
        let loaded = try LoadedModel.load(path: model, threads: threads, device: "cpu", logger: logger)
        let positions = EngineSession.contextSize(requested: context, model: loaded.model.config, logger: logger)
        return (try CPUServingEngine(model: loaded.model, maxSequences: sequences, contextLength: positions, maxWaiting: concurrency),
                loaded.tokenizer, loaded.chatTemplate)
    }

    /// Runs the load (against `url`, or an in-process server of `model` with one sequence per client) and prints the
    /// table (md) or one JSON object.
    func run(json: Bool, model: String?, threads: Int?, verbose: Bool, gpu: Bool = false, dummy: String? = nil,
             tuning: GPURun.Tuning = GPURun.Tuning()) throws {
        if engineOnly {
            let engine = try self.engine(model: model, threads: threads, logger: makeLogger(verbose: verbose), gpu: gpu, dummy: dummy, tuning: tuning).engine
            let options = try loadOptions
            return try report(try LoadGenerator(options: options).run(engine: engine), options: options, target: "engine (\(engine.deviceDescription))",
                              json: json)
        }
        guard let url else {
            guard dummy == nil else { throw ValidationError("--dummy-weights has no tokenizer for the HTTP server: add --engine-only") }
            let logger = makeLogger(verbose: verbose)
            let (engine, tok, template) = try self.engine(model: model, threads: threads, logger: logger, gpu: gpu, dummy: nil, tuning: tuning)
            guard let tokenizer = tok else { throw ValidationError("the in-process HTTP server needs a checkpoint with a tokenizer") }
            let positions = engine.scheduler.config.contextLength
            let served = try ServedModel(name: "bench", tokenizer: tokenizer, chatTemplate: template, contextLength: positions)
            let listening = DispatchSemaphore(value: 0), stopped = DispatchSemaphore(value: 0)
            let port = PortBox()
            var config = ServerConfiguration()
            config.port = 0
            config.onListening = { port.set($0); listening.signal() }
            var quiet = logger
            quiet.logLevel = verbose ? .debug : .warning
            let server = OpenAIServer(engine: engine, model: served, configuration: config, logger: quiet)
            Task { try? await server.run(); stopped.signal() }
            guard listening.wait(timeout: .now() + 60) == .success else { throw ValidationError("the in-process server did not start") }
            var local = self
            local.url = "http://127.0.0.1:\(port.get())"
            defer {
                Task { await server.shutdown() }
                _ = stopped.wait(timeout: .now() + 30)
            }
            return try local.run(json: json, model: model, threads: threads, verbose: verbose)
        }
        let options = try loadOptions
        try report(try LoadGenerator(options: options).run(), options: options, target: url, json: json)
    }

    /// Prints a load's results: a markdown table or one JSON object.
    func report(_ r: LoadGenerator.Report, options: LoadGenerator.Options, target: String, json: Bool) throws {
        if r.completed == 0 { throw ValidationError("no request completed against \(target): \(r.firstError ?? "unknown error")") }
        let p = LoadGenerator.Report.percentile
        let ttft = r.timeToFirstToken, itl = r.interTokenLatency
        if json {
            var object: [String: Any] = [
                "target": target, "concurrency": concurrency, "requests": options.requests, "completed": r.completed, "failed": r.failed,
                "shared_prefix_tokens": sharedPrefix,
                "prompt_tokens": [options.promptTokens.lowerBound, options.promptTokens.upperBound],
                "output_tokens": [options.outputTokens.lowerBound, options.outputTokens.upperBound],
                "seconds": r.seconds, "requests_per_second": r.requestsPerSecond, "output_tokens_per_second": r.outputTokensPerSecond,
                "ttft_ms": ["p50": p(ttft, 50) * 1000, "p90": p(ttft, 90) * 1000, "p99": p(ttft, 99) * 1000],
                "itl_ms": ["p50": p(itl, 50) * 1000, "p90": p(itl, 90) * 1000, "p99": p(itl, 99) * 1000],
            ]
            if let first = r.firstRequestTTFT { object["ttft_first_request_ms"] = first * 1000 }
            if !r.laterTTFT.isEmpty { object["ttft_later_requests_p50_ms"] = p(r.laterTTFT, 50) * 1000 }
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            func ms(_ v: Double) -> String { String(format: "%.1f", v * 1000) }
            print("| concurrency | requests | failed | req/s | output tok/s | TTFT p50/p90/p99 ms | ITL p50/p90/p99 ms |")
            print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            print("| \(concurrency) | \(r.completed) | \(r.failed) | \(String(format: "%.2f", r.requestsPerSecond)) | \(String(format: "%.1f", r.outputTokensPerSecond)) | \(ms(p(ttft, 50))) / \(ms(p(ttft, 90))) / \(ms(p(ttft, 99))) | \(ms(p(itl, 50))) / \(ms(p(itl, 90))) / \(ms(p(itl, 99))) |")
            if sharedPrefix > 0, let first = r.firstRequestTTFT, !r.laterTTFT.isEmpty {
                let later = p(r.laterTTFT, 50)
                print("shared prefix of \(sharedPrefix) tokens: TTFT of the first request \(ms(first)) ms, the others' p50 \(ms(later)) ms (\(String(format: "%.2f", later / first))×)")
            }
        }
        if let e = r.firstError { FileHandle.standardError.write("first error: \(e)\n".data(using: .utf8)!) }
    }
}

/// The in-process server's port, from its listening callback.
private final class PortBox: @unchecked Sendable {
    private let lock = NSLock()
    private var port = 0
    func set(_ p: Int) { lock.lock(); port = p; lock.unlock() }
    func get() -> Int { lock.lock(); defer { lock.unlock() }; return port }
}
