// attention_decode.cu — Kiln's split-KV decode attention: one query token per sequence over the static KV
// cache. Prefill: attention.cu (mma.sync) and attention_hopper.cu (wgmma).
// (Tried and removed: RoPE + the new token's cache write fused in here, to drop the rope_qkv_cache launch —
// 0.13 ms/step SLOWER on the H200: every block recomputed q's rotation with accurate sincosf, serially per
// lane, where the rope kernel spreads one sincosf per thread; docs/perf-notes-attention.md.)
//
// NVRTC: no CUDA headers (inline PTX helpers in attention_util.cuh).
//
// ------------------------------------------------------------------------------------------------
// Layouts (all bf16, row-major, innermost dimension contiguous; every row start 16-byte aligned)
//   Q       [B, S, Hq, D]      token row stride `ldq` elements (ldq = Hq·D when Q is its own tensor;
//                              ldq = (Hq + 2·Hkv)·D to read Q straight out of a fused QKV row).
//                              Sequence b, token i, head h starts at q + (b·S + i)·ldq + h·D.
//   K, V    [B, Hkv, maxS, D]  static per-sequence KV cache; row (b, kvh, pos) at ((b·Hkv+kvh)·maxS+pos)·D.
//   O       [B, S, Hq, D]      contiguous: (b·S + i)·Hq·D + h·D.
//   GQA: q head h reads kv head h / (Hq / Hkv); Hq % Hkv == 0.
//   Softmax: softmax(scale · q·k) with `scale` a parameter (1/sqrt(D) for Llama, Granite's own).
//   Statistics (running max, running sum) and all accumulation are fp32; P is rounded to bf16 for
//   the P·V product (as FlashAttention does); the output is bf16, round-to-nearest-even.
//
// ------------------------------------------------------------------------------------------------
// Decode: kiln_attn_decode_d{D}_g{GMAX}_w{W}_kt{KT}(
//        const bf16* q, const bf16* k, const bf16* v, bf16* o,
//        float* ws,          // split partials, unused when numSplits == 1 (may be null then)
//        unsigned* cnt,      // [B·Hkv] counters, zeroed ONCE at allocation; the kernel leaves them 0
//        const int* lens,    // [B] keys per sequence (positions 0..lens[b]-1 of the cache)
//        int Hq, int Hkv, int maxS, int ldq,   // ldq: elements between sequences' q rows
//        int numSplits, float scale)
//    One query token per sequence: q [B, 1, Hq, D] (row b at q + b·ldq), o [B, 1, Hq, D].
//    One block per (split, kv head, sequence) handles all G = Hq/Hkv query heads of the group
//    (G <= GMAX <= 8), so each K/V byte is read once. The keys of a sequence are cut into
//    numSplits chunks of ceil(len/numSplits) rounded up to 16; warp w takes 16-key tiles
//    w, w+W, ... of its block's chunk (KT tiles loaded per step, all loads in flight before use).
//    S^T[16 keys, 8 heads] = K·Q^T on mma.m16n8k16 with K as the A operand straight from global
//    memory (16-byte loads, no shared memory; k-slots permuted identically in A and B); online
//    softmax per warp; P·V on the CUDA cores (fp32 FMA, P through a tiny per-warp shared array;
//    each lane owns 8 d × GMAX heads of the output). Warps are merged through shared memory.
//    Split merge, "last block combines" (no second launch): each block writes its unnormalised
//    partial O (fp32) and (max, sum) to ws, fences, bumps cnt[b·Hkv+kvh]; the block that sees
//    numSplits−1 merges the numSplits partials in split order (deterministic), writes O and
//    resets the counter. Splits whose chunk is empty write max = −inf, sum = 0.
//    grid  = (numSplits, Hkv, B); block = (32·W, 1, 1); static shared memory only (< 48 KB).
//    ws    = float[B·Hq·numSplits·(D + 2)]: O partials [B][Hq][numSplits][D], then
//            (max·log2e·scale, sum) pairs [B][Hq][numSplits][2]. Size: KILN_ATTN_DECODE_WS_FLOATS.
//    Launches that may run concurrently must not share ws/cnt.
//
// Paged: kiln_attn_decode_paged_d{D}_g{GMAX}_w{W}_kt{KT}(..., const int* table, int tableStride, int page)
//    The same kernel over the server's paged cache: K, V [blocks, Hkv, page, D]; key pos of sequence b is row
//    pos % page of block table[b·tableStride + pos / page]; maxS is unused. page % 16 == 0, so a 16-key tile
//    never straddles two blocks: one table read per tile.
//
// Instance table: KILN_ATTN_DECODE_INSTANCES(X) with X(D, GMAX, W, KT), right below; the split count is a
// launch parameter. Every instance is checked by bench/attention/harness.cu and `kiln check`.
// ------------------------------------------------------------------------------------------------

