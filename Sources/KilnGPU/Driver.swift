import Foundation
import KilnCore
#if canImport(Glibc)
import Glibc
#endif

// The CUDA driver API, loaded with dlopen at run time so that nothing links CUDA at build time:
// the package builds and its CPU tests run on machines with no GPU. Function-pointer types are
// declared here with @convention(c) instead of a C shim target; handles are opaque pointers and
// device addresses are UInt64 (CUdeviceptr). Versioned `_v2` entry points are used where cuda.h
// maps the plain name to one, because the unversioned symbols keep their old (32-bit) ABI.

public typealias CUresult = Int32
public typealias CUdevice = Int32
public typealias CUdeviceptr = UInt64
public typealias CUhandle = OpaquePointer

/// Turns a failed driver call into a KilnError that names the call and the CUDA error.
/// Every driver call in Kiln goes through here; on success it neither allocates nor formats.
@inline(__always)
public func cuCheck(_ call: StaticString, _ result: CUresult) throws {
    if result != 0 { throw CUDADriver.error(call, result) }
}

/// The driver's entry points. `CUDADriver.shared` loads `libcuda.so.1` once and calls `cuInit`.
public final class CUDADriver: @unchecked Sendable {
    typealias FnInt = @convention(c) (UInt32) -> CUresult
    typealias FnIntPtr = @convention(c) (UnsafeMutablePointer<Int32>?) -> CUresult
    typealias FnErrStr = @convention(c) (CUresult, UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> CUresult
    typealias FnDeviceGet = @convention(c) (UnsafeMutablePointer<CUdevice>?, Int32) -> CUresult
    typealias FnDeviceName = @convention(c) (UnsafeMutablePointer<CChar>?, Int32, CUdevice) -> CUresult
    typealias FnDeviceAttr = @convention(c) (UnsafeMutablePointer<Int32>?, Int32, CUdevice) -> CUresult
    typealias FnDeviceTotalMem = @convention(c) (UnsafeMutablePointer<Int>?, CUdevice) -> CUresult
    typealias FnPrimaryRetain = @convention(c) (UnsafeMutablePointer<CUhandle?>?, CUdevice) -> CUresult
    typealias FnDeviceOnly = @convention(c) (CUdevice) -> CUresult
    typealias FnHandle = @convention(c) (CUhandle?) -> CUresult
    typealias FnVoid = @convention(c) () -> CUresult
    typealias FnMemGetInfo = @convention(c) (UnsafeMutablePointer<Int>?, UnsafeMutablePointer<Int>?) -> CUresult
    typealias FnMemAlloc = @convention(c) (UnsafeMutablePointer<CUdeviceptr>?, Int) -> CUresult
    typealias FnMemFree = @convention(c) (CUdeviceptr) -> CUresult
    typealias FnHostAlloc = @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>?, Int, UInt32) -> CUresult
    typealias FnHostFree = @convention(c) (UnsafeMutableRawPointer?) -> CUresult
    typealias FnHtoD = @convention(c) (CUdeviceptr, UnsafeRawPointer?, Int) -> CUresult
    typealias FnDtoH = @convention(c) (UnsafeMutableRawPointer?, CUdeviceptr, Int) -> CUresult
    typealias FnHtoDAsync = @convention(c) (CUdeviceptr, UnsafeRawPointer?, Int, CUhandle?) -> CUresult
    typealias FnDtoHAsync = @convention(c) (UnsafeMutableRawPointer?, CUdeviceptr, Int, CUhandle?) -> CUresult
    typealias FnDtoDAsync = @convention(c) (CUdeviceptr, CUdeviceptr, Int, CUhandle?) -> CUresult
    typealias FnMemcpy2DAsync = @convention(c) (UnsafeRawPointer?, CUhandle?) -> CUresult
    typealias FnMemsetAsync = @convention(c) (CUdeviceptr, UInt8, Int, CUhandle?) -> CUresult
    typealias FnCreateFlags = @convention(c) (UnsafeMutablePointer<CUhandle?>?, UInt32) -> CUresult
    typealias FnEventRecord = @convention(c) (CUhandle?, CUhandle?) -> CUresult
    typealias FnElapsed = @convention(c) (UnsafeMutablePointer<Float>?, CUhandle?, CUhandle?) -> CUresult
    typealias FnModuleLoadData = @convention(c) (UnsafeMutablePointer<CUhandle?>?, UnsafeRawPointer?) -> CUresult
    typealias FnModuleGetFunction = @convention(c) (UnsafeMutablePointer<CUhandle?>?, CUhandle?, UnsafePointer<CChar>?) -> CUresult
    typealias FnFuncGetAttr = @convention(c) (UnsafeMutablePointer<Int32>?, Int32, CUhandle?) -> CUresult
    typealias FnFuncSetAttr = @convention(c) (CUhandle?, Int32, Int32) -> CUresult
    typealias FnLaunch = @convention(c) (CUhandle?, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, CUhandle?,
                                         UnsafeMutablePointer<UnsafeMutableRawPointer?>?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> CUresult
    typealias FnBeginCapture = @convention(c) (CUhandle?, Int32) -> CUresult
    typealias FnEndCapture = @convention(c) (CUhandle?, UnsafeMutablePointer<CUhandle?>?) -> CUresult
    typealias FnLaunchEx = @convention(c) (UnsafeRawPointer?, CUhandle?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                           UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> CUresult
    typealias FnInstantiate = @convention(c) (UnsafeMutablePointer<CUhandle?>?, CUhandle?, UInt64) -> CUresult
    typealias FnMaxActiveBlocks = @convention(c) (UnsafeMutablePointer<Int32>?, CUhandle?, Int32, Int) -> CUresult
    typealias FnMaxActiveClusters = @convention(c) (UnsafeMutablePointer<Int32>?, CUhandle?, UnsafeRawPointer?) -> CUresult
    typealias FnGraphLaunch = @convention(c) (CUhandle?, CUhandle?) -> CUresult
    typealias FnGraphExecUpdate = @convention(c) (CUhandle?, CUhandle?, UnsafeMutableRawPointer?) -> CUresult
    typealias FnTensorMapEncodeTiled = @convention(c) (UnsafeMutableRawPointer?, Int32, UInt32, UInt64, UnsafePointer<UInt64>?,
                                                       UnsafePointer<UInt64>?, UnsafePointer<UInt32>?, UnsafePointer<UInt32>?,
                                                       Int32, Int32, Int32, Int32) -> CUresult

    let cuInit: FnInt
    let cuDriverGetVersion: FnIntPtr
    let cuGetErrorName: FnErrStr
    let cuGetErrorString: FnErrStr
    let cuDeviceGetCount: FnIntPtr
    let cuDeviceGet: FnDeviceGet
    let cuDeviceGetName: FnDeviceName
    let cuDeviceGetAttribute: FnDeviceAttr
    let cuDeviceTotalMem: FnDeviceTotalMem
    let cuDevicePrimaryCtxRetain: FnPrimaryRetain
    let cuDevicePrimaryCtxRelease: FnDeviceOnly
    let cuCtxSetCurrent: FnHandle
    let cuCtxSynchronize: FnVoid
    let cuMemGetInfo: FnMemGetInfo
    let cuMemAlloc: FnMemAlloc
    let cuMemFree: FnMemFree
    let cuMemHostAlloc: FnHostAlloc
    let cuMemFreeHost: FnHostFree
    let cuMemcpyHtoD: FnHtoD
    let cuMemcpyDtoH: FnDtoH
    let cuMemcpyHtoDAsync: FnHtoDAsync
    let cuMemcpyDtoHAsync: FnDtoHAsync
    let cuMemcpyDtoDAsync: FnDtoDAsync
    let cuMemcpy2DAsync: FnMemcpy2DAsync
    let cuMemsetD8Async: FnMemsetAsync
    let cuStreamCreate: FnCreateFlags
    let cuStreamDestroy: FnHandle
    let cuStreamSynchronize: FnHandle
    let cuEventCreate: FnCreateFlags
    let cuEventDestroy: FnHandle
    let cuEventRecord: FnEventRecord
    let cuEventSynchronize: FnHandle
    let cuEventElapsedTime: FnElapsed
    let cuModuleLoadData: FnModuleLoadData
    let cuModuleUnload: FnHandle
    let cuModuleGetFunction: FnModuleGetFunction
    let cuFuncGetAttribute: FnFuncGetAttr
    let cuFuncSetAttribute: FnFuncSetAttr
    let cuLaunchKernel: FnLaunch
    /// cuLaunchKernelEx (CUDA 12+), for launches with attributes (programmatic dependent launch); nil on older drivers.
    let cuLaunchKernelEx: FnLaunchEx?
    let cuOccupancyMaxActiveBlocksPerMultiprocessor: FnMaxActiveBlocks
    /// cuOccupancyMaxActiveClusters (CUDA 12+): how many thread-block clusters of a kernel fit on the GPU at once; nil on older drivers.
    let cuOccupancyMaxActiveClusters: FnMaxActiveClusters?
    let cuStreamBeginCapture: FnBeginCapture
    let cuStreamEndCapture: FnEndCapture
    let cuGraphInstantiate: FnInstantiate
    let cuGraphLaunch: FnGraphLaunch
    let cuGraphExecUpdate: FnGraphExecUpdate
    let cuGraphDestroy: FnHandle
    let cuGraphExecDestroy: FnHandle
    /// Hopper TMA descriptors (CUDA 12+); nil on drivers without it, so older GPUs still load the driver.
    let cuTensorMapEncodeTiled: FnTensorMapEncodeTiled?

    /// The loaded driver, or the one-line reason it could not be loaded.
    public static let loaded: Result<CUDADriver, KilnError> = {
        do { return .success(try CUDADriver()) } catch let e as KilnError { return .failure(e) } catch {
            return .failure(KilnError("\(error)"))
        }
    }()

    /// The driver, initialised; throws "no NVIDIA driver found …" on a machine without one.
    public static var shared: CUDADriver { get throws { try loaded.get() } }

    private init() throws {
        guard let lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL) else {
            throw KilnError("no NVIDIA driver found (dlopen libcuda.so.1 failed)")
        }
        func sym<T>(_ name: String, _: T.Type = T.self) throws -> T {
            guard let p = dlsym(lib, name) else { throw KilnError("libcuda.so.1 has no symbol \(name) (driver too old?)") }
            return unsafeBitCast(p, to: T.self)
        }
        cuInit = try sym("cuInit")
        cuDriverGetVersion = try sym("cuDriverGetVersion")
        cuGetErrorName = try sym("cuGetErrorName")
        cuGetErrorString = try sym("cuGetErrorString")
        cuDeviceGetCount = try sym("cuDeviceGetCount")
        cuDeviceGet = try sym("cuDeviceGet")
        cuDeviceGetName = try sym("cuDeviceGetName")
        cuDeviceGetAttribute = try sym("cuDeviceGetAttribute")
        cuDeviceTotalMem = try sym("cuDeviceTotalMem_v2")
        cuDevicePrimaryCtxRetain = try sym("cuDevicePrimaryCtxRetain")
        cuDevicePrimaryCtxRelease = try sym("cuDevicePrimaryCtxRelease_v2")
        cuCtxSetCurrent = try sym("cuCtxSetCurrent")
        cuCtxSynchronize = try sym("cuCtxSynchronize")
        cuMemGetInfo = try sym("cuMemGetInfo_v2")
        cuMemAlloc = try sym("cuMemAlloc_v2")
        cuMemFree = try sym("cuMemFree_v2")
        cuMemHostAlloc = try sym("cuMemHostAlloc")
        cuMemFreeHost = try sym("cuMemFreeHost")
        cuMemcpyHtoD = try sym("cuMemcpyHtoD_v2")
        cuMemcpyDtoH = try sym("cuMemcpyDtoH_v2")
        cuMemcpyHtoDAsync = try sym("cuMemcpyHtoDAsync_v2")
        cuMemcpyDtoHAsync = try sym("cuMemcpyDtoHAsync_v2")
        cuMemcpyDtoDAsync = try sym("cuMemcpyDtoDAsync_v2")
        cuMemcpy2DAsync = try sym("cuMemcpy2DAsync_v2")
        cuMemsetD8Async = try sym("cuMemsetD8Async")
        cuStreamCreate = try sym("cuStreamCreate")
        cuStreamDestroy = try sym("cuStreamDestroy_v2")
        cuStreamSynchronize = try sym("cuStreamSynchronize")
        cuEventCreate = try sym("cuEventCreate")
        cuEventDestroy = try sym("cuEventDestroy_v2")
        cuEventRecord = try sym("cuEventRecord")
        cuEventSynchronize = try sym("cuEventSynchronize")
        // CUDA 13 maps cuEventElapsedTime to _v2; older drivers only have the plain symbol (same ABI).
        if let p = dlsym(lib, "cuEventElapsedTime_v2") { cuEventElapsedTime = unsafeBitCast(p, to: FnElapsed.self) } else { cuEventElapsedTime = try sym("cuEventElapsedTime") }
        cuModuleLoadData = try sym("cuModuleLoadData")
        cuModuleUnload = try sym("cuModuleUnload")
        cuModuleGetFunction = try sym("cuModuleGetFunction")
        cuFuncGetAttribute = try sym("cuFuncGetAttribute")
        cuFuncSetAttribute = try sym("cuFuncSetAttribute")
        cuLaunchKernel = try sym("cuLaunchKernel")
        cuLaunchKernelEx = dlsym(lib, "cuLaunchKernelEx").map { unsafeBitCast($0, to: FnLaunchEx.self) }
        cuOccupancyMaxActiveBlocksPerMultiprocessor = try sym("cuOccupancyMaxActiveBlocksPerMultiprocessor")
        cuOccupancyMaxActiveClusters = dlsym(lib, "cuOccupancyMaxActiveClusters").map { unsafeBitCast($0, to: FnMaxActiveClusters.self) }
        cuStreamBeginCapture = try sym("cuStreamBeginCapture_v2")
        cuStreamEndCapture = try sym("cuStreamEndCapture")
        cuGraphInstantiate = try sym("cuGraphInstantiateWithFlags")
        cuGraphLaunch = try sym("cuGraphLaunch")
        cuGraphExecUpdate = try sym("cuGraphExecUpdate_v2")
        cuGraphDestroy = try sym("cuGraphDestroy")
        cuGraphExecDestroy = try sym("cuGraphExecDestroy")
        cuTensorMapEncodeTiled = dlsym(lib, "cuTensorMapEncodeTiled").map { unsafeBitCast($0, to: FnTensorMapEncodeTiled.self) }
        let r = cuInit(0)
        if r != 0 { throw CUDADriver.error("cuInit", r, names: (cuGetErrorName, cuGetErrorString)) }
    }

    /// "cuMemAlloc_v2 failed: CUDA_ERROR_OUT_OF_MEMORY (out of memory)".
    static func error(_ call: StaticString, _ r: CUresult) -> KilnError {
        switch loaded {
        case .success(let d): return error(call, r, names: (d.cuGetErrorName, d.cuGetErrorString))
        case .failure: return KilnError("\(call) failed: CUDA error \(r)")
        }
    }

    private static func error(_ call: StaticString, _ r: CUresult, names: (FnErrStr, FnErrStr)) -> KilnError {
        var n: UnsafePointer<CChar>? = nil, s: UnsafePointer<CChar>? = nil
        _ = names.0(r, &n); _ = names.1(r, &s)
        let name = n.map { String(cString: $0) } ?? "CUDA error \(r)"
        let text = s.map { " (\(String(cString: $0)))" } ?? ""
        return KilnError("\(call) failed: \(name)\(text)")
    }

    /// Driver API version as "13.0".
    public func version() throws -> String {
        var v: Int32 = 0
        try cuCheck("cuDriverGetVersion", cuDriverGetVersion(&v))
        return "\(v / 1000).\((v % 1000) / 10)"
    }
}
