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
//       kiln::bf16* y,                                 // [M, N] bf16 row-major output
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
// NVRTC: no CUDA headers, only common/hopper_util.cuh and kiln.cuh (kiln::bf16; CUtensorMap is an opaque
// 128-byte, 128-byte-aligned struct; all Hopper instructions are inline PTX). Target sm_90a.

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

#define KILN_GEMM_HOPPER_NAME(BM, BN, BK, S, C, CL) kiln_gemm_hopper_bm##BM##_bn##BN##_bk##BK##_s##S##_c##C##_cl##CL
#define KILN_GEMM_HOPPER_SMEM(BM, BN, BK, S) ((S) * ((BM) + (BN)) * (BK) * 2 + 1024)
#define KILN_GEMM_HOPPER_THREADS(C) (128 * ((C) + 1))

#include "hopper_util.cuh"

namespace kiln_gemm_hopper {

using namespace kiln_hopper;   // u32, u64, smem_u32, mbarriers, TMA loads, clusters, wgmma fence/commit/wait (hopper_util.cuh)
using kiln::bf16;

// ---- wgmma ---------------------------------------------------------------------------------
// K-major tile with 128B swizzle: rows of 64 bf16 (128 B), 8-row core groups 1024 B apart, base 1024-aligned.
__device__ __forceinline__ u64 make_desc(u32 addr) { return sw128_desc(addr, 16, 1024); }

// D[64 x 64] (+)= A[64 x 16] * B[64 x 16]^T, both operands K-major in shared memory (128B swizzle).
__device__ __forceinline__ void wgmma_n64(float* d, u64 da, u64 db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "setp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
        "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(da), "l"(db), "r"(accumulate));
}

// D[64 x 128] (+)= A[64 x 16] * B[128 x 16]^T, both operands K-major in shared memory (128B swizzle).
__device__ __forceinline__ void wgmma_n128(float* d, u64 da, u64 db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "setp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(da), "l"(db), "r"(accumulate));
}

// D[64 x 192] (+)= A[64 x 16] * B[192 x 16]^T, both operands K-major in shared memory (128B swizzle).
__device__ __forceinline__ void wgmma_n192(float* d, u64 da, u64 db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "setp.ne.b32 p, %98, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n192k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63,"
        "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79,"
        "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95"
        "}, %96, %97, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
          "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
          "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])
        : "l"(da), "l"(db), "r"(accumulate));
}

// D[64 x 256] (+)= A[64 x 16] * B[256 x 16]^T, both operands K-major in shared memory (128B swizzle).
__device__ __forceinline__ void wgmma_n256(float* d, u64 da, u64 db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "setp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63,"
        "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79,"
        "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95,"
        "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111,"
        "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
        "}, %128, %129, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
          "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
          "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
          "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
          "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
          "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
          "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "l"(da), "l"(db), "r"(accumulate));
}

template <int BN> __device__ __forceinline__ void wgmma_call(float* d, u64 da, u64 db, int acc);
template <> __device__ __forceinline__ void wgmma_call<64>(float* d, u64 da, u64 db, int acc) { wgmma_n64(d, da, db, acc); }
template <> __device__ __forceinline__ void wgmma_call<128>(float* d, u64 da, u64 db, int acc) { wgmma_n128(d, da, db, acc); }
template <> __device__ __forceinline__ void wgmma_call<192>(float* d, u64 da, u64 db, int acc) { wgmma_n192(d, da, db, acc); }
template <> __device__ __forceinline__ void wgmma_call<256>(float* d, u64 da, u64 db, int acc) { wgmma_n256(d, da, db, acc); }

__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ bf16 to_bf16(float x) {
    bf16 r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
    return r;
}

constexpr int GROUP_M = 8;

// Tile t -> (m tile, n tile) in groups of GROUP_M M-tiles; inside a group, M varies fastest.
__device__ __forceinline__ void tile_coords(int t, int tiles_m, int tiles_n, int& tm, int& tn) {
    const int per_group = GROUP_M * tiles_n;
    const int g = t / per_group;
    const int first_m = g * GROUP_M;
    const int gsize = min(tiles_m - first_m, GROUP_M);
    const int r = t - g * per_group;
    tm = first_m + r % gsize;
    tn = r / gsize;
}

