// gemm_util.cuh — the accumulator side of the m16n8 decode GEMMs (gemm_splitk.cu, gemm_fp8.cu): where each
// accumulator of a lane sits, the epilogue that stores it, the fixed-order sum of the WARPS_K warps' partials and the
// split-K "last block reduces" (KILN_SPLITK_REDUCE). One definition, so the bf16 and FP8 kernels cannot disagree on a layout.
// Needs kiln.cuh and attention_util.cuh (swiglu_bf16, f32_to_bf16, ld_cg) first.
#pragma once

namespace kiln_gemm {

using kiln::Epilogue;
using kiln_attn::swiglu_bf16;
using kiln_attn::f32_to_bf16;
using kiln_attn::ld_cg;

// Accumulator element (tt, n, i) of lane (g, t) in the m16n8k16 layout (weights = rows, tokens = columns):
// weight row row0 + 16tt + g + 8·(i ≥ 2), token 8n + 2t + (i & 1). One definition for the epilogue, the split-K
// publish and the split-K reload, which must agree element for element. (Macros, not inline functions: as
// functions ptxas allocated 1–10 registers differently in three instances; the macros give the same PTX as before.)
#define KILN_ACC_ROW(row0, tt, g, i) ((row0) + (tt) * 16 + (g) + (((i) >> 1) << 3))
#define KILN_ACC_TOKEN(n, t, i) ((n) * 8 + 2 * (t) + ((i) & 1))

// The epilogue (parameter `epi`, kiln::Epilogue; GemmSplitK.Epilogue in Swift) for the accumulators `v` of a warp
// whose first row is row0 (a multiple of 16): bf16: Y bf16 [M, N]; f32: Y fp32 [M, N];
// swiglu: W's rows are gate/up interleaved per 16-row tile (GPUWeights.interleaveGateUp: rows 16j…16j+7
//   are gate rows 8j…8j+7, rows 16j+8…16j+15 the matching up rows; N % 16 == 0). In the m16n8k16
//   accumulator layout c0,c1 sit on row g and c2,c3 on row g+8 of the same tokens, so a lane holds gate
//   (v[i]) and up (v[i+2]) of one feature f = (row0 + 16tt)/2 + g: Y = bf16 [M, N/2], Y[m, f] =
//   silu(gate)·up with gate and up first rounded to bf16 (the numbers of GEMM → bf16 → swiglu.cu).
template <int TILES, int NT>
__device__ __forceinline__ void store_out(const float (&v)[TILES][NT][4], void* __restrict__ y, int row0, int g, int t,
                                          int M, int N, Epilogue epi) {
#pragma unroll
    for (int tt = 0; tt < TILES; ++tt)
#pragma unroll
        for (int n = 0; n < NT; ++n)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int r = KILN_ACC_ROW(row0, tt, g, i);
                const int m = KILN_ACC_TOKEN(n, t, i);
                if (epi == Epilogue::swiglu) {
                    if (i < 2 && r < N && m < M) {
                        const long long o = (long long)m * (N >> 1) + ((row0 + tt * 16) >> 1) + g;
                        ((kiln::bf16*)y)[o] = swiglu_bf16(v[tt][n][i], v[tt][n][i + 2]);
                    }
                } else if (r < N && m < M) {
                    const long long o = (long long)m * N + r;
                    if (epi == Epilogue::f32) ((float*)y)[o] = v[tt][n][i];
                    else ((kiln::bf16*)y)[o] = f32_to_bf16(v[tt][n][i]);
                }
            }
}

// Sums the WARPS_K partial accumulators of each row tile into warp wk == 0's `acc`, in a fixed order
// (wk = 1, 2, …) through shared memory, so results are bitwise reproducible. Every thread of the block
// must call it; only wk == 0's `acc` holds the sum afterwards.
template <int WARPS_N, int WARPS_K, int TILES, int NT>
__device__ __forceinline__ void sum_warps_k(float (&acc)[TILES][NT][4], int wn, int wk, int lane) {
    if constexpr (WARPS_K > 1) {
        constexpr int NACC = TILES * NT * 4;
        __shared__ float red[(WARPS_K - 1) * WARPS_N * NACC * 32];
        if (wk > 0) {
            float* dst = red + ((wk - 1) * WARPS_N + wn) * NACC * 32 + lane;
#pragma unroll
            for (int tt = 0; tt < TILES; ++tt)
#pragma unroll
                for (int n = 0; n < NT; ++n)
#pragma unroll
                    for (int i = 0; i < 4; ++i) dst[((tt * NT + n) * 4 + i) * 32] = acc[tt][n][i];
        }
        __syncthreads();
        if (wk == 0) {
#pragma unroll 1
            for (int j = 1; j < WARPS_K; ++j) {
                const float* src = red + ((j - 1) * WARPS_N + wn) * NACC * 32 + lane;
#pragma unroll
                for (int tt = 0; tt < TILES; ++tt)
#pragma unroll
                    for (int n = 0; n < NT; ++n)
#pragma unroll
                        for (int i = 0; i < 4; ++i) acc[tt][n][i] += src[((tt * NT + n) * 4 + i) * 32];
            }
        }
    }
}

