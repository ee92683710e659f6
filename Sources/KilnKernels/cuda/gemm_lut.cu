// gemm_lut.cu — decode GEMMs over 4-, 3- and 2-bit lookup-table weights (WeightFormat.lut), and 8-bit integer codes
// (GGUF Q8_0's member): Y[M,N] = X[M,K] · W[N,K]^T for 1 ≤ M ≤ 16, X bf16,
// W[n, k] = table[code[n, k]] · scale[n, k/g] (+ offset[n, k/g] when affine), g ∈ {32, 64, 128}.
//
// Decode reads the weights once per step, so the floor is N·K/2 code bytes + N·K/g·2 scale bytes (·2 affine) ÷
// bandwidth, a quarter of bf16's. At 4 bits the dequantization itself is work the kernel must keep small (at 4 TB/s an
// H200 must turn ~8·10^12 codes per second into bf16): per PAIR of codes one shared-memory lookup and one bf16x2 fma.
//  * mma.m16n8k16 bf16 with the operands swapped, as gemm_splitk.cu: weights = the 16-row A operand, tokens = the
//    8-wide B side, fp32 accumulators in gemm_util.cuh's layout (its epilogues, WARPS_K sum and split-K reduction).
//  * Chunks of 16 rows × 64 k. Lane (g = lane/4, t = lane%4) covers k = k0 + 16t … k0 + 16t + 15 of rows g and g+8:
//    its activation pairs p = 0…7 (k0 + 16t + 2p, +1) are two 16-byte loads of token g (rows past M read row M-1: their
//    output columns are never stored), and mma j (0…3) of the chunk
//    takes pairs 2j (k-slots 2t, 2t+1) and 2j+1 (k-slots 2t+8, 2t+9). A dot product may visit k in any order as long
//    as A and B agree, and they do: the slot → k map depends on t only (gemm_splitk's argument).
//  * The codes are restructured at load (GemmLUT.restructure, host side) so that one 16-byte load per lane and chunk
//    holds exactly its fragments: word j = [row g pair 2j, row g+8 pair 2j, row g pair 2j+1, row g+8 pair 2j+1], each
//    byte the canonical byte of two codes (low nibble = the even k). So byte i of word j is register a_i of mma j.
//    A warp's load is 512 contiguous bytes. Rows are padded to 16 and K to 64; padding codes meet zero scales and
//    offsets (and zero activations past K), so they add nothing.
//  * Per code pair: prmt (byte to the bottom) + shift-add (its shared address) + lds + fma.rn.bf16x2 — about 2.3
//    instructions per weight with the mmas and loads (docs/perf-notes-lut.md).
//  * The table: 256 entries, entry b = bf16x2 {table[b & 15], table[b >> 4]} — one lookup per code byte (FLUTE's
//    vectorized lookup) — replicated 32 times in shared memory, entry b of lane l at word 32·b + l, so every lane
//    reads its own bank and a lookup never conflicts (32 KB per block).
//  * Scales (and offsets) as bf16 pairs {row g, row g+8} per 16-row tile and group (GemmLUT.restructureScales): one
//    4-byte load per lane and chunk, applied in registers by fma.rn.bf16x2: a = lut · {s, s} + {o, o} (−0 without
//    offsets), one rounding to bf16, as the mma needs bf16 anyway. The weight the mma sees is
//    bf16(bf16(table[c]) · bf16(scale) + bf16(offset)) — the CPU reference's f32 value up to three bf16 roundings.
//    Symmetric formats with g ≥ 64 (one scale per row and chunk) skip the fma: the mmas take bf16(table[c]) and the
//    fragment is scaled in f32 after them (POST: the `_post` twin kernels; mma_step says why).
//  * Split-K over whole chunks, WARPS_K warps interleaved over a split's super-steps of UNROLL chunks; the codes and
//    scales of step s+1 are loaded before the mmas of step s (two register sets); activations per step.
//
// 3 and 2 bits (BITS template parameter; the description above is BITS = 4). The same fragment map, chunks, scales,
// split-K and main loop; a lane's 32 codes per chunk are 12 or 8 bytes, restructured at load so that turning them into
// the mma's bf16 pairs costs few instructions (docs/perf-notes-lut.md, "3 and 2 bits", has the counts). Name the 16
// pairs of a lane's chunk by slot (j, i) = register a_i of mma j: row g + 8·(i & 1), columns 16t + 4j + 2·(i >> 1) + e,
// e = 0 (even column, low half) or 1.
//  * 3 bits: per chunk 384 bytes = [32 lanes × 8 bytes A][32 lanes × 4 bytes B]. A = words A0 (mmas 0, 1), A1 (2, 3):
//    byte i of A_{j>>1}, nibble j & 1, holds the low two bits of slot (j, i)'s codes (even code in bits 0-1). B byte i
//    holds their high bits: slot (0, i) at bits 4-5, (1, i) 6-7, (2, i) 0-1, (3, i) 2-3 (even code first). Nine
//    shift/logic ops per chunk (`pair_words<3>`) turn A0, A1, B into four words shaped like the 4-bit ones: byte i of
//    word j = slot (j, i)'s pair index (bits 0-3 the low bits, 4-5 the high bits, 6-7 junk), looked up in a 256-entry
//    pair table that ignores bits 6-7 (entry b = {table[(b & 3) | (b >> 2 & 4)], table[(b >> 2 & 3) | (b >> 3 & 4)]}),
//    32 copies as at 4 bits: the 4-bit lookup and fma, unchanged.
//  * 2 bits: per chunk 256 bytes, 8 per lane (words W0 for mmas 0, 1 and W1 for 2, 3). No shared memory: the 4-entry
//    table, scaled per row and group (fma.rn.bf16x2 on {table[0], table[1]} and {table[2], table[3]}: the same bf16
//    value per weight as the lookup-then-fma order), sits in two registers per row, and one prmt per code pair selects
//    from them. Bits 2s-2s+1 of byte b of W_w hold code e = b & 1 of slot (2w + (s >> 1), 2·(s & 1) + (b >> 1)): the
//    four codes at bits 2s of W_w, masked (x = (W >> 2s) & 0x03030303) and multiplied by 0x22 (+0x10101010), are two
//    prmt selectors {2c, 2c+1} per code (bytes 2c, 2c+1 of the register pair = table entry c): the low half of
//    x·0x22 for the top row's slot, the high half (__umulhi(x, 0x220000)) for the bottom row's (`select2`).
//
// 8 bits (GGUF Q8_0 repacked at load: code c = q + 128 for the signed int8 q, the symmetric `int` table c − 128, one
// f16 scale d per group; symmetric only). The same fragment map, chunks, split-K and main loop, no table:
//  * Per chunk 1024 bytes = two halves of [32 lanes × 16 bytes]; lane l's first 16 bytes (mmas 0, 1) at 16·l, its
//    second (mmas 2, 3) at 512 + 16·l, so each of its two 16-byte loads is 512 contiguous bytes per warp. Word 2j of a
//    lane's 8 words = [row g cols 4j, 4j+1 | row g+8 cols 4j, 4j+1], word 2j+1 the same at cols 4j+2, 4j+3 (columns
//    relative to 16t): each byte pair is one bf16x2 register a_i of mma j, even column in the low byte.
//  * Scales: the same 8 words per tile and group, each {f16 d of row g (low half), f16 d of row g+8} — f16, not bf16,
//    so the scale is the stored d exactly (GemmLUT.restructureScales, .f16) — turned into two f32 by two cvt per chunk.
//  * Per code: one prmt puts the byte into the low mantissa byte of 2^23 (0x4B0000cc = 2^23 + c, exact), one FADD of
//    −(2^23 + 128) gives q exactly, one FMUL by d gives q·d exactly (8 × 11 significant bits fit f32's 24); per code
//    pair one cvt.rn.bf16x2.f32 rounds both to the mma's bf16 pair — one rounding: the weight the mma sees is
//    bf16(q·d), the CPU's bf16 rounding of the exact value. 7 instructions per code pair (2 prmt, 2 FADD, 2 FMUL,
//    1 F2FP), no shared memory (docs/perf-notes-lut.md, "Q8_0 on gemm_lut").
//
// Entry points, all with the parameters of `LutGemmParams` (one struct; GemmLUT.swift mirrors it):
//   kiln_gemm_lut{BITS}_nt{NT}_wn{WN}_wk{WK}_t{T}_u{U}_a{AFFINE}   block = 32·WN·WK threads,
//                                                             grid = (ceil(ceil(N/16) / (T·WN)), splitK)
//   kiln_gemm_lut{3,4}_…_a0_post                               the same; the scales after the mmas (g ≥ 64); both
//                                                             4/3-bit kinds: 32 KB of dynamic shared memory (the table)
//   kiln_lut{BITS}_dequant (LutDequantParams)                 block = 256, grid = ceil(ceil(N/16)·KC·32 / 256): W → bf16
//   (BITS ∈ {2, 3, 4, 8}; AFFINE = 0 only at 8 bits)
// Requirements (checked by the launcher): K % g == 0 and g ∈ {32, 64, 128} (so K % 32 == 0), x 16-byte aligned,
// 1 ≤ M ≤ 8·NT; the SwiGLU epilogue needs N % 16 == 0 (gate/up interleaved per 16-row tile by the restructure).

