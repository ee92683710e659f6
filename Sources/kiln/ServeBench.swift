import ArgumentParser
import Foundation
import KilnEngine
import KilnServer

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
    }

    /// Runs the load (against `url`, or an in-process server of `model` with one sequence per client) and prints the
    /// table (md) or one JSON object.
    func run(json: Bool, model: String?, threads: Int?, verbose: Bool) throws {
        guard let url else {
            let logger = makeLogger(verbose: verbose)
            let loaded = try LoadedModel.load(path: model, threads: threads, device: "cpu", logger: logger)
            let positions = EngineSession.contextSize(requested: context, model: loaded.model.config, logger: logger)
            let engine = try CPUServingEngine(model: loaded.model, maxSequences: concurrency, contextLength: positions, maxWaiting: concurrency)
            let served = try ServedModel(name: "bench", tokenizer: loaded.tokenizer, chatTemplate: loaded.chatTemplate, contextLength: positions)
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
        let options = LoadGenerator.Options(url: url, model: nil, apiKey: apiKey, concurrency: concurrency, requests: requests ?? 4 * concurrency,
                                            promptTokens: try Self.range(promptTokens, "--prompt-tokens"),
                                            outputTokens: try Self.range(outputTokens, "--output-tokens"), seed: seed)
        let r = try LoadGenerator(options: options).run()
        if r.completed == 0 { throw ValidationError("no request completed against \(url): \(r.firstError ?? "unknown error")") }
        let p = LoadGenerator.Report.percentile
        let ttft = r.timeToFirstToken, itl = r.interTokenLatency
        if json {
            let object: [String: Any] = [
                "url": url, "concurrency": concurrency, "requests": options.requests, "completed": r.completed, "failed": r.failed,
                "prompt_tokens": [options.promptTokens.lowerBound, options.promptTokens.upperBound],
                "output_tokens": [options.outputTokens.lowerBound, options.outputTokens.upperBound],
                "seconds": r.seconds, "requests_per_second": r.requestsPerSecond, "output_tokens_per_second": r.outputTokensPerSecond,
                "ttft_ms": ["p50": p(ttft, 50) * 1000, "p90": p(ttft, 90) * 1000, "p99": p(ttft, 99) * 1000],
                "itl_ms": ["p50": p(itl, 50) * 1000, "p90": p(itl, 90) * 1000, "p99": p(itl, 99) * 1000],
            ]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            func ms(_ v: Double) -> String { String(format: "%.1f", v * 1000) }
            print("| concurrency | requests | failed | req/s | output tok/s | TTFT p50/p90/p99 ms | ITL p50/p90/p99 ms |")
            print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            print("| \(concurrency) | \(r.completed) | \(r.failed) | \(String(format: "%.2f", r.requestsPerSecond)) | \(String(format: "%.1f", r.outputTokensPerSecond)) | \(ms(p(ttft, 50))) / \(ms(p(ttft, 90))) / \(ms(p(ttft, 99))) | \(ms(p(itl, 50))) / \(ms(p(itl, 90))) / \(ms(p(itl, 99))) |")
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
