import Foundation
import KilnCore
import KilnCPU
import KilnModels
import XCTest

/// Times one thread's Q4_K product over a 2048 × 2048 matrix of random blocks: the integer product against Q8_K
/// activations (quantizing them included) against the previous path, each row dequantized to f32 and then a float
/// dot product (`apply` still takes it when no Q8_K set is attached). Runs alternate between the two and the medians
/// are printed; the test itself checks only that both agree within the activation rounding, so it never fails on a
/// noisy machine. For numbers, run it from a release build:
///   swift test -c release --scratch-path .build-kq-rel -Xswiftc -enable-testing --filter KQuantBenchmarkTests
final class KQuantBenchmarkTests: XCTestCase {
    func testQ4KProductAgainstDequantizeThenFloat() throws {
        let rows = 2048, cols = 2048, reps = 7
        var rng = SplitMix64(seed: 4)
        let blocks = RandomGGUFBlocks.make(.q4_k, blocks: rows * cols / 256, scaleMagnitude: 0.1 / RandomGGUFBlocks.codeRange(.q4_k), rng: &rng)
        try blocks.withUnsafeBytes { raw in
            let w = try LinearWeight(QuantizedMatrix(name: "bench.q4_k", rows: rows, cols: cols, format: .gguf(.q4_k), data: raw))
            for tokens in [1, 16, 64] {
                let x = (0..<(tokens * cols)).map { _ in Float(rng.unit() * 2 - 1) }
                let plain = Q8Activations(maxTokens: tokens, maxCols: cols)
                let withK = Q8Activations(maxTokens: tokens, maxCols: cols)
                withK.superBlocks = Q8KActivations(maxTokens: tokens, maxCols: cols)
                var outOld = [Float](repeating: 0, count: tokens * rows), outNew = outOld
                var old: [Double] = [], new: [Double] = []
                try x.withUnsafeBufferPointer { xp in
                    let xb = xp.baseAddress!
                    func time(_ body: () -> Void) -> Double {
                        let start = DispatchTime.now().uptimeNanoseconds
                        body()
                        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
                    }
                    for _ in 0..<reps {
                        old.append(time { outOld.withUnsafeMutableBufferPointer { w.apply(rows: 0..<rows, x: xb, act: plain, tokens: tokens, out: $0.baseAddress!, outStride: rows) } })
                        new.append(time {
                            withK.superBlocks!.quantize(xb, tokens: tokens, cols: cols)
                            outNew.withUnsafeMutableBufferPointer { w.apply(rows: 0..<rows, x: xb, act: withK, tokens: tokens, out: $0.baseAddress!, outStride: rows) }
                        })
                    }
                    let scale = outOld.map(abs).max()!
                    let worst = zip(outOld, outNew).map { abs($0 - $1) }.max()!
                    XCTAssertLessThan(worst / scale, 2e-2, "Q8_K path disagrees with the float path: \(worst) of \(scale)")
                    if worst.isNaN { throw KilnError("NaN") }
                }
                func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
                print(String(format: "Q4_K %d×%d, %2d token(s), 1 thread: dequantize+float %.2f ms, Q8_K integer %.2f ms (median of %d, alternating) → %.1f×",
                             rows, cols, tokens, median(old), median(new), reps, median(old) / median(new)))
            }
        }
    }
}
