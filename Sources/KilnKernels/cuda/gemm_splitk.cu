// gemm_splitk.cu — Kiln's decode GEMM: Y[M,N] = X[M,K] · W[N,K]^T for tiny M (1…16 tokens).
//
// Decode is memory-bound: each call streams the N×K bf16 weight matrix once, so the floor is
// N·K·2 bytes ÷ DRAM bandwidth. The kernel is built so that every weight byte is loaded once, with
// 16-byte loads and many loads in flight, and the arithmetic never gets in the way:
//
//  * Tensor cores with the operands swapped: Y^T[N,M] = W[N,K] · X^T[K,M] as mma.m16n8k16
//    (A = 16 weight rows × 16 k, B = 16 k × 8 tokens, fp32 accumulators). The weight tile is the
//    16-row "A" operand, so tokens pad only the 8-wide B side; M ≤ 8 needs one mma per 16 k,
//    M ≤ 16 two (template parameter NT = 1 or 2).
//  * No ldmatrix, no shuffles: a dot product may visit k in any order, as long as A
//    and B visit it in the same order. Lane (g = lane/4, t = lane%4) loads one uint4 (8 bf16) of
//    weight row g and one of row g+8 at k = base + 8t, and one uint4 of X row (token) g at the
//    same k. Those 8 k values fill the lane's A and B slots of two mmas (k-slots 2t,2t+1,2t+8,2t+9
//    <-> k = base+8t+{0,1,2,3} for the first, +{4..7} for the second). A warp step covers
//    16 rows × 32 k; UNROLL steps (contiguous in k) are loaded before any mma.
//  * X (≤ 16 × K bf16, L2-resident) is read with L1-cached loads; warps of a block that share the
//    same k range (WARPS_N > 1) reuse it from L1. Weights are read with L1::no_allocate and a
//    256-byte L2 prefetch hint.
//
// Work decomposition (grid / block sizing rule):
//   block  = 32 · WARPS_N · WARPS_K threads
//   grid.x = ceil(N / (16 · TILES · WARPS_N))   — each block owns 16·TILES·WARPS_N output rows
//   grid.y = splitK (runtime, ≥ 1)              — each block owns one K chunk of ceil(K/splitK)
//                                                 rounded up to a multiple of 8
//   Warp (wn, wk) owns TILES 16-row tiles (rows wn·16·TILES …) and walks the block's K chunk in
//   super-steps of UNROLL·32 k, interleaved over the WARPS_K warps. Warp partials over wk are
//   summed through shared memory in a fixed order.
//
// Split-K reduction (grid.y > 1): "last block reduces", no second launch and no memset per call.
//   Each block writes its fp32 partial to workspace[split][m][n], fences, and bumps
//   counters[blockIdx.x]; the block that sees splitK-1 sums the splitK partials in split order
//   (deterministic: the result is bitwise reproducible, unlike fp32 atomics), writes Y and resets
//   its counter to 0. Cost: splitK·M·N·4 bytes written and read back (mostly L2 hits), e.g.
//   0.13 MB for N=4096, M=1, splitK=8 against 33.5 MB of weights.
//   Required scratch (only when splitK > 1):
//     workspace: float[splitK · M · N]
//     counters : unsigned[grid.x], zeroed ONCE at allocation (the kernel leaves them zero).
//                Two launches that may run concurrently must not share counters/workspace.
//
// Load paths (template parameter STAGES):
//   STAGES = 0   register path: a warp loads one super-step (2·TILES·UNROLL weight uint4 per lane)
//                into registers, then runs its mmas; latency is hidden by other warps only.
//   STAGES = 1   register path, pipelined: two register sets; the next super-step's loads are issued
//                before the current one's mmas, so each warp always has loads outstanding.
//   (A cp.async shared-memory ring, STAGES >= 2, measured 25-45% slower than the register paths on
//   every shape in two H200 sweeps and was removed in session 3; docs/perf-notes-gemm.md.)
//
// Whole-block kernels (KILN_GEMM_SPLITK_WHOLE_INSTANCES, gemm_whole below): the STAGES = 1 schedule
// for the common case N % 16 == 0, K % (32·UNROLL) == 0, no split: one 16-row tile per block, WARPS_K
// warps over K, no tail code; 2-3% faster than the same schedule inside gemm_splitk on the H200 (same bits;
// perf-notes-gemm.md v5, v6 for the M = 16 experiments).
//
// Entry points: one extern "C" kernel per instance, all with the same parameters:
//   kiln_gemm_splitk_nt{NT}_wn{WN}_wk{WK}_t{T}_u{U}_s{STAGES}(
//       const kiln::bf16* x,       // [M, K] bf16, row-major (row stride K)
//       const kiln::bf16* w,       // [N, K] bf16, row-major (row stride K), as Hugging Face stores it
//       void*                 y,   // [M, N] row-major, bf16 or fp32 (epi bf16 / f32); [M, N/2] bf16 (epi swiglu)
//       float*                ws,  // [splitK, M, N] fp32 workspace, unused when splitK == 1
//       unsigned*             cnt, // [grid.x] zeroed counters, unused when splitK == 1
//       int M, int N, int K,       // 1 ≤ M ≤ 8·NT; K % 8 == 0; x, w 16-byte aligned
//       kiln::Epilogue epi)        // bf16 out, f32 out or SwiGLU (common/kiln.cuh; see store_out)
//
// Instance table (the tuner reads its candidates from KILN_GEMM_SPLITK_INSTANCES at the bottom):
//   X(NT, WARPS_N, WARPS_K, TILES, UNROLL, STAGES); NT=1 serves M ≤ 8, NT=2 serves 9 ≤ M ≤ 16.
//   Rules (static_assert): WARPS_N·WARPS_K ≤ 8; (STAGES+1)·2·TILES·UNROLL ≤ 16 (more spills).
//   WARPS_K = 8 and STAGES = 1 instances were added for the small shapes (o, qkv), whose warps otherwise
//   run only ~4 super-steps each. Pruned by two H200 sweeps (docs/perf-notes-gemm.md): instances never
//   within ~10% of the best were dropped.
//   splitK is a launch parameter; useful values 1, 2, 4, 8.
//
// NVRTC: no CUDA headers, only common/kiln.cuh (kiln::bf16, the Epilogue names) and common/attention_util.cuh
// (bf16 conversions with bit shifts).

