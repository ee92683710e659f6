// gemm_lut_hopper.cu — the prefill GEMM over lookup-table weights on Hopper (sm_90a): Y[M,N] = X[M,K] · W[N,K]^T for
// M ≥ 17, X bf16, W in gemm_lut.cu's restructured device layout (4-, 3-, 2-bit codes into a table, or GGUF Q8_0's 8-bit
// codes), dequantized in registers straight into the A operand of bf16 wgmma. fp32 accumulation, bf16 out.
//
// Design (Machete's idea — the low-bit operand dequantized in registers feeds wgmma — on Kiln's own layout):
//  * The weights are wgmma's A operand, from registers; the tokens are the N side (B, from shared memory). A consumer
//    warp group owns 64 weight rows, so warp w of it owns one 16-row tile of gemm_lut's layout. wgmma's A fragment of a
//    warp (rows g, g+8 × k-slots 2t, 2t+1 | 2t+8, 2t+9, four bf16x2 registers) is mma.m16n8k16's, so a lane's 16 code
//    bytes of a 64-column chunk dequantize — with gemm_lut's own conversions, byte i of word j = register a_i of mma j —
//    into exactly the registers of the four k16 wgmmas of that chunk. No dequantized weight ever touches memory.
//  * The k order. gemm_lut's lane t holds columns 16t … 16t + 15 of the chunk: mma j's slot 2t + e is column
//    16t + 4j + e and slot 2t + 8 + e is column 16t + 4j + 2 + e (a dot product may visit k in any order as long as
//    both operands agree). wgmma's B operand comes from shared memory in the canonical order, so the activations are
//    permuted to match before the GEMM (kiln_lut_permute_x, one pass over X, ~1% of a prefill GEMM's time):
//        X'[m, 64c + 16j + s] = X[m, 64c + 16·(s mod 8)/2 + 4j + 2·(s / 8) + s mod 2]      (0 past K: X' is K' = 64·KC wide)
//    and wgmma k step j of chunk c reads columns 64c + 16j … + 15 of X' — the 32-byte step inside the 128-byte swizzle row.
//  * Numerics: each weight is gemm_lut's non-POST value bf16(bf16(table[c]) · bf16(scale) + bf16(offset)) (8 bits:
//    bf16(q · d)) — bit for bit what kiln_lut{B}_dequant writes, which the bf16 prefill path multiplied before this kernel.
//  * Warp specialization, one CTA per SM, persistent (hopper_gemm.cuh's TileSchedule and ring barriers): warp group 0 is
//    the producer, one thread issuing per k block (64 columns) three or four TMA copies into a STAGES-deep ring: the X'
//    box [BT tokens × 64] (128B swizzle), the codes of the CTA's 8 tiles (a 3-D box of whole chunk records) and their
//    group scales (and offsets) (3-D boxes of the scale words). Warp groups 1 and 2 are consumers: per k block each
//    waits for the stage, reads its tile's codes and scales from shared memory, dequantizes into one of two A register
//    sets, issues the chunk's four wgmma m64n{BT}k16 and waits only for the previous chunk's (wait_group 1), so the
//    dequantization of chunk kb+1 overlaps the wgmmas of chunk kb; then frees the previous stage.
//  * The 4- and 3-bit pair tables live in shared memory as in gemm_lut (32 copies, 32 KB, fill_table); the 2-bit table
//    is scaled in registers (select2); 8 bits needs none (int8_fragments).
//  * Epilogue: the accumulator's rows are weight rows, its columns tokens, so Y[m, n] is stored transposed, one bf16 per
//    element (rows < N, tokens < M only).
//
// Entry points: one extern "C" kernel per row of KILN_GEMM_LUT_HOPPER_INSTANCES,
//   kiln_gemm_lut_hopper{BITS}_bt{BT}_s{STAGES}_a{AFFINE}(
//       const __grid_constant__ KilnTensorMap tmap_x,        // X' bf16 [M, K'] (K' = 64·KC): dims {K', M}, box {64, BT}, 128B swizzle
//       const __grid_constant__ KilnTensorMap tmap_codes,    // codes as u32 {32·BITS, KC, tiles}: box {32·BITS, 1, 8}, no swizzle
//       const __grid_constant__ KilnTensorMap tmap_scales,   // scale words u32 {8, GP, tiles}: box {8, SG, 8}, no swizzle
//       const __grid_constant__ KilnTensorMap tmap_offsets,  // same for offsets (read by AFFINE instances only)
//       const LutHopperArgs args)
//   (tiles = ceil(N/16), KC = ceil(K/64), GP = gemm_lut's padded groups per row, SG = max(1, 64/g) groups per chunk box;
//   zero fill out of bounds: tiles past N read zero codes and scales, tokens past M zero activations.)
//   kiln_lut_permute_x(const LutPermuteParams)   block = 256, grid = ceil(M · K'/2 / 256): X → X'.
// Launch: block = 384 threads (producer + 2 consumer warp groups), 128 weight rows × BT tokens per tile, tiles =
//   ceil(N / 128) · ceil(M / BT), grid = min(#SMs, tiles); dynamic shared memory KILN_GEMM_LUT_HOPPER_SMEM(BITS, BT, S).
// Requirements (checked by the launcher): K % g == 0 with g ∈ {32, 64, 128}; M, N ≥ 1; X' and the planes 16-byte aligned.
// NVRTC: common/hopper_gemm.cuh (ring barriers, register split, tile schedule), lut_util.cuh (the conversions); sm_90a.