#include "kiln.cuh"
#include "attention_util.cuh"   // U4, ld_nc, ld_cg, mma16816, pack_bf16x2, pdl_wait_then_trigger
#include "gemm_util.cuh"        // accumulator layout, store_out, sum_warps_k, KILN_SPLITK_REDUCE
#include "lut_util.cuh"         // code loads, each width's unpacking (8 bits: int8_fragments), the table fill

struct LutGemmParams {
    const kiln::bf16* x;           // [M, K] bf16 activations
    const unsigned char* codes;    // [ceil(N/16), KC, 128·BITS bytes] restructured codes (KC = ceil(K/64)); 4 bits: [32 lanes, 16 bytes]
    const unsigned* scales;        // [ceil(N/16), GP, 8] bf16x2 {scale row g, scale row g+8} (GP = ceil(64·KC / g)); 8 bits: f16x2
    const unsigned* offsets;       // same layout, affine instances only (else unused)
    const float* table;            // [2^BITS] f32 table values
    void* y;                       // [M, N] bf16 / fp32, or [M, N/2] bf16 (SwiGLU)
    float* ws;                     // [splitK, M, N] fp32 split-K partials (splitK > 1)
    unsigned* cnt;                 // [gridDim.x] zeroed counters (splitK > 1), left zeroed
    int M, N, K;
    int group_shift;               // log2(g)
    kiln::Epilogue epi;
};

struct LutDequantParams {
    const unsigned char* codes;    // restructured codes, as LutGemmParams
    const unsigned* scales;        // as LutGemmParams
    const unsigned* offsets;       // as LutGemmParams, or null (symmetric)
    const float* table;            // [2^BITS] f32
    kiln::bf16* y;                 // [N, K] bf16
    int N, K;
    int group_shift;
};

