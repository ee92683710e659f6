import KilnCore

// The release build is -Ounchecked, which compiles `precondition` out: a size check that guards memory the driver
// writes is therefore a thrown error (or a fatalError) here, never a precondition.

/// Typed device memory that frees itself. `T` is the host-side element type (Float, UInt16 for
/// bf16/f16 bits, Int32, ...); the buffer itself is untyped on the device.
public final class DeviceBuffer<T>: @unchecked Sendable {
    public let context: Context
    /// Device address (CUdeviceptr); cuMemAlloc returns 256-byte aligned memory, so 16-byte vector access is safe at offset 0.
    public let address: CUdeviceptr
    public let count: Int
    public var byteCount: Int { count * MemoryLayout<T>.stride }

    public init(_ context: Context, count: Int) throws {
        guard count >= 0 else { throw KilnError("device buffer of \(count) elements") }
        self.context = context
        self.count = count
        var p: CUdeviceptr = 0
        try cuCheck("cuMemAlloc_v2", context.driver.cuMemAlloc(&p, max(1, count * MemoryLayout<T>.stride)))
        address = p
    }

    /// Allocates and uploads `values` (synchronous; for set-up, not the hot path).
    public convenience init(_ context: Context, _ values: [T]) throws {
        try self.init(context, count: values.count)
        try upload(values)
    }

    deinit { _ = context.driver.cuMemFree(address) }

    /// Address of element `index` (for views into a larger buffer).
    public func address(at index: Int) -> CUdeviceptr { address + UInt64(index * MemoryLayout<T>.stride) }

    /// Synchronous upload (set-up and tests; the hot path uses the async copies below).
    ///
    /// A copy from pageable memory may return before its DMA reaches the GPU, and Kiln's streams are
    /// non-blocking, so they do not wait for the legacy default stream: without the context synchronisation,
    /// a kernel launched next on a `GPUStream` could read the buffer's previous contents.
    public func upload(_ values: [T]) throws {
        guard values.count <= count else { throw KilnError("upload of \(values.count) elements into a device buffer of \(count)") }
        try values.withUnsafeBytes { try cuCheck("cuMemcpyHtoD_v2", context.driver.cuMemcpyHtoD(address, $0.baseAddress, $0.count)) }
        try context.synchronize()
    }

    /// Synchronous download; waits for all work of the context first, since the copy on the default stream
    /// would not wait for kernels still running on a non-blocking `GPUStream`.
    public func download() throws -> [T] {
        try context.synchronize()
        return try [T](unsafeUninitializedCapacity: count) { buf, n in
            try cuCheck("cuMemcpyDtoH_v2", context.driver.cuMemcpyDtoH(UnsafeMutableRawPointer(buf.baseAddress), address, byteCount))
            n = count
        }
    }

    /// Async copies with a pinned host buffer (pageable memory would make them synchronous).
    public func upload(from host: PinnedBuffer<T>, count n: Int? = nil, stream: GPUStream) throws {
        let bytes = try DeviceBuffer.copyBytes(n, device: count, host: host.count)
        try cuCheck("cuMemcpyHtoDAsync_v2", context.driver.cuMemcpyHtoDAsync(address, host.pointer, bytes, stream.handle))
    }
    public func download(into host: PinnedBuffer<T>, count n: Int? = nil, stream: GPUStream) throws {
        let bytes = try DeviceBuffer.copyBytes(n, device: count, host: host.count)
        try cuCheck("cuMemcpyDtoHAsync_v2", context.driver.cuMemcpyDtoHAsync(host.pointer, address, bytes, stream.handle))
    }
    /// Bytes of an async copy of `n` elements (default: as many as both sides hold); more than either side holds
    /// would make the DMA read or write past the end of a buffer.
    static func copyBytes(_ n: Int?, device: Int, host: Int) throws -> Int {
        let elements = n ?? min(device, host)
        guard elements >= 0, elements <= device, elements <= host else {
            throw KilnError("async copy of \(elements) elements between a device buffer of \(device) and a pinned buffer of \(host)")
        }
        return elements * MemoryLayout<T>.stride
    }

    public func copy(from other: DeviceBuffer<T>, stream: GPUStream) throws {
        let bytes = min(byteCount, other.byteCount)
        try cuCheck("cuMemcpyDtoDAsync_v2", context.driver.cuMemcpyDtoDAsync(address, other.address, bytes, stream.handle))
    }
    public func fill(byte: UInt8, stream: GPUStream) throws {
        try cuCheck("cuMemsetD8Async", context.driver.cuMemsetD8Async(address, byte, byteCount, stream.handle))
    }
}

/// Page-locked host memory (cuMemHostAlloc), so async copies really overlap; freed on deinit.
public final class PinnedBuffer<T>: @unchecked Sendable {
    public let context: Context
    public let pointer: UnsafeMutablePointer<T>
    public let count: Int

    public init(_ context: Context, count: Int) throws {
        self.context = context
        self.count = count
        var p: UnsafeMutableRawPointer? = nil
        try cuCheck("cuMemHostAlloc", context.driver.cuMemHostAlloc(&p, max(1, count * MemoryLayout<T>.stride), 0))
        pointer = p!.bindMemory(to: T.self, capacity: max(1, count))
    }
    deinit { _ = context.driver.cuMemFreeHost(pointer) }

    public var buffer: UnsafeMutableBufferPointer<T> { UnsafeMutableBufferPointer(start: pointer, count: count) }
    /// Bounds-checked even in the -Ounchecked release build: the memory past the end belongs to the driver.
    public subscript(i: Int) -> T {
        get { pointer[PinnedBuffer.checked(i, count)] }
        set { pointer[PinnedBuffer.checked(i, count)] = newValue }
    }

    @inline(__always)
    static func checked(_ i: Int, _ count: Int) -> Int {
        if i < 0 || i >= count { fatalError("pinned buffer index \(i) outside 0..<\(count)") }
        return i
    }
}
