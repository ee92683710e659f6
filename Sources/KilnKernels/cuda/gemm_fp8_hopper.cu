// gemm_fp8_hopper.cu — Kiln's FP8 prefill GEMM for Hopper (sm_90a), W8A8 with 2D block scales:
// Y[M,N] = X[M,K] · W[N,K]^T with X e4m3 quantized per 1×128 block (kiln_fp8_quant_act in gemm_fp8.cu), W e4m3 with a
// scale_inv per 8-row group and 128-column block (GemmFP8.expandScales' `scale8`: the checkpoint's 128×128 blocks, or
// gate/up interleaved per 16 rows), fp32 accumulation, bf16 out. For M ≥ 17 (prefill); decode (M ≤ 16) is gemm_fp8.cu.
//
// Design: gemm_hopper.cu's (persistent, warp-specialized, TMA ring, one CTA per SM), with e4m3 operands:
//  * A k block is 128 columns: one 128-byte swizzle row of e4m3 per tile row, and exactly one scale block. Warp group 0
//    is the producer: one thread issues a TMA copy of X [BM x 128] and of W [BN x 128] (128B swizzle) into a
//    STAGES-deep ring, with a "full" mbarrier (transaction bytes) and an "empty" mbarrier (one arrive per consumer warp)
//    per stage. Warp groups 1..CONS are consumers; consumer c owns tile rows c*64…c*64+63. setmaxnreg moves registers
//    from the producer (40) to the consumers.
//  * Per k block a consumer issues 4 wgmma.mma_async m64n{BN}k32 e4m3 (both operands K-major, as e4m3 requires; the
//    descriptor of k step s starts 32 bytes further into the 128-byte swizzle row), the first with scale-d = 0 so the
//    block accumulator starts from zero. Then FP32 promotion: wait for the block, free the stage, and
//        total[r][c] += block[r][c] · (s_x[r][kb] · s_w[c/8][kb])
//    with s_x the token's scale and s_w the scale_inv of the column's 8-row weight group (an accumulator fragment's 8
//    columns are one group). The tensor core's FP8 accumulation keeps ~14 bits; summing only 128 products there and
//    the rest in FP32 is what keeps a K = 8192 product accurate (docs/perf-notes-fp8.md, "FP8 prefill").
//    Promotion needs the block result, so with one block accumulator (ACC_BUFFERS = 1) a consumer waits for its own
//    wgmmas every k block and the other consumer warp group's keep the tensor core busy meanwhile, as far as the two
//    drift apart (they start each stage together). With two (ACC_BUFFERS = 2, BN ≤ 128) a consumer issues block kb's
//    wgmmas into one, then waits only for block kb-1's (wait_group 1) and promotes it from the other while kb's run.
//  * Scales are read straight from global memory (L1-cached, issued before the stage wait so the wgmmas hide their
//    latency): per k block the two token scales of the lane's rows, and one weight scale per lane (lane j holds group
//    j's), broadcast with shfl.
//  * Persistent tile loop: grid = min(#SMs, #tiles); CTA b takes tiles b, b + grid, … in a grouped raster (GROUP_M M
//    tiles per group, N walked inside the group, M fastest), the template's raster order: GROUP_M ≥ tiles_m walks every
//    M tile of an N tile before the next (each W tile read from HBM once), small GROUP_M keeps X rows in L2 instead.
//    The producer runs ahead into the next tile while the consumers store the previous one.
//  * CLUSTER = 2 (gemm_hopper.cu's scheme): a pair of CTAs takes adjacent M tiles of one N tile; each loads half of the
//    W tile and multicasts it to both, so a CTA pulls (BM + BN/2)·128 bytes per k block from L2 instead of (BM + BN)·128.
//    A stage is free once the consumers of both CTAs have read it (they arrive on both CTAs' empty barriers).
//
// Tails: TMA zero-fills box elements past M, N or K, so a partial k block adds zeros and rows/columns past the matrix are
// never stored; scale reads are clamped to valid rows. Requirements (checked by the launcher): K % 16 == 0 (TMA row
// stride), M, N ≥ 1, X and W 16-byte aligned; KB = ceil(K / 128).
//
// Entry points: one extern "C" kernel per row of KILN_GEMM_FP8_HOPPER_INSTANCES (and of the check-only table below,
// `…_nopromote_…`), named kiln_gemm_fp8_hopper_bm{BM}_bn{BN}_s{STAGES}_c{CONS}_b{ACC_BUFFERS}_cl{CLUSTER}_g{GROUP_M}(
//       const __grid_constant__ KilnTensorMap tmap_x,   // X e4m3 [M, K] tensor map (below)
//       const __grid_constant__ KilnTensorMap tmap_w,   // W e4m3 [N, K] tensor map (below)
//       const Fp8HopperArgs args)                       // the rest (GemmFP8Hopper.swift declares the same struct)
// Tensor maps (cuTensorMapEncodeTiled): dataType CU_TENSOR_MAP_DATA_TYPE_UINT8, rank 2, globalDim {K, rows},
//   globalStrides {K} bytes, boxDim {128, BM} for X and {128, BN / CLUSTER} for W, elementStrides {1, 1}, interleave NONE,
//   swizzle 128B, L2 promotion 256B, oobFill NONE (zeros).
// Launch: block = 128 * (CONS + 1) threads, BM = 64 * CONS; tiles = ceil(M / (CLUSTER * BM)) * ceil(N / BN);
//   CLUSTER = 1: grid = min(multiProcessorCount, tiles) (1-D; any grid ≥ 1 is correct, each CTA loops over its tiles);
//   CLUSTER = 2: grid = 2 * min(maxActiveClusters, tiles) (even; the kernel carries __cluster_dims__(2, 1, 1); the W map's
//   box is {128, BN / 2}); dynamic shared memory =
//   KILN_GEMM_FP8_HOPPER_SMEM(BM, BN, STAGES) = STAGES * (BM + BN) * 128 + 1024 (the +1024 realigns the ring to 1 KB),
//   over 48 KB, so the launcher raises CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES first.
//
// NVRTC: no CUDA headers, only common/hopper_gemm.cuh (the ring, schedule, producer loop and epilogue shared with
// gemm_hopper.cu) and what it includes (hopper_util.cuh, attention_util.cuh, kiln.cuh); all Hopper instructions are inline
// PTX. sm_90a.

