// wg_ring.cuh — the TMA ring of the wgmma decode GEMM gemm_swapab.cu. S stages of [W box {64, WR, KB} | X box
// {64, XR, KB}] (3-D views {64, rows, K/64}, 128B swizzle), a full barrier (TMA bytes) and an empty barrier (one
// arrive per consumer warp) per stage.
#pragma once
#include "attention_util.cuh"
#include "hopper_util.cuh"

namespace kiln_wg_ring {

using namespace kiln_hopper;

// D[64 × N] (+)= A[64 × 16] · B[N × 16]^T, A and B K-major in shared memory (128B swizzle); acc = 0 overwrites D.
template <int N> __device__ __forceinline__ void wgmma_n(float (&d)[N / 2], u64 da, u64 db, int acc);
template <> __device__ __forceinline__ void wgmma_n<8>(float (&d)[4], u64 da, u64 db, int acc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%0, %1, %2, %3}, %4, %5, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "l"(da), "l"(db), "r"(acc));
}
template <> __device__ __forceinline__ void wgmma_n<16>(float (&d)[8], u64 da, u64 db, int acc) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "l"(da), "l"(db), "r"(acc));
}

template <int XR, int WR, int KB, int S> struct Ring {
    static constexpr u32 W_CHUNK = WR * 128, X_CHUNK = XR * 128, W_BYTES = KB * W_CHUNK, STAGE = KB * (W_CHUNK + X_CHUNK);
    static_assert(XR % 8 == 0 && WR % 8 == 0, "box rows: whole 1 KB swizzle atoms");
    static_assert(KB >= 1 && KB <= 4 && S >= 2, "KB: 64-k chunks per stage");

    __device__ static void init(u64* full, u64* empty) {
        for (int s = 0; s < S; ++s) { mbar_init(smem_u32(&full[s]), 1); mbar_init(smem_u32(&empty[s]), 4); }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    }
    // The producer lane: stages c0 … c0 + n - 1 of weight rows row0…; the W boxes of the first fill go out before the
    // PDL wait (weights never depend on the previous kernel), their X boxes after it.
    __device__ static void produce(u32 base, u64* full, u64* empty, const KilnTensorMap* tmw, const KilnTensorMap* tmx,
                                   int row0, int c0, int n) {
        tma_prefetch_desc(tmw);
        tma_prefetch_desc(tmx);
        const int early = n < S ? n : S;
        for (int i = 0; i < early; ++i) {
            mbar_arrive_expect_tx(smem_u32(&full[i]), STAGE);
            tma_load_3d(base + i * STAGE, tmw, smem_u32(&full[i]), 0, row0, (c0 + i) * KB);
        }
        kiln_attn::pdl_wait_then_trigger();
        for (int i = 0; i < early; ++i) tma_load_3d(base + i * STAGE + W_BYTES, tmx, smem_u32(&full[i]), 0, 0, (c0 + i) * KB);
        for (int i = early; i < n; ++i) {
            const int s = i % S;
            mbar_wait(smem_u32(&empty[s]), ((i / S) & 1) ^ 1);
            mbar_arrive_expect_tx(smem_u32(&full[s]), STAGE);
            tma_load_3d(base + s * STAGE, tmw, smem_u32(&full[s]), 0, row0, (c0 + i) * KB);
            tma_load_3d(base + s * STAGE + W_BYTES, tmx, smem_u32(&full[s]), 0, 0, (c0 + i) * KB);
        }
    }
    // The consumer warp group: n stages summed into d, mma(d, W chunk + 32k, X chunk + 32k, keep) per 16 k (keep = 0 on
    // the first); a stage is released once its wgmmas have retired (async-proxy reads: no proxy fence needed).
    template <int R, class Mma>
    __device__ static void consume(float (&d)[R], u32 base, u64* full, u64* empty, int n, Mma mma) {
        const int lane = threadIdx.x % 32;
#pragma unroll
        for (int r = 0; r < R; ++r) d[r] = 0.f;
        for (int i = 0; i < n; ++i) {
            const int s = i % S;
            mbar_wait(smem_u32(&full[s]), (i / S) & 1);
            const u32 sw = base + s * STAGE, sx = sw + W_BYTES;
            wgmma_fence();
#pragma unroll
            for (int c = 0; c < KB; ++c)
#pragma unroll
                for (int k = 0; k < 4; ++k) mma(d, sw + c * W_CHUNK + 32 * k, sx + c * X_CHUNK + 32 * k, (i > 0 || c > 0 || k > 0) ? 1 : 0);
            wgmma_commit();
            wgmma_wait<1>();   // the previous stage's wgmmas have read their operands: free it
            if (i > 0 && lane == 0) mbar_arrive(smem_u32(&empty[(i - 1) % S]));
        }
        wgmma_wait<0>();
#pragma unroll
        for (int r = 0; r < R; ++r) reg_fence(d[r]);
    }
};

}  // namespace kiln_wg_ring
