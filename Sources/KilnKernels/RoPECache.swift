import KilnCore
import KilnGPU

/// rope_cache.cu: bias (optional) + q/k RMSNorm per head (optional, qwen3) + RoPE on q and k of fused qkv rows
/// + k/v written into the KV cache, in one launch; and the decode step's position bump.
public struct RoPECache {
    public static let file = "rope_cache.cu"
    public static var instances: [KernelInstance] {
        RoPE.Pairing.allCases.flatMap { p in
            ["rope_qkv_cache", "rope_qkv_cache_qknorm", "rope_qkv_cache_paged", "rope_qkv_cache_qknorm_paged"].map {
                KernelInstance(file, "kiln::\($0)<\(p.rawValue)>", hot: true)
            }
        } + [KernelInstance(file, "kiln::advance_decode", hot: true)]
    }

    struct Params {
        var qkv, bias, positions, invFreq, kcache, vcache: UInt64
        var rows, tokensPerSeq, seqOffset, hq, hkv, headDim, ldqkv, maxSeq: Int32
    }
    struct QKNormParams { var rope: Params; var qNorm, kNorm: UInt64; var eps: Float }
    /// `KVPaging` in rope_cache.cu: the paged cache's addressing.
    struct Paging { var rowSeq, rowPos, table: UInt64; var tableStride, page: Int32 }
    struct PagedParams { var rope: Params; var paging: Paging }
    struct QKNormPagedParams { var qk: QKNormParams; var paging: Paging }
    struct AdvanceParams { var positions, lens: UInt64; var batch: Int32 }
    /// The q/k norm kernel gives each lane at most 4 rotation pairs of a head.
    public static let maxQKNormHeadDim = 256

    public let pairing: RoPE.Pairing
    let kernel: Kernel, qkNormKernel: Kernel, pagedKernel: Kernel, qkNormPagedKernel: Kernel, advance: Kernel
    public init(_ library: KernelLibrary, pairing: RoPE.Pairing) throws {
        self.pairing = pairing
        kernel = try library.kernel(RoPECache.file, "kiln::rope_qkv_cache<\(pairing.rawValue)>")
        qkNormKernel = try library.kernel(RoPECache.file, "kiln::rope_qkv_cache_qknorm<\(pairing.rawValue)>")
        pagedKernel = try library.kernel(RoPECache.file, "kiln::rope_qkv_cache_paged<\(pairing.rawValue)>")
        qkNormPagedKernel = try library.kernel(RoPECache.file, "kiln::rope_qkv_cache_qknorm_paged<\(pairing.rawValue)>")
        advance = try library.kernel(RoPECache.file, "kiln::advance_decode")
    }

    /// The paged cache's rows: row r belongs to the step's sequence rowSeq[r] at position rowPos[r] (int32 device
    /// buffers [rows]); kcache/vcache are pools [blocks, Hkv, page, headDim] and `table` int32 [sequences, tableStride]
    /// the block ids (position pos of sequence s: row pos % page of block table[s·tableStride + pos / page]).
    public struct PagedRows {
        public var rowSeq, rowPos, table: CUdeviceptr
        public var tableStride, page: Int
        public init(rowSeq: CUdeviceptr, rowPos: CUdeviceptr, table: CUdeviceptr, tableStride: Int, page: Int) {
            self.rowSeq = rowSeq; self.rowPos = rowPos; self.table = table; self.tableStride = tableStride; self.page = page
        }
    }