#include "kiln.cuh"
#include "attention_util.cuh"   // U4, bf16 conversions, mma.sync, cache-hinted loads, PDL — shared with attention
#include "gemm_util.cuh"        // accumulator layout, epilogue, WARPS_K sum, split-K reduction — shared with gemm_fp8.cu

namespace kiln_gemm {

// The shared helpers this file uses (the bench/ harnesses call them as kiln_gemm::…). ld_nc: activations are
// small and shared by every row tile, so they stay in L1. ld_cg: split-K partials written by other blocks.
// pdl_wait_then_trigger: the launcher sets PROGRAMMATIC_STREAM_SERIALIZATION, so the kernel may start while
// the previous kernel (which produces X) still runs; it waits before touching X, Y or the split-K scratch.
// (Tried and removed: prefetch.global.L2 of each warp's first weight super-step before the wait — standalone
// GEMMs 5-10% slower, decode 0.2-0.3 ms/step slower; docs/perf-notes.md, "PDL".)
using kiln::Epilogue;
using kiln_attn::U4;
using kiln_attn::bf16_to_f32;
using kiln_attn::swiglu_bf16;
using kiln_attn::f32_to_bf16;
using kiln_attn::ld_nc;
using kiln_attn::ld_cg;
using kiln_attn::mma16816;
using kiln_attn::pdl_wait_then_trigger;

using kiln_attn::ld_weight;   // weights: streamed once, L2 asked for the 256-byte span

// One super-step of one warp, loads: UNROLL × (TILES × 2 weight uint4 + NT activation uint4), the weights
// (load_step_w) and the activations (load_step_x) separately, so that a kernel launched early (PDL) can
// start streaming weights before the previous kernel's output X is ready.
// PRED guards the K tail (k < kend; all k are multiples of 8). kend here is the end of the last whole 32-k
// segment, so the test is warp-uniform. (A per-lane test, kk + 8t < kend, made the compiler serialise the
// main loop's loads: 56 registers instead of 94 and 10-40% slower, seen in SASS and timings; the partial
// segment is handled separately by the caller.)
template <int TILES, int UNROLL, bool PRED>
__device__ __forceinline__ void load_step_w(U4 (&wv)[UNROLL][TILES][2], const kiln::bf16* __restrict__ wrow, long long K8,
                                            int k, int kend) {
    // wrow: weight row (row0 + g) at column 0; row g+8 is wrow + 8K, tile tt at wrow + 16·tt·K.
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
        const int kk = k + u * 32;
        const bool ok = !PRED || kk < kend;
#pragma unroll
        for (int tt = 0; tt < TILES; ++tt) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                if (ok) wv[u][tt][h] = ld_weight(wrow + (long long)(tt * 2 + h) * K8 + kk);
                else    wv[u][tt][h] = U4{0u, 0u, 0u, 0u};
            }
        }
    }
}