#include "hopper_gemm.cuh"   // includes hopper_util.cuh, attention_util.cuh, kiln.cuh (what lut_util.cuh needs)
#include "lut_util.cuh"

// X(BITS, BT, STAGES, AFFINE): BT tokens per tile (the wgmma N: 128 or 256), STAGES ring depth. 8 bits is symmetric only.
#define KILN_GEMM_LUT_HOPPER_INSTANCES(X) \
    X(4, 128, 6, 0) X(4, 128, 6, 1) X(4, 256, 4, 0) X(4, 256, 4, 1) \
    X(3, 128, 6, 0) X(3, 128, 6, 1) X(3, 256, 4, 0) X(3, 256, 4, 1) \
    X(2, 128, 6, 0) X(2, 128, 6, 1) X(2, 256, 4, 0) X(2, 256, 4, 1) \
    X(8, 128, 6, 0) X(8, 256, 4, 0)

#define KILN_GEMM_LUT_HOPPER_NAME(B, BT, S, A) kiln_gemm_lut_hopper##B##_bt##BT##_s##S##_a##A
// Per stage: X' box (BT · 128 bytes) + 8 chunk records (8 · 128·BITS) + scales and offsets (512 bytes each, 1 KB);
// plus the pair table (32 KB at 4 and 3 bits) and 1 KB to align the ring.
#define KILN_GEMM_LUT_HOPPER_STAGE(B, BT) ((BT) * 128 + 8 * 128 * (B) + 1024)
#define KILN_GEMM_LUT_HOPPER_TABLE(B) (((B) == 4 || (B) == 3) ? 256 * 32 * 4 : 0)
#define KILN_GEMM_LUT_HOPPER_SMEM(B, BT, S) (KILN_GEMM_LUT_HOPPER_TABLE(B) + (S) * KILN_GEMM_LUT_HOPPER_STAGE(B, BT) + 1024)

struct LutHopperArgs {
    const float* table;    // [2^BITS] f32 (unread at 8 bits)
    kiln::bf16* y;         // [M, N] bf16, row-major
    int M, N, K;
    int group_shift;       // log2(g)
    int scale_box;         // SG: groups per scale box (max(1, 64 / g)), as the scale maps were encoded
};

struct LutPermuteParams {
    const kiln::bf16* x;   // [M, K] bf16
    kiln::bf16* xp;        // [M, KP] bf16, KP = 64 · ceil(K / 64)
    int M, K, KP;
};