namespace kiln_lut {

using kiln::Epilogue;
using kiln_attn::U4;
using kiln_attn::ld_cg;
using kiln_attn::mma16816;
using kiln_attn::pdl_wait_then_trigger;
using kiln_gemm::store_out;

// The registers of one super-step's weights: per chunk u and tile tt, the lane's 16 code bytes (3 bits: A0, A1, B in
// x, y, z; 2 bits: W0, W1 in x, y — the unused words are never assigned, so they take no registers; 8 bits: its first
// 16 bytes, the second in q_hi) and its scale pair (and offset pair).
template <int TILES, int UNROLL, bool AFFINE, int BITS = 4>
struct WeightRegs {
    U4 q[UNROLL][TILES];
    U4 q_hi[BITS == 8 ? UNROLL : 1][BITS == 8 ? TILES : 1];   // 8 bits: words 4-7 (mmas 2, 3); never assigned otherwise
    unsigned s[UNROLL][TILES];
    unsigned o[AFFINE ? UNROLL : 1][AFFINE ? TILES : 1];
};

// Where lane (g, t)'s data of tile `tile` sits: codes at chunk c are qbase + 128·BITS·c (3 bits: A there, B at
// + bofs; 8 bits: the second half at + 512); its scale word of group G at sbase + 8·G.
struct LaneAddr {
    const unsigned char* qbase[4];
    const unsigned* sbase[4];
    const unsigned* obase[4];
    int bofs;   // 3 bits: 256 − 4·lane (B's offset from A)
};

template <int BITS, int TILES, int UNROLL, bool AFFINE>
__device__ __forceinline__ void load_weights(WeightRegs<TILES, UNROLL, AFFINE, BITS>& r, const LaneAddr& a, int c, int t, int gshift) {
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
        const int group = ((c + u) * 64 + 16 * t) >> gshift;
#pragma unroll
        for (int tt = 0; tt < TILES; ++tt) {
            if constexpr (BITS == 8) {
                const unsigned char* chunk = a.qbase[tt] + (long long)(c + u) * 1024;
                r.q[u][tt] = ld_weight(chunk);
                r.q_hi[u][tt] = ld_weight(chunk + 512);
            } else if constexpr (BITS == 4) {
                r.q[u][tt] = ld_weight(a.qbase[tt] + (long long)(c + u) * 512);
            } else {
                const unsigned char* chunk = a.qbase[tt] + (long long)(c + u) * (128 * BITS);
                ld_codes8(chunk, r.q[u][tt].x, r.q[u][tt].y);
                if constexpr (BITS == 3) r.q[u][tt].z = ld_codes4(chunk + a.bofs);
            }
            r.s[u][tt] = ld_scale(a.sbase[tt] + group * 8);
            if constexpr (AFFINE) r.o[u][tt] = ld_scale(a.obase[tt] + group * 8);
        }
    }
}

// The lane's activation pairs of chunks c … c+UNROLL-1 for each token group: x[u][n][0] = pairs 0…3, [1] = pairs 4…7.
// Token rows past M read row M-1 (xrow is clamped): an mma's output column depends on its own B column only, and the
// columns of tokens ≥ M are never stored, so no per-lane token test (a branch around every load) is needed.
// PRED: lanes whose 16 columns start at or past K load zeros (the partial last chunk when K % 64 == 32; they would read
// past the row, and meet the zero padding codes and scales).
template <int NT, int UNROLL, bool PRED>
__device__ __forceinline__ void load_x(U4 (&x)[UNROLL][NT][2], const kiln::bf16* const (&xrow)[2], int c, int t, int K) {
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
        const int k = (c + u) * 64 + 16 * t;
        const bool ok = !PRED || k < K;
#pragma unroll
        for (int n = 0; n < NT; ++n)
#pragma unroll
            for (int h = 0; h < 2; ++h) x[u][n][h] = ok ? ld_act(xrow[n] + k + 8 * h) : U4{0u, 0u, 0u, 0u};
    }
}

// The group scales of a lane's two rows (g: low half of the packed word, g + 8: high half) each broadcast to a bf16x2
// pair, and likewise the offsets when AFFINE (else −0, which leaves the fma's product unchanged).
template <bool AFFINE, class Regs>
__device__ __forceinline__ void row_pairs(const Regs& r, int u, int tt, unsigned& s_top, unsigned& s_bottom, unsigned& o_top,
                                          unsigned& o_bottom) {
    s_top = prmt(r.s[u][tt], 0x1010u); s_bottom = prmt(r.s[u][tt], 0x3232u);
    o_top = kNegZero2; o_bottom = kNegZero2;
    if constexpr (AFFINE) { o_top = prmt(r.o[u][tt], 0x1010u); o_bottom = prmt(r.o[u][tt], 0x3232u); }
}