template <int NT, int UNROLL, bool PRED>
__device__ __forceinline__ void load_step_x(U4 (&xv)[UNROLL][NT], const kiln::bf16* __restrict__ xrow0,
                                            const kiln::bf16* __restrict__ xrow1, bool xok0, bool xok1, int k, int kend) {
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
        const int kk = k + u * 32;
        const bool ok = !PRED || kk < kend;
        if (ok && xok0) xv[u][0] = ld_nc(xrow0 + kk);
        else            xv[u][0] = U4{0u, 0u, 0u, 0u};
        if (NT > 1) {
            if (ok && xok1) xv[u][NT - 1] = ld_nc(xrow1 + kk);
            else            xv[u][NT - 1] = U4{0u, 0u, 0u, 0u};
        }
    }
}

template <int NT, int TILES, int UNROLL, bool PRED>
__device__ __forceinline__ void load_step(U4 (&wv)[UNROLL][TILES][2], U4 (&xv)[UNROLL][NT],
                                          const kiln::bf16* __restrict__ wrow, const kiln::bf16* __restrict__ xrow0,
                                          const kiln::bf16* __restrict__ xrow1, bool xok0, bool xok1, long long K8,
                                          int k, int kend) {
    load_step_w<TILES, UNROLL, PRED>(wv, wrow, K8, k, kend);
    load_step_x<NT, UNROLL, PRED>(xv, xrow0, xrow1, xok0, xok1, k, kend);
}

// The mmas of one loaded super-step: UNROLL × TILES × NT × 2.
template <int NT, int TILES, int UNROLL>
__device__ __forceinline__ void mma_step(float (&acc)[TILES][NT][4], const U4 (&wv)[UNROLL][TILES][2],
                                         const U4 (&xv)[UNROLL][NT]) {
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
#pragma unroll
        for (int tt = 0; tt < TILES; ++tt) {
#pragma unroll
            for (int n = 0; n < NT; ++n) {
                const U4& a = wv[u][tt][0];
                const U4& b = wv[u][tt][1];
                const U4& xx = xv[u][n];
                mma16816(acc[tt][n], a.x, b.x, a.y, b.y, xx.x, xx.y);
                mma16816(acc[tt][n], a.z, b.z, a.w, b.w, xx.z, xx.w);
            }
        }
    }
}

