import ArgumentParser
import Foundation
import Logging
import KilnCore
import KilnModels
import KilnTokenizer
import KilnTemplates
import KilnCPU
import KilnCUDA
import KilnTune
import KilnEngine

/// A model loaded for the CPU engine, with its tokenizer and (for GGUF files) chat template source.
struct LoadedModel {
    var path: String
    var model: CPUModel
    var tokenizer: Tokenizer
    var chatTemplate: String?
    var loadSeconds: Double

    /// Loads `path` (or the default model), printing a progress line on stderr when it takes over a second; with -v,
    /// the time of each phase.
    static func load(path: String?, threads: Int?, device: String, logger: Logger) throws -> LoadedModel {
        guard device == "cpu" else { throw KilnError("device \"\(device)\" is not available in this build; use --device cpu") }
        let modelPath = try path ?? ModelStore.defaultModelPath()
        let start = Date()
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            if done.wait(timeout: .now() + 1) == .timedOut { logger.info("loading \(modelPath) ...") }
        }
        defer { done.signal() }
        var phase = Date()
        let weights = try openModel(path: modelPath)
        logger.debug("opened \(modelPath) (\(type(of: weights))): \(secondsSince(phase))")
        phase = Date()
        let (tokenizer, template) = try loadTokenizer(weights: weights, path: modelPath)
        logger.debug("tokenizer: \(tokenizer.vocabSize) tokens, chat template \(template == nil ? "absent" : "present"): \(secondsSince(phase))")
        phase = Date()
        let n = threads ?? ProcessInfo.processInfo.activeProcessorCount
        let model = try CPUModel(weights: weights, threads: n)
        let c = model.config
        logger.debug("CPU model: weights prepared for \(n) threads, batches of up to \(model.maxBatch) tokens: \(secondsSince(phase))")
        logger.debug("CPU products: \(model.int8ProductMatrices) matrices on int8 dot-product kernels (\(Int8Products.instructionSet))")
        logger.debug("model: \(c.architecture.rawValue), \(c.numLayers) layers, hidden \(c.hiddenSize), \(c.numHeads) heads (\(c.numKVHeads) KV), context \(c.contextLength)")
        let seconds = Date().timeIntervalSince(start)
        logger.info("loaded \(modelPath) in \(String(format: "%.2f", seconds)) s: \(c.architecture.rawValue), \(c.numLayers) layers, \(n) threads")
        return LoadedModel(path: modelPath, model: model, tokenizer: tokenizer, chatTemplate: template, loadSeconds: seconds)
    }
}

