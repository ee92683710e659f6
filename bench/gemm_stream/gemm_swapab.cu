// bench/gemm_stream/gemm_swapab.cu — PROTOTYPE, harness only (perf-notes-gemm.md v9: lost to gemm_stream). Decode GEMM Y[M,N] = X[M,K] · W[N,K]^T for 1 ≤ M ≤ 16 on Hopper (sm_90a) with the operands
// swapped: the weights are the wgmma A operand (64 rows per instruction) and the tokens its N (8 or 16), both read by
// the tensor cores straight from a TMA ring in shared memory; K is split over SK CTAs per 64-row tile. bf16 in, fp32
// accumulation, bf16 / fp32 / SwiGLU out (the same `epi` values and output layouts as gemm_splitk.cu, gemm_stream.cu).
//
// Why a third decode GEMM: in gemm_stream every weight byte goes TMA → shared → registers (ld.shared) → mma.sync and
// X is reloaded per stage; at M = 16 on o (4096×4096) that consumer side costs 1.3 µs over the 9.25 µs of data
// movement alone (docs/perf-notes-gemm.md v7, v8). Here a 64 × 16 fp32 accumulator is 8 registers per thread and the
// consumer warp group only waits on a barrier and issues 4·KB wgmmas per stage.
//
// Work decomposition: CTA b takes the 64-row tile b / SK and the k-range rank = b % SK of it (stages of KB 64-k
// chunks, C = ceil(K / 64KB) per tile, split as evenly as integers allow); grid = ceil(N / 64) · SK, SK ≥ 1 chosen
// by the launcher (the tuner's split).
//  * The split-K reduction stays off the critical path (perf-notes-gemm.md v9: a last-arriver reduction — partials,
//    fence, counter round trip, reload — cost 2.8 µs of serial tail on o, a cluster reduction co-residency): ranks
//    ≥ 1 write their fp32 partials to ws, publish them with one red.release on the tile's counter and exit at once,
//    freeing their slot for the next kernel's early fill; rank 0 (a fixed reducer) waits on the counter with
//    ld.acquire, adds ranks 1…SK-1 in order (bitwise reproducible), stores, and resets the counter to 0.
//    Rank 0 waits for CTAs of its own grid, so the launcher keeps the grid within one wave of co-resident CTAs
//    (SK = 1 has no wait): once the previous kernel has completed (griddepcontrol.wait), every CTA of this grid can
//    be resident, and the next kernel cannot take a slot before all of them have started (its launch waits on every
//    CTA's trigger).
//  * Ring: S stages of [W box {64, 64, KB} | X box {64, MT, KB}] (3-D views {64, rows, K/64}, 128B swizzle, one TMA
//    per operand per stage), a full barrier (TMA bytes) and an empty barrier (one arrive per consumer warp once
//    wgmma.wait_group has retired the stage's reads — async-proxy reads, so no proxy fence before the release).
//  * PDL: the producer issues the W boxes of the ring's first fill before griddepcontrol.wait (weights never depend
//    on the previous kernel) and their X boxes after it; the consumers wait before they touch y, ws or the counters.
//
// Requirements (the launcher checks them): K % 64 == 0; x, W 16-byte aligned; M ≤ MT; SwiGLU: N % 16 == 0; with
// SK > 1: ws ≥ grid · 64 · MT floats, cnt ≥ ceil(N / 64) zeroed u32 (left zero), grid ≤ co-resident CTAs.
// Rows past N and tokens past M are zero-filled by TMA and never stored.
//
// Entry points: one extern "C" kernel per row of KILN_GEMM_SWAPAB_INSTANCES, named
//   kiln_gemm_swapab_mt{MT}_kb{KB}_s{S}(const KilnTensorMap tmw /* W {64, N, K/64}, box {64, 64, KB} */,
//       const KilnTensorMap tmx /* X {64, M, K/64}, box {64, MT, KB} */, void* y, float* ws, unsigned* cnt,
//       int M, int N, int K, int SK, int epi)
//   grid = ceil(N / 64) · SK; block = KILN_GEMM_SWAPAB_THREADS threads (warp group 0 consumes, warp 4 produces);
//   dynamic shared memory = KILN_GEMM_SWAPAB_SMEM(MT, KB, S) bytes.

#include "attention_util.cuh"
#include "hopper_util.cuh"
#include "wg_ring.cuh"

#define KILN_GEMM_SWAPAB_SMEM(MT, KB, S) ((S) * (KB) * (64 + (MT)) * 128 + 1024)
#define KILN_GEMM_SWAPAB_THREADS 160

