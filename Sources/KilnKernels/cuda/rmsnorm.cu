// RMSNorm over the rows of x: y = x / sqrt(mean(x^2) + eps) * weight, in f32 arithmetic with one
// rounding at the store. weight and y have the element type T (bf16 in the GPU forward pass; f32 for
// reference-precision runs); the normalised stream (x, or the residual) has type R, T by default. The
// engine keeps its residual stream in f32 (R = float): some models carry a few residual dimensions in
// the thousands (SmolLM2: up to ~22000), where a bf16 step is 4..128 and small branch updates vanish.
//
// One block per row (128 threads for rows up to 4096, else 256: the launcher's choice; smaller
// blocks for short rows give each thread 4 loads in flight and let more blocks overlap their
// reductions; 256 threads measured 80% of copy bandwidth on H200 at 8192x4096). Plain rmsnorm takes
// TWO rows per block when a row fits the register cache (rmsnorm_rows2): 93% of copy bandwidth at
// 8192x4096 on H200 against 85% for one row per block. When the row length is a multiple of 8 (every
// real model), each thread moves 8-element packs with 16-byte loads and keeps up to CACHE packs in
// registers between the sum-of-squares pass and the scaling pass, so x is read from memory once
// (rows up to blockDim*8*CACHE elements; longer rows re-read the rest, which then mostly hits L2).
//
// residual_rmsnorm is the fused pre-norm step of a transformer block (x: T, residual: R):
//   residual += x  (written back, rounded to R: the stream that flows to the next block)
//   y = rmsnorm(residual) * weight
// saving one full read and write of the residual stream compared with a separate add.
//
// rmsnorm_fp8 / residual_rmsnorm_fp8 (FP8 weights, issue 17) also write y in the activation format of the FP8 GEMMs
// that read it (gemm_fp8.cu's kiln_fp8_quant_act, one launch per GEMM saved): per 1×128 block of a row, s = absmax / 448
// and e4m3 codes round(y / s), computed from y as stored (rounded to T), so codes and scales are bit for bit those
// the quantizer would compute from y. A 128-column block is 16 packs: 16 adjacent lanes, reduced by shuffles. Only
// rows that fit the register cache (packs ≤ RMS_CACHE · blockDim, 16-byte aligned, cols % 8 == 0: the launcher checks).
//
// KILN_BREAK (only for `kiln check --self-test`): skips writing the last element of each row, a
// deliberately wrong kernel that the conformance comparison must catch.
#include "kiln.cuh"

namespace kiln {

struct RMSNormParams {
    u64 x, weight, y;
    int rows, cols;
    float eps;
    int rows_per_block;   // 1, or 2: see rmsnorm_rows2
};

struct ResidualRMSNormParams {
    u64 x, residual, weight, y;
    int rows, cols;
    float eps;
};

// The _fp8 kernels' parameters: the plain ones, then the quantized copy of y (appended, so the plain kernels' layout
// and code are unchanged).
struct RMSNormFP8Params {
    RMSNormParams norm;
    u64 xq, xs;   // [rows, cols] e4m3 codes; [rows, ceil(cols / 128)] f32 scales
};
struct ResidualRMSNormFP8Params {
    ResidualRMSNormParams norm;
    u64 xq, xs;
};

constexpr int RMS_THREADS = 256;   // the most threads a launch may use
constexpr int RMS_CACHE = 4;

#ifdef KILN_BREAK
__device__ __forceinline__ bool kiln_skip(int col, int cols) { return col == cols - 1; }
#else
__device__ __forceinline__ bool kiln_skip(int, int) { return false; }
#endif

// Pack j of a row (8 values of y, already rounded to their stored type) into e4m3 codes at xq and, from the first
// lane of its 128-column block, the block's scale at xs. Called by every lane of the warp (the shuffles); lanes with
// !valid contribute 0 to the absmax and store nothing, as the quantizer's zero padding past K.
__device__ __forceinline__ void quantize_pack8(const Pack8& v, bool valid, int j, u64 xq, u64 xs, int row, int cols) {
    float amax = 0.f;
    if (valid) {
#pragma unroll
        for (int e = 0; e < 8; ++e) amax = fmaxf(amax, fabsf(v.v[e]));
    }
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if (!valid) return;
    const float s = amax / 448.f;
    unsigned short c[4] = {0, 0, 0, 0};
    if (s > 0.f) {
#pragma unroll
        for (int e = 0; e < 4; ++e)   // cvt …e4m3x2.f32 d, a, b puts a in the upper byte and b in the lower one
            asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(c[e]) : "f"(v.v[2 * e + 1] / s), "f"(v.v[2 * e] / s));
    }
    const long long at = (long long)row * cols + 8LL * j;
    *(uint2*)((unsigned char*)xq + at) = make_uint2((unsigned)c[0] | ((unsigned)c[1] << 16), (unsigned)c[2] | ((unsigned)c[3] << 16));
    if ((j & 15) == 0) ((float*)xs)[(long long)row * ((cols + 127) >> 7) + (j >> 4)] = s;
}