namespace kiln_gemm_lut_hopper {

using namespace kiln_hopper;        // u32, u64, smem_u32, mbarriers, TMA, wgmma fence / commit / wait
using namespace kiln_hopper_gemm;   // ring barriers, register split, tile schedule
using kiln::bf16;
using kiln_attn::U4;
using kiln_lut::prmt;
using kiln_lut::fma_bf16x2;
using kiln_lut::lookup;
using kiln_lut::kNegZero2;

constexpr int CONS = 2;           // consumer warp groups: 64 weight rows (4 tiles of 16) each
constexpr int ROWS = 64 * CONS;   // weight rows per CTA tile
constexpr int TILES = ROWS / 16;  // gemm_lut tiles per CTA tile (the codes box)
constexpr int GROUP_M = 8;        // weight tiles per raster group

// D[64 × BT] (+)= A[64 × 16] (registers) · B[BT × 16]^T (K-major in shared memory, 128B swizzle).
__device__ __forceinline__ void wgmma_rs_n128(float* d, const unsigned (&a)[4], u64 db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "setp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {" KILN_WGMMA_R0_31 ", " KILN_WGMMA_R32_63
        "}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
        : KILN_WGMMA_D32(d, 0), KILN_WGMMA_D32(d, 32)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
}
__device__ __forceinline__ void wgmma_rs_n256(float* d, const unsigned (&a)[4], u64 db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "setp.ne.b32 p, %133, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {" KILN_WGMMA_R0_31 ", " KILN_WGMMA_R32_63 ", " KILN_WGMMA_R64_95
        ", " KILN_WGMMA_R96_127 "}, {%128, %129, %130, %131}, %132, p, 1, 1, 0;\n}\n"
        : KILN_WGMMA_D32(d, 0), KILN_WGMMA_D32(d, 32), KILN_WGMMA_D32(d, 64), KILN_WGMMA_D32(d, 96)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
}
template <int BT> __device__ __forceinline__ void wgmma_rs(float* d, const unsigned (&a)[4], u64 db, int acc) {
    static_assert(BT == 128 || BT == 256, "BT: 128 or 256 tokens");
    if constexpr (BT == 128) wgmma_rs_n128(d, a, db, acc); else wgmma_rs_n256(d, a, db, acc);
}

// Keeps an A register set live (and unmoved) up to this point: the wgmmas that read it run asynchronously, so the
// compiler must not reuse its registers before the wait that retires them (CUTLASS's warpgroup_fence_operand).
__device__ __forceinline__ void fence_regs(unsigned (&a)[4][4]) {
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) asm volatile("" : "+r"(a[j][i])::"memory");
}

__device__ __forceinline__ U4 lds128(u32 addr) {
    U4 r;
    asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "r"(addr));
    return r;
}
__device__ __forceinline__ void lds64(u32 addr, unsigned& a, unsigned& b) {
    asm volatile("ld.shared.v2.u32 {%0,%1}, [%2];" : "=r"(a), "=r"(b) : "r"(addr));
}
__device__ __forceinline__ unsigned lds32(u32 addr) {
    unsigned r;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(r) : "r"(addr));
    return r;
}

// One chunk's 8-bit registers in the shape int8_fragments reads (gemm_lut's WeightRegs at one chunk and tile).
struct Int8Regs {
    U4 q[1][1], q_hi[1][1];   // the lane's two 16-byte halves of the record
    unsigned s[1][1];         // {f16 d of row g, f16 d of row g+8}
};

// What a consumer lane needs besides the stage: its pair-table copy (4/3 bits), the unscaled 2-bit table pair.
struct Tables {
    u32 lut;              // shared address of this lane's copy of pair-table entry 0 (4 and 3 bits)
    unsigned t01, t23;    // bf16x2 {table[0], table[1]}, {table[2], table[3]} (2 bits)
};

