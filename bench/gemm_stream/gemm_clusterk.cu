// bench/gemm_stream/gemm_clusterk.cu — PROTOTYPE, harness only (perf-notes-gemm.md v9). gemm_swapab.cu's layout (W as
// the wgmma A operand, 64-row tiles, tokens as N, TMA ring) with K split over the SK CTAs of a thread-block cluster:
// every rank leaves its fp32 partials in its own drained ring, a cluster barrier publishes them, rank 0 adds ranks
// 1…SK-1 in order through distributed shared memory (ld.shared::cluster) and stores. No global scratch, no counters.
// grid = ceil(N / 64) · SK, __cluster_dims__(SK, 1, 1); block = 160 (warp group 0 consumes, warp 4 produces).
#include "attention_util.cuh"
#include "hopper_util.cuh"

#define KILN_GEMM_CLUSTERK_SMEM(MT, KB, S) ((S) * (KB) * (64 + (MT)) * 128 + 1024)
#define KILN_GEMM_CLUSTERK_THREADS 160

namespace kiln_gemm_clusterk {

using namespace kiln_hopper;
using kiln_gemm_swapab::store_tile;

__device__ __forceinline__ float ld_cluster_f32(u32 local_addr, u32 rank) {
    u32 remote;
    float v;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local_addr), "r"(rank));
    asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(remote) : "memory");
    return v;
}

template <int MT, int KB, int S, int SK>
__device__ __forceinline__ void gemm_clusterk(const KilnTensorMap* tmw, const KilnTensorMap* tmx, void* __restrict__ y,
                                              int M, int N, int K, int epi) {
    using RG = kiln_wg_ring::Ring<MT, 64, KB, S>;
    constexpr int R = MT / 2;
    static_assert(R * 128 * 4 <= RG::STAGE, "the partial sums reuse the first ring stage");
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    __shared__ __align__(8) u64 full[S], empty[S];
    const u32 base = (smem_u32(smem_raw) + 1023) & ~1023u;
    const int tile = blockIdx.x / SK, rank = blockIdx.x % SK;   // consecutive blocks form a cluster
    const int C = (K / 64 + KB - 1) / KB, c0 = rank * C / SK, n = (rank + 1) * C / SK - c0;
    if (threadIdx.x == 0) RG::init(full, empty);
    __syncthreads();
    float d[R];
    if (threadIdx.x >= 128) {   // producer warp; every thread stays for the cluster barriers
        if (threadIdx.x == 128) RG::produce(base, full, empty, tmw, tmx, tile * 64, c0, n);
        else kiln_attn::pdl_wait_then_trigger();
        __syncwarp();
    } else {
        kiln_attn::pdl_wait_then_trigger();
        RG::consume(d, base, full, empty, n, [](float (&acc)[R], u32 w, u32 x, int keep) {
            kiln_wg_ring::wgmma_n<MT>(acc, sw128_desc(w, 16, 1024), sw128_desc(x, 16, 1024), keep);
        });
        if (SK > 1) {
            asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
            float* part = reinterpret_cast<float*>(smem_raw + (base - smem_u32(smem_raw)));
#pragma unroll
            for (int r = 0; r < R; ++r) part[r * 128 + threadIdx.x] = d[r];
        }
    }
    if (SK == 1) {
        if (threadIdx.x < 128) store_tile<MT>(d, y, tile, M, N, epi);
        return;
    }
    cluster_sync();   // every rank's partials are in its shared memory
    if (rank == 0 && threadIdx.x < 128)
        for (int q = 1; q < SK; ++q)
#pragma unroll
            for (int r = 0; r < R; ++r) d[r] += ld_cluster_f32(base + (u32)(r * 128 + threadIdx.x) * 4, (u32)q);
    cluster_sync();   // rank 0 has read them: the other ranks may exit
    if (rank == 0 && threadIdx.x < 128) store_tile<MT>(d, y, tile, M, N, epi);
}

}  // namespace kiln_gemm_clusterk

// X(MT, KB, S, SK). 16_2_11_2: one CTA per SM with a 220 KB ring; the others fit two (16_2_3_4: three) per SM.
#define KILN_GEMM_CLUSTERK_INSTANCES(X) X(16, 2, 5, 4) X(16, 2, 4, 4) X(16, 2, 3, 4) X(16, 2, 5, 2) X(16, 2, 11, 2) X(16, 2, 8, 2)
#define KILN_GEMM_CLUSTERK_NAME(MT, KB, S, SK) kiln_gemm_clusterk_mt##MT##_kb##KB##_s##S##_c##SK
#define KILN_GEMM_CLUSTERK_DEFINE(MT, KB, S, SK)                                                                    \
    extern "C" __global__ void __launch_bounds__(KILN_GEMM_CLUSTERK_THREADS) __cluster_dims__(SK, 1, 1)               \
        KILN_GEMM_CLUSTERK_NAME(MT, KB, S, SK)(const __grid_constant__ KilnTensorMap tmw,                            \
                                               const __grid_constant__ KilnTensorMap tmx, void* __restrict__ y, int M, \
                                               int N, int K, int epi) {                                              \
        kiln_gemm_clusterk::gemm_clusterk<MT, KB, S, SK>(&tmw, &tmx, y, M, N, K, epi);                               \
    }
KILN_GEMM_CLUSTERK_INSTANCES(KILN_GEMM_CLUSTERK_DEFINE)
