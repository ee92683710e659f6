import Foundation
import KilnCore
#if canImport(Glibc)
import Glibc
#endif

/// Turns a failed NVRTC call into a KilnError naming the call and NVRTC's error name.
/// Every NVRTC call goes through here (compile errors add the log on top, in KernelCompiler).
@inline(__always)
public func nvrtcCheck(_ call: StaticString, _ result: Int32) throws {
    if result != 0 {
        let name = (try? NVRTC.shared).map { String(cString: $0.nvrtcGetErrorString(result)) } ?? "NVRTC error \(result)"
        throw KilnError("\(call) failed: \(name)")
    }
}

/// NVRTC (the runtime CUDA C++ compiler), loaded with dlopen. It is searched for in the CUDA
/// toolkit's usual places, the loader path, pip's `nvidia/cu13/lib` in Python site-packages, and
/// `$KILN_HOME/nvrtc/nvidia/cu13/lib` (where scripts/fetch-test-data.sh installs NVRTC 13.0.88),
/// so `kiln check --compile-only` works on a machine with no GPU.
public final class NVRTC: @unchecked Sendable {
    typealias FnVersion = @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<Int32>?) -> Int32
    typealias FnCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>?, UnsafePointer<CChar>?, UnsafePointer<CChar>?, Int32,
                                         UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    typealias FnCompile = @convention(c) (OpaquePointer?, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    typealias FnSize = @convention(c) (OpaquePointer?, UnsafeMutablePointer<Int>?) -> Int32
    typealias FnGet = @convention(c) (OpaquePointer?, UnsafeMutablePointer<CChar>?) -> Int32
    typealias FnAddName = @convention(c) (OpaquePointer?, UnsafePointer<CChar>?) -> Int32
    typealias FnLowered = @convention(c) (OpaquePointer?, UnsafePointer<CChar>?, UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> Int32
    typealias FnDestroy = @convention(c) (UnsafeMutablePointer<OpaquePointer?>?) -> Int32
    typealias FnErrorString = @convention(c) (Int32) -> UnsafePointer<CChar>

    let nvrtcVersion: FnVersion
    let nvrtcCreateProgram: FnCreate
    let nvrtcCompileProgram: FnCompile
    let nvrtcGetProgramLogSize: FnSize
    let nvrtcGetProgramLog: FnGet
    let nvrtcGetCUBINSize: FnSize
    let nvrtcGetCUBIN: FnGet
    let nvrtcAddNameExpression: FnAddName
    let nvrtcGetLoweredName: FnLowered
    let nvrtcDestroyProgram: FnDestroy
    let nvrtcGetErrorString: FnErrorString

    /// Where the library was found ("loader path" when dlopen found it by name).
    public let location: String

    public static let loaded: Result<NVRTC, KilnError> = {
        do { return .success(try NVRTC()) } catch let e as KilnError { return .failure(e) } catch { return .failure(KilnError("\(error)")) }
    }()
    public static var shared: NVRTC { get throws { try loaded.get() } }

    /// Directories searched, in order (nil = the dynamic loader's own search).
    public static func searchDirectories() -> [String?] {
        let env = ProcessInfo.processInfo.environment
        var dirs: [String?] = []
        if let c = env["CUDA_HOME"] { dirs.append(c + "/lib64") }
        dirs += ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", nil]
        var sitePatterns = ["/usr/lib/python3*/site-packages", "/usr/lib/python3/dist-packages", "/usr/local/lib/python3*/dist-packages",
                            "/usr/local/lib/python3*/site-packages", NSHomeDirectory() + "/.local/lib/python3*/site-packages"]
        if let v = env["VIRTUAL_ENV"] { sitePatterns.insert(v + "/lib/python3*/site-packages", at: 0) }
        for p in sitePatterns { dirs += glob(p).map { $0 + "/nvidia/cu13/lib" } }
        dirs.append(kilnHome() + "/nvrtc/nvidia/cu13/lib")
        return dirs
    }

    private init() throws {
        var handle: UnsafeMutableRawPointer? = nil
        var found = ""
        let fm = FileManager.default
        for dir in NVRTC.searchDirectories() {
            if let dir {
                guard fm.fileExists(atPath: dir + "/libnvrtc.so.13") else { continue }
                // NVRTC dlopens libnvrtc-builtins.so.13.0 by name at compile time; loading it first by full
                // path makes that lookup succeed without LD_LIBRARY_PATH (glibc matches loaded sonames).
                let builtins = dir + "/libnvrtc-builtins.so.13.0"
                if fm.fileExists(atPath: builtins) { _ = dlopen(builtins, RTLD_NOW | RTLD_GLOBAL) }
                handle = dlopen(dir + "/libnvrtc.so.13", RTLD_NOW | RTLD_GLOBAL)
                found = dir
            } else {
                handle = dlopen("libnvrtc.so.13", RTLD_NOW | RTLD_GLOBAL)
                found = "loader path"
            }
            if handle != nil { break }
        }
        guard let lib = handle else {
            let list = NVRTC.searchDirectories().map { $0 ?? "loader path" }.joined(separator: ", ")
            throw KilnError("libnvrtc not found; searched: \(list) (scripts/fetch-test-data.sh installs it under $KILN_HOME/nvrtc)")
        }
        location = found
        func sym<T>(_ name: String) throws -> T {
            guard let p = dlsym(lib, name) else { throw KilnError("libnvrtc has no symbol \(name)") }
            return unsafeBitCast(p, to: T.self)
        }
        nvrtcVersion = try sym("nvrtcVersion")
        nvrtcCreateProgram = try sym("nvrtcCreateProgram")
        nvrtcCompileProgram = try sym("nvrtcCompileProgram")
        nvrtcGetProgramLogSize = try sym("nvrtcGetProgramLogSize")
        nvrtcGetProgramLog = try sym("nvrtcGetProgramLog")
        nvrtcGetCUBINSize = try sym("nvrtcGetCUBINSize")
        nvrtcGetCUBIN = try sym("nvrtcGetCUBIN")
        nvrtcAddNameExpression = try sym("nvrtcAddNameExpression")
        nvrtcGetLoweredName = try sym("nvrtcGetLoweredName")
        nvrtcDestroyProgram = try sym("nvrtcDestroyProgram")
        nvrtcGetErrorString = try sym("nvrtcGetErrorString")
    }

    /// "13.0".
    public func version() throws -> String {
        var major: Int32 = 0, minor: Int32 = 0
        try nvrtcCheck("nvrtcVersion", nvrtcVersion(&major, &minor))
        return "\(major).\(minor)"
    }
}

/// `$KILN_HOME`, default `~/.cache/kiln`.
public func kilnHome() -> String {
    ProcessInfo.processInfo.environment["KILN_HOME"] ?? (NSHomeDirectory() + "/.cache/kiln")
}

private func glob(_ pattern: String) -> [String] {
    var g = glob_t()
    defer { globfree(&g) }
    guard Glibc.glob(pattern, 0, nil, &g) == 0 else { return [] }
    return (0..<Int(g.gl_pathc)).compactMap { g.gl_pathv[$0].map { String(cString: $0) } }
}