/// The tokenizer and chat-template source of a model file or Hugging Face folder.
func loadTokenizer(weights: WeightSource, path: String) throws -> (Tokenizer, String?) {
    if let g = weights as? GGUFModel {
        return (try Tokenizer(gguf: g.gguf), g.gguf["tokenizer.chat_template"]?.string)
    }
    return (try TokenizeCommand.loadTokenizer(path: path), try ModelFiles.locate(path).loadTokenizerConfig()?.chatTemplate)
}

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Generate text from a prompt, or chat interactively.",
        discussion: "Numbers may be negative where that means something (-n -1); options are checked before the model loads.")

    @Option(name: .shortAndLong, help: "Model file (GGUF) or Hugging Face folder; default: SmolLM2-135M-Instruct.")
    var model: String?
    // .unconditional: a prompt may start with a dash.
    @Option(name: .shortAndLong, parsing: .unconditional, help: "Prompt text. With --chat and no prompt: an interactive chat on stdin.")
    var prompt: String?
    @Option(name: .shortAndLong, help: "Read the prompt from this UTF-8 text file.")
    var file: String?
    @Option(name: .long, parsing: .unconditional, help: "System message of a chat (implies --chat).")
    var system: String?
    // Numeric options parse their value unconditionally, so `-n -1` and `--temp -1` reach the range checks.
    @Option(name: .short, parsing: .unconditional, help: "Tokens to generate (-1: until end of generation or the context is full).")
    var n: Int = 128
    @Option(name: .long, parsing: .unconditional, help: "Temperature, at least 0; 0 is greedy.") var temp: Float = 0.8
    @Option(name: .customLong("top-k"), parsing: .unconditional, help: "Top-k, at least 0 (0 disables).") var topK: Int = 40
    @Option(name: .customLong("top-p"), parsing: .unconditional, help: "Top-p, 0…1 (1 disables).") var topP: Float = 0.95
    @Option(name: .customLong("min-p"), parsing: .unconditional, help: "Min-p, 0…1 (0 disables).") var minP: Float = 0.05
    @Option(name: .customLong("repeat-penalty"), parsing: .unconditional, help: "Repetition penalty over the last 64 tokens, above 0 (1 disables).")
    var repeatPenalty: Float = 1
    @Option(name: .customLong("presence-penalty"), parsing: .unconditional,
            help: "Subtracted from the logit of every token generated so far, -2…2 (0 disables).")
    var presencePenalty: Float = 0
    @Option(name: .customLong("frequency-penalty"), parsing: .unconditional,
            help: "Subtracted once per occurrence among the generated tokens, -2…2 (0 disables).")
    var frequencyPenalty: Float = 0
    @Option(name: .long, parsing: .unconditional, help: "Random seed (default: random).") var seed: UInt64?
    @Option(name: .customLong("stop"), help: "Stop string (repeatable).") var stops: [String] = []
    @Flag(name: .long, help: "Apply the model's chat template (special tokens parsed); without a prompt, an interactive chat.") var chat = false
    @Option(name: .shortAndLong, parsing: .unconditional, help: "Threads (default: all cores).") var threads: Int?
    @Option(name: [.customShort("c"), .customLong("ctx-size")], parsing: .unconditional,
            help: "Context size in tokens, at least 1 (default: min(model context, 4096); at most the model's context).") var ctxSize: Int?
    @Option(name: .long, help: "Device: auto (the GPU when one is present), cpu, or cuda (Kiln's GPU kernels).") var device: String = "auto"
    @Flag(name: .shortAndLong, help: "Debug logs: load time per phase, tokens per phase, cache use, GPU kernel choices.") var verbose = false
    @OptionGroup(title: "GPU kernel choice (--device cuda)") var tuning: TuningOptions
    @OptionGroup(title: "Tensor parallelism") var tp: TensorParallelOptions

    var isChat: Bool { chat || system != nil }

    func validate() throws {
        try OptionCheck.atLeast(n, "-n", -1, note: " (-1: until end of generation)")
        try OptionCheck.finite(temp, "--temp")
        try OptionCheck.atLeast(temp, "--temp", 0, note: " (0: greedy)")
        try OptionCheck.atLeast(topK, "--top-k", 0, note: " (0 disables)")
        try OptionCheck.range(topP, "--top-p", 0...1)
        try OptionCheck.range(minP, "--min-p", 0...1)
        try OptionCheck.finite(repeatPenalty, "--repeat-penalty")
        guard repeatPenalty > 0 else { throw ValidationError("--repeat-penalty must be above 0 (1 disables), got \(repeatPenalty)") }
        try OptionCheck.range(presencePenalty, "--presence-penalty", -2...2)
        try OptionCheck.range(frequencyPenalty, "--frequency-penalty", -2...2)
        try OptionCheck.threads(threads)
        if let ctxSize { try OptionCheck.range(ctxSize, "-c/--ctx-size", 1...1 << 24, note: " (and at most the model's context)") }
        try OptionCheck.oneOf(device, "--device", OptionCheck.devices)
        if prompt != nil && file != nil { throw ValidationError("give the prompt either with -p TEXT or with -f FILE, not both") }
        if prompt?.isEmpty == true { throw ValidationError("the prompt (-p) is empty") }
        if prompt == nil && file == nil && !isChat {
            throw ValidationError("give a prompt with -p TEXT or -f FILE, or --chat for an interactive chat")
        }
        try InputFiles.requireModel(model)
        if let file, try InputFiles.readText(file).isEmpty { throw KilnError("\(file): empty prompt file") }
    }

    func run() throws {
        let resolved = try DeviceChoice.resolve(device)
        let ranks = try tp.engineRanks(config: { try TensorParallelOptions.config(path: model) }, requestedDevice: device, device: resolved)
        let logger = makeLogger(verbose: verbose)
        var options = SamplingOptions()
        options.temperature = temp; options.topK = topK; options.topP = topP; options.minP = minP
        options.repeatPenalty = repeatPenalty
        options.presencePenalty = presencePenalty; options.frequencyPenalty = frequencyPenalty
        options.seed = seed ?? UInt64.random(in: 0...UInt64.max)
        let promptText = try prompt ?? file.map { try InputFiles.readText($0) }
        let session = try EngineSession.load(path: model, device: resolved, threads: threads, contextSize: ctxSize,
                                             tuning: tuning.value, sampling: options, logger: logger, tensorParallel: ranks)
        let text = session.text
        text.onNotice = { logger.notice("\($0)") }
        if let chunk = session.promptChunk {
            let progress = PromptProgress()
            text.generator.promptChunk = chunk
            text.generator.promptProgress = { progress.update(done: $0, total: $1) }
        }
        let request = TextGenerator.Request(maxTokens: n < 0 ? Int.max : n, stops: stops)
        func report(_ r: TextGenerator.Reply) {
            print("")
            if r.reason == .contextFull { logger.warning("context full (\(text.generator.capacity) tokens): the reply stops here; -c sets a larger context") }
            let s = r.stats
            logger.info("prompt: \(s.promptTokens) tokens, \(String(format: "%.1f", s.promptTokensPerSecond)) t/s | generation: \(s.generatedTokens) tokens, \(String(format: "%.1f", s.generatedTokensPerSecond)) t/s")
            logger.debug("prompt: \(s.promptTokens) tokens fed in \(String(format: "%.3f", s.promptSeconds)) s | generation: \(s.generatedTokens) tokens in \(String(format: "%.3f", s.generateSeconds)) s, stopped by \(r.reason) | context: \(text.generator.tokens.count) of \(text.generator.capacity) positions in use")
        }
        let printText: (String) -> Void = { print($0, terminator: "") }

        if !isChat {
            guard let promptText else { throw ValidationError("a prompt (-p or -f) is needed without --chat") }
            report(try text.complete(promptText, request, onText: printText))
            return
        }
        text.startConversation(system: system)
        if let promptText { report(try text.chat(promptText, request, onText: printText)); return }
        FileHandle.standardError.write("chat: type a message, an empty line or end of input to quit\n".data(using: .utf8)!)
        while true {
            FileHandle.standardError.write("> ".data(using: .utf8)!)
            guard let line = readLine(), !line.isEmpty else { break }
            report(try text.chat(line, request, onText: printText))
        }
    }
}