// Instance table: X(BM, BN, STAGES, CONSUMER_WARPGROUPS, ACC_BUFFERS, CLUSTER, GROUP_M). BM = 64 * CONSUMER_WARPGROUPS;
// BN in {64, 128, 192} (the block and total accumulators take BN registers per thread: 256 does not fit); ACC_BUFFERS 2
// (a second block accumulator, so a consumer's next wgmmas run while it promotes) needs 3·BN/2 ≤ 192 registers: BN ≤ 128
// (64×128 with one consumer spilled 36 bytes with it, so it has one);
// CLUSTER in {1, 2}; STAGES * (BM + BN) * 128 + 1024 bytes of shared memory ≤ 227 KB.
#define KILN_GEMM_FP8_HOPPER_INSTANCES(X) \
    X(128, 128, 6, 2, 1, 1, 8)            \
    X(128, 128, 6, 2, 2, 1, 8)            \
    X(128, 128, 6, 2, 2, 2, 8)            \
    X(128, 192, 5, 2, 1, 1, 8)            \
    X(128, 192, 5, 2, 1, 1, 64)           \
    X(128, 192, 5, 2, 1, 2, 8)            \
    X(128, 64, 8, 2, 2, 1, 8)             \
    X(64, 128, 8, 1, 1, 1, 8)             \
    X(64, 192, 6, 1, 1, 1, 8)

// Check-only (never dispatched): the same kernel accumulating all of K in the tensor core, the scales of k block 0
// applied once at the end. Exact only where every k block of a row (and of a weight group) has the same scale; `kiln
// check` builds such data to show that this variant misses the tolerance the shipped kernels meet at K = 8192.
#define KILN_GEMM_FP8_HOPPER_CHECK_ONLY(X) X(128, 128, 6, 2, 1, 1, 8)

#define KILN_GEMM_FP8_HOPPER_NAME(BM, BN, S, C, B, CL, G) kiln_gemm_fp8_hopper_bm##BM##_bn##BN##_s##S##_c##C##_b##B##_cl##CL##_g##G
#define KILN_GEMM_FP8_HOPPER_NOPROMOTE_NAME(BM, BN, S, C, B, CL, G) \
    kiln_gemm_fp8_hopper_nopromote_bm##BM##_bn##BN##_s##S##_c##C##_b##B##_cl##CL##_g##G
