import XCTest
import ArgumentParser
import KilnCUDA
@testable import kiln

/// `kiln logits`: `--rows` (token rows per forward chunk on cuda) and `--cpu-fp8` are checked before any model or GPU is
/// touched, with messages naming the option; the kernel options (`--no-fp8-prefill-kernel`, …) reach the engine options,
/// and without them the engine runs as before they existed (the GPU engine's defaults, the tuning table).
final class CLILogitsOptionsTests: XCTestCase {
    let base = ["logits", "-m", "/nonexistent/model", "--tokens", "/nonexistent/tokens.txt", "--out", "/nonexistent/out.f32"]

    func parse(_ extra: [String]) throws -> LogitsCommand {
        try XCTUnwrap(try Kiln.parseAsRoot(base + extra) as? LogitsCommand, extra.joined(separator: " "))
    }

    func assertRefused(_ extra: [String], mentioning expected: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try Kiln.parseAsRoot(base + extra), extra.joined(separator: " "), file: file, line: line) { error in
            let message = Kiln.message(for: error)
            for text in expected {
                XCTAssertTrue(message.contains(text), "\(extra): expected \"\(text)\" in: \(message)", file: file, line: line)
            }
            XCTAssertNotEqual(Kiln.exitCode(for: error), .success, file: file, line: line)
        }
    }

    func testRowsBelowOneAreRefusedNamingTheOption() {
        assertRefused(["--rows", "0"], mentioning: ["--rows must be at least 1", "got 0"])
        assertRefused(["--rows", "-3"], mentioning: ["--rows must be at least 1", "got -3"])
        assertRefused(["--rows=-1"], mentioning: ["--rows must be at least 1", "got -1"])
    }

    func testDeviceOnlyOptionsAreRefusedOnTheOtherDevice() {
        assertRefused(["--rows", "4", "--device", "cpu"], mentioning: ["--rows", "--device cuda"])
        assertRefused(["--cpu-fp8", "w8a8"], mentioning: ["--cpu-fp8", "--device cpu"])
        assertRefused(["--cpu-fp8", "fp16", "--device", "cpu"], mentioning: ["--cpu-fp8 must be", "w8a16", "w8a8", "got fp16"])
        assertRefused(["--device", "metal"], mentioning: ["--device must be", "got metal"])
    }

    func testRowsAndKernelOptionsReachTheEngine() throws {
        let decode = try parse(["--rows", "1"])
        XCTAssertEqual(decode.rows, 1)
        let prefill = try parse(["--rows", "64", "--no-fp8-prefill-kernel", "--no-pdl"])
        XCTAssertEqual(prefill.rows, 64)
        XCTAssertFalse(prefill.tuning.value.engine.fp8PrefillKernel)
        XCTAssertTrue(try parse([]).tuning.value.engine.fp8PrefillKernel, "FP8 prefill on gemm_fp8_hopper by default")
        XCTAssertFalse(prefill.tuning.value.engine.programmaticDependentLaunch)
        XCTAssertFalse(try parse(["--no-fp8-kernels"]).tuning.value.engine.fp8Kernels)
        XCTAssertEqual(try parse(["--cpu-fp8", "w8a8", "--device", "cpu"]).cpuFp8, "w8a8")
    }

    func testDefaultsAreTheEnginesAsBefore() throws {
        let plain = try parse([])
        XCTAssertNil(plain.rows)
        XCTAssertEqual(plain.device, "cuda")
        let tuning = plain.tuning.value
        XCTAssertEqual(tuning.engine, GPUEngineOptions())
        XCTAssertFalse(tuning.defaultsOnly, "the tuning table is used, as GPURun.Tuning() did")
        XCTAssertFalse(tuning.tuneMissing)
        XCTAssertNil(tuning.cachePath)
        XCTAssertFalse(tuning.dummyFP8)
        XCTAssertNil(tuning.dummyLUT)
    }
}