// X(D, GMAX, W, KT): head dim, max q heads per kv head, warps, 16-key tiles per warp step.
#define KILN_ATTN_DECODE_INSTANCES(X) \
    X(128, 4, 4, 1) X(128, 4, 4, 2) X(128, 4, 8, 1) X(128, 4, 8, 2) X(128, 8, 8, 1) \
    X(64, 4, 4, 2) X(64, 4, 8, 1) X(64, 8, 8, 1)
// The paged cache's instances: the static defaults' configurations (Attention.defaultDecode).
#define KILN_ATTN_DECODE_PAGED_INSTANCES(X) \
    X(128, 4, 8, 1) X(128, 8, 8, 1) X(64, 4, 8, 1) X(64, 8, 8, 1)

#define KILN_ATTN_DECODE_NAME(D, G, W, KT) kiln_attn_decode_d##D##_g##G##_w##W##_kt##KT
#define KILN_ATTN_DECODE_PAGED_NAME(D, G, W, KT) kiln_attn_decode_paged_d##D##_g##G##_w##W##_kt##KT
#define KILN_ATTN_DECODE_WS_FLOATS(B, Hq, numSplits, D) ((long long)(B) * (Hq) * (numSplits) * ((D) + 2))

#include "attention_util.cuh"

namespace kiln_attn {

// The paged cache's block tables (PAGED instances only).
struct KVTable {
    const int* __restrict__ table;   // [B, stride] block ids
    int stride, page;
};

template <int D, int GMAX, int W, int KT, bool PAGED = false>
__device__ __forceinline__ void attn_decode(const kiln::bf16* __restrict__ q, const kiln::bf16* __restrict__ k,
                                            const kiln::bf16* __restrict__ v, kiln::bf16* __restrict__ o,
                                            float* __restrict__ ws, unsigned* __restrict__ cnt,
                                            const int* __restrict__ lens, int Hq, int Hkv, int maxS, int ldq,
                                            int numSplits, float scale, KVTable pages = {nullptr, 0, 16}) {
    constexpr int NS = D / 32;       // 32-d steps (two mmas each)
    constexpr int LPR = D / 8;       // lanes per V row (16 bytes each)
    constexpr int RPW = 32 / LPR;    // V rows per warp load
    constexpr int KPL = 16 / RPW;    // V rows per lane per 16-key tile
    constexpr int THREADS = 32 * W;
    static_assert(GMAX == 4 || GMAX == 8, "GMAX");
    static_assert(D == 64 || D == 128, "D");

    __shared__ float sP[W][16][GMAX];
    __shared__ float sAl[W][GMAX];
    __shared__ __align__(16) float sO[W][GMAX][D];
    __shared__ float sM[W][GMAX], sL[W][GMAX];
    __shared__ int sLast;

    const int split = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
    const int G = Hq / Hkv;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int len = lens[b];
    int chunk = (len + numSplits - 1) / numSplits;
    chunk = (chunk + 15) & ~15;
    const int start = split * chunk;
    int end = start + chunk;
    if (end > len) end = len;
    const float sl = scale * 1.4426950408889634f;
    // Q^T as the B operand: column n = g is query head kvh·G + g.
    U4 qf[NS];
    {
        const kiln::bf16* qp = q + (long long)b * ldq + (long long)(kvh * G + g) * D + 8 * t;
#pragma unroll
        for (int s = 0; s < NS; ++s) {
            if (g < G) qf[s] = ld_nc(qp + s * 32);
            else qf[s].x = qf[s].y = qf[s].z = qf[s].w = 0u;
        }
    }
    const long long kvoff = PAGED ? 0 : (long long)(b * Hkv + kvh) * maxS * D;
    const kiln::bf16* kbase = k + kvoff;
    const kiln::bf16* vbase = v + kvoff;
    const int vr = lane / LPR, vc = lane % LPR;

    float oacc[GMAX][8];
#pragma unroll
    for (int hh = 0; hh < GMAX; ++hh)
#pragma unroll
        for (int i = 0; i < 8; ++i) oacc[hh][i] = 0.f;
    float mh[2] = {KILN_NEG_INF, KILN_NEG_INF}, lh[2] = {0.f, 0.f};   // heads 2t, 2t+1

#pragma unroll 1
    for (int base0 = start + warp * 16 * KT; base0 < end; base0 += W * 16 * KT) {
        U4 ka[KT][NS], kb8[KT][NS], vv[KT][KPL];
#pragma unroll
        for (int u = 0; u < KT; ++u) {
            const int base = base0 + u * 16;
            const int r0 = base + g, r1 = base + g + 8;
            // Key r of this tile is at kt + (r − t0)·D (and likewise in V): the sequence's rows, or the tile's block.
            const kiln::bf16* kt = kbase;
            const kiln::bf16* vt = vbase;
            int t0 = 0;
            if constexpr (PAGED) {
                const int block = base < end ? pages.table[(long long)b * pages.stride + base / pages.page] : 0;
                const long long off = (((long long)block * Hkv + kvh) * pages.page + base % pages.page) * D;
                kt = k + off; vt = v + off; t0 = base;
            }
#pragma unroll
            for (int s = 0; s < NS; ++s) {
                if (r0 < end) ka[u][s] = ld_stream(kt + (long long)(r0 - t0) * D + s * 32 + 8 * t);
                else ka[u][s].x = ka[u][s].y = ka[u][s].z = ka[u][s].w = 0u;
                if (r1 < end) kb8[u][s] = ld_stream(kt + (long long)(r1 - t0) * D + s * 32 + 8 * t);
                else kb8[u][s].x = kb8[u][s].y = kb8[u][s].z = kb8[u][s].w = 0u;
            }
#pragma unroll
            for (int jj = 0; jj < KPL; ++jj) {
                const int key = base + vr + RPW * jj;
                if (key < end) vv[u][jj] = ld_stream(vt + (long long)(key - t0) * D + vc * 8);
                else vv[u][jj].x = vv[u][jj].y = vv[u][jj].z = vv[u][jj].w = 0u;
            }
        }
#pragma unroll
        for (int u = 0; u < KT; ++u) {
            const int base = base0 + u * 16;
            float c[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
            for (int s = 0; s < NS; ++s) {
                mma16816(c, ka[u][s].x, kb8[u][s].x, ka[u][s].y, kb8[u][s].y, qf[s].x, qf[s].y);
                mma16816(c, ka[u][s].z, kb8[u][s].z, ka[u][s].w, kb8[u][s].w, qf[s].z, qf[s].w);
            }
            if (base + g >= end) c[0] = c[1] = KILN_NEG_INF;
            if (base + g + 8 >= end) c[2] = c[3] = KILN_NEG_INF;
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
                float mx = fmaxf(c[hh], c[2 + hh]);
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
                const float mnew = fmaxf(mh[hh], mx);
                const float ms = (mnew == KILN_NEG_INF) ? 0.f : mnew * sl;
                const float alpha = fast_exp2(mh[hh] * sl - ms);
                mh[hh] = mnew;
                const float p0 = fast_exp2(fmaf(c[hh], sl, -ms));
                const float p1 = fast_exp2(fmaf(c[2 + hh], sl, -ms));
                lh[hh] = lh[hh] * alpha + p0 + p1;
                const int head = 2 * t + hh;
                if (head < GMAX) {
                    sP[warp][g][head] = p0;
                    sP[warp][g + 8][head] = p1;
                    if (g == 0) sAl[warp][head] = alpha;
                }
            }
            __syncwarp();
#pragma unroll
            for (int hh = 0; hh < GMAX; ++hh) {
                const float al = sAl[warp][hh];
#pragma unroll
                for (int i = 0; i < 8; ++i) oacc[hh][i] *= al;
            }
#pragma unroll
            for (int jj = 0; jj < KPL; ++jj) {
                const int kr = vr + RPW * jj;
                float vf[8];
                vf[0] = bf_lo(vv[u][jj].x); vf[1] = bf_hi(vv[u][jj].x);
                vf[2] = bf_lo(vv[u][jj].y); vf[3] = bf_hi(vv[u][jj].y);
                vf[4] = bf_lo(vv[u][jj].z); vf[5] = bf_hi(vv[u][jj].z);
                vf[6] = bf_lo(vv[u][jj].w); vf[7] = bf_hi(vv[u][jj].w);
#pragma unroll
                for (int hh = 0; hh < GMAX; ++hh) {
                    const float p = sP[warp][kr][hh];
#pragma unroll
                    for (int i = 0; i < 8; ++i) oacc[hh][i] = fmaf(p, vf[i], oacc[hh][i]);
                }
            }
            __syncwarp();
        }
    }

    // ---- merge the lanes of a warp ----
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
        lh[hh] += __shfl_xor_sync(0xffffffffu, lh[hh], 4);
        lh[hh] += __shfl_xor_sync(0xffffffffu, lh[hh], 8);
        lh[hh] += __shfl_xor_sync(0xffffffffu, lh[hh], 16);
    }
#pragma unroll
    for (int off = LPR; off < 32; off <<= 1)
#pragma unroll
        for (int hh = 0; hh < GMAX; ++hh)
#pragma unroll
            for (int i = 0; i < 8; ++i) oacc[hh][i] += __shfl_xor_sync(0xffffffffu, oacc[hh][i], off);
    if (vr == 0) {
#pragma unroll
        for (int hh = 0; hh < GMAX; ++hh) {
#pragma unroll
            for (int i = 0; i < 8; ++i) sO[warp][hh][vc * 8 + i] = oacc[hh][i];
        }
    }
    if (g == 0) {
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
            const int head = 2 * t + hh;
            if (head < GMAX) {
                sM[warp][head] = (mh[hh] == KILN_NEG_INF) ? KILN_NEG_INF : mh[hh] * sl;
                sL[warp][head] = lh[hh];
            }
        }
    }
    __syncthreads();

    // ---- merge the warps of the block; write the output (one split) or this split's partial ----
    for (int idx = tid; idx < G * D; idx += THREADS) {
        const int hh = idx / D, d = idx % D;
        float M = KILN_NEG_INF;
#pragma unroll
        for (int w = 0; w < W; ++w) M = fmaxf(M, sM[w][hh]);
        float L = 0.f, O = 0.f;
        if (M != KILN_NEG_INF) {
#pragma unroll
            for (int w = 0; w < W; ++w) {
                const float f = fast_exp2(sM[w][hh] - M);
                L += sL[w][hh] * f;
                O += sO[w][hh][d] * f;
            }
        }
        const int head = kvh * G + hh;
        if (numSplits == 1) {
            o[((long long)b * Hq + head) * D + d] = f32_to_bf16(L > 0.f ? O / L : 0.f);
        } else {
            const long long row = ((long long)b * Hq + head) * numSplits + split;
            ws[row * D + d] = O;
            if (d == 0) {
                float* ml = ws + (long long)gridDim.z * Hq * numSplits * D;
                ml[2 * row] = M;
                ml[2 * row + 1] = L;
            }
        }
    }
    if (numSplits == 1) return;

    // ---- last block of (b, kvh) merges the splits ----
    __threadfence();
    __syncthreads();
    if (tid == 0) {
        const unsigned prev = atomicAdd(cnt + b * Hkv + kvh, 1u);
        sLast = (prev == (unsigned)(numSplits - 1));
    }
    __syncthreads();
    if (!sLast) return;
    __threadfence();
    const float* ml = ws + (long long)gridDim.z * Hq * numSplits * D;
    for (int idx = tid; idx < G * D; idx += THREADS) {
        const int hh = idx / D, d = idx % D;
        const int head = kvh * G + hh;
        const long long row0 = ((long long)b * Hq + head) * numSplits;
        float M = KILN_NEG_INF;
        for (int sp = 0; sp < numSplits; ++sp) M = fmaxf(M, ld_cg(ml + 2 * (row0 + sp)));
        float L = 0.f, O = 0.f;
        if (M != KILN_NEG_INF) {
            for (int sp = 0; sp < numSplits; ++sp) {
                const float f = fast_exp2(ld_cg(ml + 2 * (row0 + sp)) - M);
                L += ld_cg(ml + 2 * (row0 + sp) + 1) * f;
                O += ld_cg(ws + (row0 + sp) * D + d) * f;
            }
        }
        o[((long long)b * Hq + head) * D + d] = f32_to_bf16(L > 0.f ? O / L : 0.f);
    }
    if (tid == 0) cnt[b * Hkv + kvh] = 0u;   // ready for the next launch
}


}  // namespace kiln_attn

