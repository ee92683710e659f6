// gemm_fp8.cu — decode GEMMs over FP8 block-scaled weights (W8A8): Y[M,N] = X[M,K] · W[N,K]^T for 1 ≤ M ≤ 16, and the
// activation quantizer that feeds them.
//
// The format (WeightFormat.fp8E4M3, Hugging Face fine-grained FP8): W is e4m3 [N, K], one f32 scale_inv per 128×128
// block; the value of W[n, k] is code · scale_inv[n/128, k/128]. X is quantized per token and 128-column block, as
// transformers' `act_quant` does: s = absmax / 448, code = e4m3(x / s) (an all-zero block: s = 0, codes 0). The product,
// as `w8a8_block_fp8_matmul` and the CPU reference (KilnCPU FP8Linear, numerics .w8a8) compute it: per 128-column
// block the e4m3 products are summed in f32, then times s_x · scale_inv, summed over the blocks in f32.
//
// Decode reads the weights once per step, so the floor is N·K bytes (half of bf16) ÷ bandwidth. The kernel keeps
// gemm_splitk.cu's plan (its header explains it), with e4m3 tensor-core MMAs that take the codes as loaded:
//  * mma.m16n8k32.e4m3 with the operands swapped (weights = the 16-row A operand, tokens = the 8-wide B side).
//    Lane (g = lane/4, t = lane%4) loads 16 bytes of weight rows g and g+8 and of token g at k = base + 16t: words
//    0,1 fill one mma's k-slots 4t…4t+3 and 16+4t…16+4t+3, words 2,3 the next mma's. A dot product may visit k in any
//    order as long as A and B agree, and they do: the slot → k map depends on t only.
//  * One 128-column scale block = two such loads per row (k = base + 16t and base + 64 + 16t), four mmas into a
//    zeroed fragment; the fragment is then scaled by s_w · s_x of its row half and token and added to the f32
//    accumulators (fma), exactly the reference's order within a block up to f32 rounding of the block sum.
//  * Weight scales arrive per 8-row group, `scale8[ceil(N/8), ceil(K/128)]` (GPUWeights expands the checkpoint's
//    128-row blocks): a 16-row tile's rows g and g+8 may then come from different checkpoint matrices — gate and up
//    interleaved per tile for the SwiGLU epilogue — at 1/32 of the weight bytes read (0.4% more traffic).
//  * Split-K, the WARPS_K sum and the epilogues are gemm_util.cuh's (the bf16 kernel's code).
//
// Entry points, all with the parameters of `Fp8GemmParams` (one struct; GemmFP8.swift mirrors it):
//   kiln_gemm_fp8_nt{NT}_wn{WN}_wk{WK}_t{T}_u{U}   block = 32·WN·WK threads, grid = (ceil(N / (16·T·WN)), splitK)
//   kiln_fp8_quant_act                                block = 128 threads (4 warps), grid = (ceil(KB / 4), M)
//   kiln_fp8_dequant                                  block = 256 threads, grid = ceil(N·K/16 / 256): W → bf16 (prefill)
// Requirements (checked by the launcher): K % 16 == 0 (16-byte rows), x/w 16-byte aligned, 1 ≤ M ≤ 8·NT; the SwiGLU
// epilogue needs N % 16 == 0. N and K need not be multiples of 128. e4m3 MMAs need sm_89 or newer.

#include "kiln.cuh"
#include "attention_util.cuh"   // U4, ld_nc, ld_cg, pdl_wait_then_trigger
#include "gemm_util.cuh"        // accumulator layout, store_out, sum_warps_k, KILN_SPLITK_REDUCE

struct Fp8GemmParams {
    const unsigned char* xq;   // [M, K] e4m3 activation codes
    const float* xs;           // [M, KB] activation scales s (KB = ceil(K / 128))
    const unsigned char* w;    // [N, K] e4m3 weight codes
    const float* scale8;       // [ceil(N / 8), KB] weight scale_inv per 8-row group and 128-column block
    void* y;                   // [M, N] bf16 / fp32, or [M, N/2] bf16 (SwiGLU)
    float* ws;                 // [splitK, M, N] fp32 split-K partials (splitK > 1)
    unsigned* cnt;             // [gridDim.x] zeroed counters (splitK > 1), left zeroed
    int M, N, K;
    kiln::Epilogue epi;
};

