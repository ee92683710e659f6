// gemm_hopper.cu — Kiln's prefill GEMM for Hopper (sm_90a): Y[M,N] = X[M,K] · W[N,K]^T,
// bf16 in, fp32 accumulation, bf16 out. For M >= 64 (prefill); decode (M <= 16) is gemm_splitk.cu.
//
// Design (one CTA per SM, persistent):
//  * Warp specialization. Warp group 0 is the producer: one thread issues TMA bulk tensor copies
//    (cp.async.bulk.tensor.2d, 128B swizzle) of an X tile [BM x 64] and a W tile [BN x 64] into a
//    STAGES-deep shared-memory ring; each stage has a "full" mbarrier (TMA completes transaction
//    bytes on it) and an "empty" mbarrier (one arrive per consumer warp once its wgmmas have read
//    the stage). Warp groups 1..CONS are consumers: consumer c owns output rows c*64..c*64+63 of the
//    tile and issues wgmma.mma_async m64n{BN}k16 (A and B both K-major from shared memory),
//    4 per 64-wide k block, keeping one k block of wgmmas in flight (wait_group 1) before it frees
//    the previous stage. setmaxnreg moves registers from the producer (40) to the consumers.
//  * Persistent tile loop: grid = min(#SMs, #tiles); CTA b handles tiles b, b+grid, ... in a
//    grouped raster (GROUP_M = 8 M-tiles per group, N-tiles walked inside the group) so the CTAs
//    resident at once share X rows and W rows in L2. The producer runs ahead into the next tile
//    while consumers run the epilogue (fp32 -> bf16, direct 4-byte global stores).
//
// Tails: M, N and K tails are handled. TMA zero-fills out-of-bounds box elements (rows >= M or
// >= N, columns >= K), so padded k contributes 0; the epilogue stores only rows < M, cols < N.
// Requirements: K % 8 == 0 and K >= 8 (TMA row stride must be a multiple of 16 bytes), M >= 1,
// N >= 1; X, W 16-byte aligned (cudaMalloc'd buffers are); Y row stride is N (bf16 pairs are
// stored as one 4-byte word when N is even, element by element otherwise).
//
// Entry points: one extern "C" kernel per row of KILN_GEMM_HOPPER_INSTANCES, named
//   kiln_gemm_hopper_bm{BM}_bn{BN}_bk{BK}_s{STAGES}_c{CONS}_cl{CLUSTER}(
//       const __grid_constant__ KilnTensorMap tmap_x,  // X tensor map (below)
//       const __grid_constant__ KilnTensorMap tmap_w,  // W tensor map (below)
//       kiln::bf16* y,                                 // [M, N] bf16 row-major output (f32 instances: float*)
//       int M, int N, int K)
//
// Tensor maps (cuTensorMapEncodeTiled, built on the host once per buffer/shape):
//   X: dataType CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, rank 2,
//      globalDim     = {K, M}              (innermost first)
//      globalStrides = {K * 2}             (bytes, the stride of dim 1; must be a multiple of 16)
//      boxDim        = {BK = 64, BM}
//      elementStrides= {1, 1}
//      interleave CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle CU_TENSOR_MAP_SWIZZLE_128B,
//      l2Promotion CU_TENSOR_MAP_L2_PROMOTION_L2_256B, oobFill CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE
//      (NONE = out-of-bounds elements read as zero, which the K tail relies on).
//   W: same, with globalDim = {K, N}, globalStrides = {K * 2}, boxDim = {64, BN / CLUSTER}.
//   The X map depends on the instance's BM, the W map on its BN and CLUSTER: build them per instance.
//   Box dims must be <= 256 and may exceed the tensor (M = 1 with BM = 128 was checked).
//   The maps hold raw device addresses: rebuild when a buffer moves (or build per call: ~µs on host).
//
// Launch (sizing rule):
//   block  = 128 * (CONS + 1) threads (1 producer warp group + CONS consumer warp groups), BM = 64*CONS
//   tiles  = ceil(M / (CLUSTER*BM)) * ceil(N / BN)
//   CLUSTER = 1: grid = min(multiProcessorCount, tiles)          (1-D; any grid >= 1 is correct)
//   CLUSTER = 2: grid = min(2 * maxActiveClusters, 2 * tiles)     (must be even; the kernel carries
//               __cluster_dims__(2,1,1), so plain cuLaunchKernel works; maxActiveClusters from
//               cuOccupancyMaxActiveClusters with this block/smem. With grid = #SMs it ran correct but
//               at ~half speed; likely (unverified) because pairs must share a GPC, so fewer than
//               #SMs/2 pairs are co-resident and the persistent grid ran a second wave)
//   dynamic shared memory = KILN_GEMM_HOPPER_SMEM(BM, BN, BK, STAGES) = STAGES*(BM+BN)*BK*2 + 1024
//   bytes (the +1024 realigns the ring to 1024 B); this exceeds 48 KB, so the launcher must first
//   set CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES to it. Static shared memory: 2*STAGES*8 B.
//
// NVRTC: no CUDA headers, only common/hopper_gemm.cuh (the ring, schedule, producer loop and epilogue shared with
// gemm_fp8_hopper.cu) and what it includes: hopper_util.cuh, attention_util.cuh, kiln.cuh (kiln::bf16; CUtensorMap is an
// opaque 128-byte, 128-byte-aligned struct; all Hopper instructions are inline PTX). Target sm_90a.

