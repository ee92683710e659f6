import KilnCore

/// Launching kernels whose C signature has several parameters (the extern "C" GEMM and attention
/// entry points written for the nvcc harnesses), and Hopper tensor maps.
///
/// Why: `Kernel.launch` passes ONE struct as the kernel's single parameter. For a multi-parameter
/// kernel the driver wants one pointer per parameter; here the caller keeps a Swift struct whose
/// fields mirror the C parameters and gives their byte offsets once (a static array), and the
/// pointer array lives on the stack, so a launch allocates nothing.
extension Kernel {
    @inline(__always)
    public func launch<P>(grid: (Int, Int, Int), block: (Int, Int, Int), sharedBytes: Int = 0, stream: GPUStream,
                          pdl: Bool = false, fields params: P, offsets: [Int]) throws {
        assert(offsets.allSatisfy { $0 >= 0 && $0 < MemoryLayout<P>.size }, "a parameter offset outside \(P.self)")
        var p = params
        try withUnsafeMutableBytes(of: &p) { raw in
            // One slot per parameter (on the stack at these sizes): no fixed capacity that a precondition, compiled
            // out of the -Ounchecked release build, would have to guard.
            try withUnsafeTemporaryAllocation(of: UnsafeMutableRawPointer?.self, capacity: max(1, offsets.count)) { args in
                for (i, o) in offsets.enumerated() { args[i] = raw.baseAddress! + o }
                try launchRaw(grid: grid, block: block, sharedBytes: sharedBytes, stream: stream, pdl: pdl, args: args.baseAddress!)
            }
        }
    }

    /// A CUfunction_attribute of the compiled kernel (cuFuncGetAttribute), e.g. 0 = max threads per block.
    public func attribute(_ attr: Int32) throws -> Int {
        var v: Int32 = 0
        try cuCheck("cuFuncGetAttribute", module.context.driver.cuFuncGetAttribute(&v, attr, handle))
        return Int(v)
    }
}

/// A 128-byte CUtensorMap, passed by value to a `__grid_constant__` kernel parameter.
public struct TensorMap: Sendable {
    public var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                       UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    public init() {}

    /// A 2-D bf16 row-major matrix [rows, cols] (cols contiguous) read in boxes of [boxRows, boxCols]
    /// with 128-byte swizzle and zero fill out of bounds (the layout gemm_hopper.cu documents).
    public static func bf16Matrix(_ context: Context, address: CUdeviceptr, rows: Int, cols: Int, boxRows: Int, boxCols: Int) throws -> TensorMap {
        guard cols % 8 == 0, address % 16 == 0 else { throw KilnError("TMA needs a 16-byte aligned matrix with cols % 8 == 0 (got cols \(cols))") }
        return try bf16Swizzled(context, address: address, dims: [UInt64(cols), UInt64(rows)], strides: [UInt64(cols * 2)],
                                box: [UInt32(boxCols), UInt32(boxRows)])
    }

    /// A 2-D e4m3 (one byte per element) row-major matrix [rows, cols] read in boxes of [boxRows, boxCols] with 128-byte
    /// swizzle and zero fill out of bounds (the layout gemm_fp8_hopper.cu documents): TMA's UINT8 type, since the copy
    /// moves bytes and never converts them.
    public static func e4m3Matrix(_ context: Context, address: CUdeviceptr, rows: Int, cols: Int, boxRows: Int, boxCols: Int) throws -> TensorMap {
        guard cols % 16 == 0, address % 16 == 0 else { throw KilnError("TMA needs a 16-byte aligned e4m3 matrix with cols % 16 == 0 (got cols \(cols))") }
        return try swizzled(context, dataType: 0, address: address, dims: [UInt64(cols), UInt64(rows)], strides: [UInt64(cols)],
                            box: [UInt32(boxCols), UInt32(boxRows)])
    }