struct Fp8DequantParams {
    const unsigned char* w;    // [N, K] e4m3 codes
    const float* scale8;       // [ceil(N / 8), KB] scale_inv per 8-row group and 128-column block
    kiln::bf16* y;             // [N, K] bf16 = code · scale_inv, rounded to nearest even
    int N, K;
};

struct Fp8QuantParams {
    const kiln::bf16* x;       // [M, K] bf16 activations
    unsigned char* xq;         // [M, K] e4m3 codes
    float* xs;                 // [M, KB] scales s = absmax / 448 of each 128-column block (0 for an all-zero block)
    int M, K;
};

namespace kiln_fp8 {

using kiln::Epilogue;
using kiln_attn::U4;
using kiln_attn::ld_cg;
using kiln_attn::pdl_wait_then_trigger;
using kiln_gemm::store_out;

using kiln_attn::ld_weight;   // weights: streamed once, L2 asked for the 256-byte span
// Activations are small and shared by every row tile: L1-cached.
__device__ __forceinline__ U4 ld_act(const unsigned char* p) { return kiln_attn::ld_nc((const kiln::bf16*)p); }

// D = A(16×32 e4m3, rows) · B(32×8 e4m3, cols) + C, f32 accumulators (the m16n8 layout of gemm_util.cuh).
__device__ __forceinline__ void mma_e4m3(float (&c)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0,
                                         unsigned b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
    __trap();   // the launcher refuses FP8 GEMMs below sm_89
#endif
}

// The registers of one 128-column block of one warp: per tile, rows g / g+8 × halves (k + 16t, k + 64 + 16t); per
// token group n, the two halves of token g (+8n).
template <int NT, int TILES>
struct BlockRegs {
    U4 w[TILES][2][2];   // [tile][row g, row g+8][half]
    U4 x[NT][2];         // [token group][half]
};

// Loads block `blk` (columns 128·blk …). PRED: the block may be partial or past the split's end (`bend`): lanes whose
// 16 bytes start at or past K load zeros, and a block at or past `bend` loads nothing but zeros.
template <int NT, int TILES, bool PRED>
__device__ __forceinline__ void load_block_w(BlockRegs<NT, TILES>& r, const unsigned char* const (&wrow)[TILES][2], int blk,
                                             int bend, int t, int K) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int k = blk * 128 + 64 * h + 16 * t;
        const bool ok = !PRED || (blk < bend && k < K);
#pragma unroll
        for (int tt = 0; tt < TILES; ++tt)
#pragma unroll
            for (int half = 0; half < 2; ++half) r.w[tt][half][h] = ok ? ld_weight(wrow[tt][half] + k) : U4{0u, 0u, 0u, 0u};
    }
}

template <int NT, int TILES, bool PRED>
__device__ __forceinline__ void load_block_x(BlockRegs<NT, TILES>& r, const unsigned char* const (&xrow)[NT], const bool (&xok)[NT],
                                             int blk, int bend, int t, int K) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int k = blk * 128 + 64 * h + 16 * t;
        const bool ok = !PRED || (blk < bend && k < K);
#pragma unroll
        for (int n = 0; n < NT; ++n) r.x[n][h] = (ok && xok[n]) ? ld_act(xrow[n] + k) : U4{0u, 0u, 0u, 0u};
    }
}

