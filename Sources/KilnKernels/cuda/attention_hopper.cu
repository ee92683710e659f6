// attention_hopper.cu — Kiln's causal flash-attention PREFILL forward for Hopper (sm_90a), on wgmma.
// Same contract as kiln_attn_prefill_* in attention.cu (layouts, causal/qStart/kvLen semantics, GQA,
// exp2-domain online softmax with fp32 statistics, P rounded to bf16, bf16 round-to-nearest-even output).
//
// NVRTC: no CUDA headers (bf16 is kiln::bf16, the raw 16 bits; includes only common/hopper_util.cuh and
// common/attention_util.cuh; shared-memory addresses, cp.async,
// mbarrier, named barriers, wgmma and setmaxnreg are inline PTX). Target sm_90a (wgmma, setmaxnreg).
//
// ------------------------------------------------------------------------------------------------
// Entry points: kiln_attn_prefill_hopper_d{D}_br128_bc{BC}_s{ST}_pp{PP}(
//        const bf16* q, const bf16* k, const bf16* v, bf16* o,
//        int S, int Hq, int Hkv, int maxS, int ldq, int qStart, int kvLen, float scale)
//   Parameters and semantics exactly as attention.cu's prefill kernel:
//   Q [B, S, Hq, D] token row stride ldq; K, V cache [B, Hkv, maxS, D]; O [B, S, Hq, D] contiguous.
//   Query token i (absolute position qStart+i) attends to cache positions j <= qStart+i, j < kvLen.
//   kvLen == 0 writes zeros. Rows >= S are not written. Cache rows >= kvLen are never read into the
//   math (zero-filled in shared memory), so they may hold anything (NaN included).
//
// Launch rule:
//   grid  = (ceil(S / 128) · Hq, B, 1); blockIdx.x → head = x % Hq, q tile = last − x / Hq
//           (longest tiles first, the q heads of one kv head adjacent), as attention.cu.
//   block = KILN_ATTN_HOPPER_THREADS = 384 threads (3 warpgroups).
//   dynamic shared memory = KILN_ATTN_HOPPER_SMEM(D, BC, ST) = (128 + 2·ST·BC)·D·2 + 1024 bytes
//           (> 48 KB: raise CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES first); static: 128 B (mbarriers).
//   Requirements: D ∈ {64, 128}; Hq % Hkv == 0; scale > 0; q, k, v, o 16-byte aligned, ldq % 8 == 0.
//   One block per SM (registers), no scratch buffers.
//
// Design (FlashAttention-3 style, loads on cp.async instead of TMA so no tensor maps are needed):
//  * Warpgroup 0 = producer (setmaxnreg 40). Warps 0-1 load Q (once) and the K tiles, warps 2-3 the
//    V tiles, with 16-byte cp.async written directly in the 128-byte-swizzle layout that wgmma reads
//    (zero-filled for rows >= S / keys >= kvEnd). Each tile is its own cp.async group: the loader
//    waits for it (cp.async.wait_group), executes fence.proxy.async (generic-proxy writes → async-
//    proxy wgmma reads), then arrives on the tile's "full" mbarrier. The first ST tiles are issued
//    back to back and only then waited for in order, so the block's start-up latencies overlap.
//    K and V each have an ST-deep ring; consumers free a slot through its "empty" mbarrier (lane 0
//    of each consumer warp, after the wgmmas that read it completed).
//  * Warpgroups 1, 2 = consumers (setmaxnreg 232), each owning 64 query rows of the 128-row tile.
//    S = Q·K^T: wgmma m64n{BC}k16, A = Q and B = K both K-major from shared memory (d = reduction
//    dim, D/64 swizzle atoms of 64 elements). O += P·V: wgmma m64n{D}k16 with A = P from registers
//    (the S accumulator layout of a thread IS the register-A fragment layout: the same (row, col)
//    pairs as mma.m16n8k16; P[i] = bf16x2(s[2i], s[2i+1])) and B = V straight from its [key][d]
//    tile, i.e. MN-major (imm-trans-b = 1): descriptor LBO = distance between the two 64-wide d
//    halves (BC·128 bytes), SBO = 1024 (next 8 keys), 128B swizzle; a k-step of 16 keys = +2048 B.
//  * Intra-warpgroup overlap (step j >= 1): wait for P_{j-2}·V_{j-2} (issued by the previous step,
//    long done) and free its V slot; issue S_j = Q·K_j; rescale O by alpha_{j-1} while S_j runs;
//    issue O += P_{j-1}·V_{j-1}; wait for S_j only (wait_group 1); mask + online softmax of S_j and
//    pack P_j into the OTHER P register buffer while P·V runs (P is double-buffered, the loop is
//    unrolled by 2 so the buffers have fixed registers). The P·V wait sits at the start of the next
//    step on purpose: within one basic block ptxas hoisted it above the softmax (checked in SASS).
//    Optional ping-pong (PP = 1): the two consumer warpgroups take turns issuing their wgmmas
//    (named barriers 1, 2; ids 3, 4 are the epilogue's), so one's softmax overlaps the other's GEMMs.
//  * Causal mask only on tiles that cross the diagonal or kvLen (per warpgroup); tiles entirely above
//    the diagonal of the whole block are never loaded. Output: O / l → bf16 → the warpgroup's own Q
//    rows of shared memory (swizzled) → 16-byte global stores of rows < S.
//
// Shared memory (1024-aligned): Q [D/64 halves][128 rows][64] | K [ST][D/64 halves][BC][64] | V same.
// Element (row r, col c) of a tile with R rows sits at (c/64)·R·128 + r·128 + ((c%64/8) ^ (r%8))·16
// + (c%8)·2 bytes: the 128B swizzle (16-byte chunk index XOR row within each 1024-byte atom).
// ------------------------------------------------------------------------------------------------

