import Foundation
import XCTest
import KilnCore

final class SamplerTests: XCTestCase {
    func ids(_ logits: [Float], _ o: SamplingOptions, history: [Int32] = []) -> [Int32] {
        var s = Sampler(options: o)
        return logits.withUnsafeBufferPointer { s.candidates($0, history: history).map(\.id) }
    }
    func options(topK: Int = 0, topP: Float = 1, minP: Float = 0, penalty: Float = 1, temp: Float = 1, seed: UInt64 = 1) -> SamplingOptions {
        var o = SamplingOptions()
        o.topK = topK; o.topP = topP; o.minP = minP; o.repeatPenalty = penalty; o.temperature = temp; o.seed = seed
        return o
    }

    func testGreedyTiesGoToLowestId() {
        var s = Sampler(options: .greedy)
        XCTAssertEqual([1, 3, 3, 2].withUnsafeBufferPointer { s.sample($0) }, 1)
        XCTAssertEqual([5, -1, 5].withUnsafeBufferPointer { s.sample($0) }, 0)
        XCTAssertEqual([-3, -2, -2.5].withUnsafeBufferPointer { s.sample($0) }, 1)
    }

    func testTopKKeepsTheKHighestInOrder() {
        XCTAssertEqual(ids([0.1, 2, -1, 3, 2, 0], options(topK: 3)), [3, 1, 4])   // tie 2 vs 2: lower id first
        XCTAssertEqual(ids([0.1, 2, -1, 3], options(topK: 0)), [3, 1, 0, 2])
    }

    func testTopPAndMinPByHand() {
        // Probabilities 0.5, 0.3, 0.15, 0.05 (logits are their logarithms).
        let logits: [Float] = [0.3, 0.05, 0.5, 0.15].map { Float(log(Double($0))) }
        XCTAssertEqual(ids(logits, options(topP: 0.75)), [2, 0])        // 0.5 < 0.75 <= 0.8
        XCTAssertEqual(ids(logits, options(topP: 0.9)), [2, 0, 3])      // 0.8 < 0.9 <= 0.95
        XCTAssertEqual(ids(logits, options(minP: 0.2)), [2, 0, 3])      // threshold 0.1 drops 0.05
        XCTAssertEqual(ids(logits, options(minP: 0.7)), [2])            // threshold 0.35 keeps only 0.5
        XCTAssertEqual(ids(logits, options(topK: 3, topP: 0.99, minP: 0.5)), [2, 0]) // min-p 0.25 after top-k/top-p
    }

    func testRepetitionPenaltyDividesPositiveAndMultipliesNegative() {
        var s = Sampler(options: options(penalty: 4))
        let c = [2, -2, 1].withUnsafeBufferPointer { s.candidates($0, history: [0, 1, 0]) }
        XCTAssertEqual(c.map(\.id), [2, 0, 1])
        XCTAssertEqual(c.map(\.logit), [1, 0.5, -8])
        var g = Sampler(options: { var o = options(penalty: 4); o.temperature = 0; return o }())
        XCTAssertEqual([2, -2, 1].withUnsafeBufferPointer { g.sample($0, history: [0]) }, 2)
    }

    func testSameSeedSameTokensAndDistribution() {
        let logits: [Float] = [0, Float(log(3.0)), -30]
        func draw(_ seed: UInt64, _ n: Int) -> [Int32] {
            var s = Sampler(options: options(seed: seed))
            return (0..<n).map { _ in logits.withUnsafeBufferPointer { s.sample($0) } }
        }
        XCTAssertEqual(draw(42, 50), draw(42, 50))
        XCTAssertNotEqual(draw(42, 50), draw(43, 50))
        let many = draw(7, 4000)
        let share = Double(many.filter { $0 == 1 }.count) / 4000
        XCTAssertEqual(share, 0.75, accuracy: 0.03)
        XCTAssertFalse(many.contains(2))   // removed by min-p... here by its tiny probability (no min-p): 1e-13
    }

    func testPresenceAndFrequencyPenaltiesCountOnlyGeneratedTokens() {
        // Logits [2, 1, 0.5, -1]; history [1 | 0, 0, 2]: token 1 is the prompt, 0 was generated twice, 2 once.
        var o = options(); o.presencePenalty = 0.5; o.frequencyPenalty = 0.25
        var s = Sampler(options: o)
        let logits: [Float] = [2, 1, 0.5, -1]
        let c = logits.withUnsafeBufferPointer { s.candidates($0, history: [1, 0, 0, 2], promptLength: 1) }
        // 0: 2 − (0.5 + 2·0.25) = 1; 2: 0.5 − (0.5 + 0.25) = −0.25; 1 and 3 unchanged (tie 1 vs 1: lower id first).
        XCTAssertEqual(c.map(\.id), [0, 1, 2, 3])
        XCTAssertEqual(c.map(\.logit), [1, 1, -0.25, -1])
        // With no prompt, token 1 counts once too: 1 − 0.75 = 0.25.
        let all = logits.withUnsafeBufferPointer { s.candidates($0, history: [1, 0, 0, 2]) }
        XCTAssertEqual(all.map(\.logit), [1, 0.25, -0.25, -1])
    }