    /// A bf16 row-major matrix [rows, cols] (cols % 64 == 0) viewed as 3-D {64, rows, cols/64} (strides 2·cols and
    /// 128 bytes), read in boxes of {64, boxRows, boxChunks}: boxChunks 64-column chunks of boxRows rows in one box,
    /// 128-byte swizzle, zero fill past the last row (the layout gemm_stream.cu documents).
    public static func bf16RowChunks(_ context: Context, address: CUdeviceptr, rows: Int, cols: Int, boxRows: Int, boxChunks: Int) throws -> TensorMap {
        guard cols % 64 == 0, address % 16 == 0 else { throw KilnError("TMA row chunks need a 16-byte aligned matrix with cols % 64 == 0 (got cols \(cols))") }
        return try bf16Swizzled(context, address: address, dims: [64, UInt64(rows), UInt64(cols / 64)], strides: [UInt64(cols * 2), 128],
                                box: [64, UInt32(boxRows), UInt32(boxChunks)])
    }

    /// A 3-D array of 32-bit words (innermost dimension first, `strides` in bytes for dims 1…) read in boxes of `box`
    /// words, unswizzled, zero fill out of bounds: gemm_lut_hopper.cu's code records and scale words.
    public static func words32(_ context: Context, address: CUdeviceptr, dims: [UInt64], strides: [UInt64], box: [UInt32]) throws -> TensorMap {
        guard address % 16 == 0, strides.allSatisfy({ $0 % 16 == 0 }), box[0] * 4 % 16 == 0 else {
            throw KilnError("TMA needs a 16-byte aligned array with strides and inner box multiples of 16 bytes (strides \(strides), box \(box))")
        }
        return try encode(context, dataType: 2, address: address, dims: dims, strides: strides, box: box, swizzle: 0)
    }

    private static func bf16Swizzled(_ context: Context, address: CUdeviceptr, dims: [UInt64], strides: [UInt64], box: [UInt32]) throws -> TensorMap {
        try swizzled(context, dataType: 9, address: address, dims: dims, strides: strides, box: box)
    }

    /// 128-byte swizzle (the wgmma operand tiles).
    private static func swizzled(_ context: Context, dataType: Int32, address: CUdeviceptr, dims: [UInt64], strides: [UInt64], box: [UInt32]) throws -> TensorMap {
        try encode(context, dataType: dataType, address: address, dims: dims, strides: strides, box: box, swizzle: 3)
    }

    /// The one cuTensorMapEncodeTiled call: `dataType` a CUtensorMapDataType (0 = UINT8, 2 = UINT32, 9 = BFLOAT16), dims
    /// innermost first (strides of dims 1…), element strides 1, `swizzle` a CUtensorMapSwizzle (0 = none, 3 = 128B).
    private static func encode(_ context: Context, dataType: Int32, address: CUdeviceptr, dims: [UInt64], strides: [UInt64], box: [UInt32],
                               swizzle: Int32) throws -> TensorMap {
        guard let encode = context.driver.cuTensorMapEncodeTiled else {
            throw KilnError("this NVIDIA driver has no cuTensorMapEncodeTiled (CUDA 12+ needed for the Hopper GEMMs)")
        }
        let elem = [UInt32](repeating: 1, count: dims.count)
        // interleave 0 = NONE, L2 promotion 3 = 256B, oob fill 0 = NONE (zeros).
        return try encoded { map in
            try cuCheck("cuTensorMapEncodeTiled", encode(map, dataType, UInt32(dims.count), address, dims, strides, box, elem, 0, swizzle, 3, 0))
        }
    }

    /// The driver requires the destination of cuTensorMapEncodeTiled to be 64-byte aligned (cuda.h 13 declares
    /// CUtensorMap alignas(128)), while a Swift value of this type is only 8-byte aligned. So `encode` writes into an
    /// aligned, zeroed scratch map, whose 128 bytes are then copied into the value.
    static func encoded(_ encode: (UnsafeMutableRawPointer) throws -> Void) rethrows -> TensorMap {
        let size = MemoryLayout<TensorMap>.size
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: TensorMap.alignment)
        defer { scratch.deallocate() }
        scratch.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        try encode(scratch)
        var m = TensorMap()
        withUnsafeMutableBytes(of: &m.words) { $0.copyMemory(from: UnsafeRawBufferPointer(start: scratch, count: size)) }
        return m
    }

    /// CUtensorMap's alignment in cuda.h 13.
    static let alignment = 128
}
