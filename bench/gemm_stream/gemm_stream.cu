// bench/gemm_stream/gemm_stream.cu — PROTOTYPE (harness only, not in the engine): decode GEMM
// Y[M,N] = X[M,K] · W[N,K]^T for M ≤ 16 on Hopper, with the weights streamed through a TMA + mbarrier ring
// instead of registers. Measured in session 5 (docs/perf-notes-gemm.md v7): o at M = 16 10.5–10.6 µs against
// gemm_whole's 10.9 (the 85% target needs 9.94), down at M = 16 30.1 against 31.9; slower than gemm_whole on
// qkv and at M ≤ 8. Not built into the engine for that reason, and because one configuration (NB = 32, KB = 2 on
// gate_up, several waves) gave wrong sums that are not understood yet.
//
// Why it was tried: gemm_splitk keeps its weight bytes in flight in registers; at M = 16 the X fragments double
// and o runs latency-bound at 77–81% of copy (perf-notes-gemm.md v6). Here a producer lane issues TMA boxes
// into a shared-memory ring, so the bytes in flight cost no registers.
//
// Work decomposition — rows only, no split-K (no reduction across blocks, no scratch, bitwise reproducible):
// block b owns weight rows [NB·b, NB·b + NB) over the whole K; grid.x = ceil(N / NB).
//  * W is viewed as 3-D {64, N, K/64} (strides 2K and 128 bytes) so that one box {64, NB, KB} — KB 64-k chunks
//    of NB rows, 128B swizzle — fills one ring stage (one 2-D box per 64 k measured far slower: per-box cost).
//  * Consumer warp c takes whole stages c, c + CW, … in its own WS / CW ring slots (see the producer's comment
//    on why the slots are per warp). X (L2-resident) comes through the load/store path into registers, one of
//    the warp's stages ahead: streaming X by TMA as well measured 11.7 µs on o, in clusters with multicast 19–61.
//  * mma.m16n8k16 with A = X (16 tokens, no padding of the weights) and B = W; see consume().
//  * The CW partial sums are added in warp order through shared memory at the end (deterministic).
//  * Requires K % 64 == 0 (the 3-D view); N tail: TMA zero-fills rows past N and stores are guarded.
//
// Kernel parameters (harness wrappers of gemm_stream<NB, KB, WS, CW>):
//   (const KilnTensorMap tmw /* W, box {64, NB, KB} */, const bf16* x /* [M, K] */, void* y, int M, int N, int K, int epi)
//   y: [M, N] bf16 (epi 0) or fp32 (epi 1); [M, N/2] bf16 (epi 2, SwiGLU with gemm_splitk's 16-row interleave).
//   block = KILN_GEMM_STREAM_THREADS(CW) threads; dynamic shared memory = KILN_GEMM_STREAM_SMEM(NB, KB, WS).

#include "attention_util.cuh"
#include "hopper_util.cuh"

#define KILN_GEMM_STREAM_SMEM(NB, KB, WS) ((WS) * (NB) * 128 * (KB) + 1024)
#define KILN_GEMM_STREAM_THREADS(CW) (32 * ((CW) + 1))

namespace kiln_hopper {
// 3-D tile load: box at (c0, c1, c2) -> shared dst (innermost dimension first), completes on bar.
__device__ __forceinline__ void tma_load_3d(u32 dst, const void* tmap, u32 bar, int c0, int c1, int c2) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], [%2];"
        ::"r"(dst), "l"((u64)tmap), "r"(bar), "r"(c0), "r"(c1), "r"(c2)
        : "memory");
}

}  // namespace kiln_hopper