/// A model loaded for generation on the chosen backend, with its tokenizer and chat template, behind one `TextGenerator`.
struct EngineSession {
    var path: String
    var text: TextGenerator
    /// Tokens per prompt feed when progress is shown: the CPU's batch (nil on the GPU, whose prefill is fast and whose
    /// feeds each run a sampling step).
    var promptChunk: Int?

    /// The context to allocate: `-c` (at most the model's own context, with a warning) or min(model context, 4096).
    static func contextSize(requested: Int?, model: ModelConfig, logger: Logger) -> Int {
        guard let requested else { return min(model.contextLength, 4096) }
        if requested > model.contextLength {
            logger.warning("-c \(requested) is more than the model's context of \(model.contextLength) tokens; using \(model.contextLength)")
            return model.contextLength
        }
        return requested
    }

    /// `tensorParallel`: the GPU engine over that many GPUs (`--tp N`, N = 1 included); nil: one GPU as always.
    static func load(path: String?, device: String, threads: Int?, contextSize: Int?, tuning: GPURun.Tuning, sampling: SamplingOptions,
                     logger: Logger, tensorParallel: Int? = nil) throws -> EngineSession {
        if device == "cpu" {
            let loaded = try LoadedModel.load(path: path, threads: threads, device: device, logger: logger)
            let positions = Self.contextSize(requested: contextSize, model: loaded.model.config, logger: logger)
            let backend = try CPUSequence(model: loaded.model, capacity: positions)
            logger.debug("KV cache: \(backend.capacity) positions")
            return EngineSession(path: loaded.path, text: try TextGenerator(backend: backend, tokenizer: loaded.tokenizer, chatTemplate: loaded.chatTemplate,
                                                                            templateName: loaded.path, sampling: sampling),
                                 promptChunk: loaded.model.maxBatch)
        }
        let modelPath = try path ?? ModelStore.defaultModelPath()
        let start = Date()
        var phase = Date()
        let weights = try openModel(path: modelPath)
        let (tokenizer, template) = try loadTokenizer(weights: weights, path: modelPath)
        logger.debug("opened \(modelPath) and its tokenizer: \(secondsSince(phase))")
        let positions = Self.contextSize(requested: contextSize, model: weights.config, logger: logger)
        phase = Date()
        if let ranks = tensorParallel {
            // The decode step needs one position past the last token.
            let tp = try GPUTensorParallelRun.engine(ranks: ranks, path: modelPath, dummy: nil, weights: weights, maxBatch: 1, maxSeq: positions + 1,
                                                     tuning: tuning)
            let backend = GPUSequence(model: tp)
            logger.info("loaded \(modelPath) on \(backend.deviceDescription) (--tp \(ranks)) in \(String(format: "%.2f", Date().timeIntervalSince(start))) s")
            return EngineSession(path: modelPath, text: try TextGenerator(backend: backend, tokenizer: tokenizer, chatTemplate: template,
                                                                          templateName: modelPath, sampling: sampling), promptChunk: nil)
        }
        // The decode step needs one position past the last token.
        let gpu = try GPURun.model(path: modelPath, dummy: nil, weights: weights, maxBatch: 1, maxSeq: positions + 1, tuning: tuning)
        logger.debug("GPU model: weights uploaded, kernels compiled, decode graph ready: \(secondsSince(phase))")
        for shape in GemmShape.of(weights.config) {
            let decode = gpu.gemm.choose(op: shape.op, format: shape.format, m: 1, n: shape.n, k: shape.k, outF32: shape.outF32)
            let prefill = gpu.gemm.choose(op: shape.op, format: shape.format, m: 512, n: shape.n, k: shape.k, outF32: shape.outF32)
            logger.debug("GEMM \(shape): decode (M=1) \(decode), prefill (M=512) \(prefill)")
        }
        let backend = GPUSequence(model: gpu)
        logger.info("loaded \(modelPath) on \(backend.deviceDescription) in \(String(format: "%.2f", Date().timeIntervalSince(start))) s")
        return EngineSession(path: modelPath, text: try TextGenerator(backend: backend, tokenizer: tokenizer, chatTemplate: template,
                                                                      templateName: modelPath, sampling: sampling), promptChunk: nil)
    }
}