// Instance table: X(BM, BN, BK, STAGES, CONSUMER_WARPGROUPS, CLUSTER). BM must be 64 * CONSUMER_WARPGROUPS,
// BK must be 64, BN in {64, 128, 192, 256}, CLUSTER in {1, 2} (2: a pair of CTAs on adjacent M tiles of the
// same N tile; each loads half of the W tile and multicasts it to both, halving W traffic from L2).
#define KILN_GEMM_HOPPER_INSTANCES(X) \
    X(128, 256, 64, 4, 2, 1)          \
    X(128, 256, 64, 4, 2, 2)          \
    X(128, 192, 64, 5, 2, 1)          \
    X(128, 128, 64, 6, 2, 1)          \
    X(64, 256, 64, 5, 1, 1)           \
    X(64, 128, 64, 8, 1, 1)

// The same kernel with fp32 output (Y float [M, N]): the logits GEMM at M > 16 (the server's decode batches), which
// gemm_splitk would run 16 rows at a time, reading the output layer once per 16 rows.
#define KILN_GEMM_HOPPER_F32_INSTANCES(X) \
    X(64, 128, 64, 8, 1, 1)               \
    X(128, 128, 64, 6, 2, 1)

#define KILN_GEMM_HOPPER_NAME(BM, BN, BK, S, C, CL) kiln_gemm_hopper_bm##BM##_bn##BN##_bk##BK##_s##S##_c##C##_cl##CL
#define KILN_GEMM_HOPPER_F32_NAME(BM, BN, BK, S, C, CL) kiln_gemm_hopper_f32_bm##BM##_bn##BN##_bk##BK##_s##S##_c##C##_cl##CL
#define KILN_GEMM_HOPPER_SMEM(BM, BN, BK, S) ((S) * ((BM) + (BN)) * (BK) * 2 + 1024)
#define KILN_GEMM_HOPPER_THREADS(C) (128 * ((C) + 1))

#include "hopper_gemm.cuh"   // the skeleton shared with gemm_fp8_hopper.cu; includes hopper_util.cuh

namespace kiln_gemm_hopper {

using namespace kiln_hopper;        // u32, u64, smem_u32, mbarriers, TMA loads, clusters, wgmma fence/commit/wait (hopper_util.cuh)
using namespace kiln_hopper_gemm;   // ring barriers, register split, tile schedule, producer loop, bf16 epilogue (hopper_gemm.cuh)
using kiln::bf16;

// ---- wgmma ---------------------------------------------------------------------------------
// K-major tile with 128B swizzle: rows of 64 bf16 (128 B), 8-row core groups 1024 B apart, base 1024-aligned.
__device__ __forceinline__ u64 make_desc(u32 addr) { return sw128_desc(addr, 16, 1024); }

// D[64 x 64] (+)= A[64 x 16] * B[64 x 16]^T, both operands K-major in shared memory (128B swizzle).
__device__ __forceinline__ void wgmma_n64(float* d, u64 da, u64 db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "setp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {" KILN_WGMMA_R0_31 "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
        : KILN_WGMMA_D32(d, 0)
        : "l"(da), "l"(db), "r"(accumulate));
}