// x is R for plain RMSNorm and T (the branch) with RESIDUAL; the residual is R; weight and y are T.
// FP8: also y's e4m3 codes and block scales at xq, xs (quantize_pack8; the caller guarantees the row fits the cache).
template <typename T, typename R, bool RESIDUAL, bool FP8 = false>
__device__ __forceinline__ void rmsnorm_row(u64 x, u64 residual, u64 weight, u64 y, int row, int cols, float eps, u64 xq = 0,
                                            u64 xs = 0) {
    __shared__ float scratch[32];
    const long long base = (long long)row * cols;
    const bool vec = (cols % 8) == 0 && aligned16(x) && aligned16(y) && aligned16(weight) && (!RESIDUAL || aligned16(residual));
    if (vec) {
        const int packs = cols / 8;
        // x (or the new residual) and the weights stay in registers in storage form across the
        // reduction; the weight loads are issued before the barrier so their latency hides behind it.
        Raw8<R> cache[RMS_CACHE];
        Raw8<T> wcache[RMS_CACHE];
        float ss = 0.f;
#pragma unroll
        for (int k = 0; k < RMS_CACHE; ++k) {
            const int j = threadIdx.x + k * (int)blockDim.x;
            if (j < packs) {
                Pack8 h;
                if (RESIDUAL) {
                    h = load8<T>(x, base + 8LL * j);
                    Pack8 r = load8<R>(residual, base + 8LL * j);
#pragma unroll
                    for (int e = 0; e < 8; ++e) h.v[e] += r.v[e];
                    cache[k] = pack8<R>(h);
                    store_raw8<R>(residual, base + 8LL * j, cache[k]);
                } else {
                    cache[k] = load_raw8<R>(x, base + 8LL * j);
                }
                h = unpack8<R>(cache[k]);   // with RESIDUAL: the rounded values, as stored
#pragma unroll
                for (int e = 0; e < 8; ++e) ss += h.v[e] * h.v[e];
            }
        }
        for (int j = threadIdx.x + RMS_CACHE * (int)blockDim.x; j < packs; j += (int)blockDim.x) {
            Pack8 h;
            if (RESIDUAL) {
                h = load8<T>(x, base + 8LL * j);
                Pack8 r = load8<R>(residual, base + 8LL * j);
#pragma unroll
                for (int e = 0; e < 8; ++e) h.v[e] = to_float(from_float<R>(h.v[e] + r.v[e]));
                store8<R>(residual, base + 8LL * j, h);
            } else {
                h = load8<R>(x, base + 8LL * j);
            }
#pragma unroll
            for (int e = 0; e < 8; ++e) ss += h.v[e] * h.v[e];
        }
#pragma unroll
        for (int k = 0; k < RMS_CACHE; ++k) {
            const int j = threadIdx.x + k * (int)blockDim.x;
            if (j < packs) wcache[k] = load_raw8<T>(weight, 8LL * j);
        }
        const float scale = rsqrtf(block_sum(ss, scratch) / cols + eps);
#pragma unroll
        for (int k = 0; k < RMS_CACHE; ++k) {
            const int j = threadIdx.x + k * (int)blockDim.x;
            Pack8 o;
            if (j < packs) {
                Pack8 h = unpack8<R>(cache[k]), w = unpack8<T>(wcache[k]);
#pragma unroll
                for (int e = 0; e < 8; ++e) o.v[e] = h.v[e] * scale * w.v[e];
                if (kiln_skip(8 * j + 7, cols)) o.v[7] = to_float(((const T*)y)[base + 8LL * j + 7]);
                store8<T>(y, base + 8LL * j, o);
            }
            if (FP8) {
                if (j < packs) o = unpack8<T>(pack8<T>(o));   // the values as stored
                quantize_pack8(o, j < packs, j, xq, xs, row, cols);
            }
        }
        for (int j = threadIdx.x + RMS_CACHE * (int)blockDim.x; j < packs; j += (int)blockDim.x) {
            // Rows this long re-read their tail: from the residual just written, or from x.
            Pack8 h = load8<R>(RESIDUAL ? residual : x, base + 8LL * j), w = load8<T>(weight, 8LL * j), o;
#pragma unroll
            for (int e = 0; e < 8; ++e) o.v[e] = h.v[e] * scale * w.v[e];
            if (kiln_skip(8 * j + 7, cols)) o.v[7] = to_float(((const T*)y)[base + 8LL * j + 7]);
            store8<T>(y, base + 8LL * j, o);
        }
    } else {
        // Odd row lengths: scalar, two passes over global memory (correctness path, not a hot shape).
        float ss = 0.f;
        for (int c = threadIdx.x; c < cols; c += (int)blockDim.x) {
            float h = RESIDUAL ? load<T>(x, base + c) : load<R>(x, base + c);
            if (RESIDUAL) {
                h = to_float(from_float<R>(h + load<R>(residual, base + c)));
                store<R>(residual, base + c, h);
            }
            ss += h * h;
        }
        const float scale = rsqrtf(block_sum(ss, scratch) / cols + eps);
        for (int c = threadIdx.x; c < cols; c += (int)blockDim.x) {
            if (kiln_skip(c, cols)) continue;
            const float h = load<R>(RESIDUAL ? residual : x, base + c);
            store<T>(y, base + c, h * scale * load<T>(weight, c));
        }
    }
}

