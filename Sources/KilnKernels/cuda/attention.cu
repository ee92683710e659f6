// attention.cu — Kiln's causal flash-attention prefill on mma.sync (any sm_80+ GPU; Hopper runs the
// wgmma kernel of attention_hopper.cu instead). The split-KV decode kernel is attention_decode.cu.
//
// NVRTC: no CUDA headers (kiln::bf16 is the raw 16 bits, converted with bit shifts and cvt PTX;
// shared-memory addresses, cp.async, ldmatrix, mma and ex2 are inline PTX in attention_util.cuh).
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
// Prefill: kiln_attn_prefill_d{D}_br{BR}_bc{BC}_kc{KC}_w{W}(
//        const bf16* q, const bf16* k, const bf16* v, bf16* o,
//        int S,        // query tokens per sequence (the same for all B sequences)
//        int Hq, int Hkv, int maxS, int ldq,
//        int qStart,   // absolute position of query token 0 (chunked prefill; 0 for a whole prompt)
//        int kvLen,    // keys 0..kvLen-1 of the cache are valid (normally qStart + S)
//        float scale)
//    Query token i (absolute position qStart+i) attends to cache positions j with
//    j <= qStart + i and j < kvLen. The K/V of the chunk must already be in the cache.
//    Needs kvLen >= 1 for a non-zero output (kvLen == 0 writes zeros).
//    FlashAttention-2 scheme on mma.sync.m16n8k16 (bf16 in, fp32 accumulate):
//      block = 32·W threads; the block owns BR = 16·MT·W query rows of one head, each warp
//      MT m16 tiles (MT = BR / (16·W)); K/V stream through shared memory in tiles of BC keys,
//      double-buffered with cp.async (zero-filled past kvLen, so stale or NaN cache rows never
//      reach the math). Q stays in shared memory (ldmatrix per k-step; K fragments are shared by
//      the MT row tiles of a warp), S = Q·K^T in registers (KC keys per softmax step), online softmax in the exp2 domain
//      with per-thread partial row sums, P re-used from the S accumulators as the A operand of
//      P·V, V fragments through ldmatrix.trans. Shared memory rows are XOR-swizzled by 16-byte
//      chunk (chunk ^ (row & 7)): ldmatrix and cp.async are conflict-free. Causal masking is
//      applied only to the key tiles that cross the diagonal or kvLen; tiles entirely above the
//      diagonal are never visited. The output goes through shared memory for 16-byte stores.
//    grid  = (ceil(S / BR) · Hq, B, 1); blockIdx.x → head = x % Hq, q tile = last − x / Hq, so
//            the longest (bottom) tiles of every head launch first.
//    block = (32·W, 1, 1)
//    dynamic shared memory = KILN_ATTN_PREFILL_SMEM(D, BR, BC, KC, W) = (BR + 4·BC)·D·2 bytes
//            (above 48 KB: raise CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES first).
//    No scratch buffers.
//
// Instance table: KILN_ATTN_PREFILL_INSTANCES(X) with X(D, BR, BC, KC, W), right below; every instance
// is checked by bench/attention/harness.cu and `kiln check`.
// ------------------------------------------------------------------------------------------------

// X(D, BR, BC, KC, W): head dim, query rows per block, keys per shared-memory tile, keys per
// softmax step (BC % KC == 0; KC bounds the S registers), warps. MT = BR/(16·W) ∈ {1, 2}.
#define KILN_ATTN_PREFILL_INSTANCES(X) \
    X(128, 128, 64, 32, 4) X(128, 128, 32, 32, 4) X(128, 64, 64, 64, 4) \
    X(64, 128, 64, 64, 4) X(64, 128, 64, 32, 4) X(64, 64, 64, 64, 4)

#define KILN_ATTN_PREFILL_NAME(D, BR, BC, KC, W) kiln_attn_prefill_d##D##_br##BR##_bc##BC##_kc##KC##_w##W
#define KILN_ATTN_PREFILL_SMEM(D, BR, BC, KC, W) (((BR) + 4 * (BC)) * (D) * 2)