// X(D, BC, ST, PP): head dim, keys per K/V tile (64 or 128), ring stages (2..4), ping-pong (0/1).
// ST = 3 gives the V loads more slack (a V slot is freed only when BOTH consumer warpgroups finished
// the P·V that read it; with ping-pong they are half an iteration apart); it needs 226 KB of smem.
#define KILN_ATTN_HOPPER_INSTANCES(X) X(128, 128, 2, 1) X(128, 128, 3, 1) X(128, 128, 2, 0) X(64, 128, 2, 1)

#define KILN_ATTN_HOPPER_NAME(D, BC, ST, PP) kiln_attn_prefill_hopper_d##D##_br128_bc##BC##_s##ST##_pp##PP
#define KILN_ATTN_HOPPER_BR 128
#define KILN_ATTN_HOPPER_THREADS 384
#define KILN_ATTN_HOPPER_SMEM(D, BC, ST) ((128 + 2 * (ST) * (BC)) * (D) * 2 + 1024)

#include "attention_util.cuh"
#include "hopper_util.cuh"

namespace kiln_attn_hopper {

using namespace kiln_hopper;   // u32, u64, smem_u32, mbarriers, wgmma fence/commit/wait (hopper_util.cuh)
using kiln_attn::fast_exp2;    // and KILN_NEG_INF (attention_util.cuh, shared with attention.cu)
using kiln_attn::pack_bf16x2;
using kiln::bf16;

// ---- named barriers ------------------------------------------------------------------------------
__device__ __forceinline__ void bar_sync(u32 id, u32 n) { asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(n) : "memory"); }
__device__ __forceinline__ void bar_arrive(u32 id, u32 n) { asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(n) : "memory"); }
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

// ---- cp.async ------------------------------------------------------------------------------------
// 16-byte copy global → shared; src-size 0 writes 16 zero bytes (and reads nothing).
__device__ __forceinline__ void cp16(u32 dst, const void* src, u32 n) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }
__device__ __forceinline__ void cp_wait_dyn(int n) {   // n <= 3 (ST <= 4)
    if (n <= 0) cp_wait<0>(); else if (n == 1) cp_wait<1>(); else if (n == 2) cp_wait<2>(); else cp_wait<3>();
}

// ---- wgmma ----------------------------------------------------------------------------------------
// Descriptors: sw128_desc (hopper_util.cuh) — K-major tiles (LBO 16, SBO 1024) and V as an MN-major B operand.
__device__ __forceinline__ u64 make_desc(u32 addr, u32 lbo, u32 sbo) { return sw128_desc(addr, lbo, sbo); }

#define KH_D8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define KH_D32 KH_D8(0), KH_D8(8), KH_D8(16), KH_D8(24)
#define KH_D64 KH_D32, KH_D8(32), KH_D8(40), KH_D8(48), KH_D8(56)
#define KH_R32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
               "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define KH_R64 KH_R32 ", %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
               "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"

