// swiglu.cu — SwiGLU on the fused gate_up GEMM output: out[m, f] = silu(gu[m, f]) · gu[m, F + f].
// Why not activation.cu's silu_mul: that kernel wants gate and up as two contiguous arrays, and a
// fused [M, 2F] GEMM output interleaves them per row. f32 math, one rounding to bf16.
#include "kiln.cuh"

namespace kiln {

struct SwiGLUParams {
    u64 gate_up, out;   // bf16 [rows, 2·F] → bf16 [rows, F]
    int rows, ffn;
};

__device__ __forceinline__ float swiglu_silu(float g) { return g / (1.0f + expf(-g)); }

__global__ void __launch_bounds__(256) swiglu_rows(SwiGLUParams p) {
    pdl_trigger();   // PDL (kiln.cuh)
    pdl_wait();
    if (p.ffn % 8 == 0) {
        // 16-byte packs: 8 columns per thread (rows start 16-byte aligned since 2F·2 bytes is a multiple of 16).
        const int packs = p.ffn / 8;
        const long long total = (long long)p.rows * packs;
        for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (long long)gridDim.x * blockDim.x) {
            const long long r = t / packs, c = (t % packs) * 8;
            Pack8 g = load8<bf16>(p.gate_up, r * 2 * p.ffn + c), u = load8<bf16>(p.gate_up, r * 2 * p.ffn + p.ffn + c);
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

}  // namespace kiln
