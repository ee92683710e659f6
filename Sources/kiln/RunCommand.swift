import ArgumentParser
import Foundation
import Logging
import KilnCore
import KilnModels
import KilnTokenizer
import KilnTemplates
import KilnCPU
import KilnEngine

/// A model loaded for the CPU engine, with its tokenizer and (for GGUF files) chat template source.
struct LoadedModel {
    var path: String
    var model: CPUModel
    var tokenizer: Tokenizer
    var chatTemplate: String?
    var loadSeconds: Double

    /// Loads `path` (or the default model), printing a progress line on stderr when it takes over a second.
    static func load(path: String?, threads: Int?, device: String, logger: Logger) throws -> LoadedModel {
        guard device == "cpu" else { throw KilnError("device \"\(device)\" is not available in this build; use --device cpu") }
        let modelPath = try path ?? ModelStore.defaultModelPath()
        let start = Date()
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            if done.wait(timeout: .now() + 1) == .timedOut {
                FileHandle.standardError.write("loading \(modelPath) ...\n".data(using: .utf8)!)
            }
        }
        defer { done.signal() }
        let weights = try openModel(path: modelPath)
        let (tokenizer, template) = try loadTokenizer(weights: weights, path: modelPath)
        let n = threads ?? ProcessInfo.processInfo.activeProcessorCount
        let model = try CPUModel(weights: weights, threads: n)
        let seconds = Date().timeIntervalSince(start)
        logger.info("loaded \(modelPath) in \(String(format: "%.2f", seconds)) s: \(model.config.architecture.rawValue), \(model.config.numLayers) layers, \(n) threads")
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

/// Logs go to stderr so stdout carries only generated text.
func makeLogger(verbose: Bool = false) -> Logger {
    var l = Logger(label: "kiln", factory: { StreamLogHandler.standardError(label: $0) })
    l.logLevel = verbose ? .debug : .info
    return l
}

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Generate text from a prompt, or chat interactively.")

    @Option(name: .shortAndLong, help: "Model file (GGUF) or Hugging Face folder; default: SmolLM2-135M-Instruct.")
    var model: String?
    @Option(name: .shortAndLong, help: "Prompt text. With --chat and no prompt: an interactive chat on stdin.")
    var prompt: String?
    @Option(name: .short, help: "Tokens to generate (-1: until end of generation or the context is full).")
    var n: Int = 128
    @Option(name: .long, help: "Temperature; 0 is greedy.") var temp: Float = 0.8
    @Option(name: .customLong("top-k"), help: "Top-k (0 disables).") var topK: Int = 40
    @Option(name: .customLong("top-p"), help: "Top-p (1 disables).") var topP: Float = 0.95
    @Option(name: .customLong("min-p"), help: "Min-p (0 disables).") var minP: Float = 0.05
    @Option(name: .customLong("repeat-penalty"), help: "Repetition penalty over the last 64 tokens (1 disables).") var repeatPenalty: Float = 1
    @Option(name: .customLong("presence-penalty"), help: "Subtracted from the logit of every token generated so far (0 disables).")
    var presencePenalty: Float = 0
    @Option(name: .customLong("frequency-penalty"), help: "Subtracted once per occurrence among the generated tokens (0 disables).")
    var frequencyPenalty: Float = 0
    @Option(name: .long, help: "Random seed (default: random).") var seed: UInt64?
    @Option(name: .customLong("stop"), help: "Stop string (repeatable).") var stops: [String] = []
    @Flag(name: .long, help: "Apply the model's chat template (special tokens parsed).") var chat = false
    @Option(name: .shortAndLong, help: "Threads (default: all cores).") var threads: Int?
    @Option(name: [.customShort("c"), .customLong("ctx-size")], help: "Context size (default: min(model context, 4096)).") var ctxSize: Int?
    @Option(name: .long, help: "Device: auto (the GPU when one is present), cpu, or cuda (Kiln's GPU kernels).") var device: String = "auto"
    @Flag(name: .shortAndLong, help: "Verbose logs.") var verbose = false
    @OptionGroup(title: "GPU kernel choice (--device cuda)") var tuning: TuningOptions

    func run() throws {
        let logger = makeLogger(verbose: verbose)
        var options = SamplingOptions()
        options.temperature = temp; options.topK = topK; options.topP = topP; options.minP = minP
        options.repeatPenalty = repeatPenalty
        options.presencePenalty = presencePenalty; options.frequencyPenalty = frequencyPenalty
        options.seed = seed ?? UInt64.random(in: 0...UInt64.max)
        let session = try EngineSession.load(path: model, device: try DeviceChoice.resolve(device), threads: threads, contextSize: ctxSize,
                                             tuning: tuning.value, sampling: options, logger: logger)
        let text = session.text
        let request = TextGenerator.Request(maxTokens: n < 0 ? Int.max : n, stops: stops)
        func report(_ r: TextGenerator.Reply) {
            print("")
            if r.reason == .contextFull { logger.warning("context full (\(text.generator.capacity) tokens)") }
            let s = r.stats
            logger.info("prompt: \(s.promptTokens) tokens, \(String(format: "%.1f", s.promptTokensPerSecond)) t/s | generation: \(s.generatedTokens) tokens, \(String(format: "%.1f", s.generatedTokensPerSecond)) t/s")
        }
        let printText: (String) -> Void = { print($0, terminator: "") }

        if !chat {
            guard let prompt else { throw ValidationError("a prompt (-p) is needed without --chat") }
            report(try text.complete(prompt, request, onText: printText))
            return
        }
        if let prompt { report(try text.chat(prompt, request, onText: printText)); return }
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

    static func load(path: String?, device: String, threads: Int?, contextSize: Int?, tuning: GPURun.Tuning, sampling: SamplingOptions,
                     logger: Logger) throws -> EngineSession {
        if device == "cpu" {
            let loaded = try LoadedModel.load(path: path, threads: threads, device: device, logger: logger)
            let backend = try CPUSequence(model: loaded.model, capacity: contextSize ?? min(loaded.model.config.contextLength, 4096))
            return EngineSession(path: loaded.path, text: try TextGenerator(backend: backend, tokenizer: loaded.tokenizer, chatTemplate: loaded.chatTemplate,
                                                                            templateName: loaded.path, sampling: sampling))
        }
        let modelPath = try path ?? ModelStore.defaultModelPath()
        let start = Date()
        let weights = try openModel(path: modelPath)
        let (tokenizer, template) = try loadTokenizer(weights: weights, path: modelPath)
        let positions = contextSize ?? min(weights.config.contextLength, 4096)
        // The decode step needs one position past the last token.
        let gpu = try GPURun.model(path: modelPath, dummy: nil, weights: weights, maxBatch: 1, maxSeq: positions + 1, tuning: tuning)
        let backend = GPUSequence(model: gpu)
        logger.info("loaded \(modelPath) on \(backend.deviceDescription) in \(String(format: "%.2f", Date().timeIntervalSince(start))) s")
        return EngineSession(path: modelPath, text: try TextGenerator(backend: backend, tokenizer: tokenizer, chatTemplate: template,
                                                                      templateName: modelPath, sampling: sampling))
    }
}
