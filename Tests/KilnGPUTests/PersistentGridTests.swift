import XCTest
@testable import KilnKernels

/// The persistent Hopper GEMMs' grid rule (gemm_hopper.cu / gemm_fp8_hopper.cu headers): cluster 1, min(#SMs, tiles);
/// cluster 2, 2 · min(resident pairs, pair items); a cap on CTAs never drops below one cluster.
final class PersistentGridTests: XCTestCase {
    func testGridSizes() {
        let single = PersistentGrid(cluster: 1, slots: 132)
        XCTAssertEqual(single.ctas(items: 5), 5, "fewer tiles than SMs: one CTA per tile")
        XCTAssertEqual(single.ctas(items: 1000), 132, "more tiles than SMs: one CTA per SM")
        XCTAssertEqual(single.ctas(items: 1000, maxCTAs: 7), 7)
        XCTAssertEqual(single.ctas(items: 1000, maxCTAs: 0), 1, "a cap of 0 still launches one CTA")

        let pairs = PersistentGrid(cluster: 2, slots: 60)
        XCTAssertEqual(pairs.ctas(items: 10), 20, "10 pair items: 10 clusters of 2")
        XCTAssertEqual(pairs.ctas(items: 500), 120, "60 resident pairs")
        XCTAssertEqual(pairs.ctas(items: 500, maxCTAs: 9), 8, "the cap counts CTAs, rounded down to whole pairs")
        XCTAssertEqual(pairs.ctas(items: 500, maxCTAs: 1), 2, "at least one pair")
    }
}
