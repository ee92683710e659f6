import Foundation
import XCTest
import KilnCore
import KilnGPU
import KilnKernels
import KilnCUDA
@testable import KilnTune
@testable import KilnCheck

/// CPU-side tests of the conformance machinery: the comparison, the references, the embedded sources.
final class ConformanceTests: XCTestCase {
    var rng = SplitMix64(seed: 0x5eed)

    /// A broken RMSNorm (what -DKILN_BREAK builds: the last element of each row never written, so it
    /// keeps the NaN fill) must fail; the correct result must pass. Same comparison as `kiln check`.
    func testBrokenKernelIsCaught() {
        let (rows, cols) = (4, 4096)
        let x = roundTo(rng.uniform(rows * cols, -2, 2), .bf16), w = roundTo(rng.uniform(cols, 0.5, 1.5), .bf16)
        let want = Reference.rmsNorm(x, weight: w, rows: rows, cols: cols, eps: 1e-5)
        let good = roundTo(want, .bf16)
        XCTAssertNil(Conformance.compare(good, want, tolerance: .forOutput(.bf16)))
        var broken = good
        for r in 0..<rows { broken[r * cols + cols - 1] = .nan }
        let m = Conformance.compare(broken, want, tolerance: .forOutput(.bf16))
        XCTAssertEqual(m?.badCount, rows)
        XCTAssertEqual(m?.firstIndex, cols - 1)
        // A wrong epsilon is caught too (eps = 1 instead of 1e-5 on unit-scale data).
        let wrongEps = roundTo(Reference.rmsNorm(x, weight: w, rows: rows, cols: cols, eps: 1), .bf16)
        XCTAssertNotNil(Conformance.compare(wrongEps, want, tolerance: .forOutput(.bf16)))
    }

    func testComparisonEdgeCases() {
        XCTAssertNotNil(Conformance.compare([.nan], [.nan], tolerance: Tolerance(rtol: 1, atol: 1)), "NaN never passes")
        XCTAssertNotNil(Conformance.compare([1, 2], [1], tolerance: .exact))
        XCTAssertNil(Conformance.compare([.infinity], [.infinity], tolerance: .exact))
        XCTAssertNotNil(Conformance.compare([.infinity], [1e30], tolerance: Tolerance(rtol: 1, atol: 0)))
        XCTAssertNil(Conformance.compare([1.01], [1.0], tolerance: Tolerance(rtol: 0.02, atol: 0)))
        XCTAssertNotNil(Conformance.compare([1.03], [1.0], tolerance: Tolerance(rtol: 0.02, atol: 0)))
        XCTAssertNotNil(Conformance.compare([Int32(3)], [Int32(4)]))
    }