#define KILN_ATTN_DECODE_DEFINE(D, G, W, KT)                                                               \
    extern "C" __global__ void __launch_bounds__(32 * W) KILN_ATTN_DECODE_NAME(D, G, W, KT)(               \
        const kiln::bf16* __restrict__ q, const kiln::bf16* __restrict__ k, const kiln::bf16* __restrict__ v,  \
        kiln::bf16* __restrict__ o, float* __restrict__ ws, unsigned* __restrict__ cnt,                     \
        const int* __restrict__ lens, int Hq, int Hkv, int maxS, int ldq, int numSplits, float scale) {     \
        kiln_attn::pdl_wait_then_trigger();                                                                 \
        kiln_attn::attn_decode<D, G, W, KT>(q, k, v, o, ws, cnt, lens, Hq, Hkv, maxS, ldq, numSplits, scale); \
    }

KILN_ATTN_DECODE_INSTANCES(KILN_ATTN_DECODE_DEFINE)

#define KILN_ATTN_DECODE_PAGED_DEFINE(D, G, W, KT)                                                         \
    extern "C" __global__ void __launch_bounds__(32 * W) KILN_ATTN_DECODE_PAGED_NAME(D, G, W, KT)(         \
        const kiln::bf16* __restrict__ q, const kiln::bf16* __restrict__ k, const kiln::bf16* __restrict__ v,  \
        kiln::bf16* __restrict__ o, float* __restrict__ ws, unsigned* __restrict__ cnt,                     \
        const int* __restrict__ lens, int Hq, int Hkv, int maxS, int ldq, int numSplits, float scale,       \
        const int* __restrict__ table, int tableStride, int page) {                                         \
        kiln_attn::pdl_wait_then_trigger();                                                                 \
        kiln_attn::attn_decode<D, G, W, KT, true>(q, k, v, o, ws, cnt, lens, Hq, Hkv, maxS, ldq, numSplits, scale, \
                                                  kiln_attn::KVTable{table, tableStride, page});            \
    }

KILN_ATTN_DECODE_PAGED_INSTANCES(KILN_ATTN_DECODE_PAGED_DEFINE)
