import Foundation
import KilnCore
#if canImport(Glibc)
import Glibc
#endif

// NCCL (NVIDIA's collective communication library), loaded with dlopen at run time like the driver and NVRTC:
// nothing links it at build time, and the CPU-only build and tests run without it. It joins the tensor-parallel
// ranks (KilnModels' TensorParallelPlan): an all-reduce after each row-parallel GEMM, an all-gather of the
// vocabulary-parallel logits. One process drives the N GPUs, so communicators come from ncclCommInitAll.

public typealias ncclResult_t = Int32
/// ncclComm_t.
public typealias NCCLComm = OpaquePointer

/// Turns a failed NCCL call into a KilnError naming the call and NCCL's error ("ncclAllReduce failed:
/// ncclInvalidUsage (…)"). Every NCCL call in Kiln goes through here; on success it neither allocates nor formats.
@inline(__always)
public func ncclCheck(_ call: StaticString, _ result: ncclResult_t) throws {
    if result != 0 { throw NCCL.error(call, result) }
}

/// ncclDataType_t values (nccl.h).
public enum NCCLDataType: Int32, Sendable {
    case int8 = 0, uint8 = 1, int32 = 2, uint32 = 3, int64 = 4, uint64 = 5
    case float16 = 6, float32 = 7, float64 = 8, bfloat16 = 9
}

/// ncclRedOp_t values (nccl.h).
public enum NCCLReduction: Int32, Sendable { case sum = 0, product = 1, max = 2, min = 3, average = 4 }

