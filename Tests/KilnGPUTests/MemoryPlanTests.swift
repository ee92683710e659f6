import KilnCore
import KilnCUDA
import KilnKernels
import KilnModels
import XCTest

/// GPUMemoryPlan against sizes that do not come from Kiln: the parameter counts Hugging Face reports for the
/// published checkpoints, and the bytes of each stored format worked out here by hand.
final class MemoryPlanTests: XCTestCase {
    // `model.num_parameters()` of meta-llama/Meta-Llama-3-8B and Meta-Llama-3-70B (their model cards: 8.03B, 70.6B).
    let llama8BParameters = 8_030_261_248
    let llama70BParameters = 70_553_706_496

    func testBF16WeightsAreTwoBytesPerPublishedParameter() throws {
        for (name, params) in [("llama3-8b", llama8BParameters), ("llama3-70b", llama70BParameters)] {
            let c = try DummyModels.config(name)
            XCTAssertEqual(GPUMemoryPlan.weightBytes(c, linearFormat: { _ in .bf16 }), 2 * params, name)
        }
    }

    func testFP8WeightsAreOneByteAndABlockScalePerLinearParameter() throws {
        let c = try DummyModels.config("llama3-70b")
        // Everything but the linear layers: embedding, output layer, two norms per layer and the final norm (bf16).
        let other = 2 * c.vocabSize * c.hiddenSize + (2 * c.numLayers + 1) * c.hiddenSize
        let linear = llama70BParameters - other
        // One f32 per 8 rows × 128 columns: 4 bytes per 1,024 weights (every 70B dimension is a multiple of both).
        let expected = linear + linear / 256 + 2 * other
        let planned = GPUMemoryPlan.weightBytes(c, linearFormat: { _ in GPUMatrix.fp8Format })
        XCTAssertEqual(planned, expected)
        // The figure for Llama-3-70B FP8 with bf16 embeddings and output layer: about 72.7 GB.
        XCTAssertEqual(Double(planned) / 1e9, 72.7, accuracy: 0.5)
    }

    func testLUTBytesAreTheCodesPlusGroupScales() throws {
        let lut4 = WeightFormat.LUTFormat(bits: 4, groupSize: 64, table: .nf, hasOffsets: false)
        let rows = 4096, cols = 14_336
        let bytes = GPUMemoryPlan.linearBytes(rows: rows, cols: cols, format: .lut(lut4))
        // 4 bits a weight, a bf16 scale per 64 weights: 0.53125 bytes a weight (plus the table and row padding).
        let ideal = Double(rows * cols) * (0.5 + 2.0 / 64)
        XCTAssertGreaterThanOrEqual(Double(bytes), ideal)
        XCTAssertLessThan(Double(bytes), ideal * 1.02)
        // Q4_0 is the 4-bit, group-32 integer member: a bf16 scale per 32 weights.
        let q4 = GPUMemoryPlan.linearBytes(rows: rows, cols: cols, format: .gguf(.q4_0))
        XCTAssertGreaterThanOrEqual(Double(q4), Double(rows * cols) * (0.5 + 2.0 / 32))
        XCTAssertLessThan(Double(q4), Double(rows * cols) * (0.5 + 2.0 / 32) * 1.02)
    }

    func testTheStaticKVCacheIsKAndVForEveryLayerPositionAndSequence() throws {
        let c = try DummyModels.config("llama3-70b")
        // 80 layers × (K + V) × 8 KV heads × 128 × bf16 = 327,680 bytes per position.
        XCTAssertEqual(GPUMemoryPlan.kvCacheBytes(c, batch: 2, context: 4096), 2 * 4096 * 327_680)
    }

    func testThePagedEngineNeedsAtLeastTheWeightsAndOneSequence() throws {
        let c = try DummyModels.config("llama3-8b")
        let plan = GPUMemoryPlan.pagedEngineMinimum(c, linearFormat: { _ in .bf16 }, sequences: 64, context: 1024, maxRows: 2048)
        XCTAssertEqual(plan.weights, 2 * llama8BParameters)
        // 32 layers × (K + V) × 8 KV heads × 128 × bf16 = 131,072 bytes per position, for one sequence of 1,024.
        XCTAssertEqual(plan.kvCache, 1024 * 131_072)
        // The logits of 65 rows in f32 alone: 65 × 128,256 × 4 bytes.
        XCTAssertGreaterThan(plan.activations, 65 * 128_256 * 4)
    }

    func testAModelThatDoesNotFitNamesWhatItNeedsAndWhatIsFree() throws {
        let c = try DummyModels.config("llama3-70b")
        let plan = GPUMemoryPlan.staticEngine(c, linearFormat: { _ in .bf16 }, maxBatch: 1, maxSeq: 1024, fp8PrefillKernel: false)
        XCTAssertGreaterThan(plan.total, 2 * llama70BParameters)
        let free = 80_000_000_000
        XCTAssertThrowsError(try plan.ensureFits(free: free, model: "llama3-70b (bf16 weights)", gpu: "H100", remedy: "use fp8")) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("llama3-70b (bf16 weights) does not fit"), message)
            XCTAssertTrue(message.contains("80.00 GB free"), message)
            XCTAssertTrue(message.contains("weights 141.11 GB"), message)
            XCTAssertTrue(message.contains("use fp8"), message)
        }
        // The same model in FP8 fits in that much, with the dequantize scratch (no FP8 prefill kernel) counted.
        let fp8 = GPUMemoryPlan.staticEngine(c, linearFormat: { _ in GPUMatrix.fp8Format }, maxBatch: 2, maxSeq: 1024, fp8PrefillKernel: false)
        let fp8Kernel = GPUMemoryPlan.staticEngine(c, linearFormat: { _ in GPUMatrix.fp8Format }, maxBatch: 2, maxSeq: 1024, fp8PrefillKernel: true)
        XCTAssertEqual(fp8.activations - fp8Kernel.activations, 2 * 2 * c.intermediateSize * c.hiddenSize)   // gate_up in bf16
        XCTAssertNoThrow(try fp8.ensureFits(free: free, model: "llama3-70b", gpu: "H100", remedy: ""))
    }
}