// D[64 x N] (+)= A[64 x 16] · B[N x 16]^T, A and B K-major in shared memory.
template <int N> __device__ __forceinline__ void wgmma_ss(float* d, u64 da, u64 db, int acc);
template <> __device__ __forceinline__ void wgmma_ss<64>(float* d, u64 da, u64 db, int acc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " KH_R32 "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : KH_D32 : "l"(da), "l"(db), "r"(acc));
}
template <> __device__ __forceinline__ void wgmma_ss<128>(float* d, u64 da, u64 db, int acc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " KH_R64 "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : KH_D64 : "l"(da), "l"(db), "r"(acc));
}
// D[64 x N] += A[64 x 16] (registers, bf16x2) · B[16 x N], B MN-major in shared memory (imm-trans-b = 1).
template <int N> __device__ __forceinline__ void wgmma_rs(float* d, const u32* a, u64 db);
template <> __device__ __forceinline__ void wgmma_rs<64>(float* d, const u32* a, u64 db) {
    asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " KH_R32 "}, {%32, %33, %34, %35}, %36, 1, 1, 1, 1;\n"
                 : KH_D32 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}
template <> __device__ __forceinline__ void wgmma_rs<128>(float* d, const u32* a, u64 db) {
    asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " KH_R64 "}, {%64, %65, %66, %67}, %68, 1, 1, 1, 1;\n"
                 : KH_D64 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}


// Copy rows row0..row0+R-1 (D bf16 each, global row stride `stride` elements) into a swizzled
// [D/64][R][64] tile at dst with 64 threads (t = 0..63); rows >= rowLim are zero-filled.
template <int D, int R>
__device__ __forceinline__ void copy_tile(u32 dst, const bf16* src, long long stride, int row0, int rowLim, int t) {
    constexpr int CH = D / 8;        // 16-byte chunks per row
    constexpr int RPP = 64 / CH;     // rows per pass
    const int c = t % CH, rr = t / CH;
    const u32 dc = dst + (u32)((c >> 3) * R * 128);
    const bf16* sc = src + c * 8;
#pragma unroll 8
    for (int i = 0; i < R / RPP; ++i) {
        const int r = rr + i * RPP;
        const bool ok = row0 + r < rowLim;
        cp16(dc + (u32)(r * 128 + (((c & 7) ^ (r & 7)) << 4)), sc + (ok ? (long long)(row0 + r) * stride : 0ll),
             ok ? 16u : 0u);
    }
}