// Two rows per block (plain RMSNorm, rows that fit the register cache): each thread issues the loads of
// both rows before either reduction — twice the bytes in flight per thread, half the block launches
// and reductions per byte (the fused residual variant gets the same effect from its second input).
// Per-row arithmetic and summation order are those of rmsnorm_row, so results are bitwise identical.
template <typename T, typename R>
__device__ __forceinline__ void rmsnorm_rows2(u64 x, u64 weight, u64 y, int row, int rows, int cols, float eps) {
    const int packs = cols / 8;
    const bool fits = (cols % 8) == 0 && packs <= RMS_CACHE * (int)blockDim.x && aligned16(x) && aligned16(y) && aligned16(weight);
    if (!fits) {   // block-uniform
        rmsnorm_row<T, R, false>(x, 0, weight, y, row, cols, eps);
        if (row + 1 < rows) rmsnorm_row<T, R, false>(x, 0, weight, y, row + 1, cols, eps);
        return;
    }
    __shared__ float2 scratch2[32];
    const bool two = row + 1 < rows;
    const long long b0 = (long long)row * cols, b1 = b0 + cols;
    Raw8<R> c0[RMS_CACHE], c1[RMS_CACHE];
    Raw8<T> wc[RMS_CACHE];
#pragma unroll
    for (int k = 0; k < RMS_CACHE; ++k) {
        const int j = threadIdx.x + k * (int)blockDim.x;
        if (j < packs) {
            c0[k] = load_raw8<R>(x, b0 + 8LL * j);
            if (two) c1[k] = load_raw8<R>(x, b1 + 8LL * j);
        }
    }
#pragma unroll
    for (int k = 0; k < RMS_CACHE; ++k) {
        const int j = threadIdx.x + k * (int)blockDim.x;
        if (j < packs) wc[k] = load_raw8<T>(weight, 8LL * j);
    }
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int k = 0; k < RMS_CACHE; ++k) {
        const int j = threadIdx.x + k * (int)blockDim.x;
        if (j < packs) {
            const Pack8 h0 = unpack8<R>(c0[k]);
#pragma unroll
            for (int e = 0; e < 8; ++e) s0 += h0.v[e] * h0.v[e];
            if (two) {
                const Pack8 h1 = unpack8<R>(c1[k]);
#pragma unroll
                for (int e = 0; e < 8; ++e) s1 += h1.v[e] * h1.v[e];
            }
        }
    }
    // Two block sums at once (same order as block_sum: warp_sum, then warp 0..n-1 via warp_sum).
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = ((int)blockDim.x + 31) >> 5;
    s0 = warp_sum(s0); s1 = warp_sum(s1);
    if (lane == 0) scratch2[warp] = make_float2(s0, s1);
    __syncthreads();
    const float2 r = lane < warps ? scratch2[lane] : make_float2(0.f, 0.f);
    const float scale0 = rsqrtf(warp_sum(r.x) / cols + eps), scale1 = rsqrtf(warp_sum(r.y) / cols + eps);
