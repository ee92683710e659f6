import Foundation
import KilnCore
import KilnModels
import KilnTestSupport
import XCTest

/// Kiln's dequantization of every GGML block type it reads equals the `gguf` Python package's (llama.cpp's reference,
/// PyPI gguf==0.19.0) bit for bit, on random blocks with any finite f16 scales. The reference values come from
/// running scripts/gguf-dequantize.py with the package that scripts/fetch-test-data.sh installs under
/// $KILN_HOME/python; without python3, numpy or gguf the test fails saying so (never a skip).
final class GGUFDequantizeReferenceTests: XCTestCase {
    /// GGUF's type names (GGMLQuantizationType) of Kiln's block types.
    static let ggufNames: [WeightFormat.GGUFBlock: String] = [
        .q8_0: "Q8_0", .q4_0: "Q4_0", .q4_1: "Q4_1", .q5_0: "Q5_0", .q5_1: "Q5_1", .q2_k: "Q2_K", .q3_k: "Q3_K", .q4_k: "Q4_K", .q5_k: "Q5_K",
        .q6_k: "Q6_K", .iq4_nl: "IQ4_NL", .iq4_xs: "IQ4_XS",
    ]

    func testEveryBlockTypeMatchesTheGGUFPackageBitForBit() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-dequant-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var rng = SplitMix64(seed: 22)
        for block in WeightFormat.GGUFBlock.allCases {
            let name = try XCTUnwrap(Self.ggufNames[block], "no gguf name for \(block.rawValue)")
            // 4 rows of 512 elements: 64 blocks of 32 or 8 super-blocks of 256, each with fresh random bytes.
            let rows = 4, cols = 512, type = block.dtype
            let bytes = RandomGGUFBlocks.make(type, blocks: rows * cols / type.blockSize, scaleMagnitude: nil, rng: &rng)
            let input = dir.appendingPathComponent("\(name).bin"), output = dir.appendingPathComponent("\(name).f32")
            try Data(bytes).write(to: input)
            try runReference(name, input.path, output.path)
            let expected = try Data(contentsOf: output)
            XCTAssertEqual(expected.count, 4 * rows * cols, "\(name): the reference wrote \(expected.count) bytes")
            let want = expected.withUnsafeBytes { raw in (0..<(rows * cols)).map { raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self) } }

            let got = try bytes.withUnsafeBytes { raw in
                try QuantizedMatrix(name: "random.\(name)", rows: rows, cols: cols, format: .gguf(block), data: raw).dequantized()
            }
            XCTAssertTrue(got.allSatisfy(\.isFinite), "\(name): non-finite values from finite scales")
            let mismatches = (0..<got.count).filter { got[$0].bitPattern != want[$0] }
            if let i = mismatches.first {
                XCTFail("\(name): \(mismatches.count) of \(got.count) values differ from gguf's; first at element \(i): kiln \(got[i]), gguf \(Float(bitPattern: want[i]))")
            }
        }
    }

    /// Runs the reference script; fails with the script's error output when python3 or the package is missing.
    func runReference(_ type: String, _ input: String, _ output: String) throws {
        try ReferencePython.ggufDequantize(type: type, input: input, output: output)
    }
}
