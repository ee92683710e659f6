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

/// One tuned choice: for an op on weights of one format at a weight shape and an M bucket, the winning configuration.
public struct TuneEntry: Codable, Equatable, Sendable {
    public var op: String
    /// The weight format the kernels read when this was measured (`bf16`, later `q4_1`, `fp8_e4m3_b128x128`, …):
    /// an entry is never used for another format, whose kernels and byte counts differ.
    public var format: WeightFormat
    public var n: Int
    public var k: Int
    public var mBucket: Int
    /// Name of the winning instance in the op's instance list (e.g. `kiln_gemm_splitk_nt1_wn4_wk1_t8_u0_s0`).
    public var config: String
    /// Launch-time parameter such as the split-K count (1 when the op has none).
    public var split: Int
    public var microseconds: Double
    public var defaultMicroseconds: Double

    public init(op: String, format: WeightFormat, n: Int, k: Int, mBucket: Int, config: String, split: Int,
                microseconds: Double, defaultMicroseconds: Double) {
        self.op = op; self.format = format; self.n = n; self.k = k; self.mBucket = mBucket; self.config = config; self.split = split
        self.microseconds = microseconds; self.defaultMicroseconds = defaultMicroseconds
    }

    enum CodingKeys: String, CodingKey { case op, format, n, k, mBucket, config, split, microseconds, defaultMicroseconds }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let name = try c.decode(String.self, forKey: .format)
        guard let f = WeightFormat(name: name) else {
            throw DecodingError.dataCorruptedError(forKey: .format, in: c, debugDescription: "unknown weight format \"\(name)\"")
        }
        self.init(op: try c.decode(String.self, forKey: .op), format: f, n: try c.decode(Int.self, forKey: .n),
                  k: try c.decode(Int.self, forKey: .k), mBucket: try c.decode(Int.self, forKey: .mBucket),
                  config: try c.decode(String.self, forKey: .config), split: try c.decode(Int.self, forKey: .split),
                  microseconds: try c.decode(Double.self, forKey: .microseconds),
                  defaultMicroseconds: try c.decode(Double.self, forKey: .defaultMicroseconds))
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(op, forKey: .op); try c.encode(format.name, forKey: .format); try c.encode(n, forKey: .n)
        try c.encode(k, forKey: .k); try c.encode(mBucket, forKey: .mBucket); try c.encode(config, forKey: .config)
        try c.encode(split, forKey: .split); try c.encode(microseconds, forKey: .microseconds)
        try c.encode(defaultMicroseconds, forKey: .defaultMicroseconds)
    }

    /// Whether `other` is for the same (op, format, N, K, M bucket): one entry per key.
    func sameKey(_ other: TuneEntry) -> Bool {
        op == other.op && format == other.format && n == other.n && k == other.k && mBucket == other.mBucket
    }
}

/// The tuner's table on disk (`$KILN_HOME/tune/<gpu>.json`, or `--tune-cache PATH`).
public struct TuneTable: Codable, Equatable, Sendable {
    /// The layout version of the file (its JSON key is `format`). 2: entries carry the weight format.
    /// A table of another version is reported stale, never read as this one.
    public static let currentVersion = 2
    public var version = TuneTable.currentVersion
    public var key: TuneKey
    public var entries: [TuneEntry]

    enum CodingKeys: String, CodingKey { case version = "format", key, entries }

    public init(key: TuneKey, entries: [TuneEntry] = []) { self.key = key; self.entries = entries }

    public func lookup(op: String, format: WeightFormat, n: Int, k: Int, m: Int) -> TuneEntry? {
        let b = MBucket.bucket(for: m)
        return entries.first { $0.op == op && $0.format == format && $0.n == n && $0.k == k && $0.mBucket == b }
    }

    /// Adds or replaces the entry for the same op, format, shape and bucket.
    public mutating func record(_ e: TuneEntry) {
        entries.removeAll { $0.sameKey(e) }
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
        // The version first, so an older layout is reported as such instead of failing to decode (or being misread).
        if let v = try? JSONDecoder().decode(VersionOnly.self, from: data), v.format != currentVersion {
            let why = v.format < currentVersion ? "an older Kiln (table format \(v.format); entries without a weight format)"
                                                : "a newer Kiln (table format \(v.format))"
            return .stale("\(why); this Kiln reads table format \(currentVersion)")
        }
        let table: TuneTable
        do { table = try JSONDecoder().decode(TuneTable.self, from: data) }
        catch { throw KilnError("\(path): not a Kiln tuning table (\(error.localizedDescription)); delete it or run kiln tune") }
        if let why = expected.mismatch(table.key) { return .stale(why) }
        return .loaded(table)
    }

    private struct VersionOnly: Decodable { var format: Int }

    public func save(path: String) throws {
        let dir = (path as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        do { try enc.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic) }
        catch { throw KilnError("\(path): cannot write tuning table (\(error.localizedDescription))") }
    }
}
