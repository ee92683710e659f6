import KilnCore

/// What Kiln needs to know about a GPU to pick kernels and launch shapes.
public struct DeviceInfo: Sendable, CustomStringConvertible {
    public var ordinal: Int32
    public var name: String
    public var computeCapability: (major: Int, minor: Int)
    public var multiprocessors: Int
    public var totalMemory: Int
    public var l2Bytes: Int
    public var sharedMemoryPerBlock: Int
    /// Dynamic shared memory a block may use after cuFuncSetAttribute raises its limit.
    public var sharedMemoryPerBlockOptIn: Int
    /// Shared memory of one SM, shared by its resident blocks (each also reserves 1 KiB).
    public var sharedMemoryPerMultiprocessor: Int
    public var maxThreadsPerBlock: Int

    /// Whether the tensor cores multiply e4m3 (mma …e4m3: compute capability 8.9, Ada, and newer).
    public var hasE4M3TensorCores: Bool { computeCapability.major * 10 + computeCapability.minor >= 89 }

    /// NVRTC architecture: the arch-specific `sm_90a` on Hopper so wgmma/TMA kernels can be built later.
    public var arch: String {
        let base = "sm_\(computeCapability.major)\(computeCapability.minor)"
        return computeCapability.major == 9 && computeCapability.minor == 0 ? base + "a" : base
    }

    public var description: String {
        let gib = Double(totalMemory) / Double(1 << 30)
        return "\(name), compute capability \(computeCapability.major).\(computeCapability.minor) (\(arch)), \(multiprocessors) SMs, "
            + String(format: "%.1f GiB", gib) + ", L2 \(l2Bytes / 1024 / 1024) MiB, shared memory per block \(sharedMemoryPerBlockOptIn / 1024) KiB (opt-in)"
    }
}

/// A device with its primary context made current on the calling thread. Everything that
/// allocates or launches takes a Context, so work cannot silently land on another device.
public final class Context: @unchecked Sendable {
    public let driver: CUDADriver
    public let device: CUdevice
    public let info: DeviceInfo
    let handle: CUhandle?

    /// Number of CUDA devices (throws "no NVIDIA driver found …" without a driver).
    public static func deviceCount() throws -> Int {
        let d = try CUDADriver.shared
        var n: Int32 = 0
        try cuCheck("cuDeviceGetCount", d.cuDeviceGetCount(&n))
        return Int(n)
    }

    /// Retains device `ordinal`'s primary context (the one the runtime API shares) and makes it current.
    public init(ordinal: Int32 = 0) throws {
        let d = try CUDADriver.shared
        driver = d
        guard try Context.deviceCount() > ordinal else { throw KilnError("no CUDA device \(ordinal) (driver reports \(try Context.deviceCount()))") }
        var dev: CUdevice = 0
        try cuCheck("cuDeviceGet", d.cuDeviceGet(&dev, ordinal))
        device = dev
        var ctx: CUhandle? = nil
        try cuCheck("cuDevicePrimaryCtxRetain", d.cuDevicePrimaryCtxRetain(&ctx, dev))
        handle = ctx
        try cuCheck("cuCtxSetCurrent", d.cuCtxSetCurrent(ctx))

        func attr(_ a: Int32) throws -> Int {
            var v: Int32 = 0
            try cuCheck("cuDeviceGetAttribute", d.cuDeviceGetAttribute(&v, a, dev))
            return Int(v)
        }
        var nameBuf = [CChar](repeating: 0, count: 256)
        try cuCheck("cuDeviceGetName", d.cuDeviceGetName(&nameBuf, 255, dev))
        var mem = 0
        try cuCheck("cuDeviceTotalMem_v2", d.cuDeviceTotalMem(&mem, dev))
        // Attribute numbers from cuda.h's CUdevice_attribute.
        info = DeviceInfo(ordinal: ordinal, name: String(cString: nameBuf),
                          computeCapability: (try attr(75), try attr(76)), multiprocessors: try attr(16), totalMemory: mem,
                          l2Bytes: try attr(38), sharedMemoryPerBlock: try attr(8), sharedMemoryPerBlockOptIn: try attr(97),
                          sharedMemoryPerMultiprocessor: try attr(81), maxThreadsPerBlock: try attr(1))
    }

    deinit { _ = driver.cuDevicePrimaryCtxRelease(device) }

    /// Makes this context current on the calling thread (needed once per thread that uses it).
    public func makeCurrent() throws { try cuCheck("cuCtxSetCurrent", driver.cuCtxSetCurrent(handle)) }

    public func synchronize() throws { try cuCheck("cuCtxSynchronize", driver.cuCtxSynchronize()) }

    /// (free, total) device memory in bytes.
    public func memoryInfo() throws -> (free: Int, total: Int) {
        var f = 0, t = 0
        try cuCheck("cuMemGetInfo_v2", driver.cuMemGetInfo(&f, &t))
        return (f, t)
    }
}

/// A non-blocking stream (it does not serialise with the legacy default stream), destroyed on deinit.
public final class GPUStream: @unchecked Sendable {
    public let context: Context
    public let handle: CUhandle?
    /// Programmatic dependent launch for the kernels on this stream whose launchers opt in (they pass
    /// `pdl: stream.pdl`; each such kernel runs `griddepcontrol.wait` before touching data the previous
    /// kernel may write). Off by default; the engine, tuner and `bench kernels` turn it on (--no-pdl: off). Ignored (plain
    /// launches) on drivers without cuLaunchKernelEx.
    public var pdl = false

    public init(_ context: Context) throws {
        self.context = context
        var s: CUhandle? = nil
        try cuCheck("cuStreamCreate", context.driver.cuStreamCreate(&s, 1 /* CU_STREAM_NON_BLOCKING */))
        handle = s
    }
    deinit { _ = context.driver.cuStreamDestroy(handle) }

    public func synchronize() throws { try cuCheck("cuStreamSynchronize", context.driver.cuStreamSynchronize(handle)) }
}

/// A CUDA event for ordering and timing.
public final class Event: @unchecked Sendable {
    public let context: Context
    public let handle: CUhandle?

    /// `timing: false` makes a lighter event for pure ordering.
    public init(_ context: Context, timing: Bool = true) throws {
        self.context = context
        var e: CUhandle? = nil
        try cuCheck("cuEventCreate", context.driver.cuEventCreate(&e, timing ? 0 : 2 /* CU_EVENT_DISABLE_TIMING */))
        handle = e
    }
    deinit { _ = context.driver.cuEventDestroy(handle) }

    public func record(_ stream: GPUStream) throws { try cuCheck("cuEventRecord", context.driver.cuEventRecord(handle, stream.handle)) }
    public func synchronize() throws { try cuCheck("cuEventSynchronize", context.driver.cuEventSynchronize(handle)) }

    /// Milliseconds from `start` to this event (both recorded; waits for this one).
    public func milliseconds(since start: Event) throws -> Float {
        try synchronize()
        var ms: Float = 0
        try cuCheck("cuEventElapsedTime_v2", context.driver.cuEventElapsedTime(&ms, start.handle, handle))
        return ms
    }
}
