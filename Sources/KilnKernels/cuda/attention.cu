// attention.cu — Kiln's attention kernels: causal flash-attention prefill and split-KV decode.
//
// NVRTC: compiles with no include paths (bf16 is `unsigned short`, converted with bit shifts and
// cvt PTX; shared-memory addresses, cp.async, ldmatrix, mma and ex2 are inline PTX).
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
// 1) Prefill: kiln_attn_prefill_d{D}_br{BR}_bc{BC}_kc{KC}_w{W}(
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
// 2) Decode: kiln_attn_decode_d{D}_g{GMAX}_w{W}_kt{KT}(
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
// Instance tables: KILN_ATTN_PREFILL_INSTANCES(X) with X(D, BR, BC, KC, W) and
// KILN_ATTN_DECODE_INSTANCES(X) with X(D, GMAX, W, KT), right below. The tuner picks an instance
// per shape (and numSplits for decode); every instance is checked by bench/attention/harness.cu.
// ------------------------------------------------------------------------------------------------

// X(D, BR, BC, KC, W): head dim, query rows per block, keys per shared-memory tile, keys per
// softmax step (BC % KC == 0; KC bounds the S registers), warps. MT = BR/(16·W) ∈ {1, 2}.
#define KILN_ATTN_PREFILL_INSTANCES(X) \
    X(128, 128, 64, 32, 4) X(128, 128, 32, 32, 4) X(128, 64, 64, 64, 4) \
    X(64, 128, 64, 64, 4) X(64, 128, 64, 32, 4) X(64, 64, 64, 64, 4)

// X(D, GMAX, W, KT): head dim, max q heads per kv head, warps, 16-key tiles per warp step.
#define KILN_ATTN_DECODE_INSTANCES(X) \
    X(128, 4, 4, 1) X(128, 4, 4, 2) X(128, 4, 8, 1) X(128, 4, 8, 2) X(128, 8, 8, 1) \
    X(64, 4, 4, 2) X(64, 4, 8, 1) X(64, 8, 8, 1)

#define KILN_ATTN_PREFILL_NAME(D, BR, BC, KC, W) kiln_attn_prefill_d##D##_br##BR##_bc##BC##_kc##KC##_w##W
#define KILN_ATTN_PREFILL_SMEM(D, BR, BC, KC, W) (((BR) + 4 * (BC)) * (D) * 2)
#define KILN_ATTN_DECODE_NAME(D, G, W, KT) kiln_attn_decode_d##D##_g##G##_w##W##_kt##KT
#define KILN_ATTN_DECODE_WS_FLOATS(B, Hq, numSplits, D) ((long long)(B) * (Hq) * (numSplits) * ((D) + 2))

typedef unsigned short kiln_bf16;

