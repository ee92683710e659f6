import XCTest
import KilnEngine

final class StopStringFilterTests: XCTestCase {
    func testStopStringsAreHeldBackAndCut() {
        var f = StopStringFilter(["<end>"])
        XCTAssertEqual(f.push("Hello <e"), "Hello ")
        XCTAssertEqual(f.push("n"), "")
        XCTAssertEqual(f.push("d> more"), "")
        XCTAssertTrue(f.stopped)
        var g = StopStringFilter(["STOP"])
        XCTAssertEqual(g.push("abc S"), "abc ")
        XCTAssertEqual(g.push("x"), "Sx")
        XCTAssertEqual(g.flush(), "")
    }
}
