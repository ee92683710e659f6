// bench/gemm_stream/gemm_xsmem.cu — PROTOTYPE (harness only): gemm_whole's register pipeline for the weights, with
// X read from shared memory instead of registers. Include after gemm_splitk.cu (ld_weight, mma_step, sum_warps_k,
// store_out) and hopper_util.cuh (mbarriers).
//
// Why: gemm_whole reaches 91–98% of copy on o at M ≤ 8, but at M = 16 (NT = 2) X's fragments double its registers,
// so only UNROLL = 2 fits and the weights in flight halve (77–81%). Here one block per SM holds all of X (16 × K
// bf16, 128 KB at K = 4096) in shared memory, loaded once by bulk copies, and each warp keeps gemm_whole's two
// weight register sets at UNROLL = 4; X fragments are shared-memory loads issued right before their mmas.
// Block = TILES 16-row tiles × WK warps over K (warp w: tile w / WK, k-warp w % WK); grid = N / (16·TILES).
// X rows live at a stride of 2K + 64 bytes, so the 8 lanes of a shared-memory phase (rows g, g+1 × t = 0…3) hit
// distinct bank groups. X is copied in chunks of one super-step round (WK·32·UNROLL k), each with a single-use
// mbarrier, so the first mmas wait for 1/nchunks of X only.
// Requires N % (16·TILES) == 0, K % (WK·32·UNROLL) == 0, K / (WK·32·UNROLL) ≤ KILN_XSMEM_MAX_CHUNKS.
// Dynamic shared memory: KILN_XSMEM_SMEM(NT, K).

#define KILN_XSMEM_MAX_CHUNKS 32
#define KILN_XSMEM_SMEM(NT, K) (8 * (NT) * (2 * (K) + 64))

namespace kiln_gemm {

__device__ __forceinline__ void bulk_copy_g2s(unsigned dst, const void* src, unsigned bytes, unsigned bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 ::"r"(dst), "l"(src), "r"(bytes), "r"(bar) : "memory");
}
__device__ __forceinline__ U4 lds128x(unsigned addr) {
    U4 r;
    asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "r"(addr));
    return r;
}

template <int NT, int TILES, int WK, int UNROLL, int EPI>
__device__ __forceinline__ void gemm_xsmem(const kiln_bf16* __restrict__ x, const kiln_bf16* __restrict__ w,
                                           void* __restrict__ y, int M, int N, int K) {
    using namespace kiln_hopper;
    static_assert(NT == 1 || NT == 2, "NT: 1 (M <= 8) or 2 (M <= 16)");
    extern __shared__ __align__(128) unsigned char xs_raw[];
    __shared__ __align__(8) u64 xbar[KILN_XSMEM_MAX_CHUNKS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, tile = warp / WK, wk = warp % WK, g = lane >> 2, t = lane & 3;
    const int row0 = blockIdx.x * 16 * TILES + tile * 16;
    constexpr int STEP = UNROLL * 32, KS = WK * STEP;
    const int nfull = K / KS;                 // super-steps per warp = X chunks
    const u32 xs = smem_u32(xs_raw), XSTRIDE = 2 * K + 64;
    if (threadIdx.x == 0) {
        for (int c = 0; c < nfull; ++c) mbar_init(smem_u32(&xbar[c]), 1);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    U4 wv[2][UNROLL][1][2];
    float acc[1][NT][4];
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[0][n][i] = 0.f;
    auto load_w = [&](U4 (&ws)[UNROLL][1][2], int k) { load_w_tile<UNROLL>(ws, w, row0, g, t, K, k); };
    const int k0 = wk * STEP;
    load_w(wv[0], k0);   // weights never depend on the previous kernel: before the PDL wait
    pdl_wait_then_trigger();
    if (threadIdx.x == 0)   // X, chunk by chunk (one super-step round of k each), M rows of KS·2 bytes per chunk
        for (int c = 0; c < nfull; ++c) {
            mbar_arrive_expect_tx(smem_u32(&xbar[c]), (u32)(M * KS * 2));
            for (int m = 0; m < M; ++m) bulk_copy_g2s(xs + m * XSTRIDE + c * KS * 2, x + (long long)m * K + c * KS, KS * 2, smem_u32(&xbar[c]));
        }
    // Lane (g, t) reads X rows 8n + g (clamped to M - 1: rows ≥ M are never copied, and feed only outputs m ≥ M,
    // which are not stored) at k = kk + 8t — the physical k of its weight loads (see gemm_splitk's header).
    u32 xrow[NT];
#pragma unroll
    for (int n = 0; n < NT; ++n) xrow[n] = xs + (u32)min(8 * n + g, M - 1) * XSTRIDE + 16 * t;
    for (int s0 = 0; s0 < nfull; s0 += 2) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const int s = s0 + j;
            if (s < nfull) {
                const int k = k0 + s * KS;
                if (s + 1 < nfull) load_w(wv[j ^ 1], k + KS);
                mbar_wait(smem_u32(&xbar[s]), 0);
#pragma unroll
                for (int u = 0; u < UNROLL; ++u) {
                    U4 xv[1][NT];
#pragma unroll
                    for (int n = 0; n < NT; ++n) xv[0][n] = lds128x(xrow[n] + (k + 32 * u) * 2);
                    const U4(&wu)[1][1][2] = *reinterpret_cast<const U4(*)[1][1][2]>(&wv[j][u]);
                    mma_step<NT, 1, 1>(acc, wu, xv);
                }
            }
        }
    }
    sum_warps_k<TILES, WK, 1, NT>(acc, tile, wk, lane);
    if (wk == 0) store_out<1, NT>(acc, y, row0, g, t, M, N, EPI);
}

}  // namespace kiln_gemm
