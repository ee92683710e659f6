import XCTest
import KilnCore
@testable import KilnCUDA
import KilnModels
@testable import KilnTune
@testable import KilnCheck

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

    /// The load-time conversion: the format's dequantization times the folded multiplier, rounded to nearest even.
    func testConversionToBF16() throws {
        // Q4_1 block: d = 0.25 (0x3400), m = 1.5 (0x3E00), byte j = j | (15-j) << 4: element j = 0.25·j + 1.5 and element
        // j+16 = 0.25·(15-j) + 1.5, all exact in bf16 (at most 5 significant bits): their bf16 bits are the f32 bits' top half.
        let q41: [UInt8] = [0x00, 0x34, 0x00, 0x3E] + (0..<16).map { UInt8($0) | UInt8(15 - $0) << 4 }
        try q41.withUnsafeBytes { raw in
            let m = try QuantizedMatrix(name: "blk.0.ffn_down.weight", rows: 1, cols: 32, format: .gguf(.q4_1), data: raw)
            let bits = try GPUWeights.bf16(m, scale: 1)
            for j in 0..<16 {
                XCTAssertEqual(bits[j], UInt16((0.25 * Float(j) + 1.5).bitPattern >> 16))
                XCTAssertEqual(bits[j + 16], UInt16((0.25 * Float(15 - j) + 1.5).bitPattern >> 16))
            }
            // Folding 0.5 (exact): element 0 = 1.5 · 0.5 = 0.75 = 0x3F40.
            XCTAssertEqual(try GPUWeights.bf16(m, scale: 0.5)[0], 0x3F40)
        }
        // f32 rounding: bf16 keeps 7 fraction bits. 1 + 2⁻⁸ is halfway between 0x3F80 and 0x3F81 (ties to even: 0x3F80);
        // 1 + 2⁻⁸ + 2⁻¹⁰ is above halfway (0x3F81); 1 + 3·2⁻⁸ is halfway between 0x3F81 and 0x3F82 (even: 0x3F82).
        let values: [Float] = [1 + 1.0 / 256, 1 + 1.0 / 256 + 1.0 / 1024, 1 + 3.0 / 256, -2]
        try values.withUnsafeBytes { raw in
            let m = try QuantizedMatrix(name: "output_norm.weight", rows: 1, cols: 4, format: .dense(.f32), data: raw)
            XCTAssertEqual(try GPUWeights.bf16(m, scale: 1), [0x3F80, 0x3F81, 0x3F82, 0xC000])
        }
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
