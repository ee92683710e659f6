// bench/common/gemm_test_util.cuh — for the TMA decode-GEMM harness (bench/gemm_stream):
// deterministic random bf16 fill, an fp32 reference GEMM, and a 2-D bf16 tensor map for a [rows, K] matrix.
// Include after gemm_splitk.cu (bf16 conversions) and a header that defines KilnTensorMap; link with -lcuda.
#pragma once
#include <cuda.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>

// Uniform in [-1/32, 1/32), never all zero: hash of the index and a seed.
__global__ void fill_k(unsigned short* p, long long n, unsigned seed) {
    for (long long i = blockIdx.x * 256LL + threadIdx.x; i < n; i += (long long)gridDim.x * 256) {
        unsigned h = (unsigned)i * 2654435761u ^ seed;
        h ^= h >> 15; h *= 2246822519u; h ^= h >> 13;
        p[i] = kiln_gemm::f32_to_bf16(((h & 0xffffff) / 16777216.f - 0.5f) * 0.0625f);
    }
}
// y[m, n] = Σ_k x[m, k] · w[n, k] in fp32, one warp per n; grid = N / 8 blocks of 256.
__global__ void ref_k(const unsigned short* x, const unsigned short* w, float* y, int M, int N, int K) {
    const int n = blockIdx.x * 8 + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    for (int m = 0; m < M; ++m) {
        float s = 0.f;
        for (int k = lane; k < K; k += 32) s += kiln_gemm::bf16_to_f32(x[(long long)m * K + k]) * kiln_gemm::bf16_to_f32(w[(long long)n * K + k]);
        for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0) y[(long long)m * N + n] = s;
    }
}
// [rows, K] bf16, row stride K; box {box_k, box_rows}; 128B swizzle (box_k = 64) or none.
static KilnTensorMap make_tmap_2d(const void* base, int rows, int K, int box_k, int box_rows, bool swizzle) {
    CUtensorMap m; memset(&m, 0, sizeof(m));
    cuuint64_t dims[2] = {(cuuint64_t)K, (cuuint64_t)rows};
    cuuint64_t strides[1] = {(cuuint64_t)K * 2};
    cuuint32_t box[2] = {(cuuint32_t)box_k, (cuuint32_t)box_rows};
    cuuint32_t estr[2] = {1, 1};
    CUresult r = cuTensorMapEncodeTiled(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(base), dims, strides, box, estr,
                                        CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_NONE,
                                        CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) { printf("cuTensorMapEncodeTiled failed (%d)\n", (int)r); exit(1); }
    KilnTensorMap k; memcpy(&k, &m, sizeof(k)); return k;
}