template <int NT, int TILES, int UNROLL, bool PRED>
__device__ __forceinline__ void super_step(float (&acc)[TILES][NT][4], const kiln::bf16* __restrict__ wrow,
                                           const kiln::bf16* __restrict__ xrow0, const kiln::bf16* __restrict__ xrow1,
                                           bool xok0, bool xok1, long long K8, int k, int kend) {
    U4 wv[UNROLL][TILES][2];
    U4 xv[UNROLL][NT];
    load_step<NT, TILES, UNROLL, PRED>(wv, xv, wrow, xrow0, xrow1, xok0, xok1, K8, k, kend);
    mma_step<NT, TILES, UNROLL>(acc, wv, xv);
}

// Register path with the next super-step in flight (STAGES = 1): two register sets, A and B; the
// loads of step s+1 are issued before the mmas of step s, so a warp never waits a whole memory
// round trip with nothing outstanding (STAGES = 0 does: load, wait, mma, load ...). Same k order
// per lane as STAGES = 0, so the same bits. Runs the `nfull` whole super-steps k, k+KS, ...
// The first step's weights are requested BEFORE the PDL wait (weights never depend on the previous
// kernel), so under programmatic dependent launch the ramp-up overlaps the previous kernel's tail.
template <int NT, int TILES, int UNROLL>
__device__ __forceinline__ void pipelined_steps(float (&acc)[TILES][NT][4], const kiln::bf16* __restrict__ wrow,
                                                const kiln::bf16* __restrict__ xrow0, const kiln::bf16* __restrict__ xrow1,
                                                bool xok0, bool xok1, long long K8, int k, int KS, int nfull) {
    if (nfull <= 0) { pdl_wait_then_trigger(); return; }
    U4 wa[UNROLL][TILES][2], wb[UNROLL][TILES][2];
    U4 xa[UNROLL][NT], xb[UNROLL][NT];
    load_step_w<TILES, UNROLL, false>(wa, wrow, K8, k, 0);
    pdl_wait_then_trigger();
    load_step_x<NT, UNROLL, false>(xa, xrow0, xrow1, xok0, xok1, k, 0);
    int s = 0;
#pragma unroll 1
    while (true) {
        if (s + 1 < nfull) load_step<NT, TILES, UNROLL, false>(wb, xb, wrow, xrow0, xrow1, xok0, xok1, K8, k + (s + 1) * KS, 0);
        mma_step<NT, TILES, UNROLL>(acc, wa, xa);
        if (++s >= nfull) break;
        if (s + 1 < nfull) load_step<NT, TILES, UNROLL, false>(wa, xa, wrow, xrow0, xrow1, xok0, xok1, K8, k + (s + 1) * KS, 0);
        mma_step<NT, TILES, UNROLL>(acc, wb, xb);
        if (++s >= nfull) break;
    }
}

