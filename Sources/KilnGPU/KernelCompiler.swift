import Foundation
import KilnCore

/// One `.cu` translation unit plus the in-memory headers it may `#include "name"`.
/// Kernels include only Kiln's own headers (no CUDA headers), so NVRTC needs no include paths.
public struct KernelSource: Sendable {
    public var name: String
    public var text: String
    public var headers: [(name: String, text: String)]
    public init(name: String, text: String, headers: [(name: String, text: String)] = []) {
        self.name = name; self.text = text; self.headers = headers
    }
}

/// Registers, stack and spills of one kernel, read from ptxas's verbose report in the NVRTC log.
public struct KernelResources: Sendable, Equatable {
    public var mangledName: String
    public var registers: Int = 0
    public var stackFrame: Int = 0
    public var spillStores: Int = 0
    public var spillLoads: Int = 0
    public var spills: Bool { spillStores > 0 || spillLoads > 0 }
    public init(mangledName: String, registers: Int = 0, stackFrame: Int = 0, spillStores: Int = 0, spillLoads: Int = 0) {
        self.mangledName = mangledName; self.registers = registers; self.stackFrame = stackFrame
        self.spillStores = spillStores; self.spillLoads = spillLoads
    }
}

/// The result of compiling one source with one set of specialisations.
public struct CompiledModule: Sendable {
    public var cubin: [UInt8]
    /// Name expression (e.g. `kiln::rmsnorm<kiln::bf16>`) → mangled symbol.
    public var loweredNames: [String: String]
    public var log: String
    public var fromCache: Bool

    /// Parses `--ptxas-options=-v` output: "Compiling entry function 'X'", "Function properties for X",
    /// "N bytes stack frame, N bytes spill stores, N bytes spill loads", "Used N registers".
    public var resources: [KernelResources] { CompiledModule.parseResources(log) }

    public static func parseResources(_ log: String) -> [KernelResources] {
        var byName: [String: KernelResources] = [:]
        var order: [String] = []
        var current: String? = nil
        func number(before word: String, in line: Substring) -> Int? {
            guard let r = line.range(of: " " + word) else { return nil }
            let digits = line[..<r.lowerBound].reversed().prefix { $0.isNumber }
            return Int(String(digits.reversed()))
        }
        for line in log.split(separator: "\n") {
            if let r = line.range(of: "Compiling entry function '") ?? line.range(of: "Function properties for ") {
                var name = line[r.upperBound...]
                if let q = name.firstIndex(of: "'") { name = name[..<q] }
                let n = String(name).trimmingCharacters(in: .whitespaces)
                current = n
                if byName[n] == nil { byName[n] = KernelResources(mangledName: n); order.append(n) }
                continue
            }
            guard let c = current else { continue }
            if let v = number(before: "bytes stack frame", in: line) { byName[c]!.stackFrame = v }
            if let v = number(before: "bytes spill stores", in: line) { byName[c]!.spillStores = v }
            if let v = number(before: "bytes spill loads", in: line) { byName[c]!.spillLoads = v }
            if let v = number(before: "registers", in: line) { byName[c]!.registers = v }
        }
        return order.map { byName[$0]! }
    }
}

/// Compiles CUDA C++ with NVRTC for one architecture and caches cubins on disk under
/// `$KILN_HOME/kernels`, keyed by SHA-256 of the source, headers, options, name expressions,
/// NVRTC version and architecture, so a second run (or process) loads instead of compiling.
public final class KernelCompiler: @unchecked Sendable {
    public let arch: String
    public let cacheDirectory: String?
    public let nvrtc: NVRTC
    public let nvrtcVersion: String
    private let lock = NSLock()
    private var memo: [String: CompiledModule] = [:]

    /// `cacheDirectory: nil` disables the disk cache (the in-process memo stays).
    public init(arch: String, cacheDirectory: String? = kilnHome() + "/kernels") throws {
        self.arch = arch
        self.cacheDirectory = cacheDirectory
        nvrtc = try NVRTC.shared
        nvrtcVersion = try nvrtc.version()
    }

