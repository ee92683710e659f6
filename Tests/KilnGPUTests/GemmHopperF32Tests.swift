import XCTest
import KilnKernels

/// gemm_hopper's fp32-output instances (the server's logits at M > 16): listed from the .cu table, compiled with the
/// catalog, kept out of the bf16 tuner candidates, chosen by M.
final class GemmHopperF32Tests: XCTestCase {
    func testTheF32InstancesComeFromTheirOwnTableAndAreCompiled() {
        XCTAssertEqual(GemmHopper.f32Configs.map(\.name), ["kiln_gemm_hopper_f32_bm64_bn128_bk64_s8_c1_cl1", "kiln_gemm_hopper_f32_bm128_bn128_bk64_s6_c2_cl1"])
        XCTAssertTrue(GemmHopper.f32Configs.allSatisfy(\.outF32))
        XCTAssertFalse(GemmHopper.configs.contains { $0.outF32 }, "the tuner's bf16 candidates hold no fp32 instance")
        let catalog = Set(KernelCatalog.instances(in: GemmHopper.file).map(\.nameExpression))
        for c in GemmHopper.f32Configs { XCTAssertTrue(catalog.contains(c.name), c.name) }
        XCTAssertNil(GemmHopper.config(named: GemmHopper.f32Configs[0].name), "a tuning entry never names an fp32 instance")
    }

    func testSmallBatchesGetSixtyFourRowTiles() {
        XCTAssertEqual(GemmHopper.defaultF32Config(m: 17).bm, 64)
        XCTAssertEqual(GemmHopper.defaultF32Config(m: 128).bm, 64)
        XCTAssertEqual(GemmHopper.defaultF32Config(m: 129).bm, 128)
        XCTAssertEqual(GemmHopper.defaultF32Config(m: 256).bm, 128)
    }
}
