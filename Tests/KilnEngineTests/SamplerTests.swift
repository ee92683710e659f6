import Foundation
import XCTest
import KilnEngine

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

    func testStopStringsAreHeldBackAndCut() {
        var f = StopStringFilter(["<end>"])
        XCTAssertEqual(f.push("Hello <e"), "Hello ")
        XCTAssertEqual(f.push("n"), "")
        XCTAssertEqual(f.push("d> more"), "")
        XCTAssertTrue(f.stopped)
        var g = StopStringFilter(["STOP"])
        XCTAssertEqual(g.push("abc S"), "abc ")
        XCTAssertEqual(g.push("x"), "Sx")
        XCTAssertEqual(g.flush(), "")
    }
}
