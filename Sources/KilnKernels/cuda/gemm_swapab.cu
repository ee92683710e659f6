// gemm_swapab.cu — decode GEMM Y[M,N] = X[M,K] · W[N,K]^T for 1 ≤ M ≤ MT on Hopper (sm_90a) with the operands
// swapped: the weights are the wgmma A operand (64 rows per instruction) and the tokens its N (8 or 16), both read by
// the tensor cores straight from a TMA ring in shared memory. bf16 in, fp32 accumulation, bf16 / fp32 / SwiGLU out
// (the same `epi` values, kiln::Epilogue, and output layouts as gemm_splitk.cu and gemm_stream.cu).
//
// Why a third decode GEMM: in gemm_stream every weight byte goes TMA → shared → registers → mma.sync, and at M = 16 on
// o (4096×4096) that consumer work keeps it at ~80% of copy bandwidth. Here a 64 × 16 fp32 accumulator is 8 registers
// per thread and the consumer warp group only waits on a barrier and issues wgmmas (docs/perf-notes-gemm.md v9, v10).
//
// Work decomposition: each 64-row tile is shared by SK CTAs (the launch's split; blocks SK·t … SK·t + SK − 1), a
// lead (rank 0) and SK − 1 helpers, which split its K stages unevenly: the lead takes LEAD/32 of them (lead_stages),
// the helpers share the rest. grid = SK · ceil(N / 64); the launcher keeps it within one wave of co-resident CTAs.
// Why uneven: helpers that finish early publish their fp32 partials long before the lead runs dry, so the reduction
// costs the lead one barrier wait instead of three dependent L2 round trips after its last weight byte, and the
// helpers' SMs are free early for the next kernel's CTAs (PDL) to fill their rings. On o at M = 16 (H200, one CTA
// per SM, SK = 2): even halves 11.2 µs, LEAD = 22 (≈ 69%) 9.41 µs (docs/perf-notes-gemm.md v10).
//  * A helper stores its partial to `ws` (64 · MT floats), then one red.release on the tile's counter, and exits.
//    The lead's producer warp, once it has issued its last TMA, polls the counter (relaxed, with back-off), acquires
//    it, adds the helpers' partials in rank order into shared memory and arrives on a barrier; the consumers add that
//    after their last wgmma and store. The order of the additions is fixed: bitwise reproducible. The lead resets the
//    counter. Waiting on CTAs of the same grid is safe because the grid fits in one wave of co-resident CTAs and a
//    helper waits on nothing but the previous kernel (griddepcontrol.wait).
//  * Ring (wg_ring.cuh): S stages of [W box {64, 64, KB} | X box {64, MT, KB}] (3-D views {64, rows, K/64}, 128B
//    swizzle), a full barrier (TMA bytes) and an empty barrier per stage. PDL: the W boxes of the first fill go out
//    before griddepcontrol.wait (weights never depend on the previous kernel), their X boxes after it; everything
//    that touches y, ws or the counters waits first.
//
// Requirements (the launcher checks them): K % 64 == 0; x, W 16-byte aligned; M ≤ MT; SwiGLU: N % 16 == 0; SK ≥ 1;
// with SK > 1: ws ≥ ceil(N / 64) · (SK − 1) · 64 · MT floats, cnt ≥ ceil(N / 64) zeroed u32 (left zero), grid ≤
// co-resident CTAs. Rows past N and tokens past M are zero-filled by TMA and never stored.
//
// Entry points: one extern "C" kernel per row of KILN_GEMM_SWAPAB_INSTANCES, named
//   kiln_gemm_swapab_mt{MT}_kb{KB}_s{S}_l{LEAD}(const KilnTensorMap tmw /* W {64, N, K/64}, box {64, 64, KB} */,
//       const KilnTensorMap tmx /* X {64, M, K/64}, box {64, MT, KB} */, void* y, float* ws, unsigned* cnt,
//       int M, int N, int K, int SK, kiln::Epilogue epi)
//   grid = SK · ceil(N / 64); block = KILN_GEMM_SWAPAB_THREADS (warp group 0 consumes, warp 4 produces);
//   dynamic shared memory = KILN_GEMM_SWAPAB_SMEM(MT, KB, S) bytes.

#include "kiln.cuh"
#include "attention_util.cuh"
#include "hopper_util.cuh"
#include "wg_ring.cuh"

#define KILN_GEMM_SWAPAB_SMEM(MT, KB, S) ((S) * (KB) * (64 + (MT)) * 128 + 1024)
#define KILN_GEMM_SWAPAB_THREADS 160