    func testRepetitionThenPresenceAndFrequency() {
        // Repetition 2 over the last 2 tokens ([0, 2]) first, then presence 0.5 + frequency 0.25·count.
        var o = options(penalty: 2); o.repeatLastN = 2; o.presencePenalty = 0.5; o.frequencyPenalty = 0.25
        var s = Sampler(options: o)
        let c = [2, 1, 0.5, -1].withUnsafeBufferPointer { s.candidates($0, history: [1, 0, 0, 2], promptLength: 1) }
        // 0: 2/2 − 1 = 0; 2: 0.5/2 − 0.75 = −0.5; 1: 1 (prompt, outside the window); 3: −1.
        XCTAssertEqual(c.map(\.id), [1, 0, 2, 3])
        XCTAssertEqual(c.map(\.logit), [1, 0, -0.5, -1])
        // Greedy follows the penalized logits.
        o.temperature = 0
        var g = Sampler(options: o)
        XCTAssertEqual([2, 1, 0.5, -1].withUnsafeBufferPointer { g.sample($0, history: [1, 0, 0, 2], promptLength: 1) }, 1)
        XCTAssertEqual([2, 1, 0.5, -1].withUnsafeBufferPointer { Sampler.distribution($0, options: o, history: [1, 0, 0, 2], promptLength: 1) }.map(\.id), [1])
    }

    func testZeroPenaltiesChangeNothing() {
        let logits: [Float] = [0.3, -2, 1.5, 0.7, 0.7]
        let plain = ids(logits, options())
        XCTAssertEqual(plain, [2, 3, 4, 0, 1])
        XCTAssertEqual(ids(logits, options(), history: [2, 2, 3, 0]), plain)
        let c = { var s = Sampler(options: self.options()); return logits.withUnsafeBufferPointer { s.candidates($0, history: [2, 2, 3]) } }()
        XCTAssertEqual(c.map(\.logit), [1.5, 0.7, 0.7, 0.3, -2])
    }

    func testDistributionAppliesTemperatureAfterTopPAndMinP() {
        // Probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1; top-p 0.9 keeps 3 of them.
        let logits: [Float] = [0.3, 0.05, 0.5, 0.15].map { Float(log(Double($0))) }
        func dist(_ o: SamplingOptions) -> [(id: Int32, probability: Double)] { logits.withUnsafeBufferPointer { Sampler.distribution($0, options: o) } }
        let t1 = dist(options(topP: 0.9))
        XCTAssertEqual(t1.map(\.id), [2, 0, 3])
        for (got, want) in zip(t1.map(\.probability), [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95]) { XCTAssertEqual(got, want, accuracy: 1e-6) }
        // Temperature 0.5 squares the weights of the survivors: 0.25, 0.09, 0.0225 (sum 0.3625).
        let t05 = dist(options(topP: 0.9, temp: 0.5))
        for (got, want) in zip(t05.map(\.probability), [0.25 / 0.3625, 0.09 / 0.3625, 0.0225 / 0.3625]) { XCTAssertEqual(got, want, accuracy: 1e-6) }
        // Temperature 2 with top-p 0.75: the cut is made at temperature 1 (0.5 < 0.75 <= 0.8: two tokens). Over the
        // tempered row (0.379, 0.294, 0.208, …) it would keep three.
        let t2 = dist(options(topP: 0.75, temp: 2))
        XCTAssertEqual(t2.map(\.id), [2, 0])
        let (a, b) = (0.5.squareRoot(), 0.3.squareRoot())
        XCTAssertEqual(t2[0].probability, a / (a + b), accuracy: 1e-6)
        // min-p 0.2 at temperature 1 drops 0.05 (< 0.1) whatever the temperature.
        XCTAssertEqual(dist(options(minP: 0.2, temp: 3)).map(\.id), [2, 0, 3])
        // top-k at or beyond the vocabulary keeps everything, as 0 does.
        XCTAssertEqual(dist(options(topK: 4)).map(\.id), [2, 0, 3, 1])
        XCTAssertEqual(dist(options(topK: 9)).map(\.id), [2, 0, 3, 1])
        XCTAssertEqual(dist(.greedy).map(\.id), [2])
        XCTAssertEqual(dist(.greedy).map(\.probability), [1])
    }

    func testDrawsFollowTheDistribution() {
        // Temperature 0.5 over probabilities 0.5, 0.3, 0.15 (top-p 0.9): 0.690, 0.248, 0.062 (see above).
        let logits: [Float] = [0.3, 0.05, 0.5, 0.15].map { Float(log(Double($0))) }
        var s = Sampler(options: options(topP: 0.9, temp: 0.5, seed: 11))
        var counts = [Int](repeating: 0, count: 4)
        let n = 20_000
        for _ in 0..<n { counts[Int(logits.withUnsafeBufferPointer { s.sample($0) })] += 1 }
        XCTAssertEqual(counts[1], 0)
        XCTAssertEqual(Double(counts[2]) / Double(n), 0.25 / 0.3625, accuracy: 0.015)
        XCTAssertEqual(Double(counts[0]) / Double(n), 0.09 / 0.3625, accuracy: 0.015)
        XCTAssertEqual(Double(counts[3]) / Double(n), 0.0225 / 0.3625, accuracy: 0.01)
    }

    func testNaNLogitsAreNeverChosen() {
        let logits: [Float] = [.nan, 1, .nan, 0.5]
        XCTAssertEqual(logits.withUnsafeBufferPointer { Sampler.argmax($0) }, 1)
        XCTAssertEqual([Float.nan, .nan].withUnsafeBufferPointer { Sampler.argmax($0) }, 0)
        let d = logits.withUnsafeBufferPointer { Sampler.distribution($0, options: options()) }
        XCTAssertEqual(d.map(\.id), [1, 3, 0, 2])
        XCTAssertEqual(d[2].probability, 0)
        XCTAssertEqual(d[3].probability, 0)
        var s = Sampler(options: options(seed: 3))
        for _ in 0..<200 { XCTAssertTrue([1, 3].contains(logits.withUnsafeBufferPointer { s.sample($0) })) }
        XCTAssertEqual(ids(logits, options(topK: 2)), [1, 3])
    }
}