namespace kiln_gemm_swapab {

using namespace kiln_hopper;
using kiln_attn::f32_to_bf16;
using kiln_attn::bf16_to_f32;

__device__ __forceinline__ void red_release_add(unsigned* p, unsigned v) {
    asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void consumers_sync() { asm volatile("bar.sync 1, 128;" ::: "memory"); }

// Stores a finished 64 × MT tile. Accumulator d[4j + q] of thread (warp w, lane l): weight row (output column)
// 64·tile + 16w + l/4 + 8·(q ≥ 2), token 8j + 2(l % 4) + (q & 1).
// epi: 0 bf16 [M, N]; 1 fp32 [M, N]; 2 SwiGLU bf16 [M, N/2] with gate/up rows interleaved per 16 (rows 16p…16p+7
// gate, 16p+8…16p+15 up: the same thread's q and q + 2), gate and up rounded to bf16 first (as gemm_splitk).
template <int MT>
__device__ __forceinline__ void store_tile(const float (&d)[MT / 2], void* __restrict__ y, int tile, int M, int N, int epi) {
    const int w = threadIdx.x / 32, l = threadIdx.x % 32;
    const int r0 = 64 * tile + 16 * w + l / 4;
#pragma unroll
    for (int j = 0; j < MT / 8; ++j)
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const int m = 8 * j + 2 * (l % 4) + (q & 1), r = r0 + 8 * (q >> 1);
            if (m >= M) continue;
            if (epi == 2) {
                if (q < 2 && r < N) {
                    const float gv = bf16_to_f32(f32_to_bf16(d[4 * j + q])), uv = bf16_to_f32(f32_to_bf16(d[4 * j + q + 2]));
                    ((kiln_bf16*)y)[(long long)m * (N >> 1) + 32 * tile + 8 * w + l / 4] = f32_to_bf16(gv / (1.0f + expf(-gv)) * uv);
                }
            } else if (r < N) {
                if (epi == 1) ((float*)y)[(long long)m * N + r] = d[4 * j + q];
                else ((kiln_bf16*)y)[(long long)m * N + r] = f32_to_bf16(d[4 * j + q]);
            }
        }
}

template <int MT, int KB, int S>
__device__ __forceinline__ void gemm_swapab(const KilnTensorMap* tmw, const KilnTensorMap* tmx, void* __restrict__ y,
                                            float* __restrict__ ws, unsigned* __restrict__ cnt, int M, int N, int K, int SK, int epi) {
    using RG = kiln_wg_ring::Ring<MT, 64, KB, S>;
    constexpr int R = MT / 2;   // accumulator registers per consumer thread
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    __shared__ __align__(8) u64 full[S], empty[S];
    const u32 base = (smem_u32(smem_raw) + 1023) & ~1023u;
    const int tile = blockIdx.x / SK, rank = blockIdx.x % SK;
    const int C = (K / 64 + KB - 1) / KB, c0 = rank * C / SK, n = (rank + 1) * C / SK - c0;
    if (threadIdx.x == 0) RG::init(full, empty);
    __syncthreads();
    if (threadIdx.x >= 128) {   // producer warp: one lane issues a W box and an X box per stage
        if (threadIdx.x == 128) RG::produce(base, full, empty, tmw, tmx, tile * 64, c0, n);
        else kiln_attn::pdl_wait_then_trigger();
        return;
    }
    kiln_attn::pdl_wait_then_trigger();
    const int tid = threadIdx.x;
    float d[R];
    RG::consume(d, base, full, empty, n, [](float (&acc)[R], u32 w, u32 x, int keep) {
        kiln_wg_ring::wgmma_n<MT>(acc, sw128_desc(w, 16, 1024), sw128_desc(x, 16, 1024), keep);   // W as A, tokens as N
    });
    if (SK > 1) {
        float* part = ws + (long long)(tile * SK) * R * 128;   // rank q's partial at part + q·R·128 (rank 0 has none)
        if (rank > 0) {   // publish and leave
#pragma unroll
            for (int r = 0; r < R; ++r) __stcg(part + ((long long)rank * R + r) * 128 + tid, d[r]);
            consumers_sync();
            if (tid == 0) red_release_add(&cnt[tile], 1u);
            return;
        }
        if (tid == 0)
            while (ld_acquire(&cnt[tile]) != (unsigned)(SK - 1)) {}
        consumers_sync();
        for (int q = 1; q < SK; ++q)
#pragma unroll
            for (int r = 0; r < R; ++r) d[r] += __ldcg(part + ((long long)q * R + r) * 128 + tid);
        if (tid == 0) cnt[tile] = 0;
    }
    store_tile<MT>(d, y, tile, M, N, epi);
}

}  // namespace kiln_gemm_swapab

// X(MT, KB, S): MT tokens per wgmma (8: M ≤ 8, 16: M ≤ 16), KB 64-k chunks per stage, S ring stages. Shared memory
// fits two CTAs per SM (three for 16_2_3; one for 16_2_11, 16_4_5 and 8_2_12, the deep rings tried without split-K).
#define KILN_GEMM_SWAPAB_INSTANCES(X) X(16, 2, 5) X(16, 2, 4) X(16, 1, 10) X(16, 2, 3) X(8, 2, 6) X(8, 2, 5) X(16, 2, 11) X(16, 4, 5) X(8, 2, 12)

#define KILN_GEMM_SWAPAB_NAME(MT, KB, S) kiln_gemm_swapab_mt##MT##_kb##KB##_s##S
#define KILN_GEMM_SWAPAB_DEFINE(MT, KB, S)                                                                          \
    extern "C" __global__ void __launch_bounds__(KILN_GEMM_SWAPAB_THREADS) KILN_GEMM_SWAPAB_NAME(MT, KB, S)(          \
        const __grid_constant__ KilnTensorMap tmw, const __grid_constant__ KilnTensorMap tmx, void* __restrict__ y,   \
        float* __restrict__ ws, unsigned* __restrict__ cnt, int M, int N, int K, int SK, int epi) {                  \
        kiln_gemm_swapab::gemm_swapab<MT, KB, S>(&tmw, &tmx, y, ws, cnt, M, N, K, SK, epi);                          \
    }

KILN_GEMM_SWAPAB_INSTANCES(KILN_GEMM_SWAPAB_DEFINE)
