import Foundation
import XCTest
import KilnCore
import KilnModels
import KilnCPU

/// End-to-end checks of the CPU forward pass on SmolLM2-135M (Q4_1) against llama.cpp's recorded logits
/// (shared/golden/smollm2-llamacpp.json, copied to Tests/Fixtures; see its `how_to_compare`).
final class GoldenSmolLM2Tests: XCTestCase {
    struct Case { var name: String; var prompt: [Int32]; var generated: [Int32]; var gaps: [Double]
        var top5: [(ids: [Int], logits: [Double])]; var first3: [(ids: [Int], logits: [Double])]; var exactSteps: Int }

    static let goldenPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/smollm2-llamacpp.json").path
    nonisolated(unsafe) static var shared: CPUModel?

    static func model() throws -> CPUModel {
        if let m = shared { return m }
        let path = try ModelStore.defaultModelPath()
        let m = try CPUModel(weights: GGUFModel(path: path), threads: ProcessInfo.processInfo.activeProcessorCount)
        shared = m
        return m
    }

    static func cases() throws -> [Case] {
        guard let data = FileManager.default.contents(atPath: goldenPath) else { throw KilnError("no golden data at \(goldenPath)") }
        let root = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        var entries = root["prompts"] as! [[String: Any]]
        entries.append(root["chat_no_system"] as! [String: Any])
        func top(_ a: Any?) -> [(ids: [Int], logits: [Double])] {
            (a as! [[String: Any]]).map { (($0["ids"] as! [NSNumber]).map(\.intValue), ($0["logits"] as! [NSNumber]).map(\.doubleValue)) }
        }
        return entries.map { e in
            Case(name: e["id"] as! String,
                 prompt: (e["prompt_token_ids"] as! [NSNumber]).map { Int32($0.intValue) },
                 generated: (e["generated_token_ids"] as! [NSNumber]).map { Int32($0.intValue) },
                 gaps: (e["step_top1_top2_gap"] as! [NSNumber]).map(\.doubleValue),
                 top5: top(e["step_top5"]), first3: top(e["prompt_first3_positions_top5"]),
                 exactSteps: (e["steps_before_first_gap_below_0.5"] as! NSNumber).intValue)
        }
    }

    static func argmax(_ x: ArraySlice<Float>) -> Int {
        var best = x.startIndex
        for i in x.indices where x[i] > x[best] { best = i }
        return best - x.startIndex
    }

    /// Teacher forcing: feed prompt + llama.cpp's generated ids, compare every step's logits with the recorded ones.
    func testTeacherForcingMatchesLlamaCpp() throws {
        let model = try Self.model(), vocab = model.config.vocabSize
        for c in try Self.cases() {
            let cache = try model.makeCache(capacity: 256)
            let all = try model.forward(c.prompt + c.generated, cache: cache, logits: .all)
            XCTAssertEqual(all.count, (c.prompt.count + c.generated.count) * vocab)
            func check(_ pos: Int, _ ref: (ids: [Int], logits: [Double]), _ what: String) {
                let row = all[(pos * vocab)..<((pos + 1) * vocab)]
                for (id, logit) in zip(ref.ids, ref.logits) {
                    XCTAssertEqual(Double(row[pos * vocab + id]), logit, accuracy: 1.0, "\(c.name) \(what): logit of \(id)")
                }
            }
            for (p, ref) in c.first3.enumerated() { check(p, ref, "prompt position \(p)") }
            for step in 0..<c.generated.count {
                let pos = c.prompt.count - 1 + step
                let row = all[(pos * vocab)..<((pos + 1) * vocab)]
                if c.gaps[step] >= 0.5 {
                    XCTAssertEqual(Self.argmax(row), Int(c.generated[step]), "\(c.name) step \(step): top-1 differs")
                }
                check(pos, c.top5[step], "step \(step)")
            }
        }
    }

    /// Greedy decoding one token at a time (the decode path, batch of one) reproduces llama.cpp's ids up to the first near-tie.
    func testGreedyDecodeReproducesLlamaCpp() throws {
        let model = try Self.model()
        for c in try Self.cases() {
            let cache = try model.makeCache(capacity: 256)
            var logits = try model.forward(c.prompt, cache: cache, logits: .last)
            var out: [Int32] = []
            for _ in 0..<c.exactSteps {
                let next = Int32(Self.argmax(logits[...]))
                out.append(next)
                logits = try model.forward([next], cache: cache, logits: .last)
            }
            XCTAssertEqual(out, Array(c.generated.prefix(c.exactSteps)), "\(c.name): greedy ids differ")
        }
    }
}

/// `floatWeights`: quantized matrices dequantized to f32 at load, float activations (the reference mode the GPU's
/// arithmetic is judged against). Same model, different rounding: it must agree with llama.cpp on every clear top-1
/// and stay close in value, yet not be the Q8 path in disguise.
final class FloatWeightsSmolLM2Tests: XCTestCase {
    func testFloatWeightsAgreeOnTopOneAndDifferInRounding() throws {
        let path = try ModelStore.defaultModelPath()
        let q8 = try GoldenSmolLM2Tests.model()
        let exact = try CPUModel(weights: GGUFModel(path: path), threads: ProcessInfo.processInfo.activeProcessorCount, floatWeights: true)
        let vocab = exact.config.vocabSize
        let c = try GoldenSmolLM2Tests.cases()[0]
        let ids = c.prompt + c.generated.prefix(16)
        let a = try q8.forward(ids, cache: try q8.makeCache(capacity: 64), logits: .all)
        let b = try exact.forward(ids, cache: try exact.makeCache(capacity: 64), logits: .all)
        XCTAssertFalse(b.contains { $0.isNaN })
        var maxDiff: Float = 0, num = 0.0, den = 0.0
        for (x, y) in zip(a, b) { maxDiff = max(maxDiff, abs(x - y)); num += Double((x - y) * (x - y)); den += Double(x * x) }
        XCTAssertGreaterThan(maxDiff, 1e-3, "float weights must not reuse the Q8 activation path")
        XCTAssertLessThan((num / den).squareRoot(), 0.08, "relative L2 between the two CPU modes")
        for step in 0..<16 where c.gaps[step] >= 0.5 {
            let pos = c.prompt.count - 1 + step
            XCTAssertEqual(GoldenSmolLM2Tests.argmax(b[(pos * vocab)..<((pos + 1) * vocab)]), Int(c.generated[step]), "step \(step)")
        }
    }
}
