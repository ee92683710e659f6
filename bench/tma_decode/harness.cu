// bench/tma_decode/harness.cu — prototype for the M = 16 decode GEMM that gemm_splitk cannot bring to 85% of
// copy on o (perf-notes-gemm.md v6): weights stream through a TMA + mbarrier ring in shared memory (no
// registers hold bytes in flight, no block barrier), wgmma with the operands swapped — A = 64 weight rows,
// B = the 16 tokens (n16) — and a fixed split-K over blockIdx for the grid. The SPLIT CTAs of a row tile form a
// cluster and reduce their fp32 partials through distributed shared memory, in split order, into bf16 Y.
// It measures whether this data movement reaches the bandwidth before any of it is built into the engine;
// results and the variants tried (global-scratch reduction, early weight loads) are in docs/perf-notes-gemm.md v6.
// Built with nvcc on the GPU machine by run.sh (-lcuda for cuTensorMapEncodeTiled).
#include <cuda.h>
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <algorithm>
#include <cmath>
#include "../../Sources/KilnKernels/cuda/gemm_splitk.cu"
#include "../../Sources/KilnKernels/cuda/gemm_hopper.cu"
#include "../common/graph_timing.cuh"
#include "../common/gemm_test_util.cuh"


using namespace kiln_gemm_hopper;

// D[64 x 16] (+)= A[64 x 16] * B[16 x 16]^T, both K-major in shared memory (128B swizzle).
__device__ __forceinline__ void wgmma_n16(float* d, u64 da, u64 db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "setp.ne.b32 p, %10, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "l"(da), "l"(db), "r"(accumulate));
}

constexpr int W_BYTES = 64 * 64 * 2, X_BYTES = 16 * 64 * 2, STAGE = W_BYTES + X_BYTES;   // 10 KB, 1024-aligned

// grid = (N / 64) * SPLIT; block = 256 (warp group 0: producer thread 0; warp group 1: consumer).
template <int STAGES, int SPLIT>
__global__ void __launch_bounds__(256) tma_decode_k(const __grid_constant__ KilnTensorMap tmw, const __grid_constant__ KilnTensorMap tmx,
                                                    float* __restrict__ ws, unsigned short* __restrict__ y, unsigned* __restrict__ cnt,
                                                    int M, int N, int K) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    __shared__ __align__(8) unsigned long long full_bar[STAGES], empty_bar[STAGES];
    const u32 base = (smem_u32(smem_raw) + 1023) & ~1023u;
    const int tiles_n = N / 64;
    // The SPLIT CTAs of a row tile are one cluster (consecutive blockIdx.x); they reduce through distributed
    // shared memory instead of global scratch (the last-CTA scheme measured o 13.5 µs against 9.9 without it).
    const int row0 = (blockIdx.x / SPLIT) * 64, split = blockIdx.x % SPLIT;
    const int kper = K / SPLIT, kb0 = split * kper / 64, nkb = kper / 64;
    const int wg = threadIdx.x / 128, t = threadIdx.x % 128;
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) { mbar_init(smem_u32(&full_bar[s]), 1); mbar_init(smem_u32(&empty_bar[s]), 4); }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    }
    __syncthreads();
    // PDL: every thread waits, then triggers. (Tried: triggering first — three kernels overlap, o 12.5 µs; the
    // producer issuing the first STAGES weight boxes before its wait — X of stage 0 then queues behind ~80 KB of
    // weights, o 13.7 µs with or without PDL. Both against 9.9 µs for this order.)
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    if (wg == 0) {
        if (t == 0) {
            tma_prefetch_desc(&tmw); tma_prefetch_desc(&tmx);
            for (int kb = 0; kb < nkb; ++kb) {
                const int s = kb % STAGES;
                mbar_wait(smem_u32(&empty_bar[s]), ((kb / STAGES) & 1) ^ 1);
                const u32 fb = smem_u32(&full_bar[s]);
                mbar_arrive_expect_tx(fb, STAGE);
                tma_load_2d(base + s * STAGE, &tmw, fb, (kb0 + kb) * 64, row0);
                tma_load_2d(base + s * STAGE + W_BYTES, &tmx, fb, (kb0 + kb) * 64, 0);
            }
        }
    }
    float d[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) d[i] = 0.f;
    for (int kb = 0; wg == 1 && kb < nkb; ++kb) {
        const int s = kb % STAGES;
        mbar_wait(smem_u32(&full_bar[s]), (kb / STAGES) & 1);
        const u32 sw = base + s * STAGE, sx = sw + W_BYTES;
        wgmma_fence();
#pragma unroll
        for (int k = 0; k < 4; ++k) wgmma_n16(d, make_desc(sw + k * 32), make_desc(sx + k * 32), 1);
        wgmma_commit();
        wgmma_wait<0>();
        if (t % 32 == 0) mbar_arrive(smem_u32(&empty_bar[s]));
    }
    // Accumulator (m64n16, f32): d[4j + i] is row 16·warp + lane/4 + 8·(i >= 2), column (token) 8j + 2·(lane%4) + (i & 1).
    const int warp = t / 32, lane = t % 32;
    auto rowcol = [&](int j, int i, int& r, int& m) { r = row0 + 16 * warp + lane / 4 + 8 * (i >> 1); m = 8 * j + 2 * (lane % 4) + (i & 1); };
    if (SPLIT == 1) {
        if (wg == 1)
#pragma unroll
            for (int j = 0; j < 2; ++j)
#pragma unroll
                for (int i = 0; i < 4; ++i) { int r, m; rowcol(j, i, r, m); if (m < M) y[(long long)m * N + r] = kiln_gemm::f32_to_bf16(d[4 * j + i]); }
        return;
    }
    __shared__ float part[8][128];   // this CTA's partial, [register][consumer thread]
    if (wg == 1)
