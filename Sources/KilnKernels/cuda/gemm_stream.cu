// gemm_stream.cu — decode GEMM Y[M,N] = X[M,K] · W[N,K]^T for 1 ≤ M ≤ 16 on Hopper (sm_90a), with the weights
// streamed through a TMA + mbarrier ring instead of registers. bf16 in, fp32 accumulation, bf16 / fp32 / SwiGLU out
// (the same `epi` values, kiln::Epilogue, and output layouts as gemm_splitk.cu).
//
// Why a second decode GEMM: gemm_splitk keeps its weight bytes in flight in registers. At M = 16 its X fragments
// double, only half the weight bytes fit in flight, and o (4096×4096) runs latency-bound at 77–81% of copy
// bandwidth (docs/perf-notes-gemm.md v6). Here one producer lane issues TMA boxes into a shared-memory ring, so the
// bytes in flight cost no registers. Measured in bench/gemm_stream (v8): o M = 16 10.3 µs vs gemm_whole's 10.9–11.2,
// down M = 16 29.8 vs 31.7; gemm_whole stays ahead at M ≤ 8. The tuner chooses per shape and M.
//
// Work decomposition — rows only, no split-K (no reduction across blocks, no scratch, bitwise reproducible):
// block b owns weight rows [NB·b, NB·b + NB) over the whole K; grid.x = ceil(N / NB).
//  * W is viewed as 3-D {64, N, K/64} (strides 2K and 128 bytes) so that one box {64, NB, KB} — KB 64-k chunks of
//    NB rows, 128B swizzle — fills one ring stage (one 2-D box per 64 k measured far slower: per-box cost).
//  * Consumer warp c takes whole stages c, c + CW, … in its own WS / CW ring slots (see the producer), so the warps
//    work on different stages at once; X (L2-resident) comes through the load/store path into registers one of the
//    warp's stages ahead. (X through TMA as well, or resident in shared memory at one block per SM, measured slower.)
//  * mma.m16n8k16 with A = X (16 tokens fill m16; the weights need no padding) and B = W; see consume().
//  * PDL: the producer fills the whole ring before griddepcontrol.wait — the weights never depend on the previous
//    kernel — and everything that touches X or Y waits first.
//  * The CW partial sums are added in warp order through shared memory at the end (deterministic).
//
// Ring protocol, two hazards found on the H200 (perf-notes-gemm.md v7, v8):
//  * a shared ring whose slots are taken by different warps in turn lets a warp pass a parity wait on a phase two
//    behind (stale data): every slot belongs to one consumer warp, so its phases follow that warp's order;
//  * a consumer that read a slot with ld.shared (generic proxy) must order those reads before the TMA (async
//    proxy) that refills it: fence.proxy.async before the release. Without it ptxas issued the release right after
//    the last LDS (the mmas that consume it moved below), and the next box overwrote rows still being read —
//    wrong sums in 132–902 of 65536 outputs per check on qkv, down and gate_up.
//
// Requirements (the launcher checks them): K % 64 == 0; x and W 16-byte aligned; M ≤ 16; SwiGLU: N % 16 == 0.
// Rows past N are zero-filled by TMA and never stored.
//
// Entry points: one extern "C" kernel per row of KILN_GEMM_STREAM_INSTANCES, named
//   kiln_gemm_stream_nb{NB}_kb{KB}_ws{WS}_cw{CW}(const KilnTensorMap tmw /* W {64, N, K/64}, box {64, NB, KB} */,
//       const kiln::bf16* x /* [M, K] */, void* y, int M, int N, int K, kiln::Epilogue epi)
//   block = KILN_GEMM_STREAM_THREADS(CW) threads; dynamic shared memory = KILN_GEMM_STREAM_SMEM(NB, KB, WS) bytes.

#include "kiln.cuh"
#include "attention_util.cuh"
#include "hopper_util.cuh"

#define KILN_GEMM_STREAM_SMEM(NB, KB, WS) ((WS) * (NB) * 128 * (KB) + 1024)
#define KILN_GEMM_STREAM_THREADS(CW) (32 * ((CW) + 1))

namespace kiln_gemm_stream {

using namespace kiln_hopper;
using kiln::Epilogue;
using kiln_attn::f32_to_bf16;
using kiln_attn::swiglu_bf16;
using kiln_attn::U4;
using kiln_attn::ld_nc;
using kiln_attn::mma16816;

// Byte offset of 16-byte chunk `chunk` of row `row` inside a 1024-aligned tile written by TMA with 128B swizzle.
__device__ __forceinline__ u32 swz(int row, int chunk) { return (u32)(row * 128 + ((chunk ^ (row & 7)) << 4)); }

__device__ __forceinline__ U4 lds128(u32 addr) {
    U4 r;
    asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "r"(addr));
    return r;
}