// Dequantizes chunk u's fragments tile by tile (lookup + fma per code pair) and runs its 4·NT mmas per tile (4 and 3
// bits: `lut` = this lane's copy of the shared pair table; 2 bits: mma_step2).
// POST (symmetric formats with g ≥ 64, so each row's 64 columns of a chunk share one scale): the mmas take the table
// values as looked up, into a fragment of their own, and the scales multiply the fragment in f32 afterwards — 4·NT
// fmas per tile and chunk in place of 16 fma.bf16x2 (the kernel is instruction-bound, docs/perf-notes-lut.md), and one
// bf16 rounding fewer: the weight the mma sees is bf16(table[c]), the product then · scale in f32.
template <int BITS, int NT, int TILES, int UNROLL, bool AFFINE, bool POST>
__device__ __forceinline__ void mma_step(float (&acc)[TILES][NT][4], const WeightRegs<TILES, UNROLL, AFFINE, BITS>& r,
                                         const U4 (&x)[UNROLL][NT][2], unsigned lut) {
    static_assert(!(POST && AFFINE), "POST: symmetric formats only (an offset adds o·Σx, not a scale of the sum)");
#pragma unroll
    for (int u = 0; u < UNROLL; ++u)
#pragma unroll
        for (int tt = 0; tt < TILES; ++tt) {
            unsigned s_top, s_bottom, o_top, o_bottom;
            if constexpr (!POST) row_pairs<AFFINE>(r, u, tt, s_top, s_bottom, o_top, o_bottom);
            unsigned words[4];
            pair_words<BITS>(r.q[u][tt], words);
            float c[NT][4];
#pragma unroll
            for (int n = 0; n < NT; ++n)
#pragma unroll
                for (int i = 0; i < 4; ++i) c[n][i] = 0.f;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const unsigned w = words[j];
                unsigned a0 = lookup<0>(lut, w), a1 = lookup<1>(lut, w), a2 = lookup<2>(lut, w), a3 = lookup<3>(lut, w);
                if constexpr (!POST) {
                    a0 = fma_bf16x2(a0, s_top, o_top); a1 = fma_bf16x2(a1, s_bottom, o_bottom);
                    a2 = fma_bf16x2(a2, s_top, o_top); a3 = fma_bf16x2(a3, s_bottom, o_bottom);
                }
#pragma unroll
                for (int n = 0; n < NT; ++n) {
                    const U4& xx = x[u][n][j >> 1];
                    const unsigned b0 = (j & 1) ? xx.z : xx.x, b1 = (j & 1) ? xx.w : xx.y;
                    if constexpr (POST) mma16816(c[n], a0, a1, a2, a3, b0, b1);
                    else mma16816(acc[tt][n], a0, a1, a2, a3, b0, b1);
                }
            }
            if constexpr (POST) {
                // The packed pair's low half is row g's scale, the high half row g+8's (bf16 → f32: a shift).
                const float sf_top = __uint_as_float(r.s[u][tt] << 16), sf_bottom = __uint_as_float(r.s[u][tt] & 0xffff0000u);
#pragma unroll
                for (int n = 0; n < NT; ++n) {
                    acc[tt][n][0] = fmaf(c[n][0], sf_top, acc[tt][n][0]);
                    acc[tt][n][1] = fmaf(c[n][1], sf_top, acc[tt][n][1]);
                    acc[tt][n][2] = fmaf(c[n][2], sf_bottom, acc[tt][n][2]);
                    acc[tt][n][3] = fmaf(c[n][3], sf_bottom, acc[tt][n][3]);
                }
            }
        }
}

// 2 bits: per chunk and tile the row's scaled 4-entry tables (4 fma.rn.bf16x2), then one prmt per code pair (select2).
// t01 / t23 = {table[0], table[1]} / {table[2], table[3]} in bf16.
template <int NT, int TILES, int UNROLL, bool AFFINE>
__device__ __forceinline__ void mma_step2(float (&acc)[TILES][NT][4], const WeightRegs<TILES, UNROLL, AFFINE, 2>& r,
                                          const U4 (&x)[UNROLL][NT][2], unsigned t01, unsigned t23) {
#pragma unroll
    for (int u = 0; u < UNROLL; ++u)
#pragma unroll
        for (int tt = 0; tt < TILES; ++tt) {
            unsigned s_top, s_bottom, o_top, o_bottom;
            row_pairs<AFFINE>(r, u, tt, s_top, s_bottom, o_top, o_bottom);
            unsigned top01, top23, bottom01, bottom23;
            scaled_table2(t01, t23, s_top, o_top, top01, top23);
            scaled_table2(t01, t23, s_bottom, o_bottom, bottom01, bottom23);
            const unsigned words[2] = {r.q[u][tt].x, r.q[u][tt].y};
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                unsigned a0, a1, a2, a3;
                if (j & 1) {
                    select2<2>(words[j >> 1], top01, top23, bottom01, bottom23, a0, a1);
                    select2<3>(words[j >> 1], top01, top23, bottom01, bottom23, a2, a3);
                } else {
                    select2<0>(words[j >> 1], top01, top23, bottom01, bottom23, a0, a1);
                    select2<1>(words[j >> 1], top01, top23, bottom01, bottom23, a2, a3);
                }
#pragma unroll
                for (int n = 0; n < NT; ++n) {
                    const U4& xx = x[u][n][j >> 1];
                    const unsigned b0 = (j & 1) ? xx.z : xx.x, b1 = (j & 1) ? xx.w : xx.y;
                    mma16816(acc[tt][n], a0, a1, a2, a3, b0, b1);
                }
            }
        }
}

// 8 bits: per chunk and tile the 16 registers (int8_fragments), then 4·NT mmas.
template <int NT, int TILES, int UNROLL>
__device__ __forceinline__ void mma_step8(float (&acc)[TILES][NT][4], const WeightRegs<TILES, UNROLL, false, 8>& r,
                                          const U4 (&x)[UNROLL][NT][2]) {
#pragma unroll
    for (int u = 0; u < UNROLL; ++u)
#pragma unroll
        for (int tt = 0; tt < TILES; ++tt) {
            unsigned a[4][4];
            int8_fragments(r, u, tt, a);
#pragma unroll
            for (int j = 0; j < 4; ++j)
#pragma unroll
                for (int n = 0; n < NT; ++n) {
                    const U4& xx = x[u][n][j >> 1];
                    const unsigned b0 = (j & 1) ? xx.z : xx.x, b1 = (j & 1) ? xx.w : xx.y;
                    mma16816(acc[tt][n], a[j][0], a[j][1], a[j][2], a[j][3], b0, b1);
                }
        }
}

