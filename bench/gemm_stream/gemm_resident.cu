// bench/gemm_stream/gemm_resident.cu — PROTOTYPE (harness only): decode GEMM Y[M,N] = X[M,K] · W[N,K]^T for
// M ≤ 16 on Hopper with the whole of X resident in shared memory. Include after the engine's gemm_stream.cu (swz,
// lds128, chunk_mmas, finish). Measured slower than gemm_stream everywhere (perf-notes-gemm.md v8: one block per SM).
//
// Why: gemm_stream moves o's weights at 91.7% of copy but its consumers stall on X, which every
// 16-row block re-reads from L2 (at M = 16, X traffic equals the weight traffic: 256 blocks × 128 KB for o).
// Here each block holds X once — 16 × K bf16, 128 KB at K = 4096 — so the blocks are few and wide: one block per
// SM, NB rows each (o: NB = 32, 128 blocks; qkv: NB = 48, 128 blocks), X read from L2 once per SM, half of
// gemm_stream's X traffic, and every X fragment is a shared-memory load.
//  * X arrives by TMA once, stage by stage (box {64, 16, KB} of X viewed as {64, M, K/64}; rows ≥ M zero-filled),
//    each stage with its own single-use mbarrier; nothing ever overwrites it, so there is no empty barrier for X.
//  * W streams through the same per-warp-slot ring as gemm_stream (box {64, NB, KB}), and consumer warp c takes
//    whole stages c, c + CW, …
//  * EARLY: the producer issues the first WS weight stages before griddepcontrol.wait (the weights do not depend
//    on the previous kernel; X does), so a block that starts while the previous kernel drains has its ring full.
//  * Requires K % 64 == 0 and K / (64·KB) ≤ KILN_GEMM_RESIDENT_MAX_STAGES; dynamic shared memory
//    KILN_GEMM_RESIDENT_SMEM(NB, KB, WS, K) ≤ 227 KB (o, qkv, gate_up at K = 4096 fit; down's K = 14336 does not).
//
// Kernel parameters (harness wrappers of gemm_resident<NB, KB, WS, CW, EARLY>):
//   (const KilnTensorMap tmw /* W: {64, N, K/64}, box {64, NB, KB} */, const KilnTensorMap tmx /* X: {64, M, K/64},
//    box {64, 16, KB} */, void* y, int M, int N, int K, int epi)  — y and epi as in gemm_stream.

#define KILN_GEMM_RESIDENT_MAX_STAGES 64
#define KILN_GEMM_RESIDENT_SMEM(NB, KB, WS, K) ((WS) * (NB) * 128 * (KB) + 16 * 2 * (K) + 1024)
#define KILN_GEMM_RESIDENT_THREADS(CW) (32 * ((CW) + 1))

namespace kiln_gemm_stream {

template <int NB, int KB, int WS, int CW, bool EARLY>
__device__ __forceinline__ void gemm_resident(const KilnTensorMap* tmw, const KilnTensorMap* tmx, void* __restrict__ y,
                                              int M, int N, int K, int epi) {
    static_assert(NB % 16 == 0 && NB <= 64, "NB: 16-row mma groups");
    static_assert(KB >= 1 && KB <= 4 && CW >= 1 && CW <= 8 && WS % CW == 0, "KB, CW, WS");
    constexpr int CHUNK_W = NB * 128, W_BYTES = KB * CHUNK_W, X_BYTES = KB * 16 * 128, NTILE = NB / 8;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    __shared__ __align__(8) u64 wfull[WS], wempty[WS], xfull[KILN_GEMM_RESIDENT_MAX_STAGES];
    __shared__ float partial[CW > 1 ? CW - 1 : 1][NTILE][4][32];
    const u32 wbase = (smem_u32(smem_raw) + 1023) & ~1023u, xbase = wbase + WS * W_BYTES;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row0 = blockIdx.x * NB, nkb = (K / 64 + KB - 1) / KB;
    if (threadIdx.x == 0) {
        for (int s = 0; s < WS; ++s) { mbar_init(smem_u32(&wfull[s]), 1); mbar_init(smem_u32(&wempty[s]), 1); }
        for (int s = 0; s < nkb; ++s) mbar_init(smem_u32(&xfull[s]), 1);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    }
    __syncthreads();
    if (warp == CW) {   // producer: one elected lane
        if (lane == 0) {
            // Weight stage kb goes to consumer warp kb % CW, in one of that warp's own WS / CW slots (gemm_stream:
            // a shared ring lets a warp pass a parity wait on stale data).
            auto issue_w = [&](int kb) {
                const int j = kb / CW, s = kb % CW + CW * (j % (WS / CW));
                mbar_wait(smem_u32(&wempty[s]), ((j / (WS / CW)) & 1) ^ 1);
                mbar_arrive_expect_tx(smem_u32(&wfull[s]), W_BYTES);
                tma_load_3d(wbase + s * W_BYTES, tmw, smem_u32(&wfull[s]), 0, row0, kb * KB);
            };
            tma_prefetch_desc(tmw);
            tma_prefetch_desc(tmx);
            const int early = EARLY ? (nkb < WS ? nkb : WS) : 0;
            for (int kb = 0; kb < early; ++kb) issue_w(kb);
            kiln_attn::pdl_wait_then_trigger();
            // X stage s just ahead of weight stage s: X arrives at the pace it is consumed and never queues the
            // weight stream behind 128 KB of its own.
            for (int s = 0; s < nkb; ++s) {
                mbar_arrive_expect_tx(smem_u32(&xfull[s]), X_BYTES);
                tma_load_3d(xbase + s * X_BYTES, tmx, smem_u32(&xfull[s]), 0, 0, s * KB);
                if (s >= early) issue_w(s);
            }
        } else {
            kiln_attn::pdl_wait_then_trigger();
        }
        return;
    }
    kiln_attn::pdl_wait_then_trigger();

    // Consumer warp: whole stages in turn. Lane (g, t) reads 16-byte chunks 2t + h of weight rows 16p + g, 16p + 8 + g
    // and of X rows g, g + 8 — the same physical k for A and B (see gemm_stream's consume), 128B-swizzled.
    const int g = lane >> 2, t = lane & 3;
    float c[NTILE][4];
#pragma unroll
    for (int i = 0; i < NTILE; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) c[i][j] = 0.f;
    for (int j = 0, kb = warp; kb < nkb; ++j, kb += CW) {
        const int ws = warp + CW * (j % (WS / CW));
        mbar_wait(smem_u32(&xfull[kb]), 0);
        mbar_wait(smem_u32(&wfull[ws]), (j / (WS / CW)) & 1);
        const u32 wt = wbase + ws * W_BYTES, xt = xbase + kb * X_BYTES;
#pragma unroll
        for (int r = 0; r < KB; ++r) {
            const u32 wc = wt + r * CHUNK_W, xc = xt + r * 16 * 128;
#pragma unroll
            for (int h = 0; h < 2; ++h)
                chunk_mmas<NB>(c, wc, lds128(xc + swz(g, 2 * t + h)), lds128(xc + swz(g + 8, 2 * t + h)), g, t, h);
        }
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");   // LDS before the TMA refill (gemm_stream.cu)
        __syncwarp();
        if (lane == 0) mbar_arrive(smem_u32(&wempty[ws]));
    }
    finish<NB, CW>(c, partial, y, row0, M, N, epi);
}

}  // namespace kiln_gemm_stream
