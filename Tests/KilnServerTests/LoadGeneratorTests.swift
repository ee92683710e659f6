import XCTest
@testable import KilnServer

/// `kiln bench serve`'s statistics and its HTTP target parsing.
final class LoadGeneratorTests: XCTestCase {
    func testPercentilesAreNearestRank() {
        let values = (1...100).map(Double.init).shuffled()
        let p = LoadGenerator.Report.percentile
        XCTAssertEqual(p(values, 50), 50)
        XCTAssertEqual(p(values, 90), 90)
        XCTAssertEqual(p(values, 99), 99)
        XCTAssertEqual(p(values, 100), 100)
        XCTAssertEqual(p([7], 99), 7)
        XCTAssertEqual(p([], 50), 0)
    }

    func testTargetsParseHostAndPort() throws {
        let t = try HTTPTarget(url: "http://127.0.0.1:8123/v1")
        XCTAssertEqual(t.host, "127.0.0.1"); XCTAssertEqual(t.port, 8123)
        XCTAssertEqual(try HTTPTarget(url: "http://localhost").port, 80)
        XCTAssertThrowsError(try HTTPTarget(url: "https://example.com"))
    }

    func testLengthsAreDeterministicPerSeedAndInRange() {
        var a = SplitMix(seed: 5), b = SplitMix(seed: 5)
        let xs = (0..<200).map { _ in a.int(in: 3...9) }
        XCTAssertEqual(xs, (0..<200).map { _ in b.int(in: 3...9) })
        XCTAssertEqual(Set(xs), Set(3...9), "every length of the range is drawn")
    }
}