    /// Options every compile gets: the architecture, C++17, and ptxas's resource report (which the
    /// spill check reads). No fast-math: the CPU references expect IEEE expf/sincosf.
    public func options(defines: [String: String]) -> [String] {
        ["--gpu-architecture=\(arch)", "-std=c++17", "--ptxas-options=-v", "-default-device"]
            + defines.keys.sorted().map { "-D\($0)=\(defines[$0]!)" }
    }

    public func cacheKey(_ source: KernelSource, nameExpressions: [String], options: [String]) -> String {
        var h = SHA256()
        func add(_ s: String) { h.update(Array(s.utf8)); h.update([0]) }
        add("kiln-kernel-cache-v1"); add(arch); add(nvrtcVersion); add(source.name); add(source.text)
        for hd in source.headers { add(hd.name); add(hd.text) }
        options.forEach(add); nameExpressions.forEach(add)
        return h.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// Compiles (or loads from cache) `source` with `-D` constants and template instances named by `nameExpressions`.
    public func compile(_ source: KernelSource, nameExpressions: [String], defines: [String: String] = [:], useCache: Bool = true) throws -> CompiledModule {
        let opts = options(defines: defines)
        let key = cacheKey(source, nameExpressions: nameExpressions, options: opts)
        lock.lock(); let hit = memo[key]; lock.unlock()
        if let hit, useCache { return hit }
        if useCache, let m = loadCached(key) { lock.lock(); memo[key] = m; lock.unlock(); return m }
        let m = try compileNow(source, nameExpressions: nameExpressions, options: opts)
        lock.lock(); memo[key] = m; lock.unlock()
        if useCache { storeCached(key, m) }
        return m
    }

    private func compileNow(_ source: KernelSource, nameExpressions: [String], options: [String]) throws -> CompiledModule {
        var prog: OpaquePointer? = nil
        let headerTexts = source.headers.map { strdup($0.text) }, headerNames = source.headers.map { strdup($0.name) }
        defer { (headerTexts + headerNames).forEach { free($0) } }
        let ht = headerTexts.map { UnsafePointer($0) }, hn = headerNames.map { UnsafePointer($0) }
        try nvrtcCheck("nvrtcCreateProgram", nvrtc.nvrtcCreateProgram(&prog, source.text, source.name, Int32(ht.count), ht, hn))
        defer { _ = nvrtc.nvrtcDestroyProgram(&prog) }
        for e in nameExpressions { try nvrtcCheck("nvrtcAddNameExpression", nvrtc.nvrtcAddNameExpression(prog, e)) }
        let cOpts = options.map { strdup($0) }
        defer { cOpts.forEach { free($0) } }
        let compileResult = nvrtc.nvrtcCompileProgram(prog, Int32(cOpts.count), cOpts.map { UnsafePointer($0) })
        var logSize = 0
        try nvrtcCheck("nvrtcGetProgramLogSize", nvrtc.nvrtcGetProgramLogSize(prog, &logSize))
        var logBuf = [CChar](repeating: 0, count: max(1, logSize))
        try nvrtcCheck("nvrtcGetProgramLog", nvrtc.nvrtcGetProgramLog(prog, &logBuf))
        let log = String(cString: logBuf)
        if compileResult != 0 {
            // The log's lines read "rmsnorm.cu(42): error: ...", naming file and line.
            throw KilnError("NVRTC failed to compile \(source.name) for \(arch) [\(nameExpressions.joined(separator: ", "))]:\n\(log)")
        }
        var size = 0
        try nvrtcCheck("nvrtcGetCUBINSize", nvrtc.nvrtcGetCUBINSize(prog, &size))
        var cubin = [UInt8](repeating: 0, count: size)
        try cubin.withUnsafeMutableBytes { p in
            try nvrtcCheck("nvrtcGetCUBIN", nvrtc.nvrtcGetCUBIN(prog, p.baseAddress!.assumingMemoryBound(to: CChar.self)))
        }
        var lowered: [String: String] = [:]
        for e in nameExpressions {
            var p: UnsafePointer<CChar>? = nil
            try nvrtcCheck("nvrtcGetLoweredName", nvrtc.nvrtcGetLoweredName(prog, e, &p))
            lowered[e] = String(cString: p!)
        }
        return CompiledModule(cubin: cubin, loweredNames: lowered, log: log, fromCache: false)
    }

    private struct Meta: Codable { var loweredNames: [String: String]; var log: String }

    private func loadCached(_ key: String) -> CompiledModule? {
        guard let dir = cacheDirectory,
              let cubin = FileManager.default.contents(atPath: "\(dir)/\(key).cubin"),
              let metaData = FileManager.default.contents(atPath: "\(dir)/\(key).json"),
              let meta = try? JSONDecoder().decode(Meta.self, from: metaData) else { return nil }
        return CompiledModule(cubin: [UInt8](cubin), loweredNames: meta.loweredNames, log: meta.log, fromCache: true)
    }

    /// Best effort: a cache that cannot be written only costs a recompile next time.
    private func storeCached(_ key: String, _ m: CompiledModule) {
        guard let dir = cacheDirectory else { return }
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        guard let meta = try? JSONEncoder().encode(Meta(loweredNames: m.loweredNames, log: m.log)) else { return }
        // Write to a temporary name and rename, so a concurrent reader never sees half a file;
        // the metadata goes last because its presence marks the entry complete.
        let tmp = "\(dir)/.\(key).\(getpid())"
        if FileManager.default.createFile(atPath: tmp + ".cubin", contents: Data(m.cubin)) { rename(tmp + ".cubin", "\(dir)/\(key).cubin") }
        if FileManager.default.createFile(atPath: tmp + ".json", contents: meta) { rename(tmp + ".json", "\(dir)/\(key).json") }
    }
}

/// A cubin loaded into a context, unloaded on deinit.
public final class Module: @unchecked Sendable {
    public let context: Context
    public let compiled: CompiledModule
    let handle: CUhandle?

