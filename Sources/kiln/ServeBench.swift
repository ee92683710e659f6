import ArgumentParser
import Foundation
import KilnServer

/// `kiln bench serve`'s options (an option group of `kiln bench`).
struct ServeBenchOptions: ParsableArguments {
    @Option(name: .long, help: "serve only: the server's base URL (plain http).") var url = "http://127.0.0.1:8080"
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

    /// Runs the load and prints the table (md) or one JSON object.
    func run(json: Bool) throws {
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
