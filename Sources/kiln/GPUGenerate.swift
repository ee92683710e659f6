import ArgumentParser
import Foundation
import Logging
import KilnCore
import KilnModels
import KilnTokenizer
import KilnTemplates
import KilnCUDA
import KilnEngine

/// `kiln run --device cuda`: one sequence on Kiln's GPU engine. Sampling on the GPU is greedy (argmax)
/// for now, so a non-zero temperature is refused rather than silently ignored.
enum GPUGenerate {
    static func run(modelPath: String?, prompt: String?, chat: Bool, maxTokens: Int, temperature: Float, stops: [String],
                    contextSize: Int?, tuning: GPURun.Tuning, logger: Logger) throws {
        guard temperature == 0 else {
            throw KilnError("--device cuda decodes greedily for now; pass --temp 0 (or use --device cpu for sampling)")
        }
        guard let prompt else { throw ValidationError("--device cuda needs a prompt (-p); the interactive chat runs on the CPU") }
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
        var next = try model.prefill([ids.map { Int32($0) }])[0]
        let t1 = Date()
        var generated = 0
        while generated < maxTokens {
            if tok.isEndOfGeneration(Int(next)) { break }
            print(filter.push(decoder.push(Int(next))), terminator: "")
            generated += 1
            if filter.stopped || generated >= maxTokens || ids.count + generated + 1 >= ctxLen { break }
            next = try model.decodeStep(batch: 1)[0]
        }
        print(filter.push(decoder.flush()) + filter.flush())
        let tg = Date().timeIntervalSince(t1)
        logger.info("prompt: \(ids.count) tokens in \(String(format: "%.1f", t1.timeIntervalSince(t0) * 1000)) ms | generation: \(generated) tokens, \(String(format: "%.1f", tg > 0 ? Double(generated) / tg : 0)) t/s")
    }
}