// X (≤ 16 × K bf16, L2-resident): lane (g, t) loads rows g and g + 8 at k = k0 + 16t + {0…7, 8…15} with 16-byte
// L1-cached loads (rows ≥ M, and chunks of a partial last stage past K, read as zero).
struct XFrag { U4 v[2][2]; };   // [row g / g + 8][16-byte half]
__device__ __forceinline__ void load_x(XFrag& f, const kiln::bf16* __restrict__ x, int K, int M, int k0, int g, int t) {
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int h = 0; h < 2; ++h)
            f.v[r][h] = g + 8 * r < M && k0 < K ? ld_nc(x + (long long)(g + 8 * r) * K + k0 + 16 * t + 8 * h) : U4{0, 0, 0, 0};
}

// The end of a block: the CW consumer warps' partial sums added in warp order through shared memory (bitwise
// reproducible), then warp 0 stores. Accumulator c[tile][i]: token g + 8·(i ≥ 2), weight row row0 + 8·tile + 2t + (i & 1).
// epi: bf16: Y bf16 [M, N]; f32: Y fp32 [M, N]; swiglu: Y bf16 [M, N/2] for gate/up rows interleaved per 16-row tile (tiles 2j and
// 2j + 1 of 8 rows are gate and up; gate and up rounded to bf16 first, as gemm_splitk's store_out).
template <int NB, int CW>
__device__ __forceinline__ void finish(float (&c)[NB / 8][4], float (*partial)[NB / 8][4][32], void* __restrict__ y, int row0,
                                       int M, int N, Epilogue epi) {
    constexpr int NTILE = NB / 8;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
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
#pragma unroll
    for (int tile = 0; tile < NTILE; ++tile)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int m = g + 8 * (i >> 1), j = 2 * t + (i & 1), r = row0 + 8 * tile + j;
            if (m >= M) continue;
            if (epi == Epilogue::swiglu) {
                if (tile % 2 == 0 && r < N) {   // gate row (tile) and its up row (tile + 1): same lane, same i
                    ((kiln::bf16*)y)[(long long)m * (N >> 1) + ((row0 + 8 * tile) >> 1) + j] = swiglu_bf16(c[tile][i], c[tile + 1][i]);
                }
            } else if (r < N) {
                if (epi == Epilogue::f32) ((float*)y)[(long long)m * N + r] = c[tile][i];
                else ((kiln::bf16*)y)[(long long)m * N + r] = f32_to_bf16(c[tile][i]);
            }
        }
}

// The mmas of one 16-byte half h of one 64-k chunk of a stage: X rows g and g + 8 (xa, xb) against the chunk's NB
// weight rows at `wc` (lane t reads 16-byte chunk 2t + h of rows 16p + g and 16p + 8 + g).
template <int NB>
__device__ __forceinline__ void chunk_mmas(float (&c)[NB / 8][4], u32 wc, const U4& xa, const U4& xb, int g, int t, int h) {
#pragma unroll
    for (int p = 0; p < NB / 16; ++p) {
        const U4 w0 = lds128(wc + swz(16 * p + g, 2 * t + h)), w1 = lds128(wc + swz(16 * p + 8 + g, 2 * t + h));
        mma16816(c[2 * p], xa.x, xb.x, xa.y, xb.y, w0.x, w0.y);
        mma16816(c[2 * p + 1], xa.x, xb.x, xa.y, xb.y, w1.x, w1.y);
        mma16816(c[2 * p], xa.z, xb.z, xa.w, xb.w, w0.z, w0.w);
        mma16816(c[2 * p + 1], xa.z, xb.z, xa.w, xb.w, w1.z, w1.w);
    }
}

