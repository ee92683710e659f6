import ArgumentParser
import Foundation
import Logging
import KilnCore
import KilnModels
import KilnTokenizer
import KilnTemplates
import KilnCUDA
import KilnGPU
import KilnEngine

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

/// `kiln run --device cuda`: one sequence on Kiln's GPU engine. Greedy decoding samples on the GPU (only the ids
/// cross to the host); with a temperature, the logits row of each step is sampled on the host with the same
/// sampler as the CPU engine (top-k, top-p, min-p, repetition penalty, seed).
enum GPUGenerate {
    static func run(modelPath: String?, prompt: String?, chat: Bool, maxTokens: Int, sampling: SamplingOptions, stops: [String],
                    contextSize: Int?, tuning: GPURun.Tuning, logger: Logger) throws {
        guard let prompt else { throw ValidationError("--device cuda needs a prompt (-p); the interactive chat runs on the CPU (--device cpu)") }
        let path = try modelPath ?? ModelStore.defaultModelPath()
        let start = Date()
        let weights = try openModel(path: path)
        let (tok, templateSource) = try loadTokenizer(weights: weights, path: path)
        let ctxLen = contextSize ?? min(weights.config.contextLength, 4096)
        let model = try GPURun.model(path: path, dummy: nil, weights: weights, maxBatch: 1, maxSeq: ctxLen, tuning: tuning)
        logger.info("loaded \(path) on \(model.context.info.name) in \(String(format: "%.2f", Date().timeIntervalSince(start))) s")

        var ids: [Int]
        if chat {
            guard let source = templateSource else { throw KilnError("\(path): no chat template for --chat") }
            let template = try ChatTemplate(source: source, name: path)
            let rendered = try template.render(messages: [ChatMessage(role: "user", content: prompt)], addGenerationPrompt: true,
                                               bosToken: tok.bosId.map { tok.tokenText($0) } ?? "",
                                               eosToken: tok.eosId.map { tok.tokenText($0) } ?? "")
            ids = tok.encode(rendered, addSpecial: false, parseSpecial: true)
        } else {
            ids = tok.encode(prompt, addSpecial: true, parseSpecial: false)
        }
        guard !ids.isEmpty else { throw KilnError("the prompt encodes to no tokens") }
        guard ids.count < ctxLen else { throw KilnError("the prompt has \(ids.count) tokens; the context holds \(ctxLen)") }

        var decoder = StreamingDecoder(tokenizer: tok)
        var filter = StopStringFilter(stops)
        let t0 = Date()
        var sampler = Sampler(options: sampling)
        var history = ids.map { Int32($0) }
        /// The next token: the GPU's argmax when greedy, else sampled here from the step's logits.
        func choose(_ greedy: Int32) throws -> Int32 {
            guard sampling.temperature > 0 else { return greedy }
            let row = try model.lastLogits(batch: 1)
            let id = row.withUnsafeBufferPointer { sampler.sample($0, history: history) }
            try model.setNextIds([id])
            return id
        }
        var next = try choose(try model.prefill([history])[0])
        let t1 = Date()
        var generated = 0
        while generated < maxTokens {
            if tok.isEndOfGeneration(Int(next)) { break }
            print(filter.push(decoder.push(Int(next))), terminator: "")
            history.append(next)
            generated += 1
            if filter.stopped || generated >= maxTokens || ids.count + generated + 1 >= ctxLen { break }
            next = try choose(try model.decodeStep(batch: 1)[0])
        }
        print(filter.push(decoder.flush()) + filter.flush())
        let tg = Date().timeIntervalSince(t1)
        logger.info("prompt: \(ids.count) tokens in \(String(format: "%.1f", t1.timeIntervalSince(t0) * 1000)) ms | generation: \(generated) tokens, \(String(format: "%.1f", tg > 0 ? Double(generated) / tg : 0)) t/s")
    }
}