namespace kiln_gemm_stream {

using namespace kiln_hopper;
using kiln_attn::f32_to_bf16;
using kiln_attn::bf16_to_f32;
using kiln_attn::U4;
using kiln_attn::ld_nc;
using kiln_attn::mma16816;

// Byte offset of 16-byte chunk `chunk` of row `row` inside a 1024-aligned tile written by TMA with 128B swizzle.
__device__ __forceinline__ u32 swz(int row, int chunk) { return (u32)(row * 128 + ((chunk ^ (row & 7)) << 4)); }

// X (≤ 16 × K bf16, L2-resident): lane (g, t) of a consumer warp loads rows g and g + 8 at k = k0 + 16t + {0…7, 8…15}
// with 16-byte L1-cached loads (rows ≥ M, and the chunks of a last partial stage past K, read as zero). Through the load/store path, not TMA: streaming X through
// TMA as well (per-CTA boxes, or multicast in clusters) measured 11.7 µs and 26–61 µs on o at M = 16.
struct XFrag { U4 v[2][2]; };   // [row g / g + 8][16-byte half]
__device__ __forceinline__ void load_x(XFrag& f, const kiln_bf16* __restrict__ x, int K, int M, int k0, int g, int t) {
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int h = 0; h < 2; ++h)
            f.v[r][h] = g + 8 * r < M && k0 < K ? ld_nc(x + (long long)(g + 8 * r) * K + k0 + 16 * t + 8 * h) : U4{0, 0, 0, 0};
}
__device__ __forceinline__ U4 lds128(u32 addr) {
    U4 r;
    asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "r"(addr));
    return r;
}

// The CW consumer warps take whole stages in turn: warp c consumes stages c, c + CW, … (empty barriers count one
// arrival), so the warps run on different stages at once and each has CW stages' time for its own; X for a warp's
// next stage is loaded into registers while it works on the current one. Then the warp-ordered sum and the
// epilogue (warp 0 stores).
//
// mma.m16n8k16 with A = X (16 tokens × 16 k) and B = W (16 k × 8 rows). A dot product may visit k in any order as
// long as A and B agree, so lane t's k slots {2t, 2t+1, 2t+8, 2t+9} are the physical k = base + {0, 1, 2, 3} of a
// 16-byte load: one LDS.128 of a weight row and one 16-byte X load feed two mmas. Lane t reads 16-byte chunks 2t
// and 2t + 1 of each 128-byte weight row: with the 128B swizzle the 8 lanes of a shared-memory phase (rows g, g+1 ×
// t = 0…3) then hit 8 distinct bank groups (chunks t, t+1 collide between rows g and g+1).
template <int NB, int KB, int WS, int CW>
__device__ __forceinline__ void consume(u32 wbase, u64* wfull, u64* wempty, float (*partial)[NB / 8][4][32],
                                        const kiln_bf16* __restrict__ x, void* __restrict__ y, int row0, int nkb, int M, int N, int K, int epi) {
    constexpr int CHUNK_W = NB * 128, W_BYTES = KB * CHUNK_W, NTILE = NB / 8;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
    float c[NTILE][4];
#pragma unroll
    for (int i = 0; i < NTILE; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) c[i][j] = 0.f;
    XFrag xf[KB];
#pragma unroll
    for (int r = 0; r < KB; ++r) load_x(xf[r], x, K, M, (warp * KB + r) * 64, g, t);
    for (int j = 0, kb = warp; kb < nkb; ++j, kb += CW) {
        XFrag cur[KB];
#pragma unroll
        for (int r = 0; r < KB; ++r) {
            cur[r] = xf[r];
            if (kb + CW < nkb) load_x(xf[r], x, K, M, ((kb + CW) * KB + r) * 64, g, t);
        }
        const int ws = warp + CW * (j % (WS / CW));   // this warp's own slots (see gemm_stream)
        mbar_wait(smem_u32(&wfull[ws]), (j / (WS / CW)) & 1);
        const u32 wt = wbase + ws * W_BYTES;
#pragma unroll
        for (int r = 0; r < KB; ++r) {
            const u32 wc = wt + r * CHUNK_W;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const U4 xa = cur[r].v[0][h], xb = cur[r].v[1][h];
#pragma unroll
                for (int p = 0; p < NB / 16; ++p) {
                    const U4 w0 = lds128(wc + swz(16 * p + g, 2 * t + h)), w1 = lds128(wc + swz(16 * p + 8 + g, 2 * t + h));
                    mma16816(c[2 * p], xa.x, xb.x, xa.y, xb.y, w0.x, w0.y);
                    mma16816(c[2 * p + 1], xa.x, xb.x, xa.y, xb.y, w1.x, w1.y);
                    mma16816(c[2 * p], xa.z, xb.z, xa.w, xb.w, w0.z, w0.w);
                    mma16816(c[2 * p + 1], xa.z, xb.z, xa.w, xb.w, w1.z, w1.w);
                }
            }
        }
        // The mmas above consumed the shared-memory loads, so this warp is done with the stage.
        __syncwarp();
        if (lane == 0) mbar_arrive(smem_u32(&wempty[ws]));
    }

    // Sum the consumer warps' partials in warp order (bitwise reproducible), then warp 0 stores.
    if (CW > 1) {
        if (warp > 0)
#pragma unroll
            for (int i = 0; i < NTILE; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) partial[warp - 1][i][j][lane] = c[i][j];
        asm volatile("bar.sync 1, %0;" ::"n"(32 * CW) : "memory");
        if (warp > 0) return;
        for (int w = 0; w < CW - 1; ++w)
#pragma unroll
            for (int i = 0; i < NTILE; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) c[i][j] += partial[w][i][j][lane];
    }
    // Accumulator c[tile][i]: token m = g + 8·(i ≥ 2), weight row row0 + 8·tile + 2t + (i & 1).