namespace kiln_attn {

struct __align__(16) U4 { unsigned x, y, z, w; };

__device__ __forceinline__ float bf16_to_f32(kiln_bf16 h) { return __uint_as_float(((unsigned)h) << 16); }
__device__ __forceinline__ float bf_lo(unsigned u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf_hi(unsigned u) { return __uint_as_float(u & 0xffff0000u); }

// Round to nearest even; NaN stays NaN.
__device__ __forceinline__ kiln_bf16 f32_to_bf16(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (kiln_bf16)0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (kiln_bf16)(u >> 16);
}
// Two floats → packed bf16x2 (lo in bits 0..15), round to nearest even.
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ unsigned smem_addr(const void* p) {
    unsigned r;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
    return r;
}
// 16-byte async copy global → shared; zero-fills the destination when !valid.
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, bool valid) {
    const int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void mma16816(float (&c)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                         unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// Streamed once: skip L1.
__device__ __forceinline__ U4 ld_stream(const kiln_bf16* p) {
    U4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}
__device__ __forceinline__ U4 ld_nc(const kiln_bf16* p) {
    U4 r;
    asm volatile("ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}
// Written by other blocks of this launch: read at L2 (L1 is not coherent).
__device__ __forceinline__ float ld_cg(const float* p) {
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
    return v;
}
__device__ __forceinline__ void st_global16(void* p, U4 v) {
    asm volatile("st.global.v4.u32 [%0], {%1,%2,%3,%4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w));
}

#define KILN_NEG_INF (__int_as_float(0xff800000))

// ================================================================================================
// Prefill
// ================================================================================================
template <int D, int BR, int BC, int KC, int W>
__device__ __forceinline__ void attn_prefill(const kiln_bf16* __restrict__ q, const kiln_bf16* __restrict__ k,
                                             const kiln_bf16* __restrict__ v, kiln_bf16* __restrict__ o, int S,
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
    kiln_bf16* sQ = (kiln_bf16*)smem_raw;
    kiln_bf16* sK = sQ + BR * D;
    kiln_bf16* sV = sK + 2 * BC * D;
    const unsigned aQ = smem_addr(sQ), aK = smem_addr(sK), aV = smem_addr(sV);

    const int nQT = (S + BR - 1) / BR;
    const int h = blockIdx.x % Hq;
    const int qt = nQT - 1 - (int)(blockIdx.x / Hq);
    const int b = blockIdx.y;
    const int kvh = h / (Hq / Hkv);
    const int q0 = qt * BR;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;

    const kiln_bf16* qb = q + (long long)b * S * ldq + (long long)h * D;
    const long long kvoff = (long long)(b * Hkv + kvh) * maxS * D;
    const kiln_bf16* kb = k + kvoff;
    const kiln_bf16* vb = v + kvoff;

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
    const kiln_bf16* kbc = kb + cc * 8;
    const kiln_bf16* vbc = vb + cc * 8;
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

// ================================================================================================
// Decode (split-KV)
// ================================================================================================
// Programmatic dependent launch (same contract as kiln.cuh's pdl_trigger/pdl_wait): let the next
// kernel launch, then wait for the previous one before reading q or the KV cache. No-ops in a
// kernel launched without the PDL attribute.
__device__ __forceinline__ void pdl_trigger_then_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

template <int D, int GMAX, int W, int KT>
__device__ __forceinline__ void attn_decode(const kiln_bf16* __restrict__ q, const kiln_bf16* __restrict__ k,
                                            const kiln_bf16* __restrict__ v, kiln_bf16* __restrict__ o,
                                            float* __restrict__ ws, unsigned* __restrict__ cnt,
                                            const int* __restrict__ lens, int Hq, int Hkv, int maxS, int ldq,
                                            int numSplits, float scale) {
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
        const kiln_bf16* qp = q + (long long)b * ldq + (long long)(kvh * G + g) * D + 8 * t;
#pragma unroll
        for (int s = 0; s < NS; ++s) {
            if (g < G) qf[s] = ld_nc(qp + s * 32);
            else qf[s].x = qf[s].y = qf[s].z = qf[s].w = 0u;
        }
    }
    const long long kvoff = (long long)(b * Hkv + kvh) * maxS * D;
    const kiln_bf16* kbase = k + kvoff;
    const kiln_bf16* vbase = v + kvoff;
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
#pragma unroll
            for (int s = 0; s < NS; ++s) {
                if (r0 < end) ka[u][s] = ld_stream(kbase + (long long)r0 * D + s * 32 + 8 * t);
                else ka[u][s].x = ka[u][s].y = ka[u][s].z = ka[u][s].w = 0u;
                if (r1 < end) kb8[u][s] = ld_stream(kbase + (long long)r1 * D + s * 32 + 8 * t);
                else kb8[u][s].x = kb8[u][s].y = kb8[u][s].z = kb8[u][s].w = 0u;
            }
#pragma unroll
            for (int jj = 0; jj < KPL; ++jj) {
                const int key = base + vr + RPW * jj;
                if (key < end) vv[u][jj] = ld_stream(vbase + (long long)key * D + vc * 8);
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

// ------------------------------------------------------------------------------------------------
// Entry points
// ------------------------------------------------------------------------------------------------
#define KILN_ATTN_PREFILL_DEFINE(D, BR, BC, KC, W)                                                        \
    extern "C" __global__ void __launch_bounds__(32 * W, 2) KILN_ATTN_PREFILL_NAME(D, BR, BC, KC, W)(    \
        const kiln_bf16* __restrict__ q, const kiln_bf16* __restrict__ k, const kiln_bf16* __restrict__ v,  \
        kiln_bf16* __restrict__ o, int S, int Hq, int Hkv, int maxS, int ldq, int qStart, int kvLen,        \
        float scale) {                                                                                     \
        kiln_attn::attn_prefill<D, BR, BC, KC, W>(q, k, v, o, S, Hq, Hkv, maxS, ldq, qStart, kvLen, scale);    \
    }

#define KILN_ATTN_DECODE_DEFINE(D, G, W, KT)                                                               \
    extern "C" __global__ void __launch_bounds__(32 * W) KILN_ATTN_DECODE_NAME(D, G, W, KT)(               \
        const kiln_bf16* __restrict__ q, const kiln_bf16* __restrict__ k, const kiln_bf16* __restrict__ v,  \
        kiln_bf16* __restrict__ o, float* __restrict__ ws, unsigned* __restrict__ cnt,                     \
        const int* __restrict__ lens, int Hq, int Hkv, int maxS, int ldq, int numSplits, float scale) {     \
        kiln_attn::pdl_trigger_then_wait();                                                                \
        kiln_attn::attn_decode<D, G, W, KT>(q, k, v, o, ws, cnt, lens, Hq, Hkv, maxS, ldq, numSplits, scale); \
    }

KILN_ATTN_PREFILL_INSTANCES(KILN_ATTN_PREFILL_DEFINE)
KILN_ATTN_DECODE_INSTANCES(KILN_ATTN_DECODE_DEFINE)
