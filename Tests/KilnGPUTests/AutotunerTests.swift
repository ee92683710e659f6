import Foundation
import XCTest
import KilnCore
import KilnCUDA
@testable import KilnTune
@testable import KilnCheck

final class AutotunerTests: XCTestCase {
    private func key(_ gpu: String = "NVIDIA H200", sms: Int = 132, hash: String = "abc123") -> TuneKey {
        TuneKey(gpuName: gpu, multiprocessors: sms, driverVersion: 13000, nvrtcVersion: "13.0", kernelSourceHash: hash)
    }

    private func tempPath() -> String {
        NSTemporaryDirectory() + "kiln-tune-\(UUID().uuidString)/table.json"
    }

    func testTableRoundTripsAndLooksUpByBucket() throws {
        var t = TuneTable(key: key())
        t.record(TuneEntry(op: "gemm", format: .bf16, n: 6144, k: 4096, mBucket: 2, config: "a", split: 4, microseconds: 15, defaultMicroseconds: 20))
        t.record(TuneEntry(op: "gemm", format: .bf16, n: 6144, k: 4096, mBucket: 8, config: "b", split: 2, microseconds: 16, defaultMicroseconds: 19))
        let path = tempPath()
        try t.save(path: path)
        guard case .loaded(let back) = try TuneTable.load(path: path, expecting: key()) else { return XCTFail("table with a matching key was not loaded") }
        XCTAssertEqual(back, t)
        XCTAssertEqual(back.lookup(op: "gemm", format: .bf16, n: 6144, k: 4096, m: 2)?.config, "a")
        XCTAssertEqual(back.lookup(op: "gemm", format: .bf16, n: 6144, k: 4096, m: 5)?.config, "b", "M=5 falls in bucket 8")
        XCTAssertNil(back.lookup(op: "gemm", format: .bf16, n: 4096, k: 4096, m: 1))
        XCTAssertNil(back.lookup(op: "gemm", format: .bf16, n: 6144, k: 4096, m: 16))
    }

    func testTableWithMismatchedKeyIsIgnored() throws {
        let path = tempPath()
        var t = TuneTable(key: key())
        t.record(TuneEntry(op: "gemm", format: .bf16, n: 1, k: 1, mBucket: 1, config: "x", split: 1, microseconds: 1, defaultMicroseconds: 1))
        try t.save(path: path)
        for other in [key("NVIDIA H100 80GB HBM3"), key(sms: 114), key(hash: "def456"),
                      TuneKey(gpuName: "NVIDIA H200", multiprocessors: 132, driverVersion: 12080, nvrtcVersion: "13.0", kernelSourceHash: "abc123"),
                      TuneKey(gpuName: "NVIDIA H200", multiprocessors: 132, driverVersion: 13000, nvrtcVersion: "12.8", kernelSourceHash: "abc123")] {
            let r = try TuneTable.load(path: path, expecting: other)
            guard case .stale(let why) = r else { return XCTFail("a table for \(t.key) was accepted for \(other)") }
            XCTAssertFalse(why.isEmpty)
        }
        XCTAssertEqual(try TuneTable.load(path: tempPath(), expecting: key()), .missing)
    }

    /// An entry names the weight format it was measured for: a bf16 winner is never handed to a q4_1 GEMM, and
    /// recording a q4_1 winner for the same shape keeps the bf16 one.
    func testEntriesAreKeyedByWeightFormat() throws {
        var t = TuneTable(key: key())
        t.record(TuneEntry(op: "gate_up", format: .bf16, n: 28_672, k: 4096, mBucket: 1, config: "bf16-winner", split: 4,
                           microseconds: 30, defaultMicroseconds: 35))
        XCTAssertNil(t.lookup(op: "gate_up", format: .gguf(.q4_1), n: 28_672, k: 4096, m: 1))
        XCTAssertEqual(t.lookup(op: "gate_up", format: .bf16, n: 28_672, k: 4096, m: 1)?.config, "bf16-winner")
        t.record(TuneEntry(op: "gate_up", format: .gguf(.q4_1), n: 28_672, k: 4096, mBucket: 1, config: "q4-winner", split: 2,
                           microseconds: 12, defaultMicroseconds: 15))
        XCTAssertEqual(t.entries.count, 2)
        XCTAssertEqual(t.lookup(op: "gate_up", format: .gguf(.q4_1), n: 28_672, k: 4096, m: 1)?.config, "q4-winner")
        XCTAssertEqual(t.lookup(op: "gate_up", format: .bf16, n: 28_672, k: 4096, m: 1)?.config, "bf16-winner")
        // On disk the entry names its format; the file says its layout version.
        let path = tempPath()
        try t.save(path: path)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        XCTAssertTrue(text.contains("\"format\" : \"q4_1\"") && text.contains("\"format\" : \"bf16\"") && text.contains("\"format\" : 2"), text)
        guard case .loaded(let back) = try TuneTable.load(path: path, expecting: key()) else { return XCTFail("not loaded") }
        XCTAssertEqual(back, t)
    }

