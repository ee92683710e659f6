import XCTest
import KilnCore
@testable import KilnModels

/// `quantization_config` of kiln-lut folders: the accepted object and the strict rejections (each naming its field).
final class LUTCheckpointTests: XCTestCase {
    let good: [String: Any] = ["quant_method": "kiln-lut", "bits": 3, "group_size": 64, "table": "learned", "offsets": true,
                               "modules_to_not_convert": ["lm_head"]]

    func parse(_ q: [String: Any]) throws -> HFQuantizationConfig? {
        try HFQuantizationConfig.parse(config: ["quantization_config": q], path: "cfg.json")
    }

    func testParsesAndWritesTheSameObject() throws {
        let q = try XCTUnwrap(try parse(good))
        XCTAssertEqual(q.format, .lut(.init(bits: 3, groupSize: 64, table: .learned, hasOffsets: true)))
        XCTAssertEqual(q.modulesToNotConvert, ["lm_head"])
        let back = try XCTUnwrap(try parse(q.json))
        XCTAssertEqual(back, q)
        XCTAssertEqual(q.json["quant_method"] as? String, "kiln-lut")
    }

    func testMalformedFieldsAreErrorsNamingThem() {
        let cases: [(String, Any?)] = [("bits", 5), ("bits", "4"), ("bits", nil), ("group_size", 48), ("group_size", nil),
                                       ("table", "nf5"), ("table", nil), ("offsets", nil), ("offsets", "no"), ("surprise", 1)]
        for (key, value) in cases {
            var q = good
            q[key] = value
            XCTAssertThrowsError(try parse(q), "\(key) = \(String(describing: value))") {
                XCTAssertTrue("\($0)".contains(key), "\(key): \($0)")
            }
        }
        var fp4 = good
        fp4["table"] = "fp4"
        XCTAssertThrowsError(try parse(fp4)) { XCTAssertTrue("\($0)".contains("fp4"), "\($0)") }
    }
}