#pragma unroll
    for (int tile = 0; tile < NTILE; ++tile)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int m = g + 8 * (i >> 1), j = 2 * t + (i & 1), r = row0 + 8 * tile + j;
            if (m >= M) continue;
            if (epi == 2) {
                if (tile % 2 == 0 && r < N) {   // gate row (tile) and its up row (tile + 1): same lane, same i
                    const float gv = bf16_to_f32(f32_to_bf16(c[tile][i])), uv = bf16_to_f32(f32_to_bf16(c[tile + 1][i]));
                    ((kiln_bf16*)y)[(long long)m * (N >> 1) + ((row0 + 8 * tile) >> 1) + j] = f32_to_bf16(gv / (1.0f + expf(-gv)) * uv);
                }
            } else if (r < N) {
                if (epi == 1) ((float*)y)[(long long)m * N + r] = c[tile][i];
                else ((kiln_bf16*)y)[(long long)m * N + r] = f32_to_bf16(c[tile][i]);
            }
        }
}

template <int NB, int KB, int WS, int CW>
__device__ __forceinline__ void gemm_stream(const KilnTensorMap* tmw, const kiln_bf16* __restrict__ x, void* __restrict__ y,
                                            int M, int N, int K, int epi) {
    static_assert(NB % 16 == 0 && NB <= 64, "NB: 16-row mma groups");
    static_assert(KB >= 1 && KB <= 4 && CW >= 1 && CW <= 8, "KB: 64-k chunks per stage (X registers: 16 per chunk, twice)");
    static_assert(WS % CW == 0, "WS: the same number of ring slots per consumer warp");
    constexpr int W_BYTES = KB * NB * 128;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    __shared__ __align__(8) u64 wfull[WS], wempty[WS];
    __shared__ float partial[CW > 1 ? CW - 1 : 1][NB / 8][4][32];
    const u32 wbase = (smem_u32(smem_raw) + 1023) & ~1023u;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row0 = blockIdx.x * NB, nkb = (K / 64 + KB - 1) / KB;
    if (threadIdx.x == 0) {
        for (int s = 0; s < WS; ++s) { mbar_init(smem_u32(&wfull[s]), 1); mbar_init(smem_u32(&wempty[s]), 1); }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    }
    __syncthreads();
    // PDL: X is the previous kernel's output. (Issuing weight boxes before the wait measured slower in the
    // prototype: the first X box queued behind them.)
    kiln_attn::pdl_wait_then_trigger();
    if (warp == CW) {   // producer: one elected lane issues one 3-D box {64, NB, KB} per stage
        if (lane == 0) {
            tma_prefetch_desc(tmw);
            for (int kb = 0; kb < nkb; ++kb) {
                // Stage kb goes to consumer warp kb % CW, in one of that warp's WS / CW slots. With one shared ring a
                // warp could run two phases ahead of a slot (its own previous stage done, another warp's load into
                // the slot still in flight) and pass a parity wait on stale data; per-warp slots make every slot's
                // phases follow one warp's own order.
                const int j = kb / CW, s = kb % CW + CW * (j % (WS / CW));
                mbar_wait(smem_u32(&wempty[s]), ((j / (WS / CW)) & 1) ^ 1);
                mbar_arrive_expect_tx(smem_u32(&wfull[s]), W_BYTES);
                tma_load_3d(wbase + s * W_BYTES, tmw, smem_u32(&wfull[s]), 0, row0, kb * KB);
            }
        }
        return;
    }
    consume<NB, KB, WS, CW>(wbase, wfull, wempty, partial, x, y, row0, nkb, M, N, K, epi);
}

}  // namespace kiln_gemm_stream