// D[64 x 128] (+)= A[64 x 16] * B[128 x 16]^T, both operands K-major in shared memory (128B swizzle).
__device__ __forceinline__ void wgmma_n128(float* d, u64 da, u64 db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "setp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {" KILN_WGMMA_R0_31 ", " KILN_WGMMA_R32_63
        "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : KILN_WGMMA_D32(d, 0), KILN_WGMMA_D32(d, 32)
        : "l"(da), "l"(db), "r"(accumulate));
}

// D[64 x 192] (+)= A[64 x 16] * B[192 x 16]^T, both operands K-major in shared memory (128B swizzle).
__device__ __forceinline__ void wgmma_n192(float* d, u64 da, u64 db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "setp.ne.b32 p, %98, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n192k16.f32.bf16.bf16 {" KILN_WGMMA_R0_31 ", " KILN_WGMMA_R32_63 ", " KILN_WGMMA_R64_95
        "}, %96, %97, p, 1, 1, 0, 0;\n}\n"
        : KILN_WGMMA_D32(d, 0), KILN_WGMMA_D32(d, 32), KILN_WGMMA_D32(d, 64)
        : "l"(da), "l"(db), "r"(accumulate));
}

// D[64 x 256] (+)= A[64 x 16] * B[256 x 16]^T, both operands K-major in shared memory (128B swizzle).
__device__ __forceinline__ void wgmma_n256(float* d, u64 da, u64 db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "setp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {" KILN_WGMMA_R0_31 ", " KILN_WGMMA_R32_63 ", " KILN_WGMMA_R64_95
        ", " KILN_WGMMA_R96_127 "}, %128, %129, p, 1, 1, 0, 0;\n}\n"
        : KILN_WGMMA_D32(d, 0), KILN_WGMMA_D32(d, 32), KILN_WGMMA_D32(d, 64), KILN_WGMMA_D32(d, 96)
        : "l"(da), "l"(db), "r"(accumulate));
}

template <int BN> __device__ __forceinline__ void wgmma_call(float* d, u64 da, u64 db, int acc);
template <> __device__ __forceinline__ void wgmma_call<64>(float* d, u64 da, u64 db, int acc) { wgmma_n64(d, da, db, acc); }
template <> __device__ __forceinline__ void wgmma_call<128>(float* d, u64 da, u64 db, int acc) { wgmma_n128(d, da, db, acc); }
template <> __device__ __forceinline__ void wgmma_call<192>(float* d, u64 da, u64 db, int acc) { wgmma_n192(d, da, db, acc); }
template <> __device__ __forceinline__ void wgmma_call<256>(float* d, u64 da, u64 db, int acc) { wgmma_n256(d, da, db, acc); }

constexpr int GROUP_M = 8;   // M tiles per raster group of the persistent schedule (TileSchedule, hopper_gemm.cuh)