#define KILN_GEMM_FP8_HOPPER_SMEM(BM, BN, S) ((S) * ((BM) + (BN)) * 128 + 1024)
#define KILN_GEMM_FP8_HOPPER_THREADS(C) (128 * ((C) + 1))

#include "hopper_gemm.cuh"   // the skeleton shared with gemm_hopper.cu; includes hopper_util.cuh

struct Fp8HopperArgs {
    const float* xs;       // [M, KB] activation scales s = absmax / 448 per token and 128-column block
    const float* scale8;   // [ceil(N / 8), KB] weight scale_inv per 8-row group and 128-column block
    kiln::bf16* y;         // [M, N] bf16, row-major
    int M, N, K;
    int KB;                // ceil(K / 128): the row length of xs and scale8
};

namespace kiln_gemm_fp8_hopper {

using namespace kiln_hopper;        // u32, u64, smem_u32, mbarriers, TMA loads, wgmma descriptor / fence / commit / wait
using namespace kiln_hopper_gemm;   // ring barriers and release, register split, tile schedule, producer loop, bf16 epilogue
using kiln::bf16;

constexpr int BK = 128;   // e4m3 columns (= bytes) per k block: one 128-byte swizzle row, one scale block

// K-major tile with 128B swizzle: rows of 128 e4m3 (128 B), 8-row core groups 1024 B apart, base 1024-aligned.
__device__ __forceinline__ u64 make_desc(u32 addr) { return sw128_desc(addr, 16, 1024); }

template <int N> __device__ __forceinline__ void wgmma_e4m3(float (&d)[N / 2], u64 da, u64 db, int acc);
// D[64 x 64] (+)= A[64 x 32] · B[64 x 32]^T, e4m3 operands K-major in shared memory (128B swizzle); acc = 0 overwrites D.
template <> __device__ __forceinline__ void wgmma_e4m3<64>(float (&d)[32], u64 da, u64 db, int acc) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "setp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 {" KILN_WGMMA_R0_31 "}, %32, %33, p, 1, 1;\n}\n"
        : KILN_WGMMA_D32(d, 0)
        : "l"(da), "l"(db), "r"(acc));
}
// D[64 x 128] (+)= A[64 x 32] · B[128 x 32]^T, e4m3 operands K-major in shared memory (128B swizzle); acc = 0 overwrites D.
template <> __device__ __forceinline__ void wgmma_e4m3<128>(float (&d)[64], u64 da, u64 db, int acc) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "setp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {" KILN_WGMMA_R0_31 ", " KILN_WGMMA_R32_63 "}, %64, %65, p, 1, 1;\n}\n"
        : KILN_WGMMA_D32(d, 0), KILN_WGMMA_D32(d, 32)
        : "l"(da), "l"(db), "r"(acc));
}
// D[64 x 192] (+)= A[64 x 32] · B[192 x 32]^T, e4m3 operands K-major in shared memory (128B swizzle); acc = 0 overwrites D.
template <> __device__ __forceinline__ void wgmma_e4m3<192>(float (&d)[96], u64 da, u64 db, int acc) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "setp.ne.b32 p, %98, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n192k32.f32.e4m3.e4m3 {" KILN_WGMMA_R0_31 ", " KILN_WGMMA_R32_63 ", " KILN_WGMMA_R64_95
        "}, %96, %97, p, 1, 1;\n}\n"
        : KILN_WGMMA_D32(d, 0), KILN_WGMMA_D32(d, 32), KILN_WGMMA_D32(d, 64)
        : "l"(da), "l"(db), "r"(acc));
}

// One k block's four wgmmas into acc, committed as one group; scale-d = 0 on the first unless `accumulate`.
template <int BN>
__device__ __forceinline__ void mma_block(float (&acc)[BN / 2], u32 sa, u32 sb, bool accumulate) {
    wgmma_fence();
#pragma unroll
    for (int k = 0; k < BK / 32; ++k) wgmma_e4m3<BN>(acc, make_desc(sa + k * 32), make_desc(sb + k * 32), (k > 0 || accumulate) ? 1 : 0);
    wgmma_commit();
}