    /// As `callAsFunction`, over the paged cache: each row's sequence and position from `rows`.
    public func paged(qkv: CUdeviceptr, bias: CUdeviceptr, qNorm: CUdeviceptr = 0, kNorm: CUdeviceptr = 0, eps: Float = 0, invFreq: CUdeviceptr,
                      kcache: CUdeviceptr, vcache: CUdeviceptr, rows: Int, places: PagedRows, heads: Int, kvHeads: Int, headDim: Int,
                      ldqkv: Int, stream: GPUStream) throws {
        guard rows >= 1, headDim % 2 == 0, ldqkv >= (heads + 2 * kvHeads) * headDim, places.page >= 1, places.tableStride >= 1 else {
            throw KilnError("rope_qkv_cache_paged: bad shape (rows \(rows), heads \(heads)/\(kvHeads), d \(headDim), ld \(ldqkv), page \(places.page))")
        }
        let p = Params(qkv: qkv, bias: bias, positions: 0, invFreq: invFreq, kcache: kcache, vcache: vcache,
                       rows: Int32(rows), tokensPerSeq: 1, seqOffset: 0, hq: Int32(heads), hkv: Int32(kvHeads), headDim: Int32(headDim),
                       ldqkv: Int32(ldqkv), maxSeq: 0)
        let paging = Paging(rowSeq: places.rowSeq, rowPos: places.rowPos, table: places.table, tableStride: Int32(places.tableStride),
                            page: Int32(places.page))
        if qNorm != 0 || kNorm != 0 {
            guard qNorm != 0, kNorm != 0, headDim <= RoPECache.maxQKNormHeadDim, eps > 0 else {
                throw KilnError("rope_qkv_cache_qknorm_paged: needs both norm weights, head dim ≤ \(RoPECache.maxQKNormHeadDim) and eps > 0")
            }
            let warps = rows * (heads + 2 * kvHeads)
            try qkNormPagedKernel.launch(grid: ((warps * 32 + 255) / 256, 1, 1), block: (256, 1, 1), stream: stream, pdl: stream.pdl,
                                         QKNormPagedParams(qk: QKNormParams(rope: p, qNorm: qNorm, kNorm: kNorm, eps: eps), paging: paging))
            return
        }
        let work = rows * (heads + 2 * kvHeads) * headDim / 2
        try pagedKernel.launch(grid: ((work + 255) / 256, 1, 1), block: (256, 1, 1), stream: stream, pdl: stream.pdl,
                               PagedParams(rope: p, paging: paging))
    }

    /// qkv: bf16 [rows, ldqkv]; row r is sequence seqOffset + r / tokensPerSeq at position
    /// positions[seq] + r % tokensPerSeq (positions: int32 device buffer indexed by sequence).
    /// kcache/vcache: bf16 [B, Hkv, maxSeq, headDim]. bias: bf16 [(hq + 2hkv)·headDim] or 0. qNorm, kNorm: bf16 [headDim]
    /// each, or both 0 (no q/k norm); `eps` is the norm's epsilon.
    public func callAsFunction(qkv: CUdeviceptr, bias: CUdeviceptr, qNorm: CUdeviceptr = 0, kNorm: CUdeviceptr = 0, eps: Float = 0,
                               positions: CUdeviceptr, invFreq: CUdeviceptr,
                               kcache: CUdeviceptr, vcache: CUdeviceptr, rows: Int, tokensPerSeq: Int, seqOffset: Int = 0,
                               heads: Int, kvHeads: Int, headDim: Int, ldqkv: Int, maxSeq: Int, stream: GPUStream) throws {
        guard rows >= 1, tokensPerSeq >= 1, headDim % 2 == 0, ldqkv >= (heads + 2 * kvHeads) * headDim else {
            throw KilnError("rope_qkv_cache: bad shape (rows \(rows), heads \(heads)/\(kvHeads), d \(headDim), ld \(ldqkv))")
        }
        let p = Params(qkv: qkv, bias: bias, positions: positions, invFreq: invFreq, kcache: kcache, vcache: vcache,
                       rows: Int32(rows), tokensPerSeq: Int32(tokensPerSeq), seqOffset: Int32(seqOffset), hq: Int32(heads),
                       hkv: Int32(kvHeads), headDim: Int32(headDim), ldqkv: Int32(ldqkv), maxSeq: Int32(maxSeq))
        if qNorm != 0 || kNorm != 0 {
            guard qNorm != 0, kNorm != 0, headDim <= RoPECache.maxQKNormHeadDim, eps > 0 else {
                throw KilnError("rope_qkv_cache_qknorm: needs both norm weights, head dim ≤ \(RoPECache.maxQKNormHeadDim) and eps > 0 (d \(headDim), eps \(eps))")
            }
            let warps = rows * (heads + 2 * kvHeads)   // one warp per (row, head)
            try qkNormKernel.launch(grid: ((warps * 32 + 255) / 256, 1, 1), block: (256, 1, 1), stream: stream, pdl: stream.pdl,
                                    QKNormParams(rope: p, qNorm: qNorm, kNorm: kNorm, eps: eps))
            return
        }
        let work = rows * (heads + 2 * kvHeads) * headDim / 2
        try kernel.launch(grid: ((work + 255) / 256, 1, 1), block: (256, 1, 1), stream: stream, pdl: stream.pdl, p)
    }

    /// positions[b] += 1 and lens[b] += 1 for b < batch (int32 device buffers).
    public func advance(positions: CUdeviceptr, lens: CUdeviceptr, batch: Int, stream: GPUStream) throws {
        try advance.launch(grid: ((batch + 63) / 64, 1, 1), block: (64, 1, 1), stream: stream,
                           AdvanceParams(positions: positions, lens: lens, batch: Int32(batch)))
    }
}
