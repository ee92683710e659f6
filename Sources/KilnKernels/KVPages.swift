import KilnCore
import KilnGPU

/// kv_pages.cu: the server's paged KV cache outside the decode kernels (which read it through block tables
/// themselves): `gather` copies one sequence's keys and values out of the pool into contiguous rows for the prefill
/// attention kernels.
public struct KVPages {
    public static let file = "kv_pages.cu"
    public static let instances = [KernelInstance(file, "kiln::kv_gather", hot: true)]
    struct GatherParams {
        var kpool, vpool, table, kout, vout: UInt64
        var len, hkv, headDim, page, cap: Int32
    }

    let gather: Kernel
    public init(_ library: KernelLibrary) throws {
        gather = try library.kernel(KVPages.file, "kiln::kv_gather")
    }

    /// Copies positions 0..<len of one sequence from the pools kPool, vPool [blocks, Hkv, page, headDim] (position pos:
    /// row pos % page of block table[pos / page]; `table` int32 on the device, the sequence's row) into kOut, vOut
    /// [Hkv, capacity, headDim] (the static cache layout of one sequence with maxS = capacity).
    public func gather(kPool: CUdeviceptr, vPool: CUdeviceptr, table: CUdeviceptr, kOut: CUdeviceptr, vOut: CUdeviceptr, length: Int,
                       kvHeads: Int, headDim: Int, page: Int, capacity: Int, stream: GPUStream) throws {
        guard length >= 0, length <= capacity, kvHeads >= 1, headDim % 8 == 0, page >= 1 else {
            throw KilnError("kv_gather: bad shape (length \(length), capacity \(capacity), Hkv \(kvHeads), d \(headDim), page \(page))")
        }
        guard length > 0 else { return }
        let pieces = length * headDim / 8
        try gather.launch(grid: ((pieces + 255) / 256, kvHeads, 2), block: (256, 1, 1), stream: stream,
                          GatherParams(kpool: kPool, vpool: vPool, table: table, kout: kOut, vout: vOut, len: Int32(length),
                                       hkv: Int32(kvHeads), headDim: Int32(headDim), page: Int32(page), cap: Int32(capacity)))
    }
}