// The 16 A registers of one chunk (register i of k step j) from a lane's record in shared memory (`rec`: the tile's
// chunk record) and its scale (and offset) word: gemm_lut's conversions, non-POST order (the dequantizers' numbers).
template <int BITS, bool AFFINE>
__device__ __forceinline__ void fragments(u32 rec, int lane, unsigned s, unsigned o, const Tables& tb, unsigned (&a)[4][4]) {
    if constexpr (BITS == 8) {
        Int8Regs r;
        r.q[0][0] = lds128(rec + 16 * lane);
        r.q_hi[0][0] = lds128(rec + 512 + 16 * lane);
        r.s[0][0] = s;   // {f16 d of row g, f16 d of row g+8}
        kiln_lut::int8_fragments(r, 0, 0, a);
        return;
    } else {
        const unsigned s_top = prmt(s, 0x1010u), s_bottom = prmt(s, 0x3232u);
        const unsigned o_top = AFFINE ? prmt(o, 0x1010u) : kNegZero2, o_bottom = AFFINE ? prmt(o, 0x3232u) : kNegZero2;
        if constexpr (BITS == 2) {
            unsigned w0, w1, top01, top23, bottom01, bottom23;
            lds64(rec + 8 * lane, w0, w1);
            kiln_lut::scaled_table2(tb.t01, tb.t23, s_top, o_top, top01, top23);
            kiln_lut::scaled_table2(tb.t01, tb.t23, s_bottom, o_bottom, bottom01, bottom23);
#pragma unroll
            for (int w = 0; w < 2; ++w) {
                const unsigned word = w ? w1 : w0;
                kiln_lut::select2<0>(word, top01, top23, bottom01, bottom23, a[2 * w][0], a[2 * w][1]);
                kiln_lut::select2<1>(word, top01, top23, bottom01, bottom23, a[2 * w][2], a[2 * w][3]);
                kiln_lut::select2<2>(word, top01, top23, bottom01, bottom23, a[2 * w + 1][0], a[2 * w + 1][1]);
                kiln_lut::select2<3>(word, top01, top23, bottom01, bottom23, a[2 * w + 1][2], a[2 * w + 1][3]);
            }
        } else {
            U4 q;
            if constexpr (BITS == 4) {
                q = lds128(rec + 16 * lane);
            } else {
                lds64(rec + 8 * lane, q.x, q.y);
                q.z = lds32(rec + 256 + 4 * lane);
                q.w = 0u;
            }
            unsigned w[4];
            kiln_lut::pair_words<BITS>(q, w);
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                a[j][0] = fma_bf16x2(lookup<0>(tb.lut, w[j]), s_top, o_top);
                a[j][1] = fma_bf16x2(lookup<1>(tb.lut, w[j]), s_bottom, o_bottom);
                a[j][2] = fma_bf16x2(lookup<2>(tb.lut, w[j]), s_top, o_top);
                a[j][3] = fma_bf16x2(lookup<3>(tb.lut, w[j]), s_bottom, o_bottom);
            }
        }
    }
}