#pragma unroll
        for (int i = 0; i < 8; ++i) part[i][t] = d[i];
    cluster_sync();   // every partial of the cluster written
    if (split == 0 && wg == 1) {
        float v[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = d[i];
        for (int p = 1; p < SPLIT; ++p) {   // in split order: deterministic
            u32 remote;
            asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(smem_u32(&part[0][t])), "r"(p));
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                float f;
                asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(f) : "r"(remote + i * 128 * 4));
                v[i] += f;
            }
        }
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int i = 0; i < 4; ++i) { int r, m; rowcol(j, i, r, m); if (m < M) y[(long long)m * N + r] = kiln_gemm::f32_to_bf16(v[4 * j + i]); }
    }
    cluster_sync();   // the other CTAs' shared memory must outlive rank 0's reads
}



static unsigned g_cluster = 1;
template <class Kern, class... A> static void launch(bool pdl, Kern k, int grid, int smem, A... args) {
    cudaLaunchConfig_t cfg = {}; cfg.gridDim = dim3(grid); cfg.blockDim = dim3(256); cfg.stream = g_stream; cfg.dynamicSmemBytes = smem;
    cudaLaunchAttribute attr[2]; attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = g_cluster; attr[0].val.clusterDim.y = 1; attr[0].val.clusterDim.z = 1;
    attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[1].val.programmaticStreamSerializationAllowed = 1; cfg.attrs = attr; cfg.numAttrs = pdl ? 2 : 1;
    CK(cudaLaunchKernelEx(&cfg, k, args...));
}