template <int NT, int WARPS_N, int WARPS_K, int TILES, int UNROLL, int STAGES>
__device__ __forceinline__ void gemm_splitk(const kiln::bf16* __restrict__ x, const kiln::bf16* __restrict__ w,
                                            void* __restrict__ y, float* __restrict__ ws,
                                            unsigned* __restrict__ cnt, int M, int N, int K, Epilogue epi) {
    static_assert(NT == 1 || NT == 2, "NT: 1 (M <= 8) or 2 (M <= 16)");
    static_assert(STAGES == 0 || STAGES == 1, "STAGES: 0 (register loads) or 1 (register loads, next step in flight)");
    static_assert((STAGES + 1) * 2 * TILES * UNROLL <= 16,
                  "register paths: at most 16 weight uint4 held per thread (STAGES = 1 holds two super-steps)");
    static_assert(WARPS_N * WARPS_K <= 8, "at most 8 warps per block");
    constexpr int STEP = UNROLL * 32;              // k per warp super-step
    constexpr int ROWS_WARP = 16 * TILES;
    constexpr int ROWS_BLOCK = ROWS_WARP * WARPS_N;

    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int wn = warp % WARPS_N;
    const int wk = warp / WARPS_N;
    const int g = lane >> 2, t = lane & 3;

    const int splitK = gridDim.y;
    const int split = blockIdx.y;
    int kchunk = (K + splitK - 1) / splitK;
    kchunk = (kchunk + 7) & ~7;
    const int kb = split * kchunk;
    const int ke = max(kb, min(K, kb + kchunk));   // empty chunk when splitK·kchunk overshoots K

    const int row0 = blockIdx.x * ROWS_BLOCK + wn * ROWS_WARP;   // this warp's first row

    float acc[TILES][NT][4];
#pragma unroll
    for (int tt = 0; tt < TILES; ++tt)
#pragma unroll
        for (int n = 0; n < NT; ++n)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[tt][n][i] = 0.f;

    // PDL: wait for the previous kernel before reading X or writing Y / the split-K scratch. STAGES = 1
    // waits inside pipelined_steps (after its first weight loads) and again, harmlessly, below.
    if constexpr (STAGES != 1) pdl_wait_then_trigger();

    const bool xok0 = g < M;
    const bool xok1 = g + 8 < M;
    const kiln::bf16* xrow0 = x + (long long)min(g, M - 1) * K + 8 * t;
    const kiln::bf16* xrow1 = x + (long long)min(g + 8, M - 1) * K + 8 * t;

    {  // register loads, UNROLL super-step loaded before its mmas (STAGES 1: next one in flight)
        // Rows past N read row N-1 (valid memory) and are never stored.
        const int rg = min(row0 + g, N - 1);
        const long long K8 = 8LL * K;
        // Rows of every tile must be valid addresses: when the warp's tiles pass N, fall back to
        // per-row clamped pointers (rare: only the last block column).
        const bool full = row0 + ROWS_WARP <= N;
        const kiln::bf16* wrow = w + (long long)rg * K + 8 * t;
        if (full) {
            const int ke32 = kb + ((ke - kb) & ~31);   // end of the whole 32-k segments
            int k = kb + wk * STEP;
            if constexpr (STAGES == 1) {
                constexpr int KS = WARPS_K * STEP;
                const int nfull = k + STEP <= ke32 ? (ke32 - STEP - k) / KS + 1 : 0;
                pipelined_steps<NT, TILES, UNROLL>(acc, wrow, xrow0, xrow1, xok0, xok1, K8, k, KS, nfull);
                k += nfull * KS;
            } else {
                for (; k + STEP <= ke32; k += WARPS_K * STEP)
                    super_step<NT, TILES, UNROLL, false>(acc, wrow, xrow0, xrow1, xok0, xok1, K8, k, ke32);
            }
            if (k < ke32)
                super_step<NT, TILES, UNROLL, true>(acc, wrow, xrow0, xrow1, xok0, xok1, K8, k, ke32);
            if (ke32 < ke && wk == 0) {
                // Partial last segment (K chunk not a multiple of 32): lanes past ke load zeros.
                const bool ok = ke32 + 8 * t < ke;
                U4 x0 = U4{0u, 0u, 0u, 0u}, x1 = U4{0u, 0u, 0u, 0u};
                if (ok && xok0) x0 = ld_nc(xrow0 + ke32);
                if (NT > 1 && ok && xok1) x1 = ld_nc(xrow1 + ke32);
#pragma unroll
                for (int tt = 0; tt < TILES; ++tt) {
                    U4 a = U4{0u, 0u, 0u, 0u}, b = U4{0u, 0u, 0u, 0u};
                    if (ok) {
                        a = ld_weight(wrow + (long long)(tt * 2) * K8 + ke32);
                        b = ld_weight(wrow + (long long)(tt * 2 + 1) * K8 + ke32);
                    }
                    mma16816(acc[tt][0], a.x, b.x, a.y, b.y, x0.x, x0.y);
                    mma16816(acc[tt][0], a.z, b.z, a.w, b.w, x0.z, x0.w);
                    if (NT > 1) {
                        mma16816(acc[tt][NT - 1], a.x, b.x, a.y, b.y, x1.x, x1.y);
                        mma16816(acc[tt][NT - 1], a.z, b.z, a.w, b.w, x1.z, x1.w);
                    }
                }
            }
        } else if (row0 < N) {
            // Edge warp: process each 16-row tile with its rows clamped into [0, N).
            if constexpr (STAGES == 1) pdl_wait_then_trigger();
#pragma unroll
            for (int tt = 0; tt < TILES; ++tt) {
                const int ra = min(row0 + tt * 16 + g, N - 1);
                const int rb = min(row0 + tt * 16 + g + 8, N - 1);
                const kiln::bf16* pa = w + (long long)ra * K + 8 * t;
                const long long d = (long long)(rb - ra) * K;   // stride to the "g+8" row
                for (int k = kb + wk * STEP; k < ke; k += WARPS_K * STEP) {
#pragma unroll
                    for (int u = 0; u < UNROLL; ++u) {
                        const int kk = k + u * 32;
                        U4 a = U4{0u, 0u, 0u, 0u}, b = U4{0u, 0u, 0u, 0u};
                        U4 x0 = U4{0u, 0u, 0u, 0u}, x1 = U4{0u, 0u, 0u, 0u};
                        if (kk + 8 * t < ke) {
                            a = ld_weight(pa + kk);
                            b = ld_weight(pa + d + kk);
                            if (xok0) x0 = ld_nc(xrow0 + kk);
                            if (NT > 1 && xok1) x1 = ld_nc(xrow1 + kk);
                        }
                        mma16816(acc[tt][0], a.x, b.x, a.y, b.y, x0.x, x0.y);
                        mma16816(acc[tt][0], a.z, b.z, a.w, b.w, x0.z, x0.w);
                        if (NT > 1) {
                            mma16816(acc[tt][NT - 1], a.x, b.x, a.y, b.y, x1.x, x1.y);
                            mma16816(acc[tt][NT - 1], a.z, b.z, a.w, b.w, x1.z, x1.w);
                        }
                    }
                }
            }
        }
    }  // STAGES 0/1
    if constexpr (STAGES == 1) pdl_wait_then_trigger();   // warps that loaded nothing; a no-op after the first

    // ---- Sum the WARPS_K partials of each row tile (fixed order) --------------------------------
    // ---- Sum the K warps; store, or split-K: publish the partial, the last block of the column reduces ------
    KILN_GEMM_FINISH(WARPS_N, WARPS_K, TILES, NT);
}

