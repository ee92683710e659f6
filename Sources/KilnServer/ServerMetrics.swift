import Foundation
import Prometheus

/// The server's Prometheus metrics (`GET /metrics`, text format): requests by endpoint and status, token counts,
/// latency histograms, and the engine's state after its last step.
public final class ServerMetrics: @unchecked Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let promptTokens, generatedTokens, prefixCacheHits: Counter
    private let timeToFirstToken, interTokenLatency, requestDuration: ValueHistogram
    private let waiting, running, blocksUsed, blocksFree, blocksCached: Gauge
    private let lock = NSLock()
    private var lastCacheHits = 0

    public init() {
        promptTokens = registry.makeCounter(name: "kiln_prompt_tokens_total", help: "Prompt tokens of finished requests.")
        generatedTokens = registry.makeCounter(name: "kiln_generation_tokens_total", help: "Tokens generated for finished requests.")
        prefixCacheHits = registry.makeCounter(name: "kiln_prefix_cache_hits_total",
                                               help: "KV blocks a request took from the prefix cache instead of computing them.")
        let latency: [Double] = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80]
        timeToFirstToken = registry.makeValueHistogram(name: "kiln_time_to_first_token_seconds", buckets: latency,
                                                       help: "From a request's arrival to its first generated token.")
        interTokenLatency = registry.makeValueHistogram(name: "kiln_inter_token_latency_seconds", buckets: latency,
                                                        help: "Between consecutive tokens of a request.")
        requestDuration = registry.makeValueHistogram(name: "kiln_request_duration_seconds", buckets: latency,
                                                      help: "From a generation request's arrival to its last token.")
        waiting = registry.makeGauge(name: "kiln_requests_waiting", help: "Requests in the queue (not yet running).")
        running = registry.makeGauge(name: "kiln_requests_running", help: "Sequences in the running batch.")
        blocksUsed = registry.makeGauge(name: "kiln_kv_blocks_used", help: "KV-cache blocks held by running sequences (a shared block once).")
        blocksFree = registry.makeGauge(name: "kiln_kv_blocks_free", help: "KV-cache blocks free (cached prefixes included).")
        blocksCached = registry.makeGauge(name: "kiln_kv_blocks_cached",
                                          help: "Free KV-cache blocks still holding a cached prefix (reused on a hit, evicted least recently used first).")
    }

    /// One finished HTTP request (every endpoint, every status).
    public func request(endpoint: String, status: Int) {
        registry.makeCounter(name: "kiln_requests_total", labels: [("endpoint", endpoint), ("status", String(status))],
                             help: "HTTP requests by endpoint and status code.").increment()
    }

    public func tokens(prompt: Int, generated: Int) {
        promptTokens.increment(by: Int64(prompt))
        generatedTokens.increment(by: Int64(generated))
    }

    public func firstToken(after seconds: Double) { timeToFirstToken.record(seconds) }
    public func interToken(_ seconds: Double) { interTokenLatency.record(seconds) }
    public func finished(after seconds: Double) { requestDuration.record(seconds) }

    /// The engine's state, from the serving loop after each step.
    public func engineState(waiting w: Int, running r: Int, blocksUsed u: Int, blocksFree f: Int, blocksCached c: Int, prefixCacheHits hits: Int) {
        waiting.set(Double(w)); running.set(Double(r)); blocksUsed.set(Double(u)); blocksFree.set(Double(f)); blocksCached.set(Double(c))
        lock.lock()
        let delta = hits - lastCacheHits
        lastCacheHits = hits
        lock.unlock()
        if delta > 0 { prefixCacheHits.increment(by: Int64(delta)) }
    }

    public func text() -> String { registry.emitToString() }
}