// The four mmas of one block per (tile, token group), then acc += fragment · s_w(row half) · s_x(token).
// sw[tt][half]: the tile's two 8-row groups' scale rows; xsr[n][j]: token 8n + 2t + j's scale row (zero scale for
// tokens ≥ M, whose codes are zero too). A block past `bend` (PRED) adds nothing: its scales are not read.
template <int NT, int TILES, bool PRED>
__device__ __forceinline__ void mma_block(float (&acc)[TILES][NT][4], const BlockRegs<NT, TILES>& r, const float* const (&sw)[TILES][2],
                                          const float* const (&xsr)[NT][2], const bool (&xsok)[NT][2], int blk, int bend) {
    if (PRED && blk >= bend) return;
    float sx[NT][2];
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int j = 0; j < 2; ++j) sx[n][j] = xsok[n][j] ? __ldg(xsr[n][j] + blk) : 0.f;
#pragma unroll
    for (int tt = 0; tt < TILES; ++tt) {
        const float s_top = __ldg(sw[tt][0] + blk), s_bottom = __ldg(sw[tt][1] + blk);
#pragma unroll
        for (int n = 0; n < NT; ++n) {
            float c[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const U4& a = r.w[tt][0][h];
                const U4& b = r.w[tt][1][h];
                const U4& xx = r.x[n][h];
                mma_e4m3(c, a.x, b.x, a.y, b.y, xx.x, xx.y);
                mma_e4m3(c, a.z, b.z, a.w, b.w, xx.z, xx.w);
            }
            // c0, c1: row g, tokens 2t, 2t+1; c2, c3: row g+8, same tokens.
            acc[tt][n][0] = fmaf(c[0], s_top * sx[n][0], acc[tt][n][0]);
            acc[tt][n][1] = fmaf(c[1], s_top * sx[n][1], acc[tt][n][1]);
            acc[tt][n][2] = fmaf(c[2], s_bottom * sx[n][0], acc[tt][n][2]);
            acc[tt][n][3] = fmaf(c[3], s_bottom * sx[n][1], acc[tt][n][3]);
        }
    }
}

template <int NT, int WARPS_N, int WARPS_K, int TILES, int UNROLL>
__device__ __forceinline__ void gemm_fp8(const Fp8GemmParams& p) {
    static_assert(NT == 1 || NT == 2, "NT: 1 (M <= 8) or 2 (M <= 16)");
    static_assert(2 * UNROLL * TILES * 4 <= 16, "two register sets of UNROLL blocks: at most 16 weight uint4 per thread (more spills)");
    static_assert(WARPS_N * WARPS_K <= 8, "at most 8 warps per block");
    constexpr int ROWS_WARP = 16 * TILES, ROWS_BLOCK = ROWS_WARP * WARPS_N;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wn = warp % WARPS_N, wk = warp / WARPS_N, g = lane >> 2, t = lane & 3;
    const int M = p.M, N = p.N, K = p.K;
    const int KB = (K + 127) >> 7, groups = (N + 7) >> 3;

    // This block's split: whole 128-column blocks [b0, b1); the full ones end at bfull.
    const int splitK = gridDim.y, split = blockIdx.y;
    const int per = (KB + splitK - 1) / splitK;
    const int b0 = min(KB, split * per), b1 = min(KB, b0 + per);
    const int bfull = min(b1, max(b0, K >> 7));
    const int row0 = blockIdx.x * ROWS_BLOCK + wn * ROWS_WARP;

    // Rows past N read row N-1 (valid memory) and are never stored; their scale group is clamped the same way.
    const unsigned char* wrow[TILES][2];
    const float* sw[TILES][2];
#pragma unroll
    for (int tt = 0; tt < TILES; ++tt)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int r = min(row0 + 16 * tt + 8 * half + g, N - 1);
            wrow[tt][half] = p.w + (long long)r * K;
            sw[tt][half] = p.scale8 + (long long)min((row0 + 16 * tt + 8 * half) >> 3, groups - 1) * KB;
        }
    const unsigned char* xrow[NT];
    bool xok[NT];
    const float* xsr[NT][2];
    bool xsok[NT][2];
#pragma unroll
    for (int n = 0; n < NT; ++n) {
        xok[n] = 8 * n + g < M;
        xrow[n] = p.xq + (long long)min(8 * n + g, M - 1) * K;
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const int m = KILN_ACC_TOKEN(n, t, j);
            xsok[n][j] = m < M;
            xsr[n][j] = p.xs + (long long)min(m, M - 1) * KB;
        }
    }

    float acc[TILES][NT][4];
