import XCTest
import KilnCore
import KilnModels
@testable import KilnGPU
@testable import KilnKernels
@testable import KilnCUDA

/// The host side of the GPU tensor-parallel engine that runs without a GPU: the structs the driver and the kernels read
/// through pointers (a wrong offset would be silent in the -Ounchecked release build) and the layout of the logits gather.
final class TensorParallelHostTests: XCTestCase {
    /// cuda.h's CUDA_MEMCPY2D on 64-bit Linux: 128 bytes, these offsets.
    func testMemcpy2DMatchesCUDA_MEMCPY2D() {
        typealias M = Memcpy2D
        XCTAssertEqual(MemoryLayout<M>.size, 128)
        XCTAssertEqual(MemoryLayout<M>.offset(of: \.srcMemoryType), 16)
        XCTAssertEqual(MemoryLayout<M>.offset(of: \.srcDevice), 32)
        XCTAssertEqual(MemoryLayout<M>.offset(of: \.srcPitch), 48)
        XCTAssertEqual(MemoryLayout<M>.offset(of: \.dstXInBytes), 56)
        XCTAssertEqual(MemoryLayout<M>.offset(of: \.dstMemoryType), 72)
        XCTAssertEqual(MemoryLayout<M>.offset(of: \.dstDevice), 88)
        XCTAssertEqual(MemoryLayout<M>.offset(of: \.dstPitch), 104)
        XCTAssertEqual(MemoryLayout<M>.offset(of: \.widthInBytes), 112)
        XCTAssertEqual(MemoryLayout<M>.offset(of: \.height), 120)
        let m = M(srcDevice: 1, srcPitch: 2, dstDevice: 3, dstPitch: 4, widthInBytes: 5, height: 6)
        XCTAssertEqual([m.srcMemoryType, m.dstMemoryType], [2, 2], "CU_MEMORYTYPE_DEVICE on both sides")
    }

    /// embedding.cu's EmbeddingParams: three u64, then ints tokens, dim, vocab, vocab_start, vocab_count.
    func testEmbeddingParamsMatchTheKernelStruct() {
        typealias P = Embedding.Params
        XCTAssertEqual(MemoryLayout<P>.offset(of: \.tokens), 24)
        XCTAssertEqual(MemoryLayout<P>.offset(of: \.vocab), 32)
        XCTAssertEqual(MemoryLayout<P>.offset(of: \.vocabStart), 36)
        XCTAssertEqual(MemoryLayout<P>.offset(of: \.vocabCount), 40)
    }

    /// The gather's layout applied to host arrays as NCCL and cuMemcpy2D would (rank-major all-gather, then the 2-D
    /// copies): every full row must hold, at each column, the logit of the rank that owns that vocabulary entry. Covers
    /// one row (straight into the full buffer, padding past V) and several, with and without vocabulary padding.
    func testVocabularyGatherPutsEveryRanksColumnsInPlace() throws {
        for (vocab, ranks) in [(80, 2), (81, 2), (81, 4), (10, 8), (128_256, 4)] {
            let c = ModelConfig(architecture: .llama, vocabSize: vocab, hiddenSize: 64, intermediateSize: 128, numLayers: 1, numHeads: 8,
                                numKVHeads: 8, headDim: 8, contextLength: 16, rmsNormEps: 1e-5, ropeTheta: 10000)
            let plan = try TensorParallelPlan(config: c, ranks: ranks)
            let width = plan.rankConfig.vocabSize
            for rows in [1, 2, 5] {
                // Rank r's slice value at (row, i): a code naming the vocabulary entry r·width + i of that row.
                func value(_ row: Int, _ entry: Int) -> Float { Float(row * 1_000_000 + entry) }
                let slices = (0..<ranks).map { r in (0..<(rows * width)).map { k in value(k / width, r * width + k % width) } }
                let layout = VocabularyGather(plan: plan, rows: rows)
                XCTAssertEqual(layout.countPerRank, rows * width)
                var full = [Float](repeating: -1, count: NCCLCollectives.fullLogitsCount(plan: plan, rows: rows))
                var staging = [Float](repeating: -1, count: ranks * rows * width)
                let gathered = slices.flatMap { $0 }   // ncclAllGather: rank r's block at r · countPerRank
                if layout.direct {
                    XCTAssertEqual(rows, 1)
                    XCTAssertLessThanOrEqual(gathered.count, full.count, "the padded row fits the full buffer")
                    full.replaceSubrange(0..<gathered.count, with: gathered)
                } else {
                    staging = gathered
                }
                for cp in layout.copies {
                    for row in 0..<cp.rows {
                        let src = (cp.srcByte + row * cp.srcPitch) / 4, dst = (cp.dstByte + row * cp.dstPitch) / 4
                        for k in 0..<(cp.widthBytes / 4) { full[dst + k] = staging[src + k] }
                    }
                }
                for row in 0..<rows {
                    let got = Array(full[(row * vocab)..<((row + 1) * vocab)])
                    XCTAssertEqual(got, (0..<vocab).map { value(row, $0) }, "V \(vocab), --tp \(ranks), \(rows) rows: row \(row)")
                }
            }
        }
    }
}
