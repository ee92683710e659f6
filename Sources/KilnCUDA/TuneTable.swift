import Foundation
import KilnCore

/// What a tuning table was measured on. A table is used only when every field matches the running system:
/// a kernel configuration that was never verified on this GPU, driver, compiler and kernel source is never picked.
public struct TuneKey: Codable, Equatable, Sendable, CustomStringConvertible {
    public var gpuName: String
    public var multiprocessors: Int
    public var driverVersion: Int
    public var nvrtcVersion: String
    /// SHA-256 of the embedded kernel sources.
    public var kernelSourceHash: String

    public init(gpuName: String, multiprocessors: Int, driverVersion: Int, nvrtcVersion: String, kernelSourceHash: String) {
        self.gpuName = gpuName; self.multiprocessors = multiprocessors; self.driverVersion = driverVersion
        self.nvrtcVersion = nvrtcVersion; self.kernelSourceHash = kernelSourceHash
    }

    public var description: String {
        "\(gpuName), \(multiprocessors) SMs, driver \(driverVersion), NVRTC \(nvrtcVersion), kernels \(kernelSourceHash.prefix(12))"
    }

    /// The first field that differs, for the log line that says why a table was ignored.
    public func mismatch(_ other: TuneKey) -> String? {
        if gpuName != other.gpuName { return "GPU \(other.gpuName) ≠ \(gpuName)" }
        if multiprocessors != other.multiprocessors { return "SM count \(other.multiprocessors) ≠ \(multiprocessors)" }
        if driverVersion != other.driverVersion { return "driver \(other.driverVersion) ≠ \(driverVersion)" }
        if nvrtcVersion != other.nvrtcVersion { return "NVRTC \(other.nvrtcVersion) ≠ \(nvrtcVersion)" }
        if kernelSourceHash != other.kernelSourceHash { return "kernel sources changed" }
        return nil
    }
}

/// The M buckets the tuner measures; a call with M tokens uses the smallest bucket ≥ M.
public enum MBucket {
    public static let all = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    public static func bucket(for m: Int) -> Int { all.first { $0 >= m } ?? all.last! }
}

/// One tuned choice: for an op at a weight shape and an M bucket, the winning configuration.
public struct TuneEntry: Codable, Equatable, Sendable {
    public var op: String
    public var n: Int
    public var k: Int
    public var mBucket: Int
    /// Name of the winning instance in the op's instance list (e.g. `kiln_gemm_splitk_nt1_wn4_wk1_t8_u0_s0`).
    public var config: String
    /// Launch-time parameter such as the split-K count (1 when the op has none).
    public var split: Int
    public var microseconds: Double
    public var defaultMicroseconds: Double

    public init(op: String, n: Int, k: Int, mBucket: Int, config: String, split: Int, microseconds: Double, defaultMicroseconds: Double) {
        self.op = op; self.n = n; self.k = k; self.mBucket = mBucket; self.config = config; self.split = split
        self.microseconds = microseconds; self.defaultMicroseconds = defaultMicroseconds
    }
}

/// The tuner's table on disk (`$KILN_HOME/tune/<gpu>.json`, or `--tune-cache PATH`).
public struct TuneTable: Codable, Equatable, Sendable {
    public var format = 1
    public var key: TuneKey
    public var entries: [TuneEntry]

    public init(key: TuneKey, entries: [TuneEntry] = []) { self.key = key; self.entries = entries }

    public func lookup(op: String, n: Int, k: Int, m: Int) -> TuneEntry? {
        let b = MBucket.bucket(for: m)
        return entries.first { $0.op == op && $0.n == n && $0.k == k && $0.mBucket == b }
    }

    /// Adds or replaces the entry for the same op, shape and bucket.
    public mutating func record(_ e: TuneEntry) {
        entries.removeAll { $0.op == e.op && $0.n == e.n && $0.k == e.k && $0.mBucket == e.mBucket }
        entries.append(e)
    }

    public static func defaultPath(gpuName: String) -> String {
        let safe = gpuName.map { $0.isLetter || $0.isNumber ? $0 : "-" }
        return KilnHome.path + "/tune/" + String(safe) + ".json"
    }

    public enum LoadResult: Equatable {
        case loaded(TuneTable)
        case missing
        /// The table exists but was measured elsewhere or on other sources; the reason says which field differs.
        case stale(String)
    }

    /// Loads `path` and accepts it only if its key equals `expected`. Unreadable tables are errors naming the file.
    public static func load(path: String, expecting expected: TuneKey) throws -> LoadResult {
        guard FileManager.default.fileExists(atPath: path) else { return .missing }
        guard let data = FileManager.default.contents(atPath: path) else { throw KilnError("\(path): cannot read tuning table") }
        let table: TuneTable
        do { table = try JSONDecoder().decode(TuneTable.self, from: data) }
        catch { throw KilnError("\(path): not a Kiln tuning table (\(error.localizedDescription)); delete it or run kiln tune") }
        if let why = expected.mismatch(table.key) { return .stale(why) }
        return .loaded(table)
    }

    public func save(path: String) throws {
        let dir = (path as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        do { try enc.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic) }
        catch { throw KilnError("\(path): cannot write tuning table (\(error.localizedDescription))") }
    }
}
