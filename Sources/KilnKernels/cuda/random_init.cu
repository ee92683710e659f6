// random_init.cu — random bf16 tensors (and e4m3 codes) generated on the GPU (`--dummy-weights`): a Llama-3-8B's
// 16 GB is made in milliseconds instead of being read from disk or copied from the host.
// Value i = center ± (min_mag + (half_width − min_mag)·u), u uniform in [0, 1) and the sign from a
// 64-bit hash (SplitMix64 finaliser) of (seed, i): reproducible, and never 0 when min_mag > 0
// (all-zero weights would hide bugs such as a GEMM that writes nothing).
#include "kiln.cuh"

namespace kiln {

struct RandomInitParams {
    u64 y;            // bf16 [n]
    long long n;
    u64 seed;
    float center, half_width, min_mag;
};

__device__ __forceinline__ u64 splitmix64(u64 z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__global__ void __launch_bounds__(256) random_bf16(RandomInitParams p) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (long long)gridDim.x * blockDim.x) {
        const u64 h = splitmix64(p.seed * 0x2545F4914F6CDD1Dull + (u64)i);
        const float u = (float)(h >> 40) * (1.0f / 16777216.0f);
        const float mag = p.min_mag + (p.half_width - p.min_mag) * u;
        ((bf16*)p.y)[i] = from_float<bf16>(p.center + ((h & 1) ? mag : -mag));
    }
}

// Random finite e4m3 codes (FP8 dummy weights): a normal code 0x08…0x7D (2⁻⁶ … 416) with a hashed sign; never zero,
// never NaN. `center`, `half_width` and `min_mag` are unused (the scales set the magnitudes).
__global__ void __launch_bounds__(256) random_e4m3(RandomInitParams p) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (long long)gridDim.x * blockDim.x) {
        const u64 h = splitmix64(p.seed * 0x2545F4914F6CDD1Dull + (u64)i);
        ((unsigned char*)p.y)[i] = (unsigned char)(0x08 + (h >> 40) % 0x76) | ((h & 1) ? 0x80 : 0);
    }
}

}  // namespace kiln