namespace kiln_gemm_swapab {

using namespace kiln_hopper;
using kiln::Epilogue;
using kiln_attn::f32_to_bf16;
using kiln_attn::swiglu_bf16;

__device__ __forceinline__ void red_release_add(unsigned* p, unsigned v) {
    asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ unsigned ld_relaxed(const unsigned* p) {
    unsigned v;
    asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void consumers_sync() { asm volatile("bar.sync 1, 128;" ::: "memory"); }

// The lead's share of a tile's C stages: all of them when SK = 1, else round(C · LEAD / 32), at most C − (SK − 1)
// (one stage left for each helper) and at least one (a helper left without stages publishes zeros).
__host__ __device__ __forceinline__ int lead_stages(int C, int lead, int SK) {
    if (SK <= 1) return C;
    int n0 = (C * lead + 16) / 32;
    if (n0 > C - (SK - 1)) n0 = C - (SK - 1);
    return n0 < 1 ? (C < 1 ? C : 1) : n0;
}

// Stores a finished 64 × MT tile. Accumulator d[4j + q] of thread (warp w, lane l): weight row (output column)
// 64·tile + 16w + l/4 + 8·(q ≥ 2), token 8j + 2(l % 4) + (q & 1).
// epi: bf16: Y bf16 [M, N]; f32: Y fp32 [M, N]; swiglu: Y bf16 [M, N/2] with gate/up rows interleaved per 16 (rows 16p…16p+7
// gate, 16p+8…16p+15 up: the same thread's q and q + 2), gate and up rounded to bf16 first (as gemm_splitk).
template <int MT>
__device__ __forceinline__ void store_tile(const float (&d)[MT / 2], void* __restrict__ y, int tile, int M, int N, Epilogue epi) {
    const int w = threadIdx.x / 32, l = threadIdx.x % 32;
    const int r0 = 64 * tile + 16 * w + l / 4;
#pragma unroll
    for (int j = 0; j < MT / 8; ++j)
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const int m = 8 * j + 2 * (l % 4) + (q & 1), r = r0 + 8 * (q >> 1);
            if (m >= M) continue;
            if (epi == Epilogue::swiglu) {
                if (q < 2 && r < N) ((kiln::bf16*)y)[(long long)m * (N >> 1) + 32 * tile + 8 * w + l / 4] = swiglu_bf16(d[4 * j + q], d[4 * j + q + 2]);
            } else if (r < N) {
                if (epi == Epilogue::f32) ((float*)y)[(long long)m * N + r] = d[4 * j + q];
                else ((kiln::bf16*)y)[(long long)m * N + r] = f32_to_bf16(d[4 * j + q]);
            }
        }
}

// The lead's producer warp, after its last TMA: waits for the SK − 1 helpers' partials and adds them in rank order
// into psum (consumer thread t's register r at psum[128r + t]), then arrives on `summed` (count 32) and resets the
// counter.
template <int R>
__device__ __forceinline__ void fetch_helper_partials(const float* __restrict__ part, unsigned* __restrict__ cnt, int SK, float* psum,
                                                      u64* summed) {
    const int lane = threadIdx.x % 32;
    __syncwarp();
    if (lane == 0)
        while (ld_relaxed(cnt) != (unsigned)(SK - 1)) __nanosleep(128);
    __syncwarp();
    (void)ld_acquire(cnt);   // every lane: the partials published before the count are visible
    const float4* p4 = reinterpret_cast<const float4*>(part);
    float4 acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = __ldcg(p4 + r * 32 + lane);
    for (int q = 1; q < SK - 1; ++q)
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const float4 v = __ldcg(p4 + (q * R + r) * 32 + lane);
            acc[r].x += v.x; acc[r].y += v.y; acc[r].z += v.z; acc[r].w += v.w;
        }
#pragma unroll
    for (int r = 0; r < R; ++r) reinterpret_cast<float4*>(psum)[r * 32 + lane] = acc[r];
    __syncwarp();
    if (lane == 0) *cnt = 0u;   // the next launch touches it only after its griddepcontrol.wait
    mbar_arrive(smem_u32(summed));
}

template <int MT, int KB, int S, int LEAD>
__device__ __forceinline__ void gemm_swapab(const KilnTensorMap* tmw, const KilnTensorMap* tmx, void* __restrict__ y,
                                            float* __restrict__ ws, unsigned* __restrict__ cnt, int M, int N, int K, int SK, Epilogue epi) {
    using RG = kiln_wg_ring::Ring<MT, 64, KB, S>;
    constexpr int R = MT / 2;   // accumulator registers per consumer thread
    static_assert(LEAD >= 8 && LEAD < 32, "LEAD: the lead's share of the stages, in 32nds");
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    __shared__ __align__(8) u64 full[S], empty[S], summed;
    __shared__ __align__(16) float psum[R * 128];   // the helpers' partials, summed by the lead's producer warp
    const u32 base = (smem_u32(smem_raw) + 1023) & ~1023u;
    // SK stays a launch parameter: with SK a compile-time 2 the same kernel measured 0.3 µs slower on o (v10).
    const int tile = blockIdx.x / SK, rank = blockIdx.x % SK;
    const int C = (K / 64 + KB - 1) / KB, n0 = lead_stages(C, LEAD, SK);
    const int c0 = rank == 0 ? 0 : n0 + (rank - 1) * (C - n0) / (SK - 1);
    const int n = rank == 0 ? n0 : n0 + rank * (C - n0) / (SK - 1) - c0;
    float* part = ws + (long long)tile * (SK - 1) * R * 128;   // helper q's partial at part + (q − 1)·R·128
    if (threadIdx.x == 0) { RG::init(full, empty); mbar_init(smem_u32(&summed), 32); }
    __syncthreads();
    if (threadIdx.x >= 128) {   // producer warp: one lane issues a W box and an X box per stage
        if (threadIdx.x == 128) RG::produce(base, full, empty, tmw, tmx, tile * 64, c0, n);
        else kiln_attn::pdl_wait_then_trigger();
        if (rank == 0 && SK > 1) fetch_helper_partials<R>(part, cnt + tile, SK, psum, &summed);
        return;
    }
    kiln_attn::pdl_wait_then_trigger();
    const int tid = threadIdx.x;
    float d[R];
    RG::consume(d, base, full, empty, n, [](float (&acc)[R], u32 w, u32 x, int keep) {
        kiln_wg_ring::wgmma_n<MT>(acc, sw128_desc(w, 16, 1024), sw128_desc(x, 16, 1024), keep);   // W as A, tokens as N
    });
    if (rank > 0) {   // publish and leave
#pragma unroll
        for (int r = 0; r < R; ++r) __stcg(part + ((long long)(rank - 1) * R + r) * 128 + tid, d[r]);
        consumers_sync();
        if (tid == 0) red_release_add(cnt + tile, 1u);
        return;
    }
    if (SK > 1) {
        mbar_wait(smem_u32(&summed), 0);
#pragma unroll
        for (int r = 0; r < R; ++r) d[r] += psum[r * 128 + tid];
    }
    store_tile<MT>(d, y, tile, M, N, epi);
}

}  // namespace kiln_gemm_swapab