// Consumer warp: whole stages in turn, X for its next stage loaded into registers during the current one.
// mma.m16n8k16 with A = X (16 tokens × 16 k) and B = W (16 k × 8 rows). A dot product may visit k in any order as
// long as A and B agree, so lane t's k slots {2t, 2t+1, 2t+8, 2t+9} are the physical k = base + {0, 1, 2, 3} of a
// 16-byte load: one LDS.128 of a weight row and one 16-byte X load feed two mmas. Lane t reads 16-byte chunks 2t
// and 2t + 1 of each 128-byte weight row: with the 128B swizzle the 8 lanes of a shared-memory phase (rows g, g+1 ×
// t = 0…3) hit 8 distinct bank groups.
template <int NB, int KB, int WS, int CW>
__device__ __forceinline__ void consume(u32 wbase, u64* wfull, u64* wempty, float (*partial)[NB / 8][4][32],
                                        const kiln::bf16* __restrict__ x, void* __restrict__ y, int row0, int nkb, int M, int N, int K, Epilogue epi) {
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
        const int ws = warp + CW * (j % (WS / CW));   // this warp's own slots
        mbar_wait(smem_u32(&wfull[ws]), (j / (WS / CW)) & 1);
        const u32 wt = wbase + ws * W_BYTES;
#pragma unroll
        for (int r = 0; r < KB; ++r) {
            const u32 wc = wt + r * CHUNK_W;
#pragma unroll
            for (int h = 0; h < 2; ++h) chunk_mmas<NB>(c, wc, cur[r].v[0][h], cur[r].v[1][h], g, t, h);
        }
        // Generic-proxy reads of the slot before the async-proxy refill (see the header).
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        __syncwarp();
        if (lane == 0) mbar_arrive(smem_u32(&wempty[ws]));
    }
    finish<NB, CW>(c, partial, y, row0, M, N, epi);
}

template <int NB, int KB, int WS, int CW>
__device__ __forceinline__ void gemm_stream(const KilnTensorMap* tmw, const kiln::bf16* __restrict__ x, void* __restrict__ y,
                                            int M, int N, int K, Epilogue epi) {
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
    if (warp == CW) {   // producer: one elected lane issues one 3-D box {64, NB, KB} per stage
        if (lane != 0) { kiln_attn::pdl_wait_then_trigger(); return; }
        tma_prefetch_desc(tmw);
        const int early = nkb < WS ? nkb : WS;   // the ring's first fill goes out before the PDL wait
        for (int kb = 0; kb < nkb; ++kb) {
            if (kb == early) kiln_attn::pdl_wait_then_trigger();
            // Stage kb goes to consumer warp kb % CW, in that warp's slot kb % CW + CW·(j mod WS/CW), j = kb / CW.
            const int j = kb / CW, s = kb % CW + CW * (j % (WS / CW));
            mbar_wait(smem_u32(&wempty[s]), ((j / (WS / CW)) & 1) ^ 1);
            mbar_arrive_expect_tx(smem_u32(&wfull[s]), W_BYTES);
            tma_load_3d(wbase + s * W_BYTES, tmw, smem_u32(&wfull[s]), 0, row0, kb * KB);
        }
        if (early == nkb) kiln_attn::pdl_wait_then_trigger();
        return;
    }
    kiln_attn::pdl_wait_then_trigger();
    consume<NB, KB, WS, CW>(wbase, wfull, wempty, partial, x, y, row0, nkb, M, N, K, epi);
}

}  // namespace kiln_gemm_stream

// X(NB, KB, WS, CW): NB weight rows per block, KB 64-k chunks per ring stage, WS ring slots, CW consumer warps.
// From the bench/gemm_stream sweeps on the H200 (perf-notes-gemm.md v8): 16_2_16_8 best on o and down at M = 16,
// 16_1_24_8 on qkv (70 registers: three blocks per SM, qkv's 384 blocks in one wave).
#define KILN_GEMM_STREAM_INSTANCES(X) X(16, 2, 16, 8) X(16, 2, 8, 4) X(16, 1, 16, 8) X(16, 1, 24, 8)

#define KILN_GEMM_STREAM_NAME(NB, KB, WS, CW) kiln_gemm_stream_nb##NB##_kb##KB##_ws##WS##_cw##CW
#define KILN_GEMM_STREAM_DEFINE(NB, KB, WS, CW)                                                                     \
    extern "C" __global__ void __launch_bounds__(KILN_GEMM_STREAM_THREADS(CW)) KILN_GEMM_STREAM_NAME(NB, KB, WS, CW)( \
        const __grid_constant__ KilnTensorMap tmw, const kiln::bf16* __restrict__ x, void* __restrict__ y, int M, int N, \
        int K, kiln::Epilogue epi) {                                                                                 \
        kiln_gemm_stream::gemm_stream<NB, KB, WS, CW>(&tmw, x, y, M, N, K, epi);                                     \
    }

KILN_GEMM_STREAM_INSTANCES(KILN_GEMM_STREAM_DEFINE)
