import Foundation
import XCTest
import KilnCore

/// Expected values come from Python: hashlib.sha256 and numpy.float16 / round-to-nearest-even bfloat16.
final class CoreTests: XCTestCase {
    func testSHA256KnownVectors() {
        XCTAssertEqual(SHA256.hex(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256.hex([UInt8](repeating: UInt8(ascii: "a"), count: 1000)),
                       "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
        XCTAssertEqual(SHA256.hex([]), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        // Streaming in uneven pieces gives the same digest as one call.
        var s = SHA256()
        let data = [UInt8](repeating: UInt8(ascii: "a"), count: 1000)
        var i = 0
        for n in [1, 63, 64, 65, 200, 607] { s.update(Array(data[i..<i + n])); i += n }
        XCTAssertEqual(s.finalize().map { String(format: "%02x", $0) }.joined(), "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }

    func testHalfAndBFloat16Conversions() {
        let values: [Float] = [0.1, -2.5, 65504, 1e-7, 3.14159, -0.0, 6.1e-5, 100000]
        XCTAssertEqual(values.map(floatToHalf), [11878, 49408, 31743, 2, 16968, 32768, 1023, 31744])
        XCTAssertEqual(values.map(floatToBF16), [15821, 49184, 18304, 13271, 16457, 32768, 14464, 18371])
        for h: UInt16 in [0, 1, 1023, 1024, 11878, 31743, 49408, 32768 | 555] {
            XCTAssertEqual(floatToHalf(halfToFloat(h)), h, "half \(h) must round-trip")
        }
        XCTAssertTrue(halfToFloat(0x7e00).isNaN)
        XCTAssertTrue(bf16ToFloat(floatToBF16(.nan)).isNaN)
        XCTAssertEqual(halfToFloat(0x7c00), .infinity)
    }

    func testQ4_1BlockDequantization() {
        // One Q4_1 block: d = 0.5 (half 0x3800), m = -1 (half 0xbc00), nibbles j and 15-j.
        var block: [UInt8] = [0x00, 0x38, 0x00, 0xbc]
        for j in 0..<16 { block.append(UInt8(j) | UInt8(15 - j) << 4) }
        var out = [Float](repeating: .nan, count: 32)
        block.withUnsafeBytes { src in out.withUnsafeMutableBufferPointer { QuantBlocks.dequantize(.q4_1, src.baseAddress!, $0.baseAddress!, count: 32) } }
        for j in 0..<16 {
            XCTAssertEqual(out[j], 0.5 * Float(j) - 1)
            XCTAssertEqual(out[j + 16], 0.5 * Float(15 - j) - 1)
        }
    }

    func testByteCountsRejectPartialBlocks() {
        XCTAssertEqual(DType.q8_0.byteCount(elements: 64), 68)
        XCTAssertNil(DType.q4_0.byteCount(elements: 33))
        XCTAssertEqual(DType.bf16.byteCount(elements: 3), 6)
    }

    func testMappedFileBoundsAreErrorsNamingTheFile() throws {
        let path = NSTemporaryDirectory() + "kiln-core-\(UUID().uuidString).bin"
        try Data([1, 2, 3, 4, 5]).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let f = try MappedFile(path: path)
        XCTAssertEqual(try f.bytes(at: 1, count: 4, what: "x").count, 4)
        XCTAssertThrowsError(try f.bytes(at: 2, count: 4, what: "tensor t")) { XCTAssertTrue("\($0)".contains(path) && "\($0)".contains("tensor t")) }
        var c = ByteCursor(f)
        XCTAssertEqual(try c.read(UInt32.self, "head"), 0x0403_0201)
        XCTAssertThrowsError(try c.read(UInt32.self, "tail")) { XCTAssertTrue("\($0)".contains("truncated")) }
        XCTAssertThrowsError(try MappedFile(path: path + ".missing")) { XCTAssertTrue("\($0)".contains(path)) }
    }
}