    public init(_ context: Context, _ compiled: CompiledModule) throws {
        self.context = context
        self.compiled = compiled
        var m: CUhandle? = nil
        try compiled.cubin.withUnsafeBytes { try cuCheck("cuModuleLoadData", context.driver.cuModuleLoadData(&m, $0.baseAddress)) }
        handle = m
    }
    deinit { _ = context.driver.cuModuleUnload(handle) }

    /// The kernel for a name expression given at compile time (or a plain extern "C" name).
    public func kernel(_ nameExpression: String) throws -> Kernel {
        let symbol = compiled.loweredNames[nameExpression] ?? nameExpression
        var f: CUhandle? = nil
        try cuCheck("cuModuleGetFunction", context.driver.cuModuleGetFunction(&f, handle, symbol))
        return Kernel(module: self, handle: f, name: nameExpression)
    }
}

/// A kernel function. Every Kiln kernel takes ONE parameter: a plain struct of device addresses
/// (UInt64), Int32 and Float fields, declared in the same order in Swift and in the `.cu` file, so
/// the C layout matches and launching needs no argument array (and no allocation).
public struct Kernel: @unchecked Sendable {
    public let module: Module
    let handle: CUhandle?
    public let name: String

    /// Lets the kernel use more than 48 KiB of dynamic shared memory.
    public func setMaxDynamicSharedMemory(_ bytes: Int) throws {
        try cuCheck("cuFuncSetAttribute", module.context.driver.cuFuncSetAttribute(handle, 8 /* MAX_DYNAMIC_SHARED_SIZE_BYTES */, Int32(bytes)))
    }

    /// How many blocks of this kernel with `block` threads and `sharedBytes` of dynamic shared memory fit on one SM.
    public func maxActiveBlocksPerSM(block: Int, sharedBytes: Int) throws -> Int {
        var n: Int32 = 0
        try cuCheck("cuOccupancyMaxActiveBlocksPerMultiprocessor",
                    module.context.driver.cuOccupancyMaxActiveBlocksPerMultiprocessor(&n, handle, Int32(block), sharedBytes))
        return Int(n)
    }