// One super-step's dequantization and mmas at any width.
template <int BITS, int NT, int TILES, int UNROLL, bool AFFINE, bool POST>
__device__ __forceinline__ void mma_any(float (&acc)[TILES][NT][4], const WeightRegs<TILES, UNROLL, AFFINE, BITS>& r,
                                        const U4 (&x)[UNROLL][NT][2], unsigned lut, unsigned t01, unsigned t23) {
    if constexpr (BITS == 8) mma_step8<NT, TILES, UNROLL>(acc, r, x);
    else if constexpr (BITS == 2) mma_step2<NT, TILES, UNROLL, AFFINE>(acc, r, x, t01, t23);
    else mma_step<BITS, NT, TILES, UNROLL, AFFINE, POST>(acc, r, x, lut);
}

template <int BITS, int NT, int WARPS_N, int WARPS_K, int TILES, int UNROLL, bool AFFINE, bool POST>
__device__ __forceinline__ void gemm_lut(const LutGemmParams& p) {
    static_assert(NT == 1 || NT == 2, "NT: 1 (M <= 8) or 2 (M <= 16)");
    static_assert(WARPS_N * WARPS_K <= 8, "at most 8 warps per block");
    static_assert(TILES <= 4, "at most 4 tiles per warp");
    static_assert((BITS >= 2 && BITS <= 4) || BITS == 8, "2-, 3-, 4- or 8-bit codes");
    static_assert(BITS != 8 || !AFFINE, "8-bit codes are symmetric (GGUF Q8_0)");
    static_assert(2 * UNROLL * TILES * BITS + UNROLL * NT * 8 <= 96, "two code sets plus one activation set: at most 96 registers (more spills)");
    // The pair table in dynamic shared memory (GemmLUT.Config.sharedBytes: 32 KB at 4 and 3 bits, fill_table's layout),
    // none at 2 bits (the table lives in registers) and 8 bits (the codes are converted arithmetically).
    extern __shared__ __align__(16) unsigned lut_smem[];

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wn = warp % WARPS_N, wk = warp / WARPS_N, g = lane >> 2, t = lane & 3;
    const int M = p.M, N = p.N, K = p.K, gshift = p.group_shift;
    const int KC = (K + 63) >> 6, KF = K >> 6;            // chunks; chunks whose 64 columns all lie below K
    const int GP = ((KC << 6) + (1 << gshift) - 1) >> gshift;
    const int tiles = (N + 15) >> 4;

    // This block's split: whole chunks [c0, c1); the full ones end at cfull.
    const int splitK = gridDim.y, split = blockIdx.y;
    const int per = (KC + splitK - 1) / splitK;
    const int c0 = min(KC, split * per), c1 = min(KC, c0 + per);
    const int cfull = min(c1, max(c0, KF));
    const int tile0 = (blockIdx.x * WARPS_N + wn) * TILES;
    const int row0 = tile0 * 16;

    // Tiles past the last read the last one (valid memory) and are never stored.
    LaneAddr a;
    if constexpr (BITS == 3) a.bofs = 256 - 4 * lane;
#pragma unroll
    for (int tt = 0; tt < TILES; ++tt) {
        const int tile = min(tile0 + tt, tiles - 1);
        if constexpr (BITS == 8) a.qbase[tt] = p.codes + (long long)tile * KC * 1024 + 16 * lane;
        else if constexpr (BITS == 4) a.qbase[tt] = p.codes + ((long long)tile * KC * 32 + lane) * 16;
        else a.qbase[tt] = p.codes + (long long)tile * KC * (128 * BITS) + 8 * lane;
        a.sbase[tt] = p.scales + (long long)tile * GP * 8 + g;
        a.obase[tt] = AFFINE ? p.offsets + (long long)tile * GP * 8 + g : nullptr;
    }
    const kiln::bf16* xrow[2];
#pragma unroll
    for (int n = 0; n < 2; ++n) xrow[n] = p.x + (long long)min(8 * n + g, M - 1) * K;

    float acc[TILES][NT][4];
#pragma unroll
    for (int tt = 0; tt < TILES; ++tt)
#pragma unroll
        for (int n = 0; n < NT; ++n)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[tt][n][i] = 0.f;

    const int steps = (cfull - c0) / UNROLL;
    const int mine = steps > wk ? (steps - wk + WARPS_K - 1) / WARPS_K : 0;
    auto first_chunk = [&](int s) { return c0 + (wk + s * WARPS_K) * UNROLL; };
    WeightRegs<TILES, UNROLL, AFFINE, BITS> ra, rb;
    // The first codes are requested before the table is built and before the PDL wait (weights never depend on the
    // previous kernel).
    if (mine > 0) load_weights<BITS, TILES, UNROLL, AFFINE>(ra, a, first_chunk(0), t, gshift);
    unsigned lut = 0, t01 = 0, t23 = 0;
    if constexpr (BITS == 4 || BITS == 3) {
        // Entry b = {table[b & 15], table[b >> 4]} (4 bits); {table[lut3_even(b)], table[lut3_odd(b)]} (3 bits, bits 6-7
        // of b ignored).
        fill_table<BITS, WARPS_N * WARPS_K>(lut_smem, p.table);
    } else if constexpr (BITS == 2) {
        t01 = kiln_attn::pack_bf16x2(__ldg(p.table + 0), __ldg(p.table + 1));
        t23 = kiln_attn::pack_bf16x2(__ldg(p.table + 2), __ldg(p.table + 3));
    }
    if constexpr (BITS == 4 || BITS == 3) {
        __syncthreads();
        lut = kiln_attn::smem_addr(lut_smem + lane);
    }
    pdl_wait_then_trigger();

    U4 xr[UNROLL][NT][2];
#pragma unroll 1
    for (int s = 0; s < mine; s += 2) {
        if (s + 1 < mine) load_weights<BITS, TILES, UNROLL, AFFINE>(rb, a, first_chunk(s + 1), t, gshift);
        load_x<NT, UNROLL, false>(xr, xrow, first_chunk(s), t, K);
        mma_any<BITS, NT, TILES, UNROLL, AFFINE, POST>(acc, ra, xr, lut, t01, t23);
        if (s + 1 >= mine) break;
        if (s + 2 < mine) load_weights<BITS, TILES, UNROLL, AFFINE>(ra, a, first_chunk(s + 2), t, gshift);
        load_x<NT, UNROLL, false>(xr, xrow, first_chunk(s + 1), t, K);
        mma_any<BITS, NT, TILES, UNROLL, AFFINE, POST>(acc, rb, xr, lut, t01, t23);
    }
    // The rest, one chunk at a time: full chunks that did not fill a super-step, and the partial chunk (K % 64 == 32),
    // whose upper lanes read zero activations against the zero padding codes.
#pragma unroll 1
    for (int c = c0 + steps * UNROLL + wk; c < c1; c += WARPS_K) {
        WeightRegs<TILES, 1, AFFINE, BITS> r1;
        U4 x1[1][NT][2];
        load_weights<BITS, TILES, 1, AFFINE>(r1, a, c, t, gshift);
        load_x<NT, 1, true>(x1, xrow, c, t, K);
        mma_any<BITS, NT, TILES, 1, AFFINE, POST>(acc, r1, x1, lut, t01, t23);
    }

    void* y = p.y;
    float* ws = p.ws;
    unsigned* cnt = p.cnt;
    const Epilogue epi = p.epi;
    KILN_GEMM_FINISH(WARPS_N, WARPS_K, TILES, NT);
}

