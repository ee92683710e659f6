// hopper_gemm.cuh — the skeleton the persistent warp-specialized Hopper prefill GEMMs share: gemm_hopper.cu (bf16) and
// gemm_fp8_hopper.cu (e4m3 with block scales, written from it). One definition of the parts that must not drift apart:
// the wgmma accumulator operand lists, the stage ring's mbarriers and their release, the register split between the
// producer and the consumer warp groups, the grouped persistent tile schedule, the producer's TMA loop and the bf16
// epilogue of an m64nBN accumulator. What differs (operand type, k block width, the consumers' main loop) stays in the
// kernels. Inline PTX only (NVRTC, no CUDA headers).
#pragma once
#include "attention_util.cuh"   // kiln_attn::pack_bf16x2
#include "hopper_util.cuh"

// ---- wgmma accumulator operands ------------------------------------------------------------------
// An m64nN f32 accumulator is N/2 registers per thread, bound to the asm in order: operands %0 … %(N/2 - 1) are
// d[0] … d[N/2 - 1]. KILN_WGMMA_D32(d, i) binds d[i] … d[i + 31]; KILN_WGMMA_R<first>_<last> names those operands in the
// instruction's register list, 32 at a time (concatenate with ", ").
#define KILN_WGMMA_D8(d, i) \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define KILN_WGMMA_D32(d, i) KILN_WGMMA_D8(d, i), KILN_WGMMA_D8(d, i + 8), KILN_WGMMA_D8(d, i + 16), KILN_WGMMA_D8(d, i + 24)
#define KILN_WGMMA_R0_31 \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "           \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define KILN_WGMMA_R32_63 \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define KILN_WGMMA_R64_95 \
    "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
    "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95"
#define KILN_WGMMA_R96_127 \
    "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
    "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"

namespace kiln_hopper_gemm {

using namespace kiln_hopper;
using kiln::bf16;

// ---- the stage ring ------------------------------------------------------------------------------
// Thread 0 initializes each stage's "full" barrier (one arrive: the producer's expect_tx; TMA completes the bytes) and
// "empty" barrier (one arrive per consumer warp of every CTA of the cluster, CL * CONS * 4); then the CTA (the cluster
// with CL > 1, whose peers arrive on these barriers) waits until they are visible.
template <int STAGES, int CONS, int CL>
__device__ __forceinline__ void init_ring(u64* full_bar, u64* empty_bar) {
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) {
            mbar_init(smem_u32(&full_bar[s]), 1);
            mbar_init(smem_u32(&empty_bar[s]), CL * CONS * 4);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    }
    if (CL > 1) cluster_sync(); else __syncthreads();
}

// A consumer warp has read a stage: one arrive on its empty barrier in every CTA of the cluster (each CTA's producer
// multicast its part of the stage's W into both).
template <int CL> __device__ __forceinline__ void release(u32 empty) {
    if (CL == 1) mbar_arrive(empty);
    else for (u32 c = 0; c < CL; ++c) mbar_arrive_cluster(empty, c);
}

// After a wgmma wait: reads of acc stay below it (a compiler-level fence per register).
template <int R> __device__ __forceinline__ void fence_all(float (&acc)[R]) {
#pragma unroll
    for (int i = 0; i < R; ++i) reg_fence(acc[i]);
}

