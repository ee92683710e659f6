import Foundation
import KilnCore
import KilnModels
import XCTest

final class SafetensorsReaderTests: XCTestCase {
    /// Three tensors of the three supported dtypes, bytes written by hand.
    static let header = """
    {"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},\
    "b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]},"c":{"dtype":"F16","shape":[2],"data_offsets":[32,36]}}
    """
    static let data: [UInt8] = f32Bytes([1.5, -2, 0.25, 3, -0.125, 7])
        + [0x80, 0x3F, 0x00, 0xC0, 0x00, 0x3F, 0x40, 0x40]   // bf16 1, -2, 0.5, 3
        + [0x00, 0x3C, 0x00, 0xB8]                           // f16 1, -0.5

    func testReadsHandWrittenFile() throws {
        let dir = try TempDir()
        let path = dir.file("model.safetensors", safetensorsBytes(header: Self.header, data: Self.data))
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(f.metadata, ["format": "pt"])
        XCTAssertEqual(f.tensors.map(\.name), ["a", "b", "c"])
        let a = try f.info("a")
        XCTAssertEqual(a.dtype, .f32)
        XCTAssertEqual(a.shape, [2, 3])
        XCTAssertEqual(try f.floats("a"), [1.5, -2, 0.25, 3, -0.125, 7])
        XCTAssertEqual(try f.info("b").dtype, .bf16)
        XCTAssertEqual(try f.floats("b"), [1, -2, 0.5, 3])
        XCTAssertEqual(try f.floats("c"), [1, -0.5])
        assertKilnError(try f.info("nope"), path: path, "missing tensor nope")
    }

    func testWriterRoundTripsEachDtype() throws {
        let dir = try TempDir()
        let values: [Float] = [0.75, -1.25, 3.5, -0.0625, 2, 10]
        var w = SafetensorsWriter()
        try w.add("x32", shape: [2, 3], dtype: .f32, values: values)
        try w.add("x16", shape: [3, 2], dtype: .f16, values: values)
        try w.add("xb16", shape: [6], dtype: .bf16, values: values)
        let path = dir.path + "/w.safetensors"
        try w.write(to: path)
        let f = try SafetensorsFile(path: path)
        // All values are exact in f16 and bf16.
        for name in ["x32", "x16", "xb16"] { XCTAssertEqual(try f.floats(name), values, name) }
        XCTAssertEqual(try f.info("x16").shape, [3, 2])
    }
}
