import KilnCore

/// Byte-level copies into views of a buffer (fused weight matrices are filled tensor by tensor, and
/// the engine gathers rows of its activations), with the same checked driver calls as Buffer.swift.
extension DeviceBuffer {
    /// Synchronous upload of `bytes` to byte offset `offset` (set-up only).
    public func upload(bytes: UnsafeRawBufferPointer, atByte offset: Int) throws {
        guard offset >= 0, offset + bytes.count <= byteCount else {
            throw KilnError("upload of \(bytes.count) bytes at byte \(offset) past the end of a \(byteCount)-byte device buffer")
        }
        try cuCheck("cuMemcpyHtoD_v2", context.driver.cuMemcpyHtoD(address + UInt64(offset), bytes.baseAddress, bytes.count))
        try context.synchronize()   // see DeviceBuffer.upload: the DMA may still be in flight otherwise
    }
}

extension GPUStream {
    /// Device-to-device copy of `bytes` on this stream (captured into graphs like a kernel).
    public func copy(from src: CUdeviceptr, to dst: CUdeviceptr, bytes: Int) throws {
        try cuCheck("cuMemcpyDtoDAsync_v2", context.driver.cuMemcpyDtoDAsync(dst, src, bytes, handle))
    }
    /// Device-to-host copy into page-locked memory on this stream.
    public func copy(from src: CUdeviceptr, to host: UnsafeMutableRawPointer, bytes: Int) throws {
        try cuCheck("cuMemcpyDtoHAsync_v2", context.driver.cuMemcpyDtoHAsync(host, src, bytes, handle))
    }
    public func copy(from host: UnsafeRawPointer, to dst: CUdeviceptr, bytes: Int) throws {
        try cuCheck("cuMemcpyHtoDAsync_v2", context.driver.cuMemcpyHtoDAsync(dst, host, bytes, handle))
    }

    /// Device-to-device copy of `rows` rows of `widthBytes` each, from rows `srcPitch` bytes apart to rows `dstPitch`
    /// bytes apart (cuMemcpy2DAsync; one graph node however many rows): the tensor-parallel gather of vocabulary slices.
    public func copy2D(from src: CUdeviceptr, srcPitch: Int, to dst: CUdeviceptr, dstPitch: Int, widthBytes: Int, rows: Int) throws {
        guard rows > 0, widthBytes > 0 else { return }
        var m = Memcpy2D(srcDevice: src, srcPitch: UInt64(srcPitch), dstDevice: dst, dstPitch: UInt64(dstPitch),
                         widthInBytes: UInt64(widthBytes), height: UInt64(rows))
        try withUnsafePointer(to: &m) { try cuCheck("cuMemcpy2DAsync_v2", context.driver.cuMemcpy2DAsync(UnsafeRawPointer($0), handle)) }
    }
}

/// cuda.h's CUDA_MEMCPY2D (128 bytes), for device-to-device copies only.
struct Memcpy2D {
    var srcXInBytes: UInt64 = 0, srcY: UInt64 = 0
    var srcMemoryType: UInt32 = 2 /* CU_MEMORYTYPE_DEVICE */, srcPad: UInt32 = 0
    var srcHost: UInt64 = 0
    var srcDevice: CUdeviceptr
    var srcArray: UInt64 = 0
    var srcPitch: UInt64
    var dstXInBytes: UInt64 = 0, dstY: UInt64 = 0
    var dstMemoryType: UInt32 = 2 /* CU_MEMORYTYPE_DEVICE */, dstPad: UInt32 = 0
    var dstHost: UInt64 = 0
    var dstDevice: CUdeviceptr
    var dstArray: UInt64 = 0
    var dstPitch: UInt64
    var widthInBytes: UInt64
    var height: UInt64

    init(srcDevice: CUdeviceptr, srcPitch: UInt64, dstDevice: CUdeviceptr, dstPitch: UInt64, widthInBytes: UInt64, height: UInt64) {
        self.srcDevice = srcDevice; self.srcPitch = srcPitch; self.dstDevice = dstDevice; self.dstPitch = dstPitch
        self.widthInBytes = widthInBytes; self.height = height
    }
}
