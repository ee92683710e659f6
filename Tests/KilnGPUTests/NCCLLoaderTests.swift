import Foundation
import XCTest
import KilnCore
import KilnGPU
#if canImport(Glibc)
import Glibc
#endif

/// Loading NCCL through dlopen on a machine that (usually) has none: the errors say where Kiln looked, a named file
/// that is missing or is not NCCL is reported as such, and NVLink multicast is switched off before any load.
final class NCCLLoaderTests: XCTestCase {
    /// Without NCCL the search fails naming the loader path and each Python site-packages' nvidia/nccl/lib; where
    /// NCCL is installed after all, the library loads and reports a 2.x version.
    func testSearchNamesWhereItLookedOrLoadsNCCL2() throws {
        do {
            let nccl = try NCCL.load()
            let version = try nccl.version()
            XCTAssertTrue(version.hasPrefix("2."), "NCCL version \(version) from \(nccl.location)")
        } catch let e as KilnError {
            XCTAssertTrue(e.message.hasPrefix("libnccl.so.2 (NCCL) not found; looked in: the loader path"), e.message)
            XCTAssertTrue(e.message.contains("set KILN_NCCL"), e.message)
            // The site-packages directory python3 itself reports (asked here, independently of the loader).
            if let site = Self.pythonSitePackages(), FileManager.default.fileExists(atPath: site) {
                XCTAssertTrue(e.message.contains(site + "/nvidia/nccl/lib"), e.message)
            }
        }
    }

    func testNamedFileThatIsMissing() {
        XCTAssertThrowsError(try NCCL.load(path: "/nonexistent/libnccl.so.2")) {
            let m = ($0 as? KilnError)?.message ?? ""
            XCTAssertTrue(m.hasPrefix("cannot load NCCL from /nonexistent/libnccl.so.2 (named by KILN_NCCL): "), m)
        }
    }

    /// A library that loads but is not NCCL (the C math library) fails on the first symbol, naming it.
    func testNamedFileThatIsNotNCCL() {
        XCTAssertThrowsError(try NCCL.load(path: "libm.so.6")) {
            let m = ($0 as? KilnError)?.message ?? ""
            XCTAssertTrue(m.hasPrefix("libm.so.6 has no symbol ncclGetVersion"), m)
        }
    }

    /// NCCL_NVLS_ENABLE=0 is set at load when unset, and a value already set is left alone.
    func testNVLinkMulticastOffUnlessSet() {
        setenv("NCCL_NVLS_ENABLE", "1", 1)
        _ = try? NCCL.load(path: "/nonexistent/libnccl.so.2")
        XCTAssertEqual(getenv("NCCL_NVLS_ENABLE").map { String(cString: $0) }, "1")
        unsetenv("NCCL_NVLS_ENABLE")
        _ = try? NCCL.load(path: "/nonexistent/libnccl.so.2")
        XCTAssertEqual(getenv("NCCL_NVLS_ENABLE").map { String(cString: $0) }, "0")
    }

    func testNCCLCheckNamesTheCallAndTheResult() throws {
        XCTAssertNoThrow(try ncclCheck("ncclGroupEnd", 0))
        XCTAssertThrowsError(try ncclCheck("ncclAllReduce", 5)) {
            XCTAssertTrue("\($0)".hasPrefix("ncclAllReduce failed: ncclInvalidUsage"), "\($0)")
        }
        XCTAssertThrowsError(try ncclCheck("ncclCommInitAll", 1)) {
            XCTAssertTrue("\($0)".hasPrefix("ncclCommInitAll failed: ncclUnhandledCudaError"), "\($0)")
        }
        XCTAssertThrowsError(try ncclCheck("ncclAllGather", 42)) {
            XCTAssertTrue("\($0)".hasPrefix("ncclAllGather failed: NCCL error 42"), "\($0)")
        }
    }

    /// The site-packages directories come from asking the Python interpreter (here a stand-in script that answers
    /// with a temporary folder): its nvidia/nccl/lib is searched.
    func testSitePackagesComeFromPython() throws {
        let site = NSTemporaryDirectory() + "kiln-nccl-site-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: site) }
        try FileManager.default.createDirectory(atPath: site, withIntermediateDirectories: true)
        let fakePython = site + "/python"
        try "#!/bin/sh\necho \(site)\n".write(toFile: fakePython, atomically: true, encoding: .utf8)
        chmod(fakePython, 0o755)
        let dirs = NCCL.pythonLibraryDirectories(python: fakePython)
        XCTAssertEqual(dirs.first, site + "/nvidia/nccl/lib")
        XCTAssertFalse(NCCL.pythonLibraryDirectories(python: "/nonexistent/python3").contains(site + "/nvidia/nccl/lib"))
    }

    /// With a real libnccl.so.2 named by KILN_TEST_NCCL (e.g. from `pip install --target DIR nvidia-nccl-cu13`): every
    /// symbol resolves, the version is 2.x, and ncclCheck adds the library's own error text. Skipped otherwise.
    func testRealLibraryNamedByPath() throws {
        guard let path = ProcessInfo.processInfo.environment["KILN_TEST_NCCL"] else { throw XCTSkip("KILN_TEST_NCCL not set") }
        let nccl = try NCCL.load(path: path)
        XCTAssertEqual(nccl.location, path)
        let version = try nccl.version()
        XCTAssertTrue(version.hasPrefix("2."), version)
        XCTAssertThrowsError(try ncclCheck("ncclAllReduce", 4)) {
            let m = "\($0)"
            XCTAssertTrue(m.hasPrefix("ncclAllReduce failed: ncclInvalidArgument ("), m)
            XCTAssertTrue(m.hasSuffix(")") && m.count > "ncclAllReduce failed: ncclInvalidArgument ()".count, m)
        }
    }

    static func pythonSitePackages() -> String? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", "import site; print(site.getsitepackages()[0])"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return nil }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