// Lane (g, t)'s weights of one super-step of a 16-row tile: rows row0 + g and row0 + 8 + g, 16 bytes at
// k + 32u + 8t for each u (the layout mma_step takes).
template <int UNROLL>
__device__ __forceinline__ void load_w_tile(U4 (&ws)[UNROLL][1][2], const kiln::bf16* __restrict__ w, int row0, int g, int t, int K, int k) {
#pragma unroll
    for (int u = 0; u < UNROLL; ++u)
#pragma unroll
        for (int h = 0; h < 2; ++h) ws[u][0][h] = ld_weight(w + (long long)(row0 + 8 * h + g) * K + k + 32 * u + 8 * t);
}

// Whole-block decode GEMM (see the header): block = one 16-row tile × all of K, WARPS_K warps interleaved
// over K in super-steps of UNROLL·32, two register sets (loads of step s+1 issued before the mmas of step
// s), warp partials summed in a fixed order, then the epilogue. The launcher guarantees N % 16 == 0,
// K % (32·UNROLL) == 0 and gridDim.y == 1, so no row, K tail or split-K code exists here. Written as the
// bench/boundary prototype that measured fastest; keep its address arithmetic (see the header).
template <int NT, int WARPS_K, int UNROLL, Epilogue EPI>
__device__ __forceinline__ void gemm_whole(const kiln::bf16* __restrict__ x, const kiln::bf16* __restrict__ w,
                                           void* __restrict__ y, int M, int N, int K) {
    static_assert(NT == 1 || NT == 2, "NT: 1 (M <= 8) or 2 (M <= 16)");
    static_assert(4 * UNROLL <= 16 && WARPS_K <= 8, "two register sets of 2·UNROLL weight uint4; at most 8 warps");
    const int lane = threadIdx.x & 31, wk = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int row0 = blockIdx.x * 16;
    constexpr int STEP = UNROLL * 32, KS = WARPS_K * STEP;
    const int k0 = wk * STEP;
    const int nfull = k0 + STEP <= K ? (K - STEP - k0) / KS + 1 : 0;
    const bool xok0 = g < M, xok1 = g + 8 < M;
    const kiln::bf16* xrow0 = x + (long long)min(g, M - 1) * K + 8 * t;
    const kiln::bf16* xrow1 = x + (long long)min(g + 8, M - 1) * K + 8 * t;
    U4 wv[2][UNROLL][1][2], xv[2][UNROLL][NT];   // [register set][u][tile][row g / g+8], as mma_step takes them
    float acc[1][NT][4];
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[0][n][i] = 0.f;
    auto load_w = [&](U4 (&ws)[UNROLL][1][2], int k) { load_w_tile<UNROLL>(ws, w, row0, g, t, K, k); };
    auto load_x = [&](U4 (&xs)[UNROLL][NT], int k) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            xs[u][0] = xok0 ? ld_nc(xrow0 + k + 32 * u) : U4{0u, 0u, 0u, 0u};
            if (NT > 1) xs[u][NT - 1] = xok1 ? ld_nc(xrow1 + k + 32 * u) : U4{0u, 0u, 0u, 0u};
        }
    };
    if (nfull > 0) load_w(wv[0], k0);   // weights never depend on the previous kernel: before the PDL wait
    pdl_wait_then_trigger();
    if (nfull > 0) load_x(xv[0], k0);
    for (int s0 = 0; s0 < nfull; s0 += 2) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const int s = s0 + j;
            if (s < nfull) {
                if (s + 1 < nfull) { load_w(wv[j ^ 1], k0 + (s + 1) * KS); load_x(xv[j ^ 1], k0 + (s + 1) * KS); }
                mma_step<NT, 1, UNROLL>(acc, wv[j], xv[j]);
            }
        }
    }
    sum_warps_k<1, WARPS_K, 1, NT>(acc, 0, wk, lane);
    if (wk == 0) store_out<1, NT>(acc, y, row0, g, t, M, N, EPI);
}

}  // namespace kiln_gemm