// Prefill over lookup-table weights (until a LUT prefill GEMM exists): W dequantized to bf16 [N, K] for the Hopper
// GEMM, with the decode kernel's lookup and fma (decode's POST path rounds once fewer: bf16(table[c]) · scale in f32). One
// thread per lane block (16 code bytes = 16 columns of two rows), reading the restructured layout as a lane of
// gemm_lut does and writing each bf16 pair where the fragment map says it belongs.
// One dequantizing thread's place, shared by every width: its lane block (tile, chunk, lane of the restructured layout),
// its first column, its two rows, and their group scale (and offset) pairs.
struct DequantLane {
    long long i;   // (tile, chunk, lane) flattened: the thread's index
    int tile, chunk, lane, k, top, bottom;
    unsigned s_top, s_bottom, o_top, o_bottom;
};

// Fills `d` for this thread; false when it has nothing to write (past the last tile, or padding columns).
__device__ __forceinline__ bool dequant_lane(const LutDequantParams& p, DequantLane& d) {
    const int N = p.N, K = p.K, gshift = p.group_shift;
    const int KC = (K + 63) >> 6, tiles = (N + 15) >> 4;
    const int GP = ((KC << 6) + (1 << gshift) - 1) >> gshift;
    d.i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    pdl_wait_then_trigger();
    if (d.i >= (long long)tiles * KC * 32) return false;
    d.lane = (int)(d.i & 31); d.chunk = (int)((d.i >> 5) % KC); d.tile = (int)((d.i >> 5) / KC);
    const int g = d.lane >> 2, t = d.lane & 3;
    d.k = d.chunk * 64 + 16 * t;
    if (d.k >= K) return false;   // padding columns
    const long long sidx = ((long long)d.tile * GP + (d.k >> gshift)) * 8 + g;
    const unsigned s = p.scales[sidx];
    d.s_top = prmt(s, 0x1010u); d.s_bottom = prmt(s, 0x3232u);
    d.o_top = kNegZero2; d.o_bottom = kNegZero2;
    if (p.offsets) { const unsigned o = p.offsets[sidx]; d.o_top = prmt(o, 0x1010u); d.o_bottom = prmt(o, 0x3232u); }
    d.top = d.tile * 16 + g; d.bottom = d.top + 8;
    return true;
}

// Writes a lane's dequantized mma registers to y [N, K]: register i of mma j = row g + 8·(i & 1), columns
// k + 4j + 2·(i >> 1), +1 (rows past N skipped).
__device__ __forceinline__ void store_fragments(const LutDequantParams& p, const DequantLane& d, const unsigned (&a)[4][4]) {
    const int N = p.N, K = p.K, k = d.k, top = d.top, bottom = d.bottom;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int col = k + 4 * j;
        if (top < N) {
            *(unsigned*)(p.y + (long long)top * K + col) = a[j][0];
            *(unsigned*)(p.y + (long long)top * K + col + 2) = a[j][2];
        }
        if (bottom < N) {
            *(unsigned*)(p.y + (long long)bottom * K + col) = a[j][1];
            *(unsigned*)(p.y + (long long)bottom * K + col + 2) = a[j][3];
        }
    }
}

__device__ __forceinline__ void dequant(const LutDequantParams& p) {
    DequantLane d;
    if (!dequant_lane(p, d)) return;
    const int N = p.N, K = p.K, k = d.k, top = d.top, bottom = d.bottom;
    const unsigned s_top = d.s_top, s_bottom = d.s_bottom, o_top = d.o_top, o_bottom = d.o_bottom;
    const U4 q = ld_weight(p.codes + d.i * 16);
    const unsigned words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const unsigned w = words[j];
        // Byte 0: row g, columns k + 4j, +1; byte 1: row g+8, same; byte 2: row g, k + 4j + 2, +3; byte 3: row g+8.
        const unsigned a0 = fma_bf16x2(lut_value(p.table, w & 0xffu), s_top, o_top);
        const unsigned a1 = fma_bf16x2(lut_value(p.table, (w >> 8) & 0xffu), s_bottom, o_bottom);
        const unsigned a2 = fma_bf16x2(lut_value(p.table, (w >> 16) & 0xffu), s_top, o_top);
        const unsigned a3 = fma_bf16x2(lut_value(p.table, w >> 24), s_bottom, o_bottom);
        const int col = k + 4 * j;
        if (top < N) {
            *(unsigned*)(p.y + (long long)top * K + col) = a0;
            *(unsigned*)(p.y + (long long)top * K + col + 2) = a2;
        }
        if (bottom < N) {
            *(unsigned*)(p.y + (long long)bottom * K + col) = a1;
            *(unsigned*)(p.y + (long long)bottom * K + col + 2) = a3;
        }
    }
}

