import Foundation
import KilnEngine

extension LoadGenerator {
    /// The same load without HTTP or a tokenizer: `concurrency` clients' requests submitted straight to `engine` and
    /// stepped on this thread (each client sends its next request when its previous one finishes), timing every token
    /// as its step returns. What the engine alone sustains; the server's own cost is the difference to `run()`.
    /// Requests ignore end-of-generation tokens, as `run()` asks with `ignore_eos`.
    public func run(engine: any ServingEngine) throws -> Report {
        let plans = self.plans()
        var next = 0, submitted: [RequestID: (index: Int, at: Date)] = [:], firstAt: [RequestID: Date] = [:], lastAt: [RequestID: Date] = [:]
        var gaps: [RequestID: [Double]] = [:], counts: [RequestID: Int] = [:]
        var samples: [Sample] = [], failed = 0, firstError: String?
        func submit() {
            while next < plans.count, submitted.count < options.concurrency {
                let i = next
                next += 1
                let request = GenerationRequest(prompt: plans[i].prompt.map { Int32($0) }, maxTokens: plans[i].output)
                switch engine.submit(request, sampling: .greedy, logprobs: nil) {
                case .accepted(let id): submitted[id] = (i, Date())
                case let refused:
                    failed += 1
                    if firstError == nil { firstError = "request \(i) refused: \(refused)" }
                }
            }
        }
        let start = Date()
        submit()
        while engine.hasWork {
            let events = try engine.step()
            let now = Date()
            for event in events {
                switch event {
                case .token(let id, _):
                    if let last = lastAt[id] { gaps[id, default: []].append(now.timeIntervalSince(last)) } else { firstAt[id] = now }
                    lastAt[id] = now
                    counts[id, default: 0] += 1
                case .finished(let id, let reason):
                    guard let s = submitted.removeValue(forKey: id) else { continue }
                    if let first = firstAt[id], reason != .cancelled {
                        samples.append(Sample(request: s.index, timeToFirstToken: first.timeIntervalSince(s.at), interTokenLatencies: gaps[id] ?? [],
                                              outputTokens: counts[id] ?? 0, promptTokens: plans[s.index].prompt.count))
                    } else {
                        failed += 1
                        if firstError == nil { firstError = "request \(s.index) ended without output (\(reason))" }
                    }
                    firstAt[id] = nil; lastAt[id] = nil; gaps[id] = nil; counts[id] = nil
                }
            }
            submit()
        }
        return Report(seconds: Date().timeIntervalSince(start), completed: samples.count, failed: failed, firstError: firstError, samples: samples)
    }
}