template <int BM, int BN, int BK, int STAGES, int CONS, int CL>
__device__ __forceinline__ void gemm_body(const KilnTensorMap* tmx, const KilnTensorMap* tmw,
                                          bf16* __restrict__ y, int M, int N, int K) {
    static_assert(BK == 64, "BK must be 64 (one 128-byte swizzle row)");
    static_assert(BM == 64 * CONS, "each consumer warp group owns 64 rows");
    static_assert(BN == 64 || BN == 128 || BN == 192 || BN == 256, "BN in {64,128,192,256}");
    constexpr u32 A_BYTES = BM * BK * 2;
    constexpr u32 B_BYTES = BN * BK * 2;
    constexpr u32 STAGE_BYTES = A_BYTES + B_BYTES;
    static_assert(CL == 1 || CL == 2, "cluster of 1 or 2 CTAs");
    constexpr u32 B_PART = B_BYTES / CL;   // W rows loaded (and multicast) by each CTA of the pair
    const u32 rank = CL > 1 ? cluster_ctarank() : 0;

    extern __shared__ unsigned char smem_raw[];
    __shared__ __align__(8) u64 full_bar[STAGES];
    __shared__ __align__(8) u64 empty_bar[STAGES];

    const u32 smem_base = (smem_u32(smem_raw) + 1023u) & ~1023u;
    const int wg = threadIdx.x / 128;
    const int tid_wg = threadIdx.x % 128;

    // With CL = 2 the schedule runs over pairs of M tiles ("super tiles" of CL*BM rows); CTA rank r
    // of the cluster takes M tile CL*tm + r (possibly entirely past M: it still loads and multicasts
    // its half of W, its X box is zero-filled and its stores are skipped).
    const int tiles_m = (M + CL * BM - 1) / (CL * BM);
    const int tiles_n = (N + BN - 1) / BN;
    const int tiles = tiles_m * tiles_n;
    const int cta_id = blockIdx.x / CL, ncta = gridDim.x / CL;
    const int kblocks = (K + BK - 1) / BK;

    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) {
            mbar_init(smem_u32(&full_bar[s]), 1);
            mbar_init(smem_u32(&empty_bar[s]), CL * CONS * 4);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    }
    if (CL > 1) cluster_sync(); else __syncthreads();

    if (wg == 0) {
        // ---------------- producer ----------------
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
        if (tid_wg == 0) {
            tma_prefetch_desc(tmx);
            tma_prefetch_desc(tmw);
            int stage = 0;
            u32 phase = 0;
            for (int t = cta_id; t < tiles; t += ncta) {
                int tm, tn;
                tile_coords(t, tiles_m, tiles_n, tm, tn);
                const int m0 = (tm * CL + rank) * BM, n0 = tn * BN;
                for (int kb = 0; kb < kblocks; ++kb) {
                    mbar_wait(smem_u32(&empty_bar[stage]), phase ^ 1);
                    const u32 fb = smem_u32(&full_bar[stage]);
                    mbar_arrive_expect_tx(fb, STAGE_BYTES);
                    const u32 sa = smem_base + stage * STAGE_BYTES;
                    tma_load_2d(sa, tmx, fb, kb * BK, m0);
                    if (CL == 1) tma_load_2d(sa + A_BYTES, tmw, fb, kb * BK, n0);
                    else tma_load_2d_mc(sa + A_BYTES + rank * B_PART, tmw, fb, kb * BK, n0 + rank * (BN / CL),
                                        (unsigned short)((1u << CL) - 1));
                    if (++stage == STAGES) { stage = 0; phase ^= 1; }
                }
            }
        }
    } else {
        // ---------------- consumers ----------------
        if (CONS == 1) asm volatile("setmaxnreg.inc.sync.aligned.u32 240;\n" ::: "memory");
        else           asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
        const int cw = wg - 1;
        const int warp = tid_wg / 32, lane = tid_wg % 32;
        float d[BN / 2];
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) d[i] = 0.f;
        int stage = 0;
        u32 phase = 0;
        for (int t = cta_id; t < tiles; t += ncta) {
            int tm, tn;
            tile_coords(t, tiles_m, tiles_n, tm, tn);
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
                if (kb > 0 && lane == 0) {
                    if (CL == 1) mbar_arrive(smem_u32(&empty_bar[prev]));
                    else for (u32 c = 0; c < CL; ++c) mbar_arrive_cluster(smem_u32(&empty_bar[prev]), c);
                }
                prev = stage;
                if (++stage == STAGES) { stage = 0; phase ^= 1; }
            }
            wgmma_wait<0>();
#pragma unroll
            for (int i = 0; i < BN / 2; ++i) reg_fence(d[i]);
            if (lane == 0) {
                if (CL == 1) mbar_arrive(smem_u32(&empty_bar[prev]));
                else for (u32 c = 0; c < CL; ++c) mbar_arrive_cluster(smem_u32(&empty_bar[prev]), c);
            }

            // Epilogue: fragment (j, r): row = warp*16 + lane/4 + 8*(r/2), col = 8j + 2*(lane%4) + r%2.
            const int row0 = tm * BM + cw * 64 + warp * 16 + lane / 4;
            const int colb = tn * BN + 2 * (lane % 4);
            const bool even_n = (N & 1) == 0;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = row0 + 8 * h;
                if (row < M) {
                    bf16* yr = y + (size_t)row * N;
#pragma unroll
                    for (int j = 0; j < BN / 8; ++j) {
                        const int col = colb + 8 * j;
                        const float v0 = d[4 * j + 2 * h], v1 = d[4 * j + 2 * h + 1];
                        if (even_n && col + 1 < N) {
                            *reinterpret_cast<u32*>(yr + col) = pack_bf16x2(v0, v1);
                        } else {
                            if (col < N) yr[col] = to_bf16(v0);
                            if (col + 1 < N) yr[col + 1] = to_bf16(v1);
                        }
                    }
                }
            }
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