template <int BITS, int BT, int STAGES, bool AFFINE>
__device__ __forceinline__ void gemm_body(const KilnTensorMap* tmx, const KilnTensorMap* tmc, const KilnTensorMap* tms,
                                          const KilnTensorMap* tmo, const LutHopperArgs& p) {
    constexpr u32 X_BYTES = BT * 128;                 // BT rows of 64 bf16
    constexpr u32 REC = 128 * BITS;                   // one tile's chunk record
    constexpr u32 CODE_BYTES = TILES * REC;
    constexpr u32 STAGE_BYTES = KILN_GEMM_LUT_HOPPER_STAGE(BITS, BT);
    constexpr u32 TABLE_BYTES = KILN_GEMM_LUT_HOPPER_TABLE(BITS);
    static_assert(X_BYTES % 1024 == 0 && CODE_BYTES % 128 == 0, "stage regions stay aligned");
    const int M = p.M, N = p.N, K = p.K, gshift = p.group_shift, sg = p.scale_box;
    const int KC = (K + 63) >> 6;
    const u32 scale_bytes = (u32)(TILES * sg * 32);   // one scale box: 8 words × SG groups × 8 tiles

    extern __shared__ __align__(16) unsigned char smem_raw[];
    __shared__ __align__(8) u64 full_bar[STAGES];
    __shared__ __align__(8) u64 empty_bar[STAGES];
    const u32 table_base = smem_u32(smem_raw);
    const u32 ring = (table_base + TABLE_BYTES + 1023u) & ~1023u;
    const int wg = threadIdx.x / 128, tid_wg = threadIdx.x % 128;

    // The schedule's "M" is the weight rows (128 per tile), its "N" the tokens: one tile = 128 rows × BT tokens.
    const TileSchedule<ROWS, BT, 1, GROUP_M> sched(N, M);

    if constexpr (BITS == 4 || BITS == 3)
        kiln_lut::fill_table<BITS, 4 * (CONS + 1)>(reinterpret_cast<unsigned*>(smem_raw), p.table);
    init_ring<STAGES, CONS, 1>(full_bar, empty_bar);   // its __syncthreads also publishes the table

    if (wg == 0) {
        // ---------------- producer ----------------
        producer_registers();
        if (tid_wg == 0) {
            tma_prefetch_desc(tmx); tma_prefetch_desc(tmc); tma_prefetch_desc(tms);
            if (AFFINE) tma_prefetch_desc(tmo);
            const u32 bytes = X_BYTES + CODE_BYTES + scale_bytes * (AFFINE ? 2u : 1u);
            int stage = 0;
            u32 phase = 0;
            for (int t = sched.first; t < sched.tiles; t += sched.stride) {
                int tr, tt;
                sched.coords(t, tr, tt);
                for (int kb = 0; kb < KC; ++kb) {
                    mbar_wait(smem_u32(&empty_bar[stage]), phase ^ 1);
                    const u32 fb = smem_u32(&full_bar[stage]);
                    mbar_arrive_expect_tx(fb, bytes);
                    const u32 s0 = ring + stage * STAGE_BYTES;
                    const int g0 = (kb * 64) >> gshift;
                    tma_load_2d(s0, tmx, fb, kb * 64, tt * BT);
                    tma_load_3d(s0 + X_BYTES, tmc, fb, 0, kb, tr * TILES);
                    tma_load_3d(s0 + X_BYTES + CODE_BYTES, tms, fb, 0, g0, tr * TILES);
                    if (AFFINE) tma_load_3d(s0 + X_BYTES + CODE_BYTES + 512, tmo, fb, 0, g0, tr * TILES);
                    if (++stage == STAGES) { stage = 0; phase ^= 1; }
                }
            }
        }
    } else {
        // ---------------- consumers ----------------
        consumer_registers<CONS>();
        const int cw = wg - 1, warp = tid_wg / 32, lane = tid_wg % 32;
        const int g = lane >> 2, t = lane & 3;
        const int tile = cw * 4 + warp;   // this warp's gemm_lut tile within the CTA's 8
        Tables tb;
        tb.lut = table_base + 4 * lane;
        tb.t01 = tb.t23 = 0u;
        if constexpr (BITS == 2) {
            tb.t01 = kiln_attn::pack_bf16x2(__ldg(p.table + 0), __ldg(p.table + 1));
            tb.t23 = kiln_attn::pack_bf16x2(__ldg(p.table + 2), __ldg(p.table + 3));
        }
        float d[BT / 2];
        unsigned a0[4][4] = {}, a1[4][4] = {};
        int stage = 0;
        u32 phase = 0;

        // One chunk: wait for its stage, dequantize into `a`, issue its four wgmmas; then retire the previous chunk's
        // (wait_group 1), keep its registers `prev_a` live until then, and free its stage.
        auto chunk = [&](int kb, unsigned (&a)[4][4], unsigned (&prev_a)[4][4], int& prev_stage) {
            mbar_wait(smem_u32(&full_bar[stage]), phase);
            const u32 s0 = ring + stage * STAGE_BYTES;
            const int sgi = ((kb * 64 + 16 * t) >> gshift) - ((kb * 64) >> gshift);   // the lane's group within the box
            const u32 sw = s0 + X_BYTES + CODE_BYTES + 4u * (u32)((tile * sg + sgi) * 8 + g);
            const unsigned s = lds32(sw);
            const unsigned o = AFFINE ? lds32(sw + 512) : 0u;
            fragments<BITS, AFFINE>(s0 + X_BYTES + tile * REC, lane, s, o, tb, a);
            fence_regs(a);
            wgmma_fence();
#pragma unroll
            for (int j = 0; j < 4; ++j)
                wgmma_rs<BT>(d, a[j], sw128_desc(s0 + j * 32, 16, 1024), (kb > 0 || j > 0) ? 1 : 0);
            wgmma_commit();
            wgmma_wait<1>();
            fence_regs(prev_a);
            if (kb > 0 && lane == 0) release<1>(smem_u32(&empty_bar[prev_stage]));
            prev_stage = stage;
            if (++stage == STAGES) { stage = 0; phase ^= 1; }
        };

        for (int tl = sched.first; tl < sched.tiles; tl += sched.stride) {
            int tr, tt;
            sched.coords(tl, tr, tt);
            int prev_stage = 0;
            int kb = 0;
            for (; kb + 1 < KC; kb += 2) {
                chunk(kb, a0, a1, prev_stage);
                chunk(kb + 1, a1, a0, prev_stage);
            }
            if (kb < KC) chunk(kb, a0, a1, prev_stage);
            wgmma_wait<0>();
            fence_all(d);
            fence_regs(a0); fence_regs(a1);
            if (lane == 0) release<1>(smem_u32(&empty_bar[prev_stage]));

            // Epilogue: fragment (j, r) = weight row n0 + g + 8·(r/2), token m0 + 8j + 2t + r%2; Y[m, n].
            const int n0 = tr * ROWS + cw * 64 + warp * 16 + g, m0 = tt * BT + 2 * t;
#pragma unroll
            for (int j = 0; j < BT / 8; ++j)
#pragma unroll
                for (int r = 0; r < 4; ++r) {
                    const int n = n0 + 8 * (r >> 1), m = m0 + 8 * j + (r & 1);
                    if (n < N && m < M) p.y[(long long)m * N + n] = kiln::from_float<bf16>(d[4 * j + r]);
                }
        }
    }
}