// The scales of one k block for this lane: its two rows' token scales and (lane j) weight group j's scale_inv.
struct BlockScales { float a, b, w; };

// FP32 promotion: total += acc · s_x · s_w. Fragment (j, r): rows r < 2 take s.a, r ≥ 2 s.b; the 8 columns of j are
// weight group j, whose scale lane j holds (shfl). With `overwrite`, total = acc · s_x · s_w (no-promotion epilogue).
template <int R, bool overwrite = false>
__device__ __forceinline__ void promote(float (&total)[R], float (&acc)[R], BlockScales s) {
#pragma unroll
    for (int j = 0; j < R / 4; ++j) {
        const float w = __shfl_sync(0xffffffffu, s.w, j);
        const float fa = s.a * w, fb = s.b * w;
        total[4 * j + 0] = fmaf(acc[4 * j + 0], fa, overwrite ? 0.f : total[4 * j + 0]);
        total[4 * j + 1] = fmaf(acc[4 * j + 1], fa, overwrite ? 0.f : total[4 * j + 1]);
        total[4 * j + 2] = fmaf(acc[4 * j + 2], fb, overwrite ? 0.f : total[4 * j + 2]);
        total[4 * j + 3] = fmaf(acc[4 * j + 3], fb, overwrite ? 0.f : total[4 * j + 3]);
    }
}

// The two-accumulator loop (BUFS = 2) in steps: issue(buf, kb) waits for block kb's stage and issues its wgmmas into
// buf; retire(buf, wait) waits until at most `wait` groups are in flight (1: all but the block just issued), frees the
// older block's stage and promotes it from buf with its scales.
struct Ring2 {
    u32 ring, a_off, a_bytes, stage_bytes;
    u64* full_bar;
    u64* empty_bar;
    int stage, prev_stage, stages;
    u32 phase;
    BlockScales prev_sc;
};

template <int BN> __device__ __forceinline__ void issue(Ring2& r, float (&buf)[BN / 2], BlockScales sc) {
    mbar_wait(smem_u32(&r.full_bar[r.stage]), r.phase);
    const u32 base = r.ring + r.stage * r.stage_bytes;   // this stage: X tile (this consumer's rows at a_off), then W tile
    mma_block<BN>(buf, base + r.a_off, base + r.a_bytes, false);
    r.prev_sc = sc;
    r.prev_stage = r.stage;
    if (++r.stage == r.stages) { r.stage = 0; r.phase ^= 1; }
}

template <int BN, int CL, int WAIT>
__device__ __forceinline__ void retire(Ring2& r, float (&buf)[BN / 2], float (&total)[BN / 2], BlockScales sc, int older_stage, int lane) {
    wgmma_wait<WAIT>();
    fence_all(buf);
    if (lane == 0) release<CL>(smem_u32(&r.empty_bar[older_stage]));
    promote(total, buf, sc);
}