// ================================================================================================
template <int D, int BC, int ST, int PP>
__device__ __forceinline__ void attn_body(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                          const bf16* __restrict__ v, bf16* __restrict__ o, int S, int Hq,
                                          int Hkv, int maxS, int ldq, int qStart, int kvLen, float scale) {
    constexpr int BR = 128;
    constexpr u32 Q_BYTES = BR * D * 2, KV_BYTES = BC * D * 2;
    static_assert(D == 64 || D == 128, "D must be 64 or 128");
    static_assert(BC == 64 || BC == 128, "BC must be 64 or 128");
    static_assert(ST >= 2 && ST <= 4, "2..4 stages");

    extern __shared__ __align__(128) unsigned char kh_smem[];
    __shared__ __align__(8) u64 bars[1 + 4 * ST];   // fullQ | fullK[ST] | fullV[ST] | emptyK[ST] | emptyV[ST]
    const u32 sQ = (smem_u32(kh_smem) + 1023u) & ~1023u;
    const u32 sK = sQ + Q_BYTES, sV = sK + ST * KV_BYTES;
    const u32 barQ = smem_u32(bars), barFullK = barQ + 8, barFullV = barFullK + 8 * ST;
    const u32 barEmptyK = barFullV + 8 * ST, barEmptyV = barEmptyK + 8 * ST;

    const int nQT = (S + BR - 1) / BR;
    const int h = blockIdx.x % Hq;
    const int qt = nQT - 1 - (int)(blockIdx.x / Hq);
    const int b = blockIdx.y;
    const int kvh = h / (Hq / Hkv);
    const int q0 = qt * BR;
    int kvEnd = qStart + q0 + BR;   // keys [0, kvEnd) can be seen by this tile
    if (kvEnd > kvLen) kvEnd = kvLen;
    if (kvEnd < 0) kvEnd = 0;
    const int nK = (kvEnd + BC - 1) / BC;

    if (threadIdx.x == 0) {
        mbar_init(barQ, 64);
        for (int s = 0; s < ST; ++s) {
            mbar_init(barFullK + 8 * s, 64);
            mbar_init(barFullV + 8 * s, 64);
            mbar_init(barEmptyK + 8 * s, 8);   // lane 0 of the 8 consumer warps
            mbar_init(barEmptyV + 8 * s, 8);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();

    const int wg = threadIdx.x / 128, tw = threadIdx.x % 128;
    if (wg == 0) {
        // ------------------------------ producer ------------------------------
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
        if (nK == 0) return;
        const bool isV = tw >= 64;
        const int t = tw & 63;
        const bf16* src = (isV ? v : k) + (long long)(b * Hkv + kvh) * maxS * D;
        const u32 dst = isV ? sV : sK;
        const u32 full = isV ? barFullV : barFullK, empty = isV ? barEmptyV : barEmptyK;
        const int P = nK < ST ? nK : ST;
        for (int j = 0; j < P; ++j) {   // first ST tiles: slots are free, issue all, then wait in order
            if (j == 0 && !isV) copy_tile<D, BR>(sQ, q + (long long)b * S * ldq + (long long)h * D, ldq, q0, S, t);
            copy_tile<D, BC>(dst + j * KV_BYTES, src, D, j * BC, kvEnd, t);
            cp_commit();
        }
        for (int j = 0; j < P; ++j) {
            cp_wait_dyn(P - 1 - j);
            fence_proxy_async();
            if (j == 0 && !isV) mbar_arrive(barQ);
            mbar_arrive(full + 8 * j);
        }
        for (int j = P; j < nK; ++j) {
            const int s = j % ST;
            mbar_wait(empty + 8 * s, ((j / ST) & 1) ^ 1);
            copy_tile<D, BC>(dst + s * KV_BYTES, src, D, j * BC, kvEnd, t);
            cp_commit();
            cp_wait<0>();
            fence_proxy_async();
            mbar_arrive(full + 8 * s);
        }
    } else {
        // ------------------------------ consumers ------------------------------
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
        const int cw = wg - 1;
        const int warp = tw >> 5, lane = tw & 31, g = lane >> 2, t = lane & 3;
        const float sl = scale * 1.4426950408889634f;   // scores in the exp2 domain
        const int wgMin = qStart + q0 + cw * 64;         // smallest query position of this warpgroup
        const int qrow = wgMin + warp * 16 + g;          // this thread's rows: qrow, qrow + 8
        const u32 qA = sQ + (u32)(cw * 64 * 128);

        float oacc[D / 2], sacc[BC / 2];
        u32 pf0[BC / 4], pf1[BC / 4];   // P double-buffered: P_j is packed while P_{j-1}·V runs
        float mrow[2] = {KILN_NEG_INF, KILN_NEG_INF}, lrow[2] = {0.f, 0.f}, alpha[2];
#pragma unroll
        for (int i = 0; i < D / 2; ++i) oacc[i] = 0.f;
#pragma unroll
        for (int i = 0; i < BC / 2; ++i) sacc[i] = 0.f;

        // Ping-pong turn taking over nK + 1 issue phases (S_0; S_j + PV_{j-1}; PV_{nK-1}).
        auto turn_begin = [&]() {
            if (PP) bar_sync(cw == 0 ? 1u : 2u, 256u);
        };
        auto turn_end = [&](bool last) {
            if (PP) {
                if (cw == 0) bar_arrive(2u, 256u);
                else if (!last) bar_arrive(1u, 256u);
            }
        };
        auto issue_s = [&](int s) {
            const u32 kb = sK + (u32)s * KV_BYTES;
#pragma unroll
            for (int ks = 0; ks < D / 16; ++ks) {
                const u32 off = (u32)((ks & 3) * 32);   // 16 elements along d inside a 64-wide atom
                wgmma_ss<BC>(sacc, make_desc(qA + (u32)((ks >> 2) * BR * 128) + off, 16, 1024),
                             make_desc(kb + (u32)((ks >> 2) * BC * 128) + off, 16, 1024), ks > 0 ? 1 : 0);
            }
        };
        auto issue_pv = [&](int s, const u32 (&pf)[BC / 4]) {
            const u32 vb = sV + (u32)s * KV_BYTES;
#pragma unroll
            for (int kk = 0; kk < BC / 16; ++kk)
                wgmma_rs<D>(oacc, pf + 4 * kk, make_desc(vb + (u32)(kk * 2048), BC * 128, 1024));
        };
        // Mask + online softmax of S_j (in place: sacc becomes P in fp32); sets alpha.
        auto softmax = [&](int j) {
            const int k0 = j * BC;
            if (k0 + BC - 1 > wgMin || k0 + BC > kvLen) {
                const int limA = min(qrow, kvLen - 1), limB = min(qrow + 8, kvLen - 1);
#pragma unroll
                for (int jj = 0; jj < BC / 8; ++jj) {
                    const int key = k0 + 8 * jj + 2 * t;
                    if (key > limA) sacc[4 * jj] = KILN_NEG_INF;
                    if (key + 1 > limA) sacc[4 * jj + 1] = KILN_NEG_INF;
                    if (key > limB) sacc[4 * jj + 2] = KILN_NEG_INF;
                    if (key + 1 > limB) sacc[4 * jj + 3] = KILN_NEG_INF;
                }
            }
#pragma unroll
            for (int hr = 0; hr < 2; ++hr) {
                float mx = KILN_NEG_INF;
#pragma unroll
                for (int jj = 0; jj < BC / 8; ++jj) mx = fmaxf(mx, fmaxf(sacc[4 * jj + 2 * hr], sacc[4 * jj + 2 * hr + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                const float mnew = fmaxf(mrow[hr], mx);
                const float ms = (mnew == KILN_NEG_INF) ? 0.f : mnew * sl;
                alpha[hr] = fast_exp2(mrow[hr] * sl - ms);
                mrow[hr] = mnew;
                float rs = 0.f;
#pragma unroll
                for (int jj = 0; jj < BC / 8; ++jj) {
                    const float p0 = fast_exp2(fmaf(sacc[4 * jj + 2 * hr], sl, -ms));
                    const float p1 = fast_exp2(fmaf(sacc[4 * jj + 2 * hr + 1], sl, -ms));
                    sacc[4 * jj + 2 * hr] = p0;
                    sacc[4 * jj + 2 * hr + 1] = p1;
                    rs += p0 + p1;
                }
                lrow[hr] = lrow[hr] * alpha[hr] + rs;
            }
        };
        auto pack_p = [&](u32 (&pf)[BC / 4]) {
#pragma unroll
            for (int i = 0; i < BC / 4; ++i) pf[i] = pack_bf16x2(sacc[2 * i], sacc[2 * i + 1]);
        };
        auto rescale_o = [&]() {
#pragma unroll
            for (int jj = 0; jj < D / 8; ++jj) {
                oacc[4 * jj] *= alpha[0];
                oacc[4 * jj + 1] *= alpha[0];
                oacc[4 * jj + 2] *= alpha[1];
                oacc[4 * jj + 3] *= alpha[1];
            }
        };
        // Completes P_{j-2}·V_{j-2} (issued by the previous step) and frees its V slot. Done at the start of
        // the next step rather than right after the softmax: inside one basic block ptxas hoists the
        // wait above the softmax, which would serialise softmax and P·V.
        auto finish_pv = [&](int j) {
            wgmma_wait<0>();
#pragma unroll
            for (int i = 0; i < D / 2; ++i) reg_fence(oacc[i]);
            if (j >= 2 && lane == 0) mbar_arrive(barEmptyV + 8 * ((j - 2) % ST));
        };
        // Step j >= 1: issue S_j; rescale O by alpha_{j-1} (while S_j runs); issue O += P_{j-1}·V_{j-1};
        // wait for S_j only; softmax S_j → P_j (into the other P buffer) while P·V runs.
        auto step = [&](int j, const u32 (&pin)[BC / 4], u32 (&pout)[BC / 4]) {
            const int s = j % ST, sp = (j - 1) % ST;
            turn_begin();
            finish_pv(j);
            mbar_wait(barFullK + 8 * s, (j / ST) & 1);
            wgmma_fence();
            issue_s(s);
            wgmma_commit();
            rescale_o();
            mbar_wait(barFullV + 8 * sp, ((j - 1) / ST) & 1);
            wgmma_fence();
            issue_pv(sp, pin);
            wgmma_commit();
            turn_end(false);
            wgmma_wait<1>();   // S_j done; P_{j-1}·V_{j-1} may still run
#pragma unroll
            for (int i = 0; i < BC / 2; ++i) reg_fence(sacc[i]);
            if (lane == 0) mbar_arrive(barEmptyK + 8 * s);
            softmax(j);
            pack_p(pout);
        };
        // Last phase: rescale O, O += P_{nK-1}·V_{nK-1}.
        auto last = [&](const u32 (&pin)[BC / 4]) {
            const int sp = (nK - 1) % ST;
            turn_begin();
            finish_pv(nK);
            rescale_o();
            mbar_wait(barFullV + 8 * sp, ((nK - 1) / ST) & 1);
            wgmma_fence();
            issue_pv(sp, pin);
            wgmma_commit();
            turn_end(true);
            wgmma_wait<0>();
#pragma unroll
            for (int i = 0; i < D / 2; ++i) reg_fence(oacc[i]);
        };

        if (nK > 0) {
            mbar_wait(barQ, 0);
            if (PP && cw == 1) bar_arrive(1u, 256u);   // warpgroup 1 (cw = 0) issues first
            // phase 0: S_0
            turn_begin();
            mbar_wait(barFullK, 0);
            wgmma_fence();
            issue_s(0);
            wgmma_commit();
            turn_end(false);
            wgmma_wait<0>();
#pragma unroll
            for (int i = 0; i < BC / 2; ++i) reg_fence(sacc[i]);
            if (lane == 0) mbar_arrive(barEmptyK);
            softmax(0);   // alpha = 0 and O = 0: the rescale in step 1 keeps O = 0
            pack_p(pf0);
#pragma unroll 1
            for (int j = 1; j < nK; j += 2) {   // P_{j-1} is in pf0 for odd j
                step(j, pf0, pf1);
                if (j + 1 < nK) step(j + 1, pf1, pf0);
            }
            if ((nK - 1) & 1) last(pf1);
            else last(pf0);
        }

        // ---- epilogue: O / l → bf16 → this warpgroup's Q rows (swizzled) → 16-byte global stores ----
        float inv[2];
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
            float l = lrow[hr];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            inv[hr] = l > 0.f ? 1.f / l : 0.f;
        }
        fence_proxy_async();   // the Q rows were last read by this warpgroup's (completed) wgmmas
#pragma unroll
        for (int jj = 0; jj < D / 8; ++jj)
#pragma unroll
            for (int hr = 0; hr < 2; ++hr) {
                const int r = warp * 16 + g + 8 * hr;
                const u32 a = sQ + (u32)((jj >> 3) * BR * 128 + (cw * 64 + r) * 128 + (((jj & 7) ^ (r & 7)) << 4) + 4 * t);
                const u32 val = pack_bf16x2(oacc[4 * jj + 2 * hr] * inv[hr], oacc[4 * jj + 2 * hr + 1] * inv[hr]);
                asm volatile("st.shared.b32 [%0], %1;" ::"r"(a), "r"(val) : "memory");
            }
        bar_sync(3u + (u32)cw, 128u);
        constexpr int CH = D / 8;
#pragma unroll 4
        for (int i = 0; i < 64 * CH / 128; ++i) {
            const int idx = tw + 128 * i;
            const int r = idx / CH, c = idx % CH;
            const int row = q0 + cw * 64 + r;
            if (row < S) {
                const u32 a = sQ + (u32)((c >> 3) * BR * 128 + (cw * 64 + r) * 128 + (((c & 7) ^ (r & 7)) << 4));
                u32 x0, x1, x2, x3;
                asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];" : "=r"(x0), "=r"(x1), "=r"(x2), "=r"(x3) : "r"(a) : "memory");
                bf16* dp = o + (((long long)b * S + row) * Hq + h) * D + c * 8;
                asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(dp), "r"(x0), "r"(x1), "r"(x2), "r"(x3) : "memory");
            }
        }
    }
}

}  // namespace kiln_attn_hopper

#define KILN_ATTN_HOPPER_DEFINE(D, BC, ST, PP)                                                              \
    extern "C" __global__ void __launch_bounds__(KILN_ATTN_HOPPER_THREADS, 1) KILN_ATTN_HOPPER_NAME(D, BC, ST, PP)( \
        const kiln::bf16* __restrict__ q, const kiln::bf16* __restrict__ k,                          \
        const kiln::bf16* __restrict__ v, kiln::bf16* __restrict__ o, int S, int Hq, int Hkv, int maxS, \
        int ldq, int qStart, int kvLen, float scale) {                                                       \
        kiln_attn_hopper::attn_body<D, BC, ST, PP>(q, k, v, o, S, Hq, Hkv, maxS, ldq, qStart, kvLen, scale);  \
    }
KILN_ATTN_HOPPER_INSTANCES(KILN_ATTN_HOPPER_DEFINE)