#include "attention_util.cuh"

namespace kiln_attn {

// ================================================================================================
// Prefill
// ================================================================================================
template <int D, int BR, int BC, int KC, int W>
__device__ __forceinline__ void attn_prefill(const kiln::bf16* __restrict__ q, const kiln::bf16* __restrict__ k,
                                             const kiln::bf16* __restrict__ v, kiln::bf16* __restrict__ o, int S,
                                             int Hq, int Hkv, int maxS, int ldq, int qStart, int kvLen,
                                             float scale) {
    constexpr int MT = BR / (16 * W);    // m16 tiles per warp
    constexpr int NT = KC / 8;           // n8 tiles of S (one softmax step of KC keys)
    constexpr int DT = D / 8;            // n8 tiles of O
    constexpr int CH = D / 8;            // 16-byte chunks per row
    constexpr int THREADS = 32 * W;
    static_assert(MT >= 1 && MT * 16 * W == BR, "BR must be 16·W·MT");
    static_assert(BC % KC == 0 && KC % 16 == 0 && (D == 64 || D == 128), "tile shape");

    extern __shared__ __align__(128) unsigned char smem_raw[];
    kiln::bf16* sQ = (kiln::bf16*)smem_raw;
    kiln::bf16* sK = sQ + BR * D;
    kiln::bf16* sV = sK + 2 * BC * D;
    const unsigned aQ = smem_addr(sQ), aK = smem_addr(sK), aV = smem_addr(sV);

    const int nQT = (S + BR - 1) / BR;
    const int h = blockIdx.x % Hq;
    const int qt = nQT - 1 - (int)(blockIdx.x / Hq);
    const int b = blockIdx.y;
    const int kvh = h / (Hq / Hkv);
    const int q0 = qt * BR;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;

    const kiln::bf16* qb = q + (long long)b * S * ldq + (long long)h * D;
    const long long kvoff = (long long)(b * Hkv + kvh) * maxS * D;
    const kiln::bf16* kb = k + kvoff;
    const kiln::bf16* vb = v + kvoff;

    int kvEnd = qStart + q0 + BR;        // keys [0, kvEnd) can be seen by this tile
    if (kvEnd > kvLen) kvEnd = kvLen;
    if (kvEnd < 0) kvEnd = 0;
    const int nK = (kvEnd + BC - 1) / BC;

    // Global → shared copies: thread tid owns chunk tid % CH of rows tid / CH + RPP·i, so its
    // swizzled chunk position is the same in every row it copies (row & 7 is fixed, RPP % 8 == 0).
    constexpr int RPP = THREADS / CH;    // rows per pass
    static_assert(RPP % 8 == 0 && BR % RPP == 0 && BC % RPP == 0, "copy shape");
    const int cr = tid / CH, cc = tid % CH;
    const unsigned cpOff = (unsigned)(cr * D * 2 + ((cc ^ (cr & 7)) << 4));
#pragma unroll
    for (int i = 0; i < BR / RPP; ++i) {
        const int r = q0 + cr + i * RPP;
        const bool ok = r < S;
        cp_async16(aQ + cpOff + (unsigned)(i * RPP * D * 2), qb + (long long)(ok ? r : 0) * ldq + cc * 8, ok);
    }
    const kiln::bf16* kbc = kb + cc * 8;
    const kiln::bf16* vbc = vb + cc * 8;
    auto load_kv = [&](int j, int buf) {
        const unsigned so = cpOff + (unsigned)(buf * BC * D * 2);
#pragma unroll
        for (int i = 0; i < BC / RPP; ++i) {
            const int key = j * BC + cr + i * RPP;
            const bool ok = key < kvEnd;
            const long long off = (long long)(ok ? key : 0) * D;
            cp_async16(aK + so + (unsigned)(i * RPP * D * 2), kbc + off, ok);
            cp_async16(aV + so + (unsigned)(i * RPP * D * 2), vbc + off, ok);
        }
    };
    if (nK > 0) load_kv(0, 0);
    cp_async_commit();

    float oacc[MT][DT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int dt = 0; dt < DT; ++dt)
#pragma unroll
            for (int e = 0; e < 4; ++e) oacc[mt][dt][e] = 0.f;
    float mrow[MT][2], lrow[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        mrow[mt][0] = mrow[mt][1] = KILN_NEG_INF;
        lrow[mt][0] = lrow[mt][1] = 0.f;
    }
    const float sl = scale * 1.4426950408889634f;   // scores in the exp2 domain
    const int wrow0 = warp * MT * 16;                // first row of this warp in the tile
    const int qposMin = qStart + q0 + wrow0;         // smallest absolute query position of the warp
    const int l7 = lane & 7;
    // ldmatrix lane roles
    // ldmatrix lane roles as byte offsets into a swizzled tile. The chunk field of an address is
    // (chunk ^ (row & 7)) << 4 and a k-step moves the chunk by 2, so a k-step is an XOR of ks << 5
    // on a per-lane base offset (row bits lie above the chunk field).
    const unsigned qOff = (unsigned)((wrow0 + (lane & 15)) * D * 2 + (((lane >> 4) ^ l7) << 4));
    const unsigned kOff = (unsigned)((l7 + ((lane >> 4) << 3)) * D * 2 + ((((lane >> 3) & 1) ^ l7) << 4));
    const unsigned vOff = (unsigned)((l7 + (((lane >> 3) & 1) << 3)) * D * 2 + (((lane >> 4) ^ l7) << 4));

#pragma unroll 1
    for (int j = 0; j < nK; ++j) {
        if (j + 1 < nK) load_kv(j + 1, (j + 1) & 1);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
#pragma unroll
        for (int sc = 0; sc < BC / KC; ++sc) {
        const unsigned cK = aK + (unsigned)(((j & 1) * BC + sc * KC) * D) * 2u;
        const unsigned cV = aV + (unsigned)(((j & 1) * BC + sc * KC) * D) * 2u;

        // ---- S = Q · K^T ----
        float s[MT][NT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int n = 0; n < NT; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[mt][n][e] = 0.f;
#pragma unroll
        for (int ks = 0; ks < D / 16; ++ks) {
            unsigned qa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                ldsm_x4(qa[mt], aQ + (qOff ^ (unsigned)(ks << 5)) + (unsigned)(mt * 16 * D * 2));
            }
#pragma unroll
            for (int np = 0; np < NT / 2; ++np) {
                unsigned kf[4];
                ldsm_x4(kf, cK + (kOff ^ (unsigned)(ks << 5)) + (unsigned)(np * 16 * D * 2));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma16816(s[mt][2 * np], qa[mt][0], qa[mt][1], qa[mt][2], qa[mt][3], kf[0], kf[1]);
                    mma16816(s[mt][2 * np + 1], qa[mt][0], qa[mt][1], qa[mt][2], qa[mt][3], kf[2], kf[3]);
                }
            }
        }

        // ---- mask (only tiles that cross the diagonal or kvLen) ----
        const int k0 = j * BC + sc * KC;
        if (k0 + KC - 1 > qposMin || k0 + KC > kvLen) {
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int n = 0; n < NT; ++n)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int key = k0 + n * 8 + 2 * t + (e & 1);
                        const int qpos = qposMin + mt * 16 + g + ((e >> 1) << 3);
                        if (key > qpos || key >= kvLen) s[mt][n][e] = KILN_NEG_INF;
                    }
        }

