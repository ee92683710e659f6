import KilnCore
import KilnGPU

/// rope_cache.cu: bias (optional) + q/k RMSNorm per head (optional, qwen3) + RoPE on q and k of fused qkv rows
/// + k/v written into the KV cache, in one launch; and the decode step's position bump.
public struct RoPECache {
    public static let file = "rope_cache.cu"
    public static var instances: [KernelInstance] {
        RoPE.Pairing.allCases.flatMap {
            [KernelInstance(file, "kiln::rope_qkv_cache<\($0.rawValue)>", hot: true), KernelInstance(file, "kiln::rope_qkv_cache_qknorm<\($0.rawValue)>", hot: true)]
        } + [KernelInstance(file, "kiln::advance_decode", hot: true)]
    }

    struct Params {
        var qkv, bias, positions, invFreq, kcache, vcache: UInt64
        var rows, tokensPerSeq, seqOffset, hq, hkv, headDim, ldqkv, maxSeq: Int32
    }
    struct QKNormParams { var rope: Params; var qNorm, kNorm: UInt64; var eps: Float }
    struct AdvanceParams { var positions, lens: UInt64; var batch: Int32 }
    /// The q/k norm kernel gives each lane at most 4 rotation pairs of a head.
    public static let maxQKNormHeadDim = 256

    public let pairing: RoPE.Pairing
    let kernel: Kernel, qkNormKernel: Kernel, advance: Kernel
    public init(_ library: KernelLibrary, pairing: RoPE.Pairing) throws {
        self.pairing = pairing
        kernel = try library.kernel(RoPECache.file, "kiln::rope_qkv_cache<\(pairing.rawValue)>")
        qkNormKernel = try library.kernel(RoPECache.file, "kiln::rope_qkv_cache_qknorm<\(pairing.rawValue)>")
        advance = try library.kernel(RoPECache.file, "kiln::advance_decode")
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
