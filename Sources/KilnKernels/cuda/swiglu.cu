// swiglu.cu — SwiGLU on the fused gate_up GEMM output: out[m, f] = silu(gu[m, f]) · gu[m, F + f].
// Why not activation.cu's silu_mul: that kernel wants gate and up as two contiguous arrays, and a
// fused [M, 2F] GEMM output interleaves them per row. f32 math, one rounding to bf16.
// interleaved = 1: the gate_up weight rows were interleaved per 16-row tile (interleave_gate_up below, for
// gemm_splitk's SwiGLU epilogue), so gate f sits at column 16·(f/8) + f%8 and up f 8 columns later.
#include "kiln.cuh"

namespace kiln {

struct SwiGLUParams {
    u64 gate_up, out;   // bf16 [rows, 2·F] → bf16 [rows, F]
    int rows, ffn;
    int interleaved;    // 0: [gate | up]; 1: per 8 features, 8 gate then 8 up columns (needs ffn % 8 == 0)
};

__device__ __forceinline__ float swiglu_silu(float g) { return g / (1.0f + expf(-g)); }

__global__ void __launch_bounds__(256) swiglu_rows(SwiGLUParams p) {
    pdl_wait();      // PDL (kiln.cuh)
    pdl_trigger();
    if (p.ffn % 8 == 0) {
        // 16-byte packs: 8 columns per thread (rows start 16-byte aligned since 2F·2 bytes is a multiple of 16).
        const int packs = p.ffn / 8;
        const long long total = (long long)p.rows * packs;
        for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (long long)gridDim.x * blockDim.x) {
            const long long r = t / packs, c = (t % packs) * 8;
            const long long gc = p.interleaved ? 2 * c : c, uc = p.interleaved ? 2 * c + 8 : p.ffn + c;
            Pack8 g = load8<bf16>(p.gate_up, r * 2 * p.ffn + gc), u = load8<bf16>(p.gate_up, r * 2 * p.ffn + uc);
#pragma unroll
            for (int e = 0; e < 8; ++e) g.v[e] = swiglu_silu(g.v[e]) * u.v[e];
            store8<bf16>(p.out, r * p.ffn + c, g);
        }
        return;
    }
    const long long total = (long long)p.rows * p.ffn;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (long long)gridDim.x * blockDim.x) {
        const long long r = t / p.ffn, c = t % p.ffn;
        const float g = load<bf16>(p.gate_up, r * 2 * p.ffn + c), u = load<bf16>(p.gate_up, r * 2 * p.ffn + p.ffn + c);
        store<bf16>(p.out, t, swiglu_silu(g) * u);
    }
}

// FP8 prefill: SwiGLU that writes its output directly in the FP8 GEMM's activation format (gemm_fp8.cu's
// kiln_fp8_quant_act applied to the bf16 SwiGLU output), so the down projection skips the quantizer's pass over it.
// One warp per (row, 128-feature block), 4 features per lane; each value is the plain kernel's bf16 output (f32 math,
// one rounding), then the quantizer's own e4m3_block_codes (kiln.cuh) — bit for bit the plain kernel followed by it. Features past F are not
// written. Needs ffn % 8 == 0 (4-feature loads; the interleaved layout's 8-feature groups).
struct SwiGLUFP8Params {
    u64 gate_up;        // bf16 [rows, 2·F]
    u64 codes;          // [rows, F] e4m3
    u64 scales;         // f32 [rows, ceil(F / 128)]
    int rows, ffn;
    int interleaved;    // as SwiGLUParams
};

__global__ void __launch_bounds__(128) swiglu_rows_fp8(SwiGLUFP8Params p) {
    pdl_wait();
    pdl_trigger();
    const int lane = threadIdx.x & 31, kb = (p.ffn + 127) / 128;
    const long long item = (long long)blockIdx.x * 4 + (threadIdx.x >> 5);   // (row, block)
    if (item >= (long long)p.rows * kb) return;
    const long long r = item / kb;
    const int blk = (int)(item % kb), f = blk * 128 + 4 * lane;
    const bool in = f < p.ffn;   // ffn % 4 == 0: the lane's 4 features are all in or all out
    float v[4] = {0.f, 0.f, 0.f, 0.f};
    if (in) {
        const long long gc = p.interleaved ? 16 * (f / 8) + f % 8 : f, uc = p.interleaved ? gc + 8 : p.ffn + f;
        const long long row = r * 2 * p.ffn;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const float g = load<bf16>(p.gate_up, row + gc + e), u = load<bf16>(p.gate_up, row + uc + e);
            v[e] = to_float(from_float<bf16>(swiglu_silu(g) * u));   // the value the plain kernel stores
        }
    }
    float s;
    const u32 packed = e4m3_block_codes(v, s);
    if (in) *reinterpret_cast<u32*>(p.codes + r * p.ffn + f) = packed;   // f % 4 == 0: aligned
    if (lane == 0) reinterpret_cast<float*>(p.scales)[r * kb + blk] = s;
}

// Weight-load permutation for gemm_splitk's SwiGLU epilogue: dst row 16j + e (e < 8) = src gate row 8j + e,
// dst row 16j + 8 + e = src up row F + 8j + e, for src = [gate (F rows) | up (F rows)] × hidden bf16.
struct InterleaveParams {
    u64 src, dst;
    int ffn, hidden;    // ffn % 8 == 0, hidden % 8 == 0
};

__global__ void __launch_bounds__(256) interleave_gate_up(InterleaveParams p) {
    const int packs = p.hidden / 8;   // 16-byte pieces per row
    const long long total = 2LL * p.ffn * packs;
    const uint4* src = reinterpret_cast<const uint4*>(p.src);
    uint4* dst = reinterpret_cast<uint4*>(p.dst);
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (long long)gridDim.x * blockDim.x) {
        const long long row = t / packs, c = t % packs;
        const long long j = row / 16, e = row % 16;
        const long long srow = e < 8 ? 8 * j + e : p.ffn + 8 * j + (e - 8);
        dst[row * packs + c] = src[srow * packs + c];
    }
}

}  // namespace kiln
