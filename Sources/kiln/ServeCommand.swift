import ArgumentParser
import Foundation
import Logging
import KilnCore
import KilnEngine
import KilnServer
import KilnModels
import KilnTokenizer

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Serve a model over an OpenAI-compatible HTTP API (GPU or CPU engine).",
        discussion: """
            Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health, GET /metrics (Prometheus).
            Requests run together: each engine step batches every running sequence's next token and the next chunks of new
            prompts. SIGINT or SIGTERM: stop taking requests, let running ones finish (--shutdown-timeout), exit 0.
            On the GPU the KV cache is one pool of 16-position blocks sized from the memory left after the weights (--kv-blocks
            overrides); decode steps replay CUDA graphs captured per batch size.
            """)

    @Option(name: .shortAndLong, help: "Model file (GGUF) or Hugging Face folder; default: SmolLM2-135M-Instruct.") var model: String?
    @Option(name: .long, help: "Address to listen on (loopback by default).") var host = "127.0.0.1"
    @Option(name: .long, parsing: .unconditional, help: "Port (0: any free port, named in the log).") var port = 8080
    @Option(name: .long, help: "Device: auto (the GPU when one is present), cpu or cuda.") var device = "auto"
    @Option(name: .customLong("api-key"), help: "Accept this bearer key on /v1/* (repeatable; none: no key needed).") var apiKeys: [String] = []
    @Option(name: .customLong("max-sequences"), parsing: .unconditional, help: "Requests running at once (default: 8 on the CPU, 256 on the GPU).")
    var maxSequences: Int?
    @Option(name: .customLong("max-waiting"), parsing: .unconditional, help: "Requests waiting beyond the running ones; more get 429.")
    var maxWaiting = 64
    @Option(name: [.customShort("c"), .customLong("context")], parsing: .unconditional,
            help: "Context per sequence in tokens (default: min(model context, 4096)).") var context: Int?
    @Option(name: .customLong("served-model-name"), help: "The model's name in the API (default: the file name without .gguf).")
    var servedModelName: String?
    @Option(name: .customLong("token-budget"), parsing: .unconditional,
            help: "Token rows per engine step: decode rows plus prompt chunks (CPU: default and maximum the model's batch, 64; GPU: default 2048).")
    var tokenBudget: Int?
    @Option(name: .customLong("kv-blocks"), parsing: .unconditional,
            help: "KV-cache blocks of 16 positions in the pool (default: enough for every sequence to reach the context); blocks beyond what running requests hold keep cached prefixes.")
    var kvBlocks: Int?
    @Flag(name: .customLong("no-prefix-caching"), help: "Compute every prompt in full instead of reusing the cached blocks of an earlier request with the same prefix.")
    var noPrefixCaching = false
    @Option(name: .customLong("shutdown-timeout"), parsing: .unconditional, help: "Seconds running requests may take to finish on shutdown.")
    var shutdownTimeout: Double = 10
    @Option(name: .shortAndLong, parsing: .unconditional, help: "Threads (default: all cores).") var threads: Int?
    @Flag(name: .shortAndLong, help: "Debug logs.") var verbose = false
    @OptionGroup(title: "GPU kernel choice (--device cuda)") var tuning: TuningOptions
    @OptionGroup(title: "Tensor parallelism") var tp: TensorParallelOptions

    func validate() throws {
        try OptionCheck.oneOf(device, "--device", OptionCheck.devices)
        try OptionCheck.range(port, "--port", 0...65535)
        if let maxSequences { try OptionCheck.range(maxSequences, "--max-sequences", 1...4096) }
        try OptionCheck.range(maxWaiting, "--max-waiting", 0...1 << 20)
        if let context { try OptionCheck.range(context, "-c/--context", 2...1 << 24, note: " (and at most the model's context)") }
        if let tokenBudget { try OptionCheck.atLeast(tokenBudget, "--token-budget", 1) }
        if let kvBlocks { try OptionCheck.atLeast(kvBlocks, "--kv-blocks", 1) }
        guard shutdownTimeout >= 0, shutdownTimeout.isFinite else { throw ValidationError("--shutdown-timeout must be at least 0, got \(shutdownTimeout)") }
        if apiKeys.contains(where: \.isEmpty) { throw ValidationError("--api-key must not be empty") }
        if servedModelName?.isEmpty == true { throw ValidationError("--served-model-name must not be empty") }
        try OptionCheck.threads(threads)
        try InputFiles.requireModel(model)
    }

    func run() throws {
        try tp.refuseForServe { try TensorParallelOptions.config(path: model) }
        let logger = makeLogger(verbose: verbose)
        let where_ = try DeviceChoice.resolve(device)
        let engine: any ServingEngine
        let tokenizer: Tokenizer, chatTemplate: String?, path: String, positions: Int
        if where_ == "cuda" {
            path = try model ?? ModelStore.defaultModelPath()
            let source = try openModel(path: path)
            (tokenizer, chatTemplate) = try loadTokenizer(weights: source, path: path)
            let gpu = try GPURun.servingEngine(path: nil, dummy: nil, weights: source,
                                               shape: .init(sequences: maxSequences ?? 256, context: context, tokenBudget: tokenBudget, kvBlocks: kvBlocks,
                                                            maxWaiting: maxWaiting, prefixCaching: !noPrefixCaching),
                                               tuning: tuning.value)
            positions = gpu.scheduler.config.contextLength
            engine = gpu
        } else {
            let loaded = try LoadedModel.load(path: model, threads: threads, device: "cpu", logger: logger)
            positions = EngineSession.contextSize(requested: context, model: loaded.model.config, logger: logger)
            engine = try CPUServingEngine(model: loaded.model, maxSequences: maxSequences ?? 8, contextLength: positions, maxWaiting: maxWaiting,
                                          tokenBudget: tokenBudget, kvBlocks: kvBlocks, prefixCaching: !noPrefixCaching)
            (tokenizer, chatTemplate, path) = (loaded.tokenizer, loaded.chatTemplate, loaded.path)
        }
        let name = servedModelName ?? URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        let served = try ServedModel(name: name, tokenizer: tokenizer, chatTemplate: chatTemplate, contextLength: positions)
        var config = ServerConfiguration()
        config.host = host; config.port = port; config.apiKeys = apiKeys; config.shutdownSeconds = shutdownTimeout
        let sched = engine.scheduler.config
        logger.info("serving '\(name)' on \(engine.deviceDescription): \(sched.maxRunning) sequences of \(positions) positions, \(maxWaiting) waiting at most, \(sched.tokenBudget) tokens per step, \(sched.blocks) KV blocks, prefix caching \(noPrefixCaching ? "off" : "on")")
        let server = OpenAIServer(engine: engine, model: served, configuration: config, logger: logger)
        // ArgumentParser's command is synchronous; the server runs on Swift concurrency until it shuts down.
        let done = DispatchSemaphore(value: 0)
        let failure = LockedError()
        Task {
            do { try await server.run() } catch { failure.set(error) }
            done.signal()
        }
        done.wait()
        if let error = failure.get() { throw error }
        logger.info("server stopped")
    }
}

/// The server task's error, handed to the waiting command thread.
private final class LockedError: @unchecked Sendable {
    private let lock = NSLock()
    private var error: Error?
    func set(_ e: Error) { lock.lock(); error = e; lock.unlock() }
    func get() -> Error? { lock.lock(); defer { lock.unlock() }; return error }
}
