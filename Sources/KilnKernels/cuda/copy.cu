// Device-to-device copy used by `kiln doctor` to measure the memory bandwidth that every
// memory-bound kernel is compared with: float4 grid-stride, the simplest full-rate access pattern.
#include "kiln.cuh"

namespace kiln {

struct CopyParams {
    u64 src, dst;   // float4 arrays
    long long n4;   // number of float4
};

__global__ void __launch_bounds__(256) copy_f4(CopyParams p) {
    const float4* s = (const float4*)p.src;
    float4* d = (float4*)p.dst;
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    // Two independent loads in flight per iteration before the stores.
    for (; i + stride < p.n4; i += 2 * stride) {
        float4 a = s[i], b = s[i + stride];
        d[i] = a;
        d[i + stride] = b;
    }
    if (i < p.n4) d[i] = s[i];
}

}  // namespace kiln
