import XCTest
import KilnCore
import KilnCUDA
import KilnModels

/// The GPU's per-format decision and the tuner's per-format byte counts (pure; no GPU needed).
final class WeightPlanTests: XCTestCase {
    func testBF16IsNativeAndEverythingElseIsConvertedToBF16() {
        XCTAssertEqual(GPUWeights.plan(.bf16), .native)
        let converted: [WeightFormat] = [.dense(.f32), .dense(.f16), .gguf(.q8_0), .gguf(.q4_0), .gguf(.q4_1),
                                         .fp8E4M3(blockRows: 128, blockCols: 128), .lut(.init(bits: 4, groupSize: 64, table: .nf, hasOffsets: false))]
        for f in converted { XCTAssertEqual(GPUWeights.plan(f), .convert(to: .bf16), f.name) }
        XCTAssertEqual(GPUWeights.plan(.gguf(.q4_1)).describe(.gguf(.q4_1)), "q4_1 → bf16, no native GPU kernel yet")
        XCTAssertEqual(GPUWeights.plan(.bf16).describe(.bf16), "bf16, native")
        // Every format the plan keeps native has GEMM kernels.
        for f in converted + [.bf16] where GPUWeights.plan(f) == .native { XCTAssertTrue(GemmDispatch.kernelFormats.contains(f), f.name) }
    }

    func testGemmShapeBytesFollowTheFormat() {
        XCTAssertEqual(GemmShape(op: "o", n: 4096, k: 4096).weightBytes, 4096 * 4096 * 2)
        // Q4_1: 4096 rows × 128 blocks × 20 bytes.
        XCTAssertEqual(GemmShape(op: "o", format: .gguf(.q4_1), n: 4096, k: 4096).weightBytes, 4096 * 128 * 20)
        XCTAssertEqual(GemmShape(op: "o", format: .gguf(.q4_1), n: 4096, k: 4096).description, "o q4_1 N=4096 K=4096")
        XCTAssertTrue(GemmShape.of(ModelConfig(architecture: .llama, vocabSize: 64, hiddenSize: 64, intermediateSize: 128, numLayers: 1,
                                               numHeads: 4, numKVHeads: 2, contextLength: 16, rmsNormEps: 1e-5, ropeTheta: 1e4))
            .allSatisfy { $0.format == .bf16 })
    }
}
