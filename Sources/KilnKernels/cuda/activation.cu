// SwiGLU's elementwise step: out = silu(gate) * up, silu(g) = g / (1 + exp(-g)), in f32.
// Memory-bound: 16-byte packs, grid-stride with two packs in flight per thread, scalar tail.
// gate/up/out are separate arrays of n elements (views into a fused gate_up buffer work when the
// launcher passes a row-contiguous layout; the engine owner decides the layout).
#include "kiln.cuh"

namespace kiln {

struct SiLUMulParams {
    u64 gate, up, out;
    long long n;
};

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

template <typename T> __global__ void __launch_bounds__(256) silu_mul(SiLUMulParams p) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long done = 0;
    if (aligned16(p.gate) && aligned16(p.up) && aligned16(p.out)) {
        const long long packs = p.n / 8;
        for (; i + stride < packs; i += 2 * stride) {
            Pack8 g0 = load8<T>(p.gate, 8 * i), u0 = load8<T>(p.up, 8 * i);
            Pack8 g1 = load8<T>(p.gate, 8 * (i + stride)), u1 = load8<T>(p.up, 8 * (i + stride));
#pragma unroll
            for (int e = 0; e < 8; ++e) { g0.v[e] = silu(g0.v[e]) * u0.v[e]; g1.v[e] = silu(g1.v[e]) * u1.v[e]; }
            store8<T>(p.out, 8 * i, g0);
            store8<T>(p.out, 8 * (i + stride), g1);
        }
        if (i < packs) {
            Pack8 g = load8<T>(p.gate, 8 * i), u = load8<T>(p.up, 8 * i);
#pragma unroll
            for (int e = 0; e < 8; ++e) g.v[e] = silu(g.v[e]) * u.v[e];
            store8<T>(p.out, 8 * i, g);
        }
        done = packs * 8;
        i = done + (long long)blockIdx.x * blockDim.x + threadIdx.x;
    }
    for (; i < p.n; i += stride) store<T>(p.out, i, silu(load<T>(p.gate, i)) * load<T>(p.up, i));
}

}  // namespace kiln