// The same for 3 and 2 bits, through the decode kernel's own conversions (pair_words<3> and the 3-bit table entry;
// select2 on the scaled 2-bit tables), so prefill's weights are decode's and `kiln check` on this kernel also checks
// those conversions.
template <int BITS>
__device__ __forceinline__ void dequant_low(const LutDequantParams& p) {
    DequantLane d;
    if (!dequant_lane(p, d)) return;
    const int KC = (p.K + 63) >> 6, lane = d.lane;
    const unsigned s_top = d.s_top, s_bottom = d.s_bottom, o_top = d.o_top, o_bottom = d.o_bottom;
    const unsigned char* rec = p.codes + ((long long)d.tile * KC + d.chunk) * (128 * BITS);
    U4 q{0u, 0u, 0u, 0u};
    ld_codes8(rec + 8 * lane, q.x, q.y);
    if constexpr (BITS == 3) q.z = ld_codes4(rec + 256 + 4 * lane);
    unsigned a[4][4];   // [mma j][register i]
    if constexpr (BITS == 3) {
        unsigned words[4];
        pair_words<3>(q, words);
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r)
                a[j][r] = fma_bf16x2(lut3_value(p.table, (words[j] >> (8 * r)) & 0xffu), (r & 1) ? s_bottom : s_top, (r & 1) ? o_bottom : o_top);
    } else {
        const unsigned t01 = kiln_attn::pack_bf16x2(__ldg(p.table + 0), __ldg(p.table + 1));
        const unsigned t23 = kiln_attn::pack_bf16x2(__ldg(p.table + 2), __ldg(p.table + 3));
        unsigned top01, top23, bottom01, bottom23;
        scaled_table2(t01, t23, s_top, o_top, top01, top23);
        scaled_table2(t01, t23, s_bottom, o_bottom, bottom01, bottom23);
#pragma unroll
        for (int w = 0; w < 2; ++w) {
            const unsigned word = w ? q.y : q.x;
            select2<0>(word, top01, top23, bottom01, bottom23, a[2 * w][0], a[2 * w][1]);
            select2<1>(word, top01, top23, bottom01, bottom23, a[2 * w][2], a[2 * w][3]);
            select2<2>(word, top01, top23, bottom01, bottom23, a[2 * w + 1][0], a[2 * w + 1][1]);
            select2<3>(word, top01, top23, bottom01, bottom23, a[2 * w + 1][2], a[2 * w + 1][3]);
        }
    }
    store_fragments(p, d, a);
}

// The same for 8 bits, through the decode kernel's own conversion (int8_fragments), so `kiln check` on this kernel
// checks decode's q·d bit for bit. dequant_lane's scale pairs hold each row's f16 twice: the low halves are d.
__device__ __forceinline__ void dequant8(const LutDequantParams& p) {
    DequantLane d;
    if (!dequant_lane(p, d)) return;
    const int KC = (p.K + 63) >> 6;
    const unsigned char* rec = p.codes + ((long long)d.tile * KC + d.chunk) * 1024 + 16 * d.lane;
    WeightRegs<1, 1, false, 8> r;
    r.q[0][0] = ld_weight(rec);
    r.q_hi[0][0] = ld_weight(rec + 512);
    r.s[0][0] = (d.s_top & 0xffffu) | (d.s_bottom << 16);
    unsigned a[4][4];   // [mma j][register i]
    int8_fragments(r, 0, 0, a);
    store_fragments(p, d, a);
}

}  // namespace kiln_lut

extern "C" __global__ void __launch_bounds__(256) kiln_lut8_dequant(const LutDequantParams p) { kiln_lut::dequant8(p); }
extern "C" __global__ void __launch_bounds__(256) kiln_lut4_dequant(const LutDequantParams p) { kiln_lut::dequant(p); }
extern "C" __global__ void __launch_bounds__(256) kiln_lut3_dequant(const LutDequantParams p) { kiln_lut::dequant_low<3>(p); }
extern "C" __global__ void __launch_bounds__(256) kiln_lut2_dequant(const LutDequantParams p) { kiln_lut::dequant_low<2>(p); }