#pragma unroll
    for (int tt = 0; tt < TILES; ++tt)
#pragma unroll
        for (int n = 0; n < NT; ++n)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[tt][n][i] = 0.f;

    // Whole super-steps of UNROLL full blocks, warps interleaved (warp wk takes steps wk, wk + WARPS_K, …), two
    // register sets: the loads of step s+1 are issued before the mmas of step s. The first weights are requested
    // before the PDL wait (weights never depend on the previous kernel).
    const int steps = (bfull - b0) / UNROLL;
    const int mine = steps > wk ? (steps - wk + WARPS_K - 1) / WARPS_K : 0;
    BlockRegs<NT, TILES> ra[UNROLL], rb[UNROLL];
    auto first_block = [&](int s) { return b0 + (wk + s * WARPS_K) * UNROLL; };
    auto load_w = [&](BlockRegs<NT, TILES> (&r)[UNROLL], int s) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) load_block_w<NT, TILES, false>(r[u], wrow, first_block(s) + u, 0, t, K);
    };
    auto load_x = [&](BlockRegs<NT, TILES> (&r)[UNROLL], int s) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) load_block_x<NT, TILES, false>(r[u], xrow, xok, first_block(s) + u, 0, t, K);
    };
    auto mmas = [&](const BlockRegs<NT, TILES> (&r)[UNROLL], int s) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) mma_block<NT, TILES, false>(acc, r[u], sw, xsr, xsok, first_block(s) + u, 0);
    };
    if (mine > 0) load_w(ra, 0);
    pdl_wait_then_trigger();
    if (mine > 0) load_x(ra, 0);
#pragma unroll 1
    for (int s = 0; s < mine; s += 2) {
        if (s + 1 < mine) { load_w(rb, s + 1); load_x(rb, s + 1); }
        mmas(ra, s);
        if (s + 1 >= mine) break;
        if (s + 2 < mine) { load_w(ra, s + 2); load_x(ra, s + 2); }
        mmas(rb, s + 1);
    }
    // The rest, one block at a time with predicates: full blocks that did not fill a super-step, and the partial block.
#pragma unroll 1
    for (int blk = b0 + steps * UNROLL + wk; blk < b1; blk += WARPS_K) {
        BlockRegs<NT, TILES> r;
        load_block_w<NT, TILES, true>(r, wrow, blk, b1, t, K);
        load_block_x<NT, TILES, true>(r, xrow, xok, blk, b1, t, K);
        mma_block<NT, TILES, true>(acc, r, sw, xsr, xsok, blk, b1);
    }

    void* y = p.y;
    float* ws = p.ws;
    unsigned* cnt = p.cnt;
    const Epilogue epi = p.epi;
    KILN_GEMM_FINISH(WARPS_N, WARPS_K, TILES, NT);
}

// One warp per (token, 128-column block): 4 values per lane, quantized by kiln::e4m3_block_codes (s = absmax / 448, codes
// e4m3(x / s), IEEE division, round to nearest even with saturation as the CPU E4M3.encode). Columns past K are not written.
__device__ __forceinline__ void quant_act(const Fp8QuantParams& p) {
    const int lane = threadIdx.x & 31;
    const int blk = blockIdx.x * 4 + (threadIdx.x >> 5), m = blockIdx.y;
    const int KB = (p.K + 127) >> 7;
    pdl_wait_then_trigger();
    if (blk >= KB) return;
    const int k = blk * 128 + lane * 4;
    float v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = k + j < p.K ? kiln::to_float(p.x[(long long)m * p.K + k + j]) : 0.f;
    float s;
    const unsigned packed = kiln::e4m3_block_codes(v, s);
    unsigned char* out = p.xq + (long long)m * p.K + k;
    if (k + 3 < p.K) {
        *(unsigned*)out = packed;   // k % 4 == 0 and K % 16 == 0: aligned
    } else {
        for (int j = 0; j < 4 && k + j < p.K; ++j) out[j] = (unsigned char)(packed >> (8 * j));
    }
    if (lane == 0) p.xs[(long long)m * KB + blk] = s;
}