// X(MT, KB, S, LEAD): MT tokens per wgmma (M ≤ MT), KB 64-k chunks per stage, S ring stages (one CTA per SM), the
// lead's share of the stages in 32nds. On the H200 (o, M = 16, v10): LEAD 22 best, 20 and 24 0.3–0.6 µs slower;
// kb4 with 5 stages level with kb2 with 11.
#define KILN_GEMM_SWAPAB_INSTANCES(X) X(16, 2, 11, 22) X(16, 2, 11, 21) X(16, 2, 11, 23) X(16, 4, 5, 22) X(8, 2, 12, 23)

#define KILN_GEMM_SWAPAB_NAME(MT, KB, S, LEAD) kiln_gemm_swapab_mt##MT##_kb##KB##_s##S##_l##LEAD
#define KILN_GEMM_SWAPAB_DEFINE(MT, KB, S, LEAD)                                                                    \
    extern "C" __global__ void __launch_bounds__(KILN_GEMM_SWAPAB_THREADS) KILN_GEMM_SWAPAB_NAME(MT, KB, S, LEAD)(   \
        const __grid_constant__ KilnTensorMap tmw, const __grid_constant__ KilnTensorMap tmx, void* __restrict__ y,   \
        float* __restrict__ ws, unsigned* __restrict__ cnt, int M, int N, int K, int SK, kiln::Epilogue epi) {      \
        kiln_gemm_swapab::gemm_swapab<MT, KB, S, LEAD>(&tmw, &tmx, y, ws, cnt, M, N, K, SK, epi);                    \
    }

KILN_GEMM_SWAPAB_INSTANCES(KILN_GEMM_SWAPAB_DEFINE)