// X → X' (the header's permutation), one thread per bf16 pair of X'; columns past K are zero.
__device__ __forceinline__ void permute_x(const LutPermuteParams& p) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int pairs = p.KP >> 1;
    if (i >= (long long)p.M * pairs) return;
    const int m = (int)(i / pairs), dcol = (int)(i % pairs) * 2;
    const int c = dcol >> 6, s = dcol & 63, j = s >> 4, slot = s & 15;
    const int src = 64 * c + 16 * ((slot & 7) >> 1) + 4 * j + 2 * (slot >> 3);   // even: the pair (src, src + 1)
    unsigned v = 0u;
    if (src < p.K) v = *reinterpret_cast<const unsigned*>(p.x + (long long)m * p.K + src);   // K even: src + 1 < K too
    *reinterpret_cast<unsigned*>(p.xp + (long long)m * p.KP + dcol) = v;
}

}  // namespace kiln_gemm_lut_hopper

extern "C" __global__ void __launch_bounds__(256) kiln_lut_permute_x(const LutPermuteParams p) { kiln_gemm_lut_hopper::permute_x(p); }

#define KILN_GEMM_LUT_HOPPER_DEFINE(B, BT, S, A)                                                                     \
    extern "C" __global__ void __launch_bounds__(128 * (kiln_gemm_lut_hopper::CONS + 1), 1)                          \
        KILN_GEMM_LUT_HOPPER_NAME(B, BT, S, A)(const __grid_constant__ KilnTensorMap tmap_x,                          \
                                               const __grid_constant__ KilnTensorMap tmap_codes,                      \
                                               const __grid_constant__ KilnTensorMap tmap_scales,                     \
                                               const __grid_constant__ KilnTensorMap tmap_offsets, const LutHopperArgs args) { \
        kiln_gemm_lut_hopper::gemm_body<B, BT, S, (A) != 0>(&tmap_x, &tmap_codes, &tmap_scales, &tmap_offsets, args);    \
    }
KILN_GEMM_LUT_HOPPER_INSTANCES(KILN_GEMM_LUT_HOPPER_DEFINE)
