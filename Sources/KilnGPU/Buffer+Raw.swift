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
}