    /// Every `.cu` in cuda/ and `.cuh` in cuda/common/ on disk is embedded under its file name with
    /// byte-identical text, and nothing else is (the EmbedKernels plugin writes KernelSources at build time).
    func testEveryKernelFileIsEmbedded() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Sources/KilnKernels/cuda").standardized
        let fm = FileManager.default
        let cu = try fm.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".cu") }.sorted()
        let cuh = try fm.contentsOfDirectory(atPath: dir.path + "/common").filter { $0.hasSuffix(".cuh") }.sorted()
        XCTAssertFalse(cu.isEmpty); XCTAssertFalse(cuh.isEmpty)
        let missing = "is not embedded under its name by the EmbedKernels plugin"
        XCTAssertEqual(cu, KernelSources.files.keys.sorted(), ".cu files \(missing)")
        XCTAssertEqual(cuh, KernelSources.headers.keys.sorted(), ".cuh files \(missing)")
        for (folder, names, embedded) in [(dir.path, cu, KernelSources.files), (dir.path + "/common", cuh, KernelSources.headers)] {
            for f in names {
                let onDisk = try Data(contentsOf: URL(fileURLWithPath: folder + "/" + f))
                XCTAssertEqual(embedded[f].map { Data($0.utf8) }, onDisk, "\(f): embedded text differs from the file on disk")
            }
        }
        // Every catalogued instance names an embedded file.
        for i in KernelCatalog.all { XCTAssertNotNil(KernelSources.files[i.file], i.file) }
    }

    /// The Swift epilogue enum mirrors the kernels' `enum class Epilogue` in common/kiln.cuh: same names, same values.
    func testEpilogueMatchesKernelHeader() throws {
        let header = try XCTUnwrap(KernelSources.headers["kiln.cuh"])
        let start = try XCTUnwrap(header.range(of: "enum class Epilogue : int {"), "kiln.cuh declares enum class Epilogue")
        let end = try XCTUnwrap(header[start.upperBound...].range(of: "};"))
        var kernelSide: [String: Int32] = [:]
        for line in header[start.upperBound..<end.lowerBound].split(separator: "\n") {
            let code = line.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)[0]   // drop // comments
            let parts = code.split(separator: "=").map { $0.trimmingCharacters(in: .whitespaces.union(CharacterSet(charactersIn: ","))) }
            guard parts.count == 2, let value = Int32(parts[1]) else { continue }
            kernelSide[parts[0]] = value
        }
        XCTAssertEqual(kernelSide, ["bf16": 0, "f32": 1, "swiglu": 2])
        let swiftSide = Dictionary(uniqueKeysWithValues: GemmSplitK.Epilogue.allCases.map { ("\($0)", $0.rawValue) })
        XCTAssertEqual(swiftSide, kernelSide)
        // Every decode GEMM takes it by name at its entry points, not as an int.
        for f in ["gemm_splitk.cu", "gemm_stream.cu", "gemm_swapab.cu"] {
            let text = try XCTUnwrap(KernelSources.files[f])
            XCTAssertTrue(text.contains("kiln::Epilogue epi)"), f)
            XCTAssertFalse(text.contains("int epi"), f)
        }
    }

    func testLlama3InverseFrequencies() {
        let plain = ropeInverseFrequencies(headDim: 128, theta: 500_000)
        let scaled = ropeInverseFrequencies(headDim: 128, theta: 500_000, scaling: .llama31)
        XCTAssertEqual(plain[0], 1)
        XCTAssertEqual(Double(plain[1]), pow(500_000, -2.0 / 128), accuracy: 1e-7)
        // High frequencies (wavelength < 8192/4 = 2048) are kept; low ones (> 8192) divided by 8.
        XCTAssertEqual(scaled[0], plain[0])
        XCTAssertEqual(scaled[63], plain[63] / 8, accuracy: plain[63] * 1e-6)
        // In between: a blend, strictly between f/8 and f.
        let mid = (0..<64).first { i in let wl = 2 * Double.pi / Double(plain[i]); return wl > 2048 && wl < 8192 }!
        XCTAssertLessThan(scaled[mid], plain[mid]); XCTAssertGreaterThan(scaled[mid], plain[mid] / 8)
    }

    func testReferencesOnKnownValues() {
        // rmsnorm([3, 4]) = [3, 4] / sqrt(12.5)
        let y = Reference.rmsNorm([3, 4], weight: [1, 2], rows: 1, cols: 2, eps: 0)
        XCTAssertEqual(y[0], 3 / Float(12.5).squareRoot(), accuracy: 1e-6); XCTAssertEqual(y[1], 8 / Float(12.5).squareRoot(), accuracy: 1e-6)
        XCTAssertEqual(Reference.argmax([1, 5, 5, .nan, 2][...]), 1)
        XCTAssertEqual(Reference.argmax([Float.nan][...]), 0)
        // Rotating by position 0 is the identity; halves pairing rotates (x0, x2) at frequency 1 by 1 rad.
        let x: [Float] = [1, 2, 3, 4]
        XCTAssertEqual(Reference.rope(x, positions: [0], invFreq: [1, 0.5], tokens: 1, heads: 1, headDim: 4, tokenStride: 4, interleaved: true), x)
        let r = Reference.rope(x, positions: [1], invFreq: [1, 0.5], tokens: 1, heads: 1, headDim: 4, tokenStride: 4, interleaved: false)
        XCTAssertEqual(r[0], Float(cos(1.0) - 3 * sin(1.0)), accuracy: 1e-6)
        let s = Reference.siluMul(gate: [0, 1], up: [5, 2])
        XCTAssertEqual(s[0], 0); XCTAssertEqual(s[1], Float(2 / (1 + exp(-1.0))), accuracy: 1e-6)
    }
}

/// Tests that need a GPU: skipped (not failed) on machines without an NVIDIA driver.
final class DeviceTests: XCTestCase {
    func contextOrSkip() throws -> Context {
        guard case .success = CUDADriver.loaded, (try? Context.deviceCount()) ?? 0 > 0 else { throw XCTSkip("no NVIDIA GPU") }
        return try Context()
    }

    func testConformanceSuiteOnDevice() throws {
        let ctx = try contextOrSkip()
        var failures: [String] = []
        let suite = try ConformanceSuite(context: ctx, library: try KernelLibrary(context: ctx), seed: 1) { failures.append($0) }
        suite.runAll()
        XCTAssertEqual(suite.failed, 0, failures.joined(separator: "\n"))
        XCTAssertTrue(suite.selfTest())
    }

    func testBuffersRoundTripAndDriverErrorsNameTheCall() throws {
        let ctx = try contextOrSkip()
        let values = (0..<1000).map { _ in Float.random(in: -1...1) }
        let b = try DeviceBuffer(ctx, values)
        XCTAssertEqual(try b.download(), values)
        let pinned = try PinnedBuffer<Float>(ctx, count: 1000), stream = try GPUStream(ctx)
        try b.download(into: pinned, stream: stream); try stream.synchronize()
        XCTAssertEqual(Array(pinned.buffer), values)
        XCTAssertThrowsError(try DeviceBuffer<UInt8>(ctx, count: 1 << 50)) { XCTAssertTrue("\($0)".contains("cuMemAlloc_v2 failed: CUDA_ERROR_OUT_OF_MEMORY"), "\($0)") }
    }
}

final class NoDriverTests: XCTestCase {
    func testMissingDriverIsOneClearLine() throws {
        guard case .failure(let e) = CUDADriver.loaded else { throw XCTSkip("a driver is present") }
        XCTAssertEqual(e.message, "no NVIDIA driver found (dlopen libcuda.so.1 failed)")
        XCTAssertThrowsError(try Context()) { XCTAssertEqual("\($0)", "no NVIDIA driver found (dlopen libcuda.so.1 failed)") }
    }
}