    /// How many clusters of this kernel (cluster shape compiled in with __cluster_dims__) can be resident at once
    /// with `block` threads and `sharedBytes` of dynamic shared memory; nil when the driver cannot say.
    public func maxActiveClusters(gridX: Int, block: Int, sharedBytes: Int) throws -> Int? {
        guard let f = module.context.driver.cuOccupancyMaxActiveClusters else { return nil }
        var cfg = LaunchConfig(gridX: UInt32(gridX), gridY: 1, gridZ: 1, blockX: UInt32(block), blockY: 1, blockZ: 1,
                               sharedBytes: UInt32(sharedBytes), stream: nil, attrs: nil, numAttrs: 0)
        var n: Int32 = 0
        try withUnsafePointer(to: &cfg) { cp in try cuCheck("cuOccupancyMaxActiveClusters", f(&n, handle, UnsafeRawPointer(cp))) }
        return n > 0 ? Int(n) : nil
    }

    @inline(__always)
    public func launch<P>(grid: (Int, Int, Int), block: (Int, Int, Int), sharedBytes: Int = 0, stream: GPUStream, pdl: Bool = false, _ params: P) throws {
        var p = params
        try withUnsafeMutablePointer(to: &p) { pp in
            var arg: UnsafeMutableRawPointer? = UnsafeMutableRawPointer(pp)
            try withUnsafeMutablePointer(to: &arg) { args in
                try launchRaw(grid: grid, block: block, sharedBytes: sharedBytes, stream: stream, pdl: pdl, args: args)
            }
        }
    }

    /// cuLaunchKernel, or with `pdl` cuLaunchKernelEx with CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION:
    /// this kernel may start before the previous kernel on the stream has finished (once that one has run
    /// `griddepcontrol.launch_dependents` in every block); it must `griddepcontrol.wait` before reading
    /// that kernel's output or writing anything that kernel reads. Recorded as a programmatic edge under
    /// stream capture.
    @inline(__always)
    func launchRaw(grid: (Int, Int, Int), block: (Int, Int, Int), sharedBytes: Int, stream: GPUStream, pdl: Bool,
                   args: UnsafeMutablePointer<UnsafeMutableRawPointer?>) throws {
        let d = module.context.driver
        if pdl, let ex = d.cuLaunchKernelEx {
            var attr = LaunchAttribute(id: 6 /* PROGRAMMATIC_STREAM_SERIALIZATION */, pad: 0, value: (1, 0, 0, 0, 0, 0, 0, 0))
            try withUnsafeMutablePointer(to: &attr) { ap in
                var cfg = LaunchConfig(gridX: UInt32(grid.0), gridY: UInt32(grid.1), gridZ: UInt32(grid.2),
                                       blockX: UInt32(block.0), blockY: UInt32(block.1), blockZ: UInt32(block.2),
                                       sharedBytes: UInt32(sharedBytes), stream: stream.handle, attrs: UnsafeMutableRawPointer(ap), numAttrs: 1)
                try withUnsafePointer(to: &cfg) { cp in
                    try cuCheck("cuLaunchKernelEx", ex(UnsafeRawPointer(cp), handle, args, nil))
                }
            }
        } else {
            try cuCheck("cuLaunchKernel", d.cuLaunchKernel(
                handle, UInt32(grid.0), UInt32(grid.1), UInt32(grid.2), UInt32(block.0), UInt32(block.1), UInt32(block.2),
                UInt32(sharedBytes), stream.handle, args, nil))
        }
    }
}

/// CUlaunchAttribute: id (4 bytes), 4 bytes padding, a 64-byte value union (an int flag at its start).
struct LaunchAttribute {
    var id: UInt32
    var pad: UInt32
    var value: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)
}

/// CUlaunchConfig: seven uint32, the stream at offset 32, the attribute array at 40, their count at 48 (56 bytes).
struct LaunchConfig {
    var gridX, gridY, gridZ, blockX, blockY, blockZ, sharedBytes: UInt32
    var stream: CUhandle?
    var attrs: UnsafeMutableRawPointer?
    var numAttrs: UInt32
}