#pragma unroll
    for (int k = 0; k < RMS_CACHE; ++k) {
        const int j = threadIdx.x + k * (int)blockDim.x;
        if (j < packs) {
            const Pack8 w = unpack8<T>(wc[k]);
            Pack8 h = unpack8<R>(c0[k]), o;
#pragma unroll
            for (int e = 0; e < 8; ++e) o.v[e] = h.v[e] * scale0 * w.v[e];
            if (kiln_skip(8 * j + 7, cols)) o.v[7] = to_float(((const T*)y)[b0 + 8LL * j + 7]);
            store8<T>(y, b0 + 8LL * j, o);
            if (two) {
                h = unpack8<R>(c1[k]);
#pragma unroll
                for (int e = 0; e < 8; ++e) o.v[e] = h.v[e] * scale1 * w.v[e];
                if (kiln_skip(8 * j + 7, cols)) o.v[7] = to_float(((const T*)y)[b1 + 8LL * j + 7]);
                store8<T>(y, b1 + 8LL * j, o);
            }
        }
    }
}

// Both kernels: pdl_wait then pdl_trigger (kiln.cuh) first, so they can be launched with PDL. Waiting
// before triggering keeps at most two kernels in flight; triggering first measured 2% slower per layer
// (bench/boundary, decode-like chain).
template <typename T, typename R = T> __global__ void __launch_bounds__(RMS_THREADS) rmsnorm(RMSNormParams p) {
    pdl_wait();
    pdl_trigger();
    if (p.rows_per_block == 2) rmsnorm_rows2<T, R>(p.x, p.weight, p.y, 2 * blockIdx.x, p.rows, p.cols, p.eps);
    else rmsnorm_row<T, R, false>(p.x, 0, p.weight, p.y, blockIdx.x, p.cols, p.eps);
}

template <typename T, typename R = T> __global__ void __launch_bounds__(RMS_THREADS) residual_rmsnorm(ResidualRMSNormParams p) {
    pdl_wait();
    pdl_trigger();
    rmsnorm_row<T, R, true>(p.x, p.residual, p.weight, p.y, blockIdx.x, p.cols, p.eps);
}

template <typename T, typename R = T> __global__ void __launch_bounds__(RMS_THREADS) rmsnorm_fp8(RMSNormFP8Params p) {
    pdl_wait();
    pdl_trigger();
    rmsnorm_row<T, R, false, true>(p.norm.x, 0, p.norm.weight, p.norm.y, blockIdx.x, p.norm.cols, p.norm.eps, p.xq, p.xs);
}

template <typename T, typename R = T> __global__ void __launch_bounds__(RMS_THREADS) residual_rmsnorm_fp8(ResidualRMSNormFP8Params p) {
    pdl_wait();
    pdl_trigger();
    rmsnorm_row<T, R, true, true>(p.norm.x, p.norm.residual, p.norm.weight, p.norm.y, blockIdx.x, p.norm.cols, p.norm.eps, p.xq, p.xs);
}

}  // namespace kiln
