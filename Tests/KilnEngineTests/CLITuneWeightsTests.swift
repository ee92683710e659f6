import XCTest
import ArgumentParser
import KilnCore
import KilnCUDA
@testable import kiln

/// `kiln tune --weights FORMAT`: every spelling `--dummy-weights … --weights` accepts for the lookup-table formats, q4_0,
/// q4_1, fp8 and bf16 parses to its format; anything else is refused before a GPU is touched, with the spellings named.
final class CLITuneWeightsTests: XCTestCase {
    func tune(_ weights: String?) throws -> TuneCommand {
        let args = ["tune", "--dummy-weights", "llama3-8b"] + (weights.map { ["--weights", $0] } ?? [])
        return try XCTUnwrap(try Kiln.parseAsRoot(args) as? TuneCommand, args.joined(separator: " "))
    }

    func testEveryLUTSpellingParses() throws {
        for bits in [4, 3, 2] {
            for group in [32, 64, 128] {
                for (suffix, table) in [("", WeightFormat.LUTFormat.Table.nf), ("-nf", .nf), ("-int", .int), ("-fp4", .fp4)] where table != .fp4 || bits == 4 {
                    for affine in [false, true] {
                        let text = "lut\(bits)-g\(group)\(suffix)\(affine ? "-affine" : "")"
                        let cmd = try tune(text)
                        XCTAssertEqual(try TuneCommand.parseWeights(cmd.weights),
                                       .lut(WeightFormat.LUTFormat(bits: bits, groupSize: group, table: table, hasOffsets: affine)), text)
                    }
                }
            }
        }
        // GGUF's 4-bit members as gemm_lut holds them: uniform table, groups of 32, offsets for q4_1.
        XCTAssertEqual(try TuneCommand.parseWeights(try tune("q4_0").weights), .lut(.init(bits: 4, groupSize: 32, table: .int, hasOffsets: false)))
        XCTAssertEqual(try TuneCommand.parseWeights(try tune("q4_1").weights), .lut(.init(bits: 4, groupSize: 32, table: .int, hasOffsets: true)))
        XCTAssertEqual(try TuneCommand.parseWeights(try tune("q8_0").weights), .lut(.init(bits: 8, groupSize: 32, table: .int, hasOffsets: false)))
        XCTAssertEqual(try TuneCommand.parseWeights(try tune("fp8").weights), .fp8)
        XCTAssertEqual(try TuneCommand.parseWeights(try tune("bf16").weights), .bf16)
        XCTAssertEqual(try tune(nil).weights, "bf16", "bf16 by default: kiln tune as before")
    }

    func testOtherSpellingsAreRefusedWithTheAcceptedOnes() {
        for bad in ["lut4-g16", "lut5-g64", "lut1-g64", "lut3-g64-fp4", "lut2-g32-fp4-affine", "lut4-g64-learned", "lut4-g64-affine-nf",
                    "lut4", "q4_k", "q8_1", "lut8-g32-int", "fp16", "FP8", "lut4-g64-int-affine-x", ""] {
            XCTAssertThrowsError(try Kiln.parseAsRoot(["tune", "--dummy-weights", "llama3-8b", "--weights", bad]), bad) { error in
                let message = Kiln.message(for: error)
                XCTAssertTrue(message.contains("--weights"), "\(bad): \(message)")
                XCTAssertTrue(message.contains("bf16, fp8, q4_0, q4_1, q8_0 or lut{4,3,2}-g{32,64,128}"), "\(bad): \(message)")
                XCTAssertNotEqual(Kiln.exitCode(for: error), .success)
            }
        }
    }
}
