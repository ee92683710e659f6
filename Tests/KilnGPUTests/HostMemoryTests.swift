import XCTest
import KilnCore
@testable import KilnTune
@testable import KilnCheck
@testable import KilnGPU
@testable import KilnCUDA

/// Host memory that the driver writes or reads through pointers Kiln hands it, and the tuner's host-side indexing at
/// the shapes it really runs. The release binary is built -Ounchecked (no bounds checks), so an index or a struct
/// layout that is off there overwrites the heap silently instead of trapping; these tests pin them down on the CPU.
final class HostMemoryTests: XCTestCase {
    /// cuTensorMapEncodeTiled requires a 64-byte aligned destination (cuda.h 13 declares CUtensorMap alignas(128));
    /// the encoder must get an aligned, zeroed map, and every byte it writes must land in the TensorMap value.
    func testTensorMapIsEncodedIntoAnAlignedScratchMap() throws {
        var sawAligned = false, sawZeroed = false
        let m = TensorMap.encoded { map in
            sawAligned = Int(bitPattern: map) % 128 == 0
            sawZeroed = (0..<128).allSatisfy { map.load(fromByteOffset: $0, as: UInt8.self) == 0 }
            for i in 0..<128 { map.storeBytes(of: UInt8(i + 1), toByteOffset: i, as: UInt8.self) }
        }
        XCTAssertTrue(sawAligned, "the driver's destination is 128-byte aligned")
        XCTAssertTrue(sawZeroed, "the destination starts zeroed")
        let bytes = withUnsafeBytes(of: m.words) { Array($0) }
        XCTAssertEqual(bytes, (1...128).map(UInt8.init), "all 128 bytes reach the value, in order")
        XCTAssertEqual(MemoryLayout<TensorMap>.size, 128, "CU_TENSOR_MAP_NUM_QWORDS = 16")
    }

    /// An async copy between a device buffer and pinned host memory moves at most what both hold: a larger count
    /// (the DMA would write past the end of the pinned buffer, into memory the driver owns) is an error, not a copy.
    func testAsyncCopyCountsAreBoundedByBothBuffers() throws {
        XCTAssertEqual(try DeviceBuffer<Float>.copyBytes(nil, device: 10, host: 4), 16, "default: the smaller side")
        XCTAssertEqual(try DeviceBuffer<UInt16>.copyBytes(3, device: 10, host: 4), 6)
        XCTAssertEqual(try DeviceBuffer<Int32>.copyBytes(0, device: 0, host: 0), 0)
        XCTAssertThrowsError(try DeviceBuffer<Float>.copyBytes(5, device: 10, host: 4), "past the pinned buffer")
        XCTAssertThrowsError(try DeviceBuffer<Float>.copyBytes(5, device: 4, host: 10), "past the device buffer")
        XCTAssertThrowsError(try DeviceBuffer<Float>.copyBytes(-1, device: 4, host: 4))
    }

    /// The structs passed to cuLaunchKernelEx and cuOccupancyMaxActiveClusters, laid out as cuda.h declares them:
    /// CUlaunchAttribute { id; pad[4]; union value[64] } and CUlaunchConfig { 7 × uint; CUstream; attrs*; numAttrs }.
    func testLaunchStructsHaveCudaHLayout() {
        XCTAssertEqual(MemoryLayout<LaunchAttribute>.stride, 72)
        XCTAssertEqual(MemoryLayout<LaunchAttribute>.offset(of: \LaunchAttribute.value), 8)
        XCTAssertEqual(MemoryLayout<LaunchConfig>.offset(of: \LaunchConfig.sharedBytes), 24)
        XCTAssertEqual(MemoryLayout<LaunchConfig>.offset(of: \LaunchConfig.stream), 32)
        XCTAssertEqual(MemoryLayout<LaunchConfig>.offset(of: \LaunchConfig.attrs), 40)
        XCTAssertEqual(MemoryLayout<LaunchConfig>.offset(of: \LaunchConfig.numAttrs), 48)
        XCTAssertEqual(MemoryLayout<LaunchConfig>.stride, 56)
    }

    /// `kiln tune --dummy-weights llama3-8b` on an H200: for every shape, the sample stays inside [maxM, N], the
    /// reference lands where the check reads it, and a correct output passes while one wrong sampled value fails.
    /// Inputs are constant per row with bf16-exact values, so each reference value is exactly k·x_t·w_r.
    func testTunerSampleReferenceAndCheckStayInBoundsAtLlama3Shapes() throws {
        let ms = MBucket.all.filter { $0 <= 16 || $0 >= 64 }
        let limits = GemmSearch.Limits.hopperGPU
        func xValue(_ t: Int) -> Float { Float(t % 7 + 1) * 0.25 }
        func wValue(_ r: Int) -> Float { Float(r % 5 + 1) * 0.015625 }
        for s in GemmShape.of(try DummyModels.config("llama3-8b")) {
            let tuned = ms.filter { GemmSearch.tunable(s, m: $0, limits: limits) }
            let maxM = try XCTUnwrap(tuned.max())
            XCTAssertEqual(maxM, s.outF32 ? 16 : 4096, "\(s)")
            let (rows, tokens) = GemmReference.sample(n: s.n, maxM: maxM, ms: tuned, random: 8)
            XCTAssertTrue(rows.allSatisfy { (0..<s.n).contains($0) } && Set(rows).count == rows.count, "\(s) rows")
            XCTAssertTrue(tokens.allSatisfy { (0..<maxM).contains($0) } && Set(tokens).count == tokens.count, "\(s) tokens")
            XCTAssertTrue(rows.contains(0) && rows.contains(s.n - 1), "\(s): both edges sampled")
            XCTAssertTrue(tokens.contains(maxM - 1), "\(s): the last token row sampled")

            var x = [UInt16](repeating: 0, count: maxM * s.k)   // only the sampled rows are read
            for t in tokens { for i in 0..<s.k { x[t * s.k + i] = floatToBF16(xValue(t)) } }
            var wRows = [UInt16](repeating: 0, count: rows.count * s.k)
            for (ri, r) in rows.enumerated() { for i in 0..<s.k { wRows[ri * s.k + i] = floatToBF16(wValue(r)) } }
            let ref = GemmReference(x: x, wRows: wRows, k: s.k, rows: rows, tokens: tokens)
            XCTAssertEqual(ref.values.count, rows.count * tokens.count)
            for (ti, t) in tokens.enumerated() { for (ri, r) in rows.enumerated() {
                XCTAssertEqual(ref.values[ti * rows.count + ri], Float(s.k) * xValue(t) * wValue(r), "\(s) token \(t) row \(r)")
            } }

            for m in [1, 16, 64] where tuned.contains(m) {
                var got = [Float](repeating: 0, count: m * s.n)
                for t in tokens where t < m { for r in rows { got[t * s.n + r] = Float(s.k) * xValue(t) * wValue(r) } }
                XCTAssertNil(GemmCheck.check(got, m: m, n: s.n, reference: ref), "\(s) M=\(m): a correct output passes")
                let lastToken = try XCTUnwrap(tokens.last { $0 < m }), lastRow = try XCTUnwrap(rows.last)
                got[lastToken * s.n + lastRow] *= 2
                let why = GemmCheck.check(got, m: m, n: s.n, reference: ref)
                XCTAssertTrue(why?.hasPrefix("y[\(lastToken), \(lastRow)]") == true, "\(s) M=\(m): \(why ?? "passed")")
            }
        }
    }
}
