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

    func testASharedPrefixStartsEveryPromptAndLengthsAreBeyondIt() {
        let o = LoadGenerator.Options(url: "", model: nil, apiKey: nil, concurrency: 2, requests: 6, promptTokens: 3...5, outputTokens: 2...2,
                                      seed: 9, sharedPrefix: 40)
        let plans = LoadGenerator(options: o).plans()
        XCTAssertEqual(plans.count, 6)
        let prefix = Array(plans[0].prompt.prefix(40))
        for p in plans {
            XCTAssertEqual(Array(p.prompt.prefix(40)), prefix)
            XCTAssertTrue((43...45).contains(p.prompt.count), "\(p.prompt.count)")
            XCTAssertTrue(p.prompt.allSatisfy { (100...999).contains($0) })
        }
        XCTAssertGreaterThan(Set(plans.map { Array($0.prompt.dropFirst(40)) }).count, 1, "each request has its own suffix")
        var none = o
        none.sharedPrefix = 0
        XCTAssertTrue(LoadGenerator(options: none).plans().allSatisfy { (3...5).contains($0.prompt.count) })
    }
}