// setmaxnreg: the producer warp group (one issuing thread) drops to 40 registers per thread, the consumer warp groups
// rise to 240 (one consumer group) or 232 (two: 128 · (40 + 2 · 232) registers fit the SM's 64 K).
__device__ __forceinline__ void producer_registers() { asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory"); }
template <int CONS> __device__ __forceinline__ void consumer_registers() {
    if (CONS == 1) asm volatile("setmaxnreg.inc.sync.aligned.u32 240;\n" ::: "memory");
    else           asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
}

// ---- the persistent tile schedule ------------------------------------------------------------------
// Work items are tiles of CL * BM rows × BN columns (CL = 2: a pair of M tiles, one per CTA of the cluster); CTA (pair)
// b of the grid takes items b, b + grid, … in a grouped raster: GROUP_M M tiles per group, N walked inside the group,
// M fastest. CTA rank r of a cluster takes M tile CL * tm + r of item (tm, tn), possibly entirely past M: it still loads
// and multicasts its part of W, its X box is zero-filled and it stores nothing.
template <int BM_, int BN_, int CL_, int GROUP_M_>
struct TileSchedule {
    // Enumerators, not static constexpr members: under -default-device those are emitted as device globals.
    enum : int { BM = BM_, BN = BN_, CL = CL_, GROUP_M = GROUP_M_ };
    static_assert(CL == 1 || CL == 2, "cluster of 1 or 2 CTAs");
    static_assert(GROUP_M >= 1, "GROUP_M: M tiles per raster group");
    int tiles_m, tiles_n, tiles;   // items: ceil(M / (CL * BM)) × ceil(N / BN)
    int first, stride;             // this CTA's first item and the step to its next (the grid's CTAs, in clusters)

    __device__ __forceinline__ TileSchedule(int M, int N)
        : tiles_m((M + CL * BM - 1) / (CL * BM)), tiles_n((N + BN - 1) / BN), tiles(tiles_m * tiles_n),
          first(blockIdx.x / CL), stride(gridDim.x / CL) {}

    // Item t -> (tm, tn): the pair of M tiles (CL = 2) or the M tile, and the N tile.
    __device__ __forceinline__ void coords(int t, int& tm, int& tn) const {
        const int per_group = GROUP_M * tiles_n;
        const int g = t / per_group;
        const int first_m = g * GROUP_M;
        const int gsize = min(tiles_m - first_m, GROUP_M);
        const int r = t - g * per_group;
        tm = first_m + r % gsize;
        tn = r / gsize;
    }
};

// ---- the producer --------------------------------------------------------------------------------
// The producer thread's loop over this CTA's items: per k block of BK elements, wait until the stage is empty, expect
// its bytes on the full barrier and load the X box [BM rows × BK] and the W box [BN / CL rows × BK] (CL = 2: this CTA's
// part of W, multicast to both CTAs of the pair). A stage is the X tile (A_BYTES) followed by the W tile (B_BYTES);
// `ring` is 1024-aligned (whole 128B swizzle atoms). rank: this CTA's rank in its cluster (0 with CL = 1).
template <int BK, int STAGES, u32 A_BYTES, u32 B_BYTES, class Schedule>
__device__ __forceinline__ void produce(const Schedule& sched, u32 rank, const KilnTensorMap* tmx, const KilnTensorMap* tmw,
                                        u64* full_bar, u64* empty_bar, u32 ring, int kblocks) {
    constexpr int BM = Schedule::BM, BN = Schedule::BN, CL = Schedule::CL;
    constexpr u32 STAGE_BYTES = A_BYTES + B_BYTES;
    constexpr u32 B_PART = B_BYTES / CL;   // W rows loaded (and multicast) by each CTA of the pair
    tma_prefetch_desc(tmx);
    tma_prefetch_desc(tmw);
    int stage = 0;
    u32 phase = 0;
    for (int t = sched.first; t < sched.tiles; t += sched.stride) {
        int tm, tn;
        sched.coords(t, tm, tn);
        const int m0 = (tm * CL + rank) * BM, n0 = tn * BN;
        for (int kb = 0; kb < kblocks; ++kb) {
            mbar_wait(smem_u32(&empty_bar[stage]), phase ^ 1);
            const u32 fb = smem_u32(&full_bar[stage]);
            mbar_arrive_expect_tx(fb, STAGE_BYTES);
            const u32 sa = ring + stage * STAGE_BYTES;
            tma_load_2d(sa, tmx, fb, kb * BK, m0);
            if (CL == 1) tma_load_2d(sa + A_BYTES, tmw, fb, kb * BK, n0);
            else tma_load_2d_mc(sa + A_BYTES + rank * B_PART, tmw, fb, kb * BK, n0 + rank * (BN / CL),
                                (unsigned short)((1u << CL) - 1));
            if (++stage == STAGES) { stage = 0; phase ^= 1; }
        }
    }
}

// ---- the epilogue --------------------------------------------------------------------------------
// One output pair of the epilogue: bf16 as one 4-byte word (rounded to nearest even), f32 as one 8-byte word.
__device__ __forceinline__ void store_pair(bf16* p, float v0, float v1) { *reinterpret_cast<u32*>(p) = kiln_attn::pack_bf16x2(v0, v1); }
__device__ __forceinline__ void store_pair(float* p, float v0, float v1) { *reinterpret_cast<float2*>(p) = make_float2(v0, v1); }
__device__ __forceinline__ void store_one(bf16* p, float v) { *p = kiln::from_float<bf16>(v); }
__device__ __forceinline__ void store_one(float* p, float v) { *p = v; }

// Stores one consumer warp's m64nBN accumulator v to Y [M, N] (row stride N) of bf16 (prefill) or f32 (the logits).
// Fragment (j, r) of the lane is row row0 + 8·(r/2), column col0 + 8j + r%2, where row0 = the warp's first row +
// lane/4 and col0 = the tile's first column + 2·(lane%4). Rows ≥ M and columns ≥ N are skipped; pairs go out as one
// word when N is even (the row starts, and so every even column, aligned to the pair), element by element otherwise.
template <int BN, class OutT>
__device__ __forceinline__ void store_tile(const float (&v)[BN / 2], OutT* __restrict__ y, int row0, int col0, int M, int N) {
    const bool even_n = (N & 1) == 0;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int row = row0 + 8 * h;
        if (row < M) {
            OutT* yr = y + (size_t)row * N;
#pragma unroll
            for (int j = 0; j < BN / 8; ++j) {
                const int col = col0 + 8 * j;
                const float v0 = v[4 * j + 2 * h], v1 = v[4 * j + 2 * h + 1];
                if (even_n && col + 1 < N) {
                    store_pair(yr + col, v0, v1);
                } else {
                    if (col < N) store_one(yr + col, v0);
                    if (col + 1 < N) store_one(yr + col + 1, v1);
                }
            }
        }
    }
}

}  // namespace kiln_hopper_gemm
