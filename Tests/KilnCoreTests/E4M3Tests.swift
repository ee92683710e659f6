import XCTest
import KilnCore

/// E4M3 against values worked out by hand from the OCP FP8 spec (bias 7, 3 mantissa bits, subnormals m·2⁻⁹,
/// S.1111.111 = NaN, max 448), never against the code under test.
final class E4M3Tests: XCTestCase {
    func testDecodeHandValues() {
        let cases: [(UInt8, Float)] = [
            (0x00, 0), (0x01, 1.0 / 512), (0x02, 2.0 / 512), (0x07, 7.0 / 512),   // subnormals m·2⁻⁹
            (0x08, 1.0 / 64), (0x0F, 1.875 / 64),                                 // e = 1: (1 + m/8)·2⁻⁶
            (0x30, 0.5), (0x38, 1), (0x39, 1.125), (0x3F, 1.875), (0x40, 2), (0x44, 3),
            (0x70, 128), (0x77, 240),                                             // e = 14: 2⁷, 1.875·2⁷
            (0x78, 256), (0x7D, 416), (0x7E, 448),                                // e = 15: 2⁸, 1.625·2⁸, 1.75·2⁸
            (0x80, -0.0), (0x81, -1.0 / 512), (0xB8, -1), (0xFE, -448),
        ]
        for (code, want) in cases {
            XCTAssertEqual(E4M3.decode(code), want, "code 0x\(String(code, radix: 16))")
        }
        XCTAssertEqual(E4M3.decode(0x80).sign, .minus)
        XCTAssertTrue(E4M3.decode(0x7F).isNaN)
        XCTAssertTrue(E4M3.decode(0xFF).isNaN)
        // Exactly two NaN codes; every other code is finite.
        XCTAssertEqual((0..<256).filter { E4M3.decode(UInt8($0)).isNaN }, [0x7F, 0xFF])
    }

    func testDecodeIsMonotoneOverPositiveCodes() {
        // Independent structure check: positive codes 0x00…0x7E are strictly increasing, and the negative half mirrors them.
        for c in 1...0x7E { XCTAssertLessThan(E4M3.decode(UInt8(c - 1)), E4M3.decode(UInt8(c)), "code \(c)") }
        for c in 0...0x7E { XCTAssertEqual(E4M3.decode(UInt8(c | 0x80)), -E4M3.decode(UInt8(c))) }
    }

    func testEveryCodeRoundTrips() {
        for c in 0..<256 where c & 0x7F != 0x7F {
            XCTAssertEqual(E4M3.encode(E4M3.decode(UInt8(c))), UInt8(c), "code 0x\(String(c, radix: 16))")
        }
    }

    func testEncodeRoundsToNearestEven() {
        let cases: [(Float, UInt8)] = [
            (1.0625, 0x38),      // halfway between 1 (m=0) and 1.125 (m=1): even m=0
            (1.1875, 0x3A),      // halfway between 1.125 (m=1) and 1.25 (m=2): even m=2
            (1.06, 0x38), (1.07, 0x39),   // below / above that halfway point
            (1.0 / 1024, 0x00),  // halfway between 0 and 2⁻⁹: even m=0
            (3.0 / 1024, 0x02),  // halfway between 2⁻⁹ and 2·2⁻⁹: even m=2
            (15.0 / 1024, 0x08), // halfway between 7·2⁻⁹ (0x07) and 2⁻⁶ (0x08): even (0x08 has m=0)
            (1.0001 / 1024, 0x01),
            (0.0001, 0x00),      // far below the smallest subnormal
            (432, 0x7E),         // halfway between 416 (0x7D) and 448 (0x7E): even m=6
            (17, 0x58),          // halfway between 16 (0x58, m=0) and 18 (0x59): even
            (-2.5, 0xC2),        // exact: 1.25·2¹
            (-0.0, 0x80), (0, 0x00),
        ]
        for (x, want) in cases {
            XCTAssertEqual(E4M3.encode(x), want, "\(x)")
        }
    }

    func testEncodeSaturatesAndKeepsNaN() {
        XCTAssertEqual(E4M3.encode(448), 0x7E)
        XCTAssertEqual(E4M3.encode(464), 0x7E)        // halfway to the next step (480, which is NaN's slot): saturates
        XCTAssertEqual(E4M3.encode(500), 0x7E)
        XCTAssertEqual(E4M3.encode(1e30), 0x7E)
        XCTAssertEqual(E4M3.encode(.infinity), 0x7E)
        XCTAssertEqual(E4M3.encode(-1000), 0xFE)
        XCTAssertEqual(E4M3.encode(-.infinity), 0xFE)
        XCTAssertEqual(E4M3.encode(.nan) & 0x7F, 0x7F)
        XCTAssertTrue(E4M3.decode(E4M3.encode(-.nan)).isNaN)
    }

    func testEncodePicksTheNearestCode() {
        // Against a brute-force nearest search over the decoded table (ties excluded by using points that are not midpoints).
        let finite = (0..<256).filter { $0 & 0x7F != 0x7F }.map { (UInt8($0), E4M3.decode(UInt8($0))) }
        var rng = SplitMix64(seed: 7)
        for _ in 0..<5000 {
            let x = Float(Double(rng.next() % 2_000_000) / 2_000_000 * 900 - 450) * (rng.next() % 2 == 0 ? 1 : 0.001)
            let best = finite.min { abs($0.1 - x) < abs($1.1 - x) }!
            let got = E4M3.decode(E4M3.encode(x))
            XCTAssertEqual(abs(got - x), abs(best.1 - x), "\(x): got \(got), nearest \(best.1)")
        }
    }
}
