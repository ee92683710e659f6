import XCTest
import KilnCore
@testable import kiln

/// `--weights lut4-g64` (and the other LUT formats) for `--dummy-weights` in bench-gpu and bench kernels, parsed by the
/// real argument parser; unknown names are refused before anything runs.
final class CLILUTWeightsTests: XCTestCase {
    func testLUTWeightsOption() throws {
        let gpu = try XCTUnwrap(try Kiln.parseAsRoot(["bench-gpu", "--dummy-weights", "llama3-8b", "--weights", "lut4-g64"]) as? GPUBenchCommand)
        XCTAssertEqual(gpu.tuning.value.dummyLUT, WeightFormat.LUTFormat(bits: 4, groupSize: 64, table: .nf, hasOffsets: false))
        XCTAssertFalse(gpu.tuning.value.dummyFP8)
        let kernels = try XCTUnwrap(try Kiln.parseAsRoot(["bench", "kernels", "--weights", "lut4-g32-int-affine"]) as? BenchCommand)
        XCTAssertEqual(kernels.tuning.value.dummyLUT, WeightFormat.LUTFormat(bits: 4, groupSize: 32, table: .int, hasOffsets: true))
        let fp8 = try XCTUnwrap(try Kiln.parseAsRoot(["bench-gpu", "--dummy-weights", "llama3-8b", "--weights", "fp8"]) as? GPUBenchCommand)
        XCTAssertTrue(fp8.tuning.value.dummyFP8)
        XCTAssertNil(fp8.tuning.value.dummyLUT)
        let plain = try XCTUnwrap(try Kiln.parseAsRoot(["bench-gpu", "--dummy-weights", "llama3-8b"]) as? GPUBenchCommand)
        XCTAssertNil(plain.tuning.value.dummyLUT)
        XCTAssertFalse(plain.tuning.value.dummyFP8)
        XCTAssertTrue(plain.tuning.value.engine.lutKernels)
        let off = try XCTUnwrap(try Kiln.parseAsRoot(["bench-gpu", "--dummy-weights", "llama3-8b", "--no-lut-kernels"]) as? GPUBenchCommand)
        XCTAssertFalse(off.tuning.value.engine.lutKernels)
        let lut3 = try XCTUnwrap(try Kiln.parseAsRoot(["bench", "kernels", "--dummy-weights", "llama3-70b", "--weights", "lut3-g64"]) as? BenchCommand)
        XCTAssertEqual(lut3.tuning.value.dummyLUT, WeightFormat.LUTFormat(bits: 3, groupSize: 64, table: .nf, hasOffsets: false))
        let lut2 = try XCTUnwrap(try Kiln.parseAsRoot(["bench-gpu", "--dummy-weights", "llama3-8b", "--weights", "lut2-g64"]) as? GPUBenchCommand)
        XCTAssertEqual(lut2.tuning.value.dummyLUT, WeightFormat.LUTFormat(bits: 2, groupSize: 64, table: .nf, hasOffsets: false))
        for bad in ["lut4-g16", "lut5-g64", "lut3-g64-fp4", "q4", "lut4-g64-learned"] {
            XCTAssertThrowsError(try Kiln.parseAsRoot(["bench-gpu", "--dummy-weights", "llama3-8b", "--weights", bad]), bad)
        }
        let q8 = try XCTUnwrap(try Kiln.parseAsRoot(["bench-gpu", "--dummy-weights", "llama3-8b", "--weights", "q8_0"]) as? GPUBenchCommand)
        XCTAssertEqual(q8.tuning.value.dummyLUT, WeightFormat.LUTFormat(bits: 8, groupSize: 32, table: .int, hasOffsets: false))
    }

    /// 8-bit codes are GGUF Q8_0's member on the GPU only: `kiln quantize --to lut8` is refused, saying so.
    func testQuantizeToLUT8IsRefusedWithItsReason() {
        XCTAssertThrowsError(try QuantizeCommand.lutTarget("lut8", group: 32, table: "int", offsets: false)) { e in
            let message = "\(e)"
            XCTAssertTrue(message.contains("--to lut8") && message.contains("Q8_0"), message)
        }
    }
}