// OutT: bf16 (prefill) or float (the logits at M > 16).
template <int BM, int BN, int BK, int STAGES, int CONS, int CL, class OutT = bf16>
__device__ __forceinline__ void gemm_body(const KilnTensorMap* tmx, const KilnTensorMap* tmw,
                                          OutT* __restrict__ y, int M, int N, int K) {
    static_assert(BK == 64, "BK must be 64 (one 128-byte swizzle row)");
    static_assert(BM == 64 * CONS, "each consumer warp group owns 64 rows");
    static_assert(BN == 64 || BN == 128 || BN == 192 || BN == 256, "BN in {64,128,192,256}");
    constexpr u32 A_BYTES = BM * BK * 2;
    constexpr u32 B_BYTES = BN * BK * 2;
    constexpr u32 STAGE_BYTES = A_BYTES + B_BYTES;
    const u32 rank = CL > 1 ? cluster_ctarank() : 0;

    extern __shared__ unsigned char smem_raw[];
    __shared__ __align__(8) u64 full_bar[STAGES];
    __shared__ __align__(8) u64 empty_bar[STAGES];

    const u32 smem_base = (smem_u32(smem_raw) + 1023u) & ~1023u;
    const int wg = threadIdx.x / 128;
    const int tid_wg = threadIdx.x % 128;

    // The persistent schedule over items of CL*BM rows (CL = 2: a pair of M tiles, one per CTA of the cluster).
    const TileSchedule<BM, BN, CL, GROUP_M> sched(M, N);
    const int kblocks = (K + BK - 1) / BK;

    init_ring<STAGES, CONS, CL>(full_bar, empty_bar);

    if (wg == 0) {
        // ---------------- producer ----------------
        producer_registers();
        if (tid_wg == 0) produce<BK, STAGES, A_BYTES, B_BYTES>(sched, rank, tmx, tmw, full_bar, empty_bar, smem_base, kblocks);
    } else {
        // ---------------- consumers ----------------
        consumer_registers<CONS>();
        const int cw = wg - 1;
        const int warp = tid_wg / 32, lane = tid_wg % 32;
        float d[BN / 2];
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) d[i] = 0.f;
        int stage = 0;
        u32 phase = 0;
        for (int t = sched.first; t < sched.tiles; t += sched.stride) {
            int tm, tn;
            sched.coords(t, tm, tn);
            tm = tm * CL + rank;
            int prev = 0;
            for (int kb = 0; kb < kblocks; ++kb) {
                mbar_wait(smem_u32(&full_bar[stage]), phase);
                const u32 sa = smem_base + stage * STAGE_BYTES + cw * (64 * BK * 2);
                const u32 sb = smem_base + stage * STAGE_BYTES + A_BYTES;
                wgmma_fence();
#pragma unroll
                for (int k = 0; k < BK / 16; ++k)
                    wgmma_call<BN>(d, make_desc(sa + k * 32), make_desc(sb + k * 32), (kb > 0 || k > 0) ? 1 : 0);
                wgmma_commit();
                wgmma_wait<1>();
                if (kb > 0 && lane == 0) release<CL>(smem_u32(&empty_bar[prev]));
                prev = stage;
                if (++stage == STAGES) { stage = 0; phase ^= 1; }
            }
            wgmma_wait<0>();
            fence_all(d);
            if (lane == 0) release<CL>(smem_u32(&empty_bar[prev]));

            // Epilogue: fragment (j, r): row = warp*16 + lane/4 + 8*(r/2), col = 8j + 2*(lane%4) + r%2.
            const int row0 = tm * BM + cw * 64 + warp * 16 + lane / 4;
            store_tile<BN>(d, y, row0, tn * BN + 2 * (lane % 4), M, N);
        }
    }
    // A CTA of a pair must not exit while its peer can still arrive on its barriers.
    if (CL > 1) cluster_sync();
}

}  // namespace kiln_gemm_hopper

#define KILN_GEMM_HOPPER_CLUSTER_ATTR_1
#define KILN_GEMM_HOPPER_CLUSTER_ATTR_2 __cluster_dims__(2, 1, 1)
#define KILN_GEMM_HOPPER_DEFINE(BM, BN, BK, S, C, CL)                                                  \
    extern "C" __global__ void __launch_bounds__(KILN_GEMM_HOPPER_THREADS(C), 1) KILN_GEMM_HOPPER_CLUSTER_ATTR_##CL \
        KILN_GEMM_HOPPER_NAME(BM, BN, BK, S, C, CL)(const __grid_constant__ KilnTensorMap tmap_x,      \
                                                    const __grid_constant__ KilnTensorMap tmap_w,      \
                                                    kiln::bf16* y, int M, int N, int K) {              \
        kiln_gemm_hopper::gemm_body<BM, BN, BK, S, C, CL>(&tmap_x, &tmap_w, y, M, N, K);                \
    }
KILN_GEMM_HOPPER_INSTANCES(KILN_GEMM_HOPPER_DEFINE)

#define KILN_GEMM_HOPPER_F32_DEFINE(BM, BN, BK, S, C, CL)                                              \
    extern "C" __global__ void __launch_bounds__(KILN_GEMM_HOPPER_THREADS(C), 1) KILN_GEMM_HOPPER_CLUSTER_ATTR_##CL \
        KILN_GEMM_HOPPER_F32_NAME(BM, BN, BK, S, C, CL)(const __grid_constant__ KilnTensorMap tmap_x,  \
                                                        const __grid_constant__ KilnTensorMap tmap_w,  \
                                                        float* y, int M, int N, int K) {               \
        kiln_gemm_hopper::gemm_body<BM, BN, BK, S, C, CL, float>(&tmap_x, &tmap_w, y, M, N, K);       \
    }
KILN_GEMM_HOPPER_F32_INSTANCES(KILN_GEMM_HOPPER_F32_DEFINE)