// Split-K (gridDim.y > 1): "last block reduces", no second launch and no memset per call. Each block writes its fp32
// partial to ws[split][m][n], fences, and bumps cnt[blockIdx.x]; the block that sees splitK - 1 sums the splitK partials
// in split order (bitwise reproducible, unlike fp32 atomics), stores Y through store_out and resets its counter to 0.
// Every thread of the block runs it; the warps with wk == 0 hold the block's partial in `acc` (float[TILES][NT][4]), and
// the names acc, y, ws, cnt, row0, g, t, wk, split, splitK, M, N, epi must be in scope. A macro, not a function: as an
// inline function ptxas compiled gemm_splitk's instances differently (21 of 21 SASS hashes changed, two sizes), and
// the bf16 kernels' machine code is what the H200 timings measured (scripts/cubin-diff.py shows it unchanged).
#define KILN_SPLITK_REDUCE(TILES, NT)                                                                                  \
    if (wk == 0) {                                                                                          \
    _Pragma("unroll")                                                                                       \
        for (int tt = 0; tt < TILES; ++tt)                                                                  \
    _Pragma("unroll")                                                                                       \
            for (int n = 0; n < NT; ++n)                                                                    \
    _Pragma("unroll")                                                                                       \
                for (int i = 0; i < 4; ++i) {                                                               \
                    const int r = KILN_ACC_ROW(row0, tt, g, i);                                             \
                    const int m = KILN_ACC_TOKEN(n, t, i);                                                  \
                    if (r < N && m < M) ws[((long long)split * M + m) * N + r] = acc[tt][n][i];             \
                }                                                                                           \
    }                                                                                                       \
    __threadfence();                                                                                        \
    __syncthreads();                                                                                        \
    __shared__ unsigned s_last;                                                                             \
    if (threadIdx.x == 0) {                                                                                 \
        const unsigned prev = atomicAdd(cnt + blockIdx.x, 1u);                                              \
        s_last = (prev == (unsigned)(splitK - 1));                                                          \
    }                                                                                                       \
    __syncthreads();                                                                                        \
    if (!s_last) return;                                                                                    \
    __threadfence();                                                                                        \
    if (wk == 0) {                                                                                          \
                                                                                                            \
        float sum[TILES][NT][4];                                                                            \
    _Pragma("unroll")                                                                                       \
        for (int tt = 0; tt < TILES; ++tt)                                                                  \
    _Pragma("unroll")                                                                                       \
            for (int n = 0; n < NT; ++n)                                                                    \
    _Pragma("unroll")                                                                                       \
                for (int i = 0; i < 4; ++i) sum[tt][n][i] = 0.f;                                            \
    _Pragma("unroll 1")                                                                                     \
        for (int j = 0; j < splitK; ++j) {                                                                  \
            float v[TILES][NT][4];                                                                          \
    _Pragma("unroll")                                                                                       \
            for (int tt = 0; tt < TILES; ++tt)                                                              \
    _Pragma("unroll")                                                                                       \
                for (int n = 0; n < NT; ++n)                                                                \
    _Pragma("unroll")                                                                                       \
                    for (int i = 0; i < 4; ++i) {                                                           \
                        const int r = KILN_ACC_ROW(row0, tt, g, i);                                         \
                        const int m = KILN_ACC_TOKEN(n, t, i);                                              \
                        v[tt][n][i] = (r < N && m < M) ? ld_cg(ws + ((long long)j * M + m) * N + r) : 0.f;  \
                    }                                                                                       \
    _Pragma("unroll")                                                                                       \
            for (int tt = 0; tt < TILES; ++tt)                                                              \
    _Pragma("unroll")                                                                                       \
                for (int n = 0; n < NT; ++n)                                                                \
    _Pragma("unroll")                                                                                       \
                    for (int i = 0; i < 4; ++i) sum[tt][n][i] += v[tt][n][i];                               \
        }                                                                                                   \
        store_out<TILES, NT>(sum, y, row0, g, t, M, N, epi);                                                \
    }                                                                                                       \
    if (threadIdx.x == 0) cnt[blockIdx.x] = 0u;                                                             \
    do {} while (0)

// The end of every split-K decode GEMM (gemm_splitk, gemm_fp8, gemm_lut): the WARPS_K warps' partial sums added up, then
// the output stored (splitK == 1) or the split-K reduction. The names KILN_SPLITK_REDUCE needs, plus wn and lane, must
// be in scope. A macro for the same reason as KILN_SPLITK_REDUCE (the kernels' SASS is unchanged by it:
// scripts/cubin-diff.py).
#define KILN_GEMM_FINISH(WARPS_N, WARPS_K, TILES, NT)                                                           \
    kiln_gemm::sum_warps_k<WARPS_N, WARPS_K, TILES, NT>(acc, wn, wk, lane);                                 \
    if (splitK == 1) {                                                                                      \
        if (wk == 0) kiln_gemm::store_out<TILES, NT>(acc, y, row0, g, t, M, N, epi);                        \
        return;                                                                                             \
    }                                                                                                       \
    KILN_SPLITK_REDUCE(TILES, NT)

}  // namespace kiln_gemm