template <int STAGES, int SPLIT>
static void run(const char* shape, int M, int N, int K, const std::vector<unsigned short*>& w, const unsigned short* x, float* ws, float* ref,
                unsigned short* y, unsigned* cnt) {
    auto kern = tma_decode_k<STAGES, SPLIT>;
    const int smem = STAGES * STAGE + 1024, grid = N / 64 * SPLIT;
    g_cluster = SPLIT;
    CK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    std::vector<KilnTensorMap> tw;
    for (auto p : w) tw.push_back(make_tmap_2d(p, N, K, 64, 64, true));
    const KilnTensorMap tx = make_tmap_2d(x, M, K, 64, 16, true);
    CK(cudaMemset(y, 0xff, (size_t)M * N * 2));   // NaN: an output the kernel skips fails the check
    launch(false, kern, grid, smem, tw[0], tx, ws, y, cnt, M, N, K);
    CK(cudaStreamSynchronize(g_stream));
    std::vector<unsigned short> got((size_t)M * N);
    std::vector<float> want((size_t)M * N);
    CK(cudaMemcpy(got.data(), y, got.size() * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(want.data(), ref, want.size() * 4, cudaMemcpyDeviceToHost));
    double worst = 0; bool nan = false;
    for (size_t i = 0; i < want.size(); ++i) {
        unsigned u = (unsigned)got[i] << 16; float s; memcpy(&s, &u, 4);
        if (s != s) nan = true;
        worst = std::max(worst, fabs(s - want[i]) / (fabs(want[i]) + 1e-2));
    }
    const double bytes = (double)N * K * 2;
    for (int pdl = 0; pdl < 2; ++pdl) {
        double us = graph_us([&] { for (int i = 0; i < 20; ++i) launch(pdl, kern, grid, smem, tw[i % tw.size()], tx, ws, y, cnt, M, N, K); }, 20);
        printf("RESULT tma shape=%s M=%d stages=%d split=%d grid=%d pdl=%d us=%.2f GBps=%.0f rel_err=%.2g nan=%d\n", shape, M, STAGES, SPLIT,
               grid, pdl, us, bytes / us / 1e3, worst, (int)nan);
    }
}

int main() {
    setvbuf(stdout, nullptr, _IONBF, 0);
    CK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
    struct Shape { const char* name; int N, K; } shapes[] = {{"o", 4096, 4096}, {"qkv", 6144, 4096}, {"down", 4096, 14336}};
    unsigned short *x, *y; float *ws, *ref; unsigned* cnt;
    CK(cudaMalloc(&y, 16LL * 6144 * 2)); CK(cudaMalloc(&cnt, 4096 * 4)); CK(cudaMemset(cnt, 0, 4096 * 4));
    CK(cudaMalloc(&x, 16 * 14336 * 2)); CK(cudaMalloc(&ws, 8LL * 16 * 6144 * 4)); CK(cudaMalloc(&ref, 16LL * 6144 * 4));
    fill_k<<<64, 256, 0, g_stream>>>(x, 16LL * 14336, 5);
    for (auto& sh : shapes) {
        std::vector<unsigned short*> w(4);
        for (int r = 0; r < 4; ++r) { CK(cudaMalloc(&w[r], (size_t)sh.N * sh.K * 2)); fill_k<<<1024, 256, 0, g_stream>>>(w[r], (long long)sh.N * sh.K, 11 + r); }
        for (int M : {16, 8}) {
            ref_k<<<sh.N / 8, 256, 0, g_stream>>>(x, w[0], ref, M, sh.N, sh.K);
            CK(cudaStreamSynchronize(g_stream));
            run<8, 1>(sh.name, M, sh.N, sh.K, w, x, ws, ref, y, cnt);
            run<8, 2>(sh.name, M, sh.N, sh.K, w, x, ws, ref, y, cnt);
            run<10, 4>(sh.name, M, sh.N, sh.K, w, x, ws, ref, y, cnt);
            run<8, 4>(sh.name, M, sh.N, sh.K, w, x, ws, ref, y, cnt);
            run<6, 4>(sh.name, M, sh.N, sh.K, w, x, ws, ref, y, cnt);
            run<12, 2>(sh.name, M, sh.N, sh.K, w, x, ws, ref, y, cnt);
        }
        for (auto p : w) CK(cudaFree(p));
    }
    printf("RESULT done\n");
    return 0;
}