        // ---- online softmax ----
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int hr = 0; hr < 2; ++hr) {
                float mx = KILN_NEG_INF;
#pragma unroll
                for (int n = 0; n < NT; ++n) mx = fmaxf(mx, fmaxf(s[mt][n][2 * hr], s[mt][n][2 * hr + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                const float mnew = fmaxf(mrow[mt][hr], mx);
                const float ms = (mnew == KILN_NEG_INF) ? 0.f : mnew * sl;
                const float alpha = fast_exp2(mrow[mt][hr] * sl - ms);
                mrow[mt][hr] = mnew;
                float rs = 0.f;
#pragma unroll
                for (int n = 0; n < NT; ++n) {
                    const float p0 = fast_exp2(fmaf(s[mt][n][2 * hr], sl, -ms));
                    const float p1 = fast_exp2(fmaf(s[mt][n][2 * hr + 1], sl, -ms));
                    s[mt][n][2 * hr] = p0;
                    s[mt][n][2 * hr + 1] = p1;
                    rs += p0 + p1;
                }
                lrow[mt][hr] = lrow[mt][hr] * alpha + rs;
                // (Skipping this when alpha == 1 warp-wide made the main instance spill: not done.)
#pragma unroll
                for (int dt = 0; dt < DT; ++dt) {
                    oacc[mt][dt][2 * hr] *= alpha;
                    oacc[mt][dt][2 * hr + 1] *= alpha;
                }
            }

        // ---- O += P · V ----
#pragma unroll
        for (int kk = 0; kk < KC / 16; ++kk) {
            unsigned pa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                pa[mt][0] = pack_bf16x2(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                pa[mt][1] = pack_bf16x2(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                pa[mt][2] = pack_bf16x2(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                pa[mt][3] = pack_bf16x2(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
            }
#pragma unroll
            for (int dp = 0; dp < DT / 2; ++dp) {
                unsigned vf[4];
                ldsm_x4_t(vf, cV + (vOff ^ (unsigned)(dp << 5)) + (unsigned)(kk * 16 * D * 2));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma16816(oacc[mt][2 * dp], pa[mt][0], pa[mt][1], pa[mt][2], pa[mt][3], vf[0], vf[1]);
                    mma16816(oacc[mt][2 * dp + 1], pa[mt][0], pa[mt][1], pa[mt][2], pa[mt][3], vf[2], vf[3]);
                }
            }
        }
        }   // sc
        __syncthreads();   // buffer (j & 1) is refilled in iteration j + 1
    }
    cp_async_wait<0>();
    __syncthreads();

    // ---- epilogue: O / l → bf16 → this warp's own rows of sQ → 16-byte stores ----
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
            float l = lrow[mt][hr];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            const float inv = l > 0.f ? 1.f / l : 0.f;
            const int r = wrow0 + mt * 16 + g + hr * 8;
#pragma unroll
            for (int dt = 0; dt < DT; ++dt) {
                const unsigned pk = pack_bf16x2(oacc[mt][dt][2 * hr] * inv, oacc[mt][dt][2 * hr + 1] * inv);
                *(unsigned*)(sQ + r * D + ((dt ^ (r & 7)) << 3) + 2 * t) = pk;
            }
        }
    __syncwarp();
#pragma unroll 4
    for (int c = lane; c < MT * 16 * CH; c += 32) {
        const int r = wrow0 + c / CH, ch = c % CH;
        if (q0 + r < S) {
            const U4 val = *(const U4*)(sQ + r * D + ((ch ^ (r & 7)) << 3));
            st_global16(o + (((long long)b * S + q0 + r) * Hq + h) * D + ch * 8, val);
        }
    }
}


}  // namespace kiln_attn

// ------------------------------------------------------------------------------------------------
// Entry points
// ------------------------------------------------------------------------------------------------
#define KILN_ATTN_PREFILL_DEFINE(D, BR, BC, KC, W)                                                        \
    extern "C" __global__ void __launch_bounds__(32 * W, 2) KILN_ATTN_PREFILL_NAME(D, BR, BC, KC, W)(    \
        const kiln::bf16* __restrict__ q, const kiln::bf16* __restrict__ k, const kiln::bf16* __restrict__ v,  \
        kiln::bf16* __restrict__ o, int S, int Hq, int Hkv, int maxS, int ldq, int qStart, int kvLen,        \
        float scale) {                                                                                     \
        kiln_attn::attn_prefill<D, BR, BC, KC, W>(q, k, v, o, S, Hq, Hkv, maxS, ldq, qStart, kvLen, scale);    \
    }

KILN_ATTN_PREFILL_INSTANCES(KILN_ATTN_PREFILL_DEFINE)