template <int BM, int BN, int STAGES, int CONS, int BUFS, int CL, int GROUP_M, bool PROMOTE>
__device__ __forceinline__ void gemm_body(const KilnTensorMap* tmx, const KilnTensorMap* tmw, const Fp8HopperArgs& args) {
    static_assert(BM == 64 * CONS && (CONS == 1 || CONS == 2), "each consumer warp group owns 64 rows");
    static_assert(BN == 64 || BN == 128 || BN == 192, "BN in {64, 128, 192}");
    static_assert(BUFS == 1 || (BUFS == 2 && PROMOTE && 3 * (BN / 2) <= 192), "two block accumulators: promotion only, BN ≤ 128");
    constexpr u32 A_BYTES = BM * BK;
    constexpr u32 B_BYTES = BN * BK;
    constexpr u32 STAGE_BYTES = A_BYTES + B_BYTES;
    static_assert(A_BYTES % 1024 == 0 && (B_BYTES / CL) % 1024 == 0, "every box starts on a 1 KB swizzle atom");
    constexpr int R = BN / 2;   // accumulator registers per thread (m64nBN: 64·BN f32 over 128 threads)

    extern __shared__ unsigned char smem_raw[];
    __shared__ __align__(8) u64 full_bar[STAGES];
    __shared__ __align__(8) u64 empty_bar[STAGES];

    const u32 smem_base = (smem_u32(smem_raw) + 1023u) & ~1023u;
    const int wg = threadIdx.x / 128;
    const int tid_wg = threadIdx.x % 128;
    const int M = args.M, N = args.N, KB = args.KB;
    // The persistent schedule over items of CL*BM rows (CL = 2: a pair of M tiles, one per CTA of the cluster).
    const u32 rank = CL > 1 ? cluster_ctarank() : 0;
    const TileSchedule<BM, BN, CL, GROUP_M> sched(M, N);

    init_ring<STAGES, CONS, CL>(full_bar, empty_bar);

    if (wg == 0) {
        // ---------------- producer ----------------
        producer_registers();
        if (tid_wg == 0) produce<BK, STAGES, A_BYTES, B_BYTES>(sched, rank, tmx, tmw, full_bar, empty_bar, smem_base, KB);
    } else {
        // ---------------- consumers ----------------
        consumer_registers<CONS>();
        const int cw = wg - 1;
        const int warp = tid_wg / 32, lane = tid_wg % 32;
        const int groups = (N + 7) / 8;
        float acc[R];                     // the wgmma accumulator: one k block (PROMOTE) or all of K
        float acc2[BUFS == 2 ? R : 1];    // BUFS = 2: the other k block's, filled while acc is promoted (and back)
        float total[R];                   // fp32 sum over k blocks of block · s_x · s_w; the values stored
#pragma unroll
        for (int i = 0; i < R; ++i) acc[i] = 0.f;
#pragma unroll
        for (int i = 0; i < (BUFS == 2 ? R : 1); ++i) acc2[i] = 0.f;
        int stage = 0;
        u32 phase = 0;
        for (int t = sched.first; t < sched.tiles; t += sched.stride) {
            int tm, tn;
            sched.coords(t, tm, tn);
            tm = tm * CL + rank;
            // Accumulator fragment (j, r): row = warp*16 + lane/4 + 8*(r/2), col = 8j + 2*(lane%4) + r%2 of this
            // consumer's 64 x BN block; rows past M read row M-1's scales (never stored), lanes past the tile's
            // groups read a clamped group (never used).
            const int row_a = tm * BM + cw * 64 + warp * 16 + lane / 4;
            const float* xs_a = args.xs + (long long)min(row_a, M - 1) * KB;
            const float* xs_b = args.xs + (long long)min(row_a + 8, M - 1) * KB;
            const float* sw_lane = args.scale8 + (long long)min(tn * (BN / 8) + lane, groups - 1) * KB;
            // k block kb's scales, requested before its stage wait so that the wgmmas hide their latency.
            auto scales = [&](int kb) { return BlockScales{__ldg(xs_a + kb), __ldg(xs_b + kb), __ldg(sw_lane + kb)}; };
            const u32 a_off = cw * (64 * BK);
#pragma unroll
            for (int i = 0; i < R; ++i) total[i] = 0.f;
            if constexpr (PROMOTE && BUFS == 1) {
                // Each block: its wgmmas, wait for them, free the stage, promote (the other consumer's wgmmas run meanwhile).
                for (int kb = 0; kb < KB; ++kb) {
                    const BlockScales sc = scales(kb);
                    mbar_wait(smem_u32(&full_bar[stage]), phase);
                    const u32 base = smem_base + stage * STAGE_BYTES;
                    mma_block<BN>(acc, base + a_off, base + A_BYTES, false);
                    wgmma_wait<0>();
                    fence_all(acc);
                    if (lane == 0) release<CL>(smem_u32(&empty_bar[stage]));
                    promote(total, acc, sc);
                    if (++stage == STAGES) { stage = 0; phase ^= 1; }
                }
            } else if constexpr (PROMOTE) {
                // Two block accumulators: block kb's wgmmas go into one while block kb-1, in the other, is waited for
                // (wait_group 1), its stage freed and promoted. Blocks go in pairs (acc, acc2) so that each array is
                // named at compile time and every step of the loop has the same shape.
                Ring2 r{smem_base, a_off, A_BYTES, STAGE_BYTES, full_bar, empty_bar, stage, 0, STAGES, phase, {0.f, 0.f, 0.f}};
                issue<BN>(r, acc, scales(0));
                int kb = 1;
                for (; kb + 1 < KB; kb += 2) {
                    BlockScales older = r.prev_sc;
                    int older_stage = r.prev_stage;
                    issue<BN>(r, acc2, scales(kb));
                    retire<BN, CL, 1>(r, acc, total, older, older_stage, lane);
                    older = r.prev_sc; older_stage = r.prev_stage;
                    issue<BN>(r, acc, scales(kb + 1));
                    retire<BN, CL, 1>(r, acc2, total, older, older_stage, lane);
                }
                if (kb < KB) {   // one block left (KB even): into acc2, then both retire
                    const BlockScales older = r.prev_sc;
                    const int older_stage = r.prev_stage;
                    issue<BN>(r, acc2, scales(kb));
                    retire<BN, CL, 1>(r, acc, total, older, older_stage, lane);
                    retire<BN, CL, 0>(r, acc2, total, r.prev_sc, r.prev_stage, lane);
                } else {
                    retire<BN, CL, 0>(r, acc, total, r.prev_sc, r.prev_stage, lane);
                }
                stage = r.stage; phase = r.phase;
            } else {
                // No promotion (check-only): gemm_hopper.cu's pipelining, one k block of wgmmas in flight, all of K in acc.
                int prev = 0;
                for (int kb = 0; kb < KB; ++kb) {
                    mbar_wait(smem_u32(&full_bar[stage]), phase);
                    const u32 base = smem_base + stage * STAGE_BYTES;
                    mma_block<BN>(acc, base + a_off, base + A_BYTES, kb > 0);
                    wgmma_wait<1>();
                    if (kb > 0 && lane == 0) release<CL>(smem_u32(&empty_bar[prev]));
                    prev = stage;
                    if (++stage == STAGES) { stage = 0; phase ^= 1; }
                }
                wgmma_wait<0>();
                fence_all(acc);
                if (lane == 0) release<CL>(smem_u32(&empty_bar[prev]));
                promote<R, true>(total, acc, scales(0));   // the scales of k block 0, once
            }

            // Epilogue (gemm_hopper.cu's): bf16 pairs stored as one 4-byte word when N is even.
            store_tile<BN>(total, args.y, row_a, tn * BN + 2 * (lane % 4), M, N);
        }
    }
    // A CTA of a pair must not exit while its peer can still arrive on its barriers.
    if (CL > 1) cluster_sync();
}

}  // namespace kiln_gemm_fp8_hopper