// X(NT, WARPS_N, WARPS_K, TILES, UNROLL, STAGES) — the instance table of the general kernel.
// STAGES = 0: register loads; 1: register loads with the next super-step in flight (two register sets).
#define KILN_GEMM_SPLITK_INSTANCES(X) \
    X(1, 1, 4, 1, 8, 0) X(1, 2, 4, 1, 8, 0) X(1, 1, 4, 1, 4, 0) X(1, 2, 2, 1, 4, 0) \
    X(1, 4, 2, 1, 4, 0) X(1, 4, 1, 1, 8, 0) X(1, 1, 4, 2, 2, 0) \
    X(1, 1, 4, 1, 4, 1) X(1, 1, 8, 1, 4, 1) X(1, 2, 4, 1, 4, 1) X(1, 1, 4, 2, 2, 1) \
    X(2, 1, 4, 1, 8, 0) X(2, 2, 4, 1, 8, 0) X(2, 1, 4, 1, 4, 0) X(2, 4, 1, 2, 4, 0) \
    X(2, 2, 2, 1, 8, 0) X(2, 4, 2, 2, 2, 0) \
    X(2, 1, 8, 1, 8, 0) X(2, 1, 4, 1, 4, 1) X(2, 1, 8, 1, 4, 1) X(2, 2, 4, 1, 4, 1)