    /// A table written before entries carried a weight format (layout 1) is stale, with the reason, not misread as
    /// bf16 entries or rejected as corrupt; so is one from a newer Kiln.
    func testOlderOrNewerTableVersionIsStale() throws {
        let keyJSON = #"{"gpuName":"NVIDIA H200","multiprocessors":132,"driverVersion":13000,"nvrtcVersion":"13.0","kernelSourceHash":"abc123"}"#
        let entry = #"{"op":"qkv","n":6144,"k":4096,"mBucket":2,"config":"x","split":2,"microseconds":10,"defaultMicroseconds":12}"#
        for (version, word) in [(1, "older Kiln (table format 1"), (3, "newer Kiln (table format 3")] {
            let path = tempPath()
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try #"{"format":\#(version),"key":\#(keyJSON),"entries":[\#(entry)]}"#.write(toFile: path, atomically: true, encoding: .utf8)
            guard case .stale(let why) = try TuneTable.load(path: path, expecting: key()) else { return XCTFail("version \(version) accepted") }
            XCTAssertTrue(why.contains(word) && why.contains("reads table format 2"), why)
        }
    }

    func testUnknownWeightFormatInATableIsAClearError() throws {
        var t = TuneTable(key: key())
        t.record(TuneEntry(op: "o", format: .bf16, n: 8, k: 8, mBucket: 1, config: "x", split: 1, microseconds: 1, defaultMicroseconds: 1))
        let path = tempPath()
        try t.save(path: path)
        let text = try String(contentsOfFile: path, encoding: .utf8).replacingOccurrences(of: "\"bf16\"", with: "\"iq2_xxs\"")   // a GGUF type Kiln does not read yet
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try TuneTable.load(path: path, expecting: key())) { XCTAssertTrue("\($0)".contains(path), "\($0)") }
    }

    func testCorruptTableIsAClearError() throws {
        let path = tempPath()
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try "{not json".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try TuneTable.load(path: path, expecting: key())) { e in
            XCTAssertTrue("\(e)".contains(path))
        }
    }

    /// A fast candidate that computes the wrong answer must lose to a slower correct one.
    func testWrongCandidateIsNeverChosen() {
        struct Candidate { var name: String; var micros: Double; var offset: Float }
        let input: [Float] = (0..<257).map { Float($0 % 13) * 0.37 - 1.1 }
        let reference = input.map { $0 * 2 }
        let candidates = [Candidate(name: "fast-but-wrong", micros: 1, offset: 0.5),
                          Candidate(name: "correct-slow", micros: 9, offset: 0),
                          Candidate(name: "correct-fast", micros: 4, offset: 0),
                          Candidate(name: "nan", micros: 0.5, offset: .nan)]
        let (winner, all) = Autotuner.select(candidates, verify: { c in
            let out = input.map { $0 * 2 + c.offset }
            let worst = zip(out, reference).map { abs($0 - $1) / max(abs($1), 1e-3) }.max()!
            return worst.isNaN || worst > 1e-5 ? "max relative error \(worst)" : nil
        }, time: { $0.micros })
        XCTAssertEqual(winner?.candidate.name, "correct-fast")
        XCTAssertNotNil(all[0].rejection)
        XCTAssertNotNil(all[3].rejection, "NaN output must be rejected")
        XCTAssertNil(all[1].rejection)
    }

    /// A candidate that was fast once (a clock drift during the first pass) must lose to one that is fast every time:
    /// the finalists are re-timed interleaved and ranked by the median of all their timings.
    func testFinalistsAreRetimedAndRankedByMedian() {
        var calls: [String: Int] = [:]
        let (winner, all) = Autotuner.select(["lucky", "steady", "slow"], verify: { _ in nil }, time: { c -> Double in
            calls[c, default: 0] += 1
            switch c {
            case "lucky": return calls[c]! == 1 ? 1.0 : 5.0
            case "steady": return 3.0
            default: return 9.0
            }
        }, finalists: 2, rounds: 3)
        XCTAssertEqual(winner?.candidate, "steady")
        XCTAssertEqual(all[0].microseconds, 5.0, "median of 1, 5, 5, 5")
        XCTAssertEqual(calls["lucky"], 4)
        XCTAssertEqual(calls["slow"], 1, "only the finalists are timed again")
    }

    func testThrowingCandidateIsRejectedAndNoWinnerWhenAllFail() {
        let (winner, all) = Autotuner.select([1, 2], verify: { _ in throw KilnError("launch failed") }, time: { Double($0) })
        XCTAssertNil(winner)
        XCTAssertEqual(all.compactMap(\.rejection).count, 2)
    }

    func testBucketsAndMedian() {
        XCTAssertEqual(MBucket.bucket(for: 1), 1)
        XCTAssertEqual(MBucket.bucket(for: 3), 4)
        XCTAssertEqual(MBucket.bucket(for: 16), 16)
        XCTAssertEqual(MBucket.bucket(for: 100), 128)
        XCTAssertEqual(Autotuner.median([5, 1, 3]), 3)
        XCTAssertEqual(Autotuner.median([4, 1, 3, 2]), 2.5)
    }
}