/// The loaded library. `NCCL.load(path:)` searches, in order: `path` alone when given (the CLI passes `KILN_NCCL`;
/// the engine reads no environment variables for it), else the dynamic loader's path (`LD_LIBRARY_PATH`,
/// the ldconfig cache), then `nvidia/nccl/lib` in every Python site-packages directory (where pip's
/// `nvidia-nccl-cu13` installs `libnccl.so.2`): those `python3` reports, and the usual system and user ones.
public final class NCCL: @unchecked Sendable {
    typealias FnVersion = @convention(c) (UnsafeMutablePointer<Int32>?) -> ncclResult_t
    typealias FnUniqueId = @convention(c) (UnsafeMutableRawPointer?) -> ncclResult_t
    typealias FnInitAll = @convention(c) (UnsafeMutablePointer<NCCLComm?>?, Int32, UnsafePointer<Int32>?) -> ncclResult_t
    typealias FnAllReduce = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer?, Int, Int32, Int32, NCCLComm?, CUhandle?) -> ncclResult_t
    typealias FnAllGather = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer?, Int, Int32, NCCLComm?, CUhandle?) -> ncclResult_t
    typealias FnComm = @convention(c) (NCCLComm?) -> ncclResult_t
    typealias FnErrorString = @convention(c) (ncclResult_t) -> UnsafePointer<CChar>?
    typealias FnVoid = @convention(c) () -> ncclResult_t

    let ncclGetVersion: FnVersion
    let ncclGetUniqueId: FnUniqueId
    /// ncclCommInitRank(ncclComm_t*, int nranks, ncclUniqueId id, int rank) takes the 128-byte id by value, which a
    /// Swift @convention(c) type cannot express; it is resolved (so a library without it is caught at load) for the
    /// multi-process engine, which will call it through a small C shim. One process driving N GPUs uses InitAll.
    let ncclCommInitRank: UnsafeRawPointer
    let ncclCommInitAll: FnInitAll
    let ncclAllReduce: FnAllReduce
    let ncclAllGather: FnAllGather
    let ncclCommDestroy: FnComm
    let ncclGetErrorString: FnErrorString
    let ncclGroupStart: FnVoid
    let ncclGroupEnd: FnVoid

    /// The file that was loaded, or "loader path" when dlopen found `libnccl.so.2` by name.
    public let location: String

    public static let libraryName = "libnccl.so.2"

    /// The most recently loaded library, for `ncclCheck`'s error strings.
    private static let lock = NSLock()
    nonisolated(unsafe) private static var lastLoaded: NCCL?

    /// Loads NCCL: `path` (a file) when given, else the search described on the type. Before anything is loaded,
    /// sets `NCCL_NVLS_ENABLE=0` unless the variable is already set: NCCL reads it when a communicator is created,
    /// and NVLink multicast (NVLS) must stay off on the lent machines (issue 23). This is the one place Kiln writes
    /// an environment variable.
    public static func load(path: String? = nil, python: String? = "python3") throws -> NCCL {
        disableNVLinkMulticastUnlessSet()
        let lib: NCCL
        if let path {
            guard let handle = dlopen(path, RTLD_NOW | RTLD_GLOBAL) else {
                throw KilnError("cannot load NCCL from \(path) (named by KILN_NCCL): \(dlErrorText())")
            }
            lib = try NCCL(handle, location: path)
        } else {
            let dirs = pythonLibraryDirectories(python: python)
            var loaded: NCCL? = nil
            if let h = dlopen(libraryName, RTLD_NOW | RTLD_GLOBAL) { loaded = try NCCL(h, location: "loader path") }
            for dir in dirs where loaded == nil {
                let file = dir + "/" + libraryName
                guard FileManager.default.fileExists(atPath: file) else { continue }
                guard let h = dlopen(file, RTLD_NOW | RTLD_GLOBAL) else {
                    throw KilnError("cannot load NCCL from \(file): \(dlErrorText())")
                }
                loaded = try NCCL(h, location: file)
            }
            guard let found = loaded else {
                throw KilnError("\(libraryName) (NCCL) not found; looked in: the loader path (LD_LIBRARY_PATH, ldconfig)"
                                + (dirs.isEmpty ? "" : ", " + dirs.joined(separator: ", "))
                                + ". Install the nvidia-nccl-cu13 Python package or set KILN_NCCL to the library file")
            }
            lib = found
        }
        lock.lock(); lastLoaded = lib; lock.unlock()
        return lib
    }

    /// `NCCL_NVLS_ENABLE=0` unless already set (setenv with overwrite 0).
    public static func disableNVLinkMulticastUnlessSet() { setenv("NCCL_NVLS_ENABLE", "0", 0) }

    /// `<site-packages>/nvidia/nccl/lib` for the site-packages directories `python` reports (when it runs) and the
    /// usual system and user ones (those that exist), without repeats: where pip puts NCCL, searched or not yet there.
    public static func pythonLibraryDirectories(python: String?) -> [String] {
        var sites: [String] = []
        if let python { sites += pythonSitePackages(python) }
        for pattern in ["/usr/lib/python3*/site-packages", "/usr/lib/python3/dist-packages", "/usr/local/lib/python3*/dist-packages",
                        "/usr/local/lib/python3*/site-packages", NSHomeDirectory() + "/.local/lib/python3*/site-packages"] {
            sites += globPaths(pattern)
        }
        var seen = Set<String>(), out: [String] = []
        for s in sites {
            let dir = s + "/nvidia/nccl/lib"
            guard !seen.contains(dir), FileManager.default.fileExists(atPath: s) else { continue }
            seen.insert(dir); out.append(dir)
        }
        return out
    }

    /// What `python -c 'import site; …'` lists as site-packages (system, user), or nothing when it cannot run.
    private static func pythonSitePackages(_ python: String) -> [String] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [python, "-c", "import site; print('\\n'.join(site.getsitepackages() + [site.getusersitepackages()]))"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { return [] }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return [] }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init).filter { !$0.isEmpty }
    }

    private init(_ lib: UnsafeMutableRawPointer, location: String) throws {
        func sym<T>(_ name: String, _: T.Type = T.self) throws -> T {
            guard let p = dlsym(lib, name) else { throw KilnError("\(location) has no symbol \(name) (not NCCL, or NCCL older than 2.10?)") }
            return unsafeBitCast(p, to: T.self)
        }
        ncclGetVersion = try sym("ncclGetVersion")
        ncclGetUniqueId = try sym("ncclGetUniqueId")
        ncclCommInitRank = UnsafeRawPointer(try sym("ncclCommInitRank", UnsafeMutableRawPointer.self))
        ncclCommInitAll = try sym("ncclCommInitAll")
        ncclAllReduce = try sym("ncclAllReduce")
        ncclAllGather = try sym("ncclAllGather")
        ncclCommDestroy = try sym("ncclCommDestroy")
        ncclGetErrorString = try sym("ncclGetErrorString")
        ncclGroupStart = try sym("ncclGroupStart")
        ncclGroupEnd = try sym("ncclGroupEnd")
        self.location = location
    }

    /// nccl.h's ncclResult_t names.
    static let resultNames = ["ncclSuccess", "ncclUnhandledCudaError", "ncclSystemError", "ncclInternalError",
                              "ncclInvalidArgument", "ncclInvalidUsage", "ncclRemoteError", "ncclInProgress"]

    /// "ncclAllReduce failed: ncclInvalidUsage (invalid usage)"; the text in parentheses comes from the library when
    /// one is loaded.
    static func error(_ call: StaticString, _ r: ncclResult_t) -> KilnError {
        let name = r >= 0 && Int(r) < resultNames.count ? resultNames[Int(r)] : "NCCL error \(r)"
        lock.lock(); let lib = lastLoaded; lock.unlock()
        let text = lib.flatMap { $0.ncclGetErrorString(r) }.map { " (\(String(cString: $0)))" } ?? ""
        return KilnError("\(call) failed: \(name)\(text)")
    }

    /// NCCL's version as "2.27.3" (NCCL ≥ 2.9 encodes it as major·10000 + minor·100 + patch).
    public func version() throws -> String {
        var v: Int32 = 0
        try ncclCheck("ncclGetVersion", ncclGetVersion(&v))
        return v >= 10000 ? "\(v / 10000).\((v % 10000) / 100).\(v % 100)" : "\(v / 1000).\((v % 1000) / 100).\(v % 100)"
    }

    // MARK: the calls the tensor-parallel engine makes (each on its rank's stream, so graph capture records them)

    /// One communicator per device of `devices` (CUDA ordinals), all in this process: comms[i] is rank i.
    public func communicators(devices: [Int32]) throws -> [NCCLComm] {
        var comms = [NCCLComm?](repeating: nil, count: devices.count)
        try ncclCheck("ncclCommInitAll", ncclCommInitAll(&comms, Int32(devices.count), devices))
        return try comms.map { c in
            guard let c else { throw KilnError("ncclCommInitAll returned success without a communicator") }
            return c
        }
    }

    public func destroy(_ comm: NCCLComm) throws { try ncclCheck("ncclCommDestroy", ncclCommDestroy(comm)) }

    /// recv[i] = op over ranks of send[i], for `count` elements (send == recv is the in-place form).
    public func allReduce(_ send: CUdeviceptr, into recv: CUdeviceptr, count: Int, _ type: NCCLDataType, _ op: NCCLReduction = .sum,
                          comm: NCCLComm, stream: CUhandle?) throws {
        try ncclCheck("ncclAllReduce", ncclAllReduce(UnsafeRawPointer(bitPattern: UInt(send)), UnsafeMutableRawPointer(bitPattern: UInt(recv)),
                                                     count, type.rawValue, op.rawValue, comm, stream))
    }

    /// recv[r·count ..< (r+1)·count] = rank r's send[0 ..< count], on every rank.
    public func allGather(_ send: CUdeviceptr, into recv: CUdeviceptr, count: Int, _ type: NCCLDataType, comm: NCCLComm, stream: CUhandle?) throws {
        try ncclCheck("ncclAllGather", ncclAllGather(UnsafeRawPointer(bitPattern: UInt(send)), UnsafeMutableRawPointer(bitPattern: UInt(recv)),
                                                     count, type.rawValue, comm, stream))
    }

    /// Runs `body` between ncclGroupStart and ncclGroupEnd: one thread issuing a collective for several ranks must
    /// group them, or the first call waits for ranks that are never issued.
    public func group(_ body: () throws -> Void) throws {
        try ncclCheck("ncclGroupStart", ncclGroupStart())
        do { try body() } catch {
            _ = ncclGroupEnd()
            throw error
        }
        try ncclCheck("ncclGroupEnd", ncclGroupEnd())
    }

    /// A fresh 128-byte ncclUniqueId (for communicators across processes; rank 0 creates it and shares it).
    public func uniqueID() throws -> [UInt8] {
        var id = [UInt8](repeating: 0, count: 128)
        try id.withUnsafeMutableBytes { try ncclCheck("ncclGetUniqueId", ncclGetUniqueId($0.baseAddress)) }
        return id
    }
}

private func dlErrorText() -> String { dlerror().map { String(cString: $0) } ?? "unknown dlopen error" }

private func globPaths(_ pattern: String) -> [String] {
    var g = glob_t()
    defer { globfree(&g) }
    guard Glibc.glob(pattern, 0, nil, &g) == 0 else { return [] }
    return (0..<Int(g.gl_pathc)).compactMap { g.gl_pathv[$0].map { String(cString: $0) } }
}