#define KILN_GEMM_FP8_HOPPER_CLUSTER_ATTR_1
#define KILN_GEMM_FP8_HOPPER_CLUSTER_ATTR_2 __cluster_dims__(2, 1, 1)
#define KILN_GEMM_FP8_HOPPER_KERNEL(NAME, BM, BN, S, C, B, CL, G, PROMOTE)                                          \
    extern "C" __global__ void __launch_bounds__(KILN_GEMM_FP8_HOPPER_THREADS(C), 1) KILN_GEMM_FP8_HOPPER_CLUSTER_ATTR_##CL \
        NAME(const __grid_constant__ KilnTensorMap tmap_x, const __grid_constant__ KilnTensorMap tmap_w,            \
             const Fp8HopperArgs args) {                                                                            \
        kiln_gemm_fp8_hopper::gemm_body<BM, BN, S, C, B, CL, G, PROMOTE>(&tmap_x, &tmap_w, args);                   \
    }
#define KILN_GEMM_FP8_HOPPER_DEFINE(BM, BN, S, C, B, CL, G) \
    KILN_GEMM_FP8_HOPPER_KERNEL(KILN_GEMM_FP8_HOPPER_NAME(BM, BN, S, C, B, CL, G), BM, BN, S, C, B, CL, G, true)
#define KILN_GEMM_FP8_HOPPER_DEFINE_NOPROMOTE(BM, BN, S, C, B, CL, G) \
    KILN_GEMM_FP8_HOPPER_KERNEL(KILN_GEMM_FP8_HOPPER_NOPROMOTE_NAME(BM, BN, S, C, B, CL, G), BM, BN, S, C, B, CL, G, false)
KILN_GEMM_FP8_HOPPER_INSTANCES(KILN_GEMM_FP8_HOPPER_DEFINE)
KILN_GEMM_FP8_HOPPER_CHECK_ONLY(KILN_GEMM_FP8_HOPPER_DEFINE_NOPROMOTE)
