import Foundation
import KilnCore
import KilnCUDA

/// Picks the fastest *verified* candidate. Kernel-agnostic: callers supply how to check and how to time one
/// candidate, so the same selection runs for GEMMs, attention split counts, and (in tests) fake candidates.
public enum Autotuner {
    public struct Outcome<C> {
        public var candidate: C
        /// Median microseconds, or nil when the candidate was rejected.
        public var microseconds: Double?
        /// Why it was rejected (wrong output, launch failure), nil when it ran and verified.
        public var rejection: String?
    }

    /// Verifies every candidate before timing it; a candidate whose output is wrong (or that throws) can never win.
    /// Then the `finalists` fastest are timed again, `rounds` times each, interleaved (A B C A B C …), and each keeps
    /// the median of all its timings: a clock or temperature drift during the first pass, which ran the candidates
    /// one after another, cannot decide between near-equal kernels (seen on the H200: ~5% swings between passes).
    /// - Returns: the winner (nil if none verified) and every candidate's outcome, in input order.
    public static func select<C>(_ candidates: [C], verify: (C) throws -> String?, time: (C) throws -> Double,
                                 finalists: Int = 4, rounds: Int = 3,
                                 progress: (Int, Int) -> Void = { _, _ in }) -> (winner: Outcome<C>?, all: [Outcome<C>]) {
        var all: [Outcome<C>] = []
        for (i, c) in candidates.enumerated() {
            progress(i, candidates.count)
            do {
                if let wrong = try verify(c) {
                    all.append(Outcome(candidate: c, microseconds: nil, rejection: wrong))
                    continue
                }
                let t = try time(c)
                all.append(t.isFinite && t > 0 ? Outcome(candidate: c, microseconds: t, rejection: nil)
                                               : Outcome(candidate: c, microseconds: nil, rejection: "invalid timing \(t)"))
            } catch {
                all.append(Outcome(candidate: c, microseconds: nil, rejection: "\(error)"))
            }
        }
        let timed = all.indices.filter { all[$0].microseconds != nil }.sorted { all[$0].microseconds! < all[$1].microseconds! }
        let finals = Array(timed.prefix(finalists))
        if finals.count > 1 {
            var samples = Dictionary(uniqueKeysWithValues: finals.map { ($0, [all[$0].microseconds!]) })
            for _ in 0..<rounds {
                for i in finals {
                    if let t = try? time(all[i].candidate), t.isFinite, t > 0 { samples[i]!.append(t) }
                }
            }
            for i in finals { all[i].microseconds = median(samples[i]!) }
        }
        progress(candidates.count, candidates.count)
        let winner = all.filter { $0.microseconds != nil }.min { $0.microseconds! < $1.microseconds! }
        return (winner, all)
    }

    /// Median of `samples` (the tuner times each candidate at least 20 times).
    public static func median(_ samples: [Double]) -> Double {
        guard !samples.isEmpty else { return .nan }
        let s = samples.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}
