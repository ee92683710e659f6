import Foundation
import XCTest
import KilnCore
import KilnGPU
import KilnKernels
import KilnCUDA
@testable import KilnTune
@testable import KilnCheck

/// NVRTC-only tests: they run wherever libnvrtc.so.13 can be found (scripts/fetch-test-data.sh
/// installs it under $KILN_HOME/nvrtc) and are skipped otherwise.
final class CompileTests: XCTestCase {
    func nvrtcOrSkip() throws -> NVRTC {
        switch NVRTC.loaded {
        case .success(let n): return n
        case .failure(let e): throw XCTSkip("\(e)")
        }
    }

    func testEveryKernelCompilesForHopperWithoutSpills() throws {
        _ = try nvrtcOrSkip()
        var lines: [String] = []
        let out = try CompileCheck.run(arch: "sm_90a") { lines.append($0) }
        XCTAssertEqual(out.failed, 0, lines.filter { $0.hasPrefix("FAIL") }.joined(separator: "\n"))
        XCTAssertEqual(out.passed, KernelCatalog.all.count)
    }

    /// `precompile` (what `kiln serve` does before listening) compiles families concurrently into the disk cache, and
    /// an unknown family is an error naming it rather than a crash in a worker thread.
    func testPrecompileFillsTheCacheConcurrentlyAndReportsAFailure() throws {
        _ = try nvrtcOrSkip()
        let dir = NSTemporaryDirectory() + "kiln-precompile-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let library = try KernelLibrary(compileOnlyArch: "sm_90a", cacheDirectory: dir)
        let files = ["rmsnorm.cu", "swiglu.cu", "embedding.cu"]
        try library.precompile(files)
        let cached = try FileManager.default.contentsOfDirectory(atPath: dir)
        XCTAssertGreaterThanOrEqual(cached.count, files.count, "one cubin per family in the cache: \(cached)")
        XCTAssertThrowsError(try library.precompile(["rmsnorm.cu", "no_such_family.cu"])) { error in
            XCTAssertTrue("\(error)".contains("no_such_family.cu"), "\(error)")
        }
    }

    func testCompileErrorNamesFileAndLine() throws {
        _ = try nvrtcOrSkip()
        let compiler = try KernelCompiler(arch: "sm_90a", cacheDirectory: nil)
        let src = KernelSource(name: "broken.cu", text: "__global__ void k(int* p) {\n  p[0] = undefined_name;\n}\n")
        XCTAssertThrowsError(try compiler.compile(src, nameExpressions: ["k"])) { error in
            XCTAssertTrue("\(error)".contains("broken.cu(2)"), "\(error)")
        }
    }

    func testDiskCacheKeysOnOptionsAndReloads() throws {
        _ = try nvrtcOrSkip()
        let dir = NSTemporaryDirectory() + "kiln-cache-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let src = try KernelLibrary.source("copy.cu")
        let a = try KernelCompiler(arch: "sm_90a", cacheDirectory: dir)
        let first = try a.compile(src, nameExpressions: ["kiln::copy_f4"])
        XCTAssertFalse(first.fromCache)
        let b = try KernelCompiler(arch: "sm_90a", cacheDirectory: dir)   // a new process, in effect
        let second = try b.compile(src, nameExpressions: ["kiln::copy_f4"])
        XCTAssertTrue(second.fromCache)
        XCTAssertEqual(first.cubin, second.cubin)
        XCTAssertEqual(first.loweredNames, second.loweredNames)
        let other = try b.compile(src, nameExpressions: ["kiln::copy_f4"], defines: ["KILN_UNUSED": "1"])
        XCTAssertFalse(other.fromCache, "different -D options must not share a cache entry")
        XCTAssertNotEqual(a.cacheKey(src, nameExpressions: [], options: a.options(defines: [:])),
                          try KernelCompiler(arch: "sm_80", cacheDirectory: nil).cacheKey(src, nameExpressions: [], options: a.options(defines: [:])))
    }

    func testResourceReportParsing() {
        let log = """
        ptxas info    : 0 bytes gmem
        ptxas info    : Compiling entry function '_ZN4kiln7rmsnormIfEEvNS_13RMSNormParamsE' for 'sm_90a'
        ptxas info    : Function properties for _ZN4kiln7rmsnormIfEEvNS_13RMSNormParamsE
            24 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
        ptxas info    : Used 40 registers, used 1 barriers, 128 bytes smem, 392 bytes cmem[0]
        """
        let r = CompiledModule.parseResources(log)
        XCTAssertEqual(r, [KernelResources(mangledName: "_ZN4kiln7rmsnormIfEEvNS_13RMSNormParamsE", registers: 40, stackFrame: 24, spillStores: 8, spillLoads: 12)])
        XCTAssertTrue(r[0].spills)
    }
}