// X(NT, WARPS_K, UNROLL, MINB) — whole-block kernels (gemm_whole): N % 16 == 0, K % (32·UNROLL) == 0, split 1;
// MINB = __launch_bounds__'s minimum blocks per SM. The NT = 2 instances with MINB 3 exist for wave quantisation:
// qkv's 384 blocks fit one wave only at 3 blocks per SM (132 · 3 = 396), and nt2_wk4_u4 needs 178 registers
// unbounded (2 blocks/SM) but fits in 160 (H200, bench/boundary: qkv M = 16 18.6 -> 14.5 µs, docs/perf-notes-gemm.md v6).
#define KILN_GEMM_SPLITK_WHOLE_INSTANCES(X) \
    X(1, 8, 4, 1) X(1, 8, 2, 1) X(1, 4, 4, 1) X(1, 4, 2, 1) X(2, 8, 2, 1) X(2, 4, 4, 1) X(2, 4, 2, 1) \
    X(2, 4, 4, 3) X(2, 6, 2, 3)

#define KILN_GEMM_SPLITK_NAME(NT, WN, WK, T, U, S) kiln_gemm_splitk_nt##NT##_wn##WN##_wk##WK##_t##T##_u##U##_s##S
#define KILN_GEMM_SPLITK_WHOLE_NAME(NT, WK, U, B) kiln_gemm_splitk_whole_nt##NT##_wk##WK##_u##U##_b##B

#define KILN_GEMM_SPLITK_DEFINE(NT, WN, WK, T, U, S)                                                      \
    extern "C" __global__ void __launch_bounds__(32 * WN * WK) KILN_GEMM_SPLITK_NAME(NT, WN, WK, T, U, S)( \
        const kiln::bf16* __restrict__ x, const kiln::bf16* __restrict__ w, void* __restrict__ y,          \
        float* __restrict__ ws, unsigned* __restrict__ cnt, int M, int N, int K, kiln::Epilogue epi) {   \
        kiln_gemm::gemm_splitk<NT, WN, WK, T, U, S>(x, w, y, ws, cnt, M, N, K, epi);                     \
    }

KILN_GEMM_SPLITK_INSTANCES(KILN_GEMM_SPLITK_DEFINE)

// The epilogue is a compile-time constant (one copy of the body per value): with `epi` a runtime value
// (live through the main loop, SwiGLU's expf in the same function) the same loop measured 3-6% slower on
// the H200 (bench/boundary, session 3).
// MINB 1 means no minimum: `__launch_bounds__(256, 1)` is not the same as `__launch_bounds__(256)` — ptxas gave
// nt1_wk8_u4 138 registers with it instead of 128 (one block per SM instead of two; o M = 1 10.5 vs 9.1 µs on the H200).
#define KILN_GEMM_WHOLE_BOUNDS_1(T) __launch_bounds__(T)
#define KILN_GEMM_WHOLE_BOUNDS_3(T) __launch_bounds__(T, 3)
#define KILN_GEMM_SPLITK_WHOLE_DEFINE(NT, WK, U, B)                                                        \
    extern "C" __global__ void KILN_GEMM_WHOLE_BOUNDS_##B(32 * WK) KILN_GEMM_SPLITK_WHOLE_NAME(NT, WK, U, B)( \
        const kiln::bf16* __restrict__ x, const kiln::bf16* __restrict__ w, void* __restrict__ y,          \
        float* __restrict__ ws, unsigned* __restrict__ cnt, int M, int N, int K, kiln::Epilogue epi) {   \
        switch (epi) {                                                                                   \
            case kiln::Epilogue::f32: kiln_gemm::gemm_whole<NT, WK, U, kiln::Epilogue::f32>(x, w, y, M, N, K); break; \
            case kiln::Epilogue::swiglu: kiln_gemm::gemm_whole<NT, WK, U, kiln::Epilogue::swiglu>(x, w, y, M, N, K); break; \
            default: kiln_gemm::gemm_whole<NT, WK, U, kiln::Epilogue::bf16>(x, w, y, M, N, K); break;   \
        }                                                                                                \
    }

KILN_GEMM_SPLITK_WHOLE_INSTANCES(KILN_GEMM_SPLITK_WHOLE_DEFINE)