// X(BITS, NT, WARPS_N, WARPS_K, TILES, UNROLL, AFFINE) — the instances the tuner chooses from. NT = 1 serves M ≤ 8,
// NT = 2 M ≤ 16; AFFINE = 1 reads offsets. A first set (no device has run them yet): 4 warps over K with one tile as the
// bf16 and FP8 defaults, 8 warps for the small shapes, two tiles per warp, a 2-warp-wide block; UNROLL 4 keeps as many
// weight bytes in flight per lane as gemm_splitk's UNROLL 2 (one 16-byte load per 64 columns instead of two per 32).
// 3 and 2 bits: fewer bytes per chunk (12, 8 per lane), so also UNROLL 8 (2 bits, M ≤ 8) and four tiles per warp at
// UNROLL 2 for more bytes in flight per lane (not two tiles with one token group: those would share NVVM's
// instantiations of the TILES = 2, NT = 1 epilogue with the 4-bit t2 instance and change its machine code).
// 8 bits (GGUF Q8_0, symmetric only): the 4-bit winners of the first device run (docs/perf-notes-lut.md, session 12),
// whose UNROLL 2 keeps 64 code bytes per lane in flight per register set at 8 bits, as the 4-bit UNROLL 4 default.
#define KILN_GEMM_LUT_INSTANCES(X) \
    X(4, 1, 1, 4, 1, 4, 0) X(4, 1, 1, 4, 1, 2, 0) X(4, 1, 1, 8, 1, 2, 0) X(4, 1, 2, 4, 1, 2, 0) X(4, 1, 1, 4, 2, 2, 0) \
    X(4, 2, 1, 4, 1, 4, 0) X(4, 2, 1, 4, 1, 2, 0) X(4, 2, 1, 8, 1, 2, 0) \
    X(4, 1, 1, 4, 1, 4, 1) X(4, 1, 1, 8, 1, 2, 1) X(4, 2, 1, 4, 1, 4, 1) X(4, 2, 1, 8, 1, 2, 1) \
    X(3, 1, 1, 4, 1, 4, 0) X(3, 1, 1, 8, 1, 2, 0) X(3, 1, 1, 4, 4, 2, 0) X(3, 2, 1, 4, 1, 4, 0) X(3, 2, 1, 8, 1, 2, 0) \
    X(3, 1, 1, 4, 1, 4, 1) X(3, 1, 1, 8, 1, 2, 1) X(3, 2, 1, 4, 1, 4, 1) X(3, 2, 1, 8, 1, 2, 1) \
    X(2, 1, 1, 4, 1, 4, 0) X(2, 1, 1, 4, 1, 8, 0) X(2, 1, 1, 8, 1, 2, 0) X(2, 1, 1, 4, 4, 2, 0) X(2, 2, 1, 4, 1, 4, 0) \
    X(2, 2, 1, 8, 1, 2, 0) X(2, 1, 1, 4, 1, 4, 1) X(2, 1, 1, 8, 1, 2, 1) X(2, 2, 1, 4, 1, 4, 1) X(2, 2, 1, 8, 1, 2, 1) \
    X(8, 1, 1, 8, 1, 2, 0) X(8, 1, 2, 4, 1, 2, 0) X(8, 2, 1, 8, 1, 2, 0)

#define KILN_GEMM_LUT_NAME(B, NT, WN, WK, T, U, A) kiln_gemm_lut##B##_nt##NT##_wn##WN##_wk##WK##_t##T##_u##U##_a##A
#define KILN_GEMM_LUT_DEFINE(B, NT, WN, WK, T, U, A)                                                               \
    extern "C" __global__ void __launch_bounds__(32 * WN * WK) KILN_GEMM_LUT_NAME(B, NT, WN, WK, T, U, A)(const LutGemmParams p) { \
        kiln_lut::gemm_lut<B, NT, WN, WK, T, U, (A) != 0, false>(p);                                                \
    }
// POST twins (`…_a0_post`): the 4- and 3-bit symmetric instances with the scales after the mmas, for groups of 64 or more
// (GemmLUT launches them for those formats). Separate kernels, not a branch in one: with both paths in one kernel ptxas
// spilled two instances. The twin exists only where POST applies (KILN_LUT_TWIN_<bits>_<affine>), and not for two
// token groups × 4 chunks per step, whose POST fragment (8 more live registers) spills (GemmLUT.Config.postName).
#define KILN_LUT_TWIN_KERNEL(B, NT, WN, WK, T, U, A)                                                                \
    extern "C" __global__ void __launch_bounds__(32 * WN * WK) KILN_GEMM_LUT_NAME(B, NT, WN, WK, T, U, A##_post)(const LutGemmParams p) { \
        kiln_lut::gemm_lut<B, NT, WN, WK, T, U, false, true>(p);                                                    \
    }
#define KILN_LUT_NO_TWIN(B, NT, WN, WK, T, U, A)
#define KILN_LUT_TWIN_NT1_U2 KILN_LUT_TWIN_KERNEL
#define KILN_LUT_TWIN_NT1_U4 KILN_LUT_TWIN_KERNEL
#define KILN_LUT_TWIN_NT1_U8 KILN_LUT_TWIN_KERNEL
#define KILN_LUT_TWIN_NT2_U2 KILN_LUT_TWIN_KERNEL
#define KILN_LUT_TWIN_NT2_U4 KILN_LUT_NO_TWIN
#define KILN_LUT_TWIN_NT2_U8 KILN_LUT_NO_TWIN
#define KILN_LUT_TWIN(B, NT, WN, WK, T, U, A) KILN_LUT_TWIN_NT##NT##_U##U(B, NT, WN, WK, T, U, A)
#define KILN_LUT_TWIN_4_0 KILN_LUT_TWIN
#define KILN_LUT_TWIN_3_0 KILN_LUT_TWIN
#define KILN_LUT_TWIN_4_1 KILN_LUT_NO_TWIN
#define KILN_LUT_TWIN_3_1 KILN_LUT_NO_TWIN
#define KILN_LUT_TWIN_2_0 KILN_LUT_NO_TWIN
#define KILN_LUT_TWIN_2_1 KILN_LUT_NO_TWIN
#define KILN_LUT_TWIN_8_0 KILN_LUT_NO_TWIN
#define KILN_GEMM_LUT_DEFINE_POST(B, NT, WN, WK, T, U, A) KILN_LUT_TWIN_##B##_##A(B, NT, WN, WK, T, U, A)
KILN_GEMM_LUT_INSTANCES(KILN_GEMM_LUT_DEFINE)
KILN_GEMM_LUT_INSTANCES(KILN_GEMM_LUT_DEFINE_POST)