// The value of an e4m3 byte pair (low byte = first element) as two f32: cvt to f16x2 is exact (every e4m3 value is an
// f16 normal or zero), and so is f16 → f32.
__device__ __forceinline__ void e4m3x2_to_f32(unsigned short pair, float& lo, float& hi) {
    unsigned h2;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h2) : "h"(pair));
    lo = kiln::to_float(kiln::f16{(unsigned short)(h2 & 0xffffu)});
    hi = kiln::to_float(kiln::f16{(unsigned short)(h2 >> 16)});
}

// Prefill over FP8 weights (until an FP8 prefill GEMM exists): W dequantized to bf16 for the Hopper GEMM. One thread
// per 16 codes (K % 16 == 0): code · scale_inv in f32, rounded to bf16 as GPUWeights.bf16 does on the CPU.
__device__ __forceinline__ void dequant(const Fp8DequantParams& p) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;   // 16-code chunk
    const int chunks = p.K >> 4;
    pdl_wait_then_trigger();
    if (i >= (long long)p.N * chunks) return;
    const int n = (int)(i / chunks), k = (int)(i % chunks) << 4;
    const float s = p.scale8[(long long)(n >> 3) * ((p.K + 127) >> 7) + (k >> 7)];
    const U4 c = ld_weight(p.w + (long long)n * p.K + k);
    const unsigned words[4] = {c.x, c.y, c.z, c.w};
    unsigned out[8];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        float a, b, d, e;
        e4m3x2_to_f32((unsigned short)(words[j] & 0xffffu), a, b);
        e4m3x2_to_f32((unsigned short)(words[j] >> 16), d, e);
        out[2 * j] = kiln_attn::pack_bf16x2(a * s, b * s);
        out[2 * j + 1] = kiln_attn::pack_bf16x2(d * s, e * s);
    }
    U4* dst = (U4*)(p.y + (long long)n * p.K + k);
    dst[0] = U4{out[0], out[1], out[2], out[3]};
    dst[1] = U4{out[4], out[5], out[6], out[7]};
}

}  // namespace kiln_fp8

extern "C" __global__ void __launch_bounds__(128) kiln_fp8_quant_act(const Fp8QuantParams p) { kiln_fp8::quant_act(p); }
extern "C" __global__ void __launch_bounds__(256) kiln_fp8_dequant(const Fp8DequantParams p) { kiln_fp8::dequant(p); }

// X(NT, WARPS_N, WARPS_K, TILES, UNROLL) — the instances the tuner chooses from. NT = 1 serves M ≤ 8, NT = 2 M ≤ 16.
// A first set, mirroring gemm_splitk's winners at half the bytes per weight (one 128-column block holds as many bytes
// per row as 64 bf16 columns): the H200 sweep of the next device session prunes it (docs/perf-notes-gemm.md).
#define KILN_GEMM_FP8_INSTANCES(X) \
    X(1, 1, 4, 1, 2) X(1, 1, 8, 1, 1) X(1, 1, 8, 1, 2) X(1, 2, 4, 1, 2) X(1, 1, 4, 2, 1) X(1, 4, 2, 1, 2) \
    X(2, 1, 4, 1, 2) X(2, 1, 8, 1, 2) X(2, 2, 4, 1, 2) X(2, 1, 4, 1, 1) X(2, 1, 4, 2, 1) X(2, 1, 8, 2, 1) X(2, 1, 8, 1, 1)

#define KILN_GEMM_FP8_NAME(NT, WN, WK, T, U) kiln_gemm_fp8_nt##NT##_wn##WN##_wk##WK##_t##T##_u##U
#define KILN_GEMM_FP8_DEFINE(NT, WN, WK, T, U)                                                                  \
    extern "C" __global__ void __launch_bounds__(32 * WN * WK) KILN_GEMM_FP8_NAME(NT, WN, WK, T, U)(const Fp8GemmParams p) { \
        kiln_fp8::gemm_fp8<NT, WN, WK, T, U>(p);                                                                \
    }
KILN_GEMM_FP8_INSTANCES(KILN_GEMM_FP8_DEFINE)
