// bench/gemm_stream/harness.cu — correctness and graph-chain timing of the engine's gemm_stream.cu (TMA-ring decode
// GEMM, rows split over blocks) against gemm_whole, on the four Llama-3-8B shapes at M = 16, 8, 1, in one process.
// Also the engine's gemm_swapab.cu (wgmma, weights as A, a lead and a helper CTA per tile; perf-notes-gemm.md v10).
// The prototypes that lost (gemm_resident, gemm_xsmem, gemm_wgstream, gemm_clusterk; v8, v9) left the tree after
// session 8: git history has them (perf-notes-gemm.md, "Prototypes removed").
// Every output is checked against an fp32 reference (relative error, NaN; SwiGLU too at M = 16) before
// it is timed. MOVE=1: data movement alone (TMA ring, no mma) for several box shapes. PROFILE=<config> M=<m>:
// three launches on o, for ncu. ONLY=<shape> (o, qkv, down or gate_up) times one shape,
// M16=1 only M = 16, COPIES=<n> rotates n weight copies (default 4).
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
#include "../../Sources/KilnKernels/cuda/gemm_stream.cu"
#include "../../Sources/KilnKernels/cuda/gemm_swapab.cu"
#include "../common/graph_timing.cuh"
#include "../common/gemm_test_util.cuh"

typedef void (*GemmFnW)(const kiln::bf16*, const kiln::bf16*, void*, float*, unsigned*, int, int, int, kiln::Epilogue);
typedef void (*StreamFn)(const KilnTensorMap, const kiln::bf16*, void*, int, int, int, kiln::Epilogue);
struct Cfg { const char* name; StreamFn fn; int nb, kb, ws, cw; };
// The engine's instances (gemm_stream.cu's KILN_GEMM_STREAM_INSTANCES).
#define ROW(NB, KB, WS, CW) {#NB "_" #KB "_" #WS "_" #CW, KILN_GEMM_STREAM_NAME(NB, KB, WS, CW), NB, KB, WS, CW},
static Cfg g_cfg[] = {KILN_GEMM_STREAM_INSTANCES(ROW)};

// The engine's gemm_swapab instances (wgmma with W as A; each 64-row tile split unevenly over a lead and a helper CTA).
typedef void (*SwapFn)(const KilnTensorMap, const KilnTensorMap, void*, float*, unsigned*, int, int, int, int, kiln::Epilogue);
struct KCfg { const char* name; SwapFn fn; int mt, kb, s, lead; };
#define KROW(MT, KB, S, LEAD) {"swapab_mt" #MT "_kb" #KB "_s" #S "_l" #LEAD, KILN_GEMM_SWAPAB_NAME(MT, KB, S, LEAD), MT, KB, S, LEAD},
static KCfg g_kcfg[] = {KILN_GEMM_SWAPAB_INSTANCES(KROW)};

// [rows, K] bf16 viewed as {64, rows, K/64} (strides K·2 and 128 bytes): one box {64, box_rows, kb} per ring stage.
static KilnTensorMap make_tmap_3d(const void* base, int rows, int K, int box_rows, int kb) {
    CUtensorMap m; memset(&m, 0, sizeof(m));
    cuuint64_t dims[3] = {64, (cuuint64_t)rows, (cuuint64_t)K / 64};
    cuuint64_t strides[2] = {(cuuint64_t)K * 2, 128};
    cuuint32_t box[3] = {64, (cuuint32_t)box_rows, (cuuint32_t)kb};
    cuuint32_t estr[3] = {1, 1, 1};
    CUresult r = cuTensorMapEncodeTiled(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<void*>(base), dims, strides, box, estr,
                                        CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                        CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) { printf("cuTensorMapEncodeTiled failed (%d)\n", (int)r); exit(1); }
    KilnTensorMap k; memcpy(&k, &m, sizeof(k)); return k;
}
// Data movement alone (no mma): one producer lane streams the CTA's weight boxes through a STAGES-deep ring, one
// consumer warp waits on each stage and frees it. Box = {BK, BR, BC} elements (k inner, rows, 64-k chunks; BC = 1
// is a 2-D box), 128B swizzle when BK = 64, none otherwise. grid = ceil(N / BR) * SPLIT, split over K.
template <int BK, int BR, int BC, int STAGES>
__global__ void __launch_bounds__(64) move_k(const __grid_constant__ KilnTensorMap tw, int N, int K, int split) {
    using namespace kiln_hopper;
    constexpr int BYTES = BK * BR * BC * 2;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    __shared__ __align__(8) u64 full[STAGES], empty[STAGES];
    const u32 base = (smem_u32(smem_raw) + 1023) & ~1023u;
    const int row0 = (blockIdx.x / split) * BR, sp = blockIdx.x % split;
    const int kper = K / split, nkb = kper / (BK * BC), kb0 = sp * nkb;
    if (threadIdx.x == 0) {
        for (int i = 0; i < STAGES; ++i) { mbar_init(smem_u32(&full[i]), 1); mbar_init(smem_u32(&empty[i]), 1); }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    }
    __syncthreads();
    kiln_attn::pdl_wait_then_trigger();
    if (threadIdx.x == 32) {
        for (int kb = 0; kb < nkb; ++kb) {
            const int st = kb % STAGES;
            mbar_wait(smem_u32(&empty[st]), ((kb / STAGES) & 1) ^ 1);
            mbar_arrive_expect_tx(smem_u32(&full[st]), BYTES);
            if (BC == 1) tma_load_2d(base + st * BYTES, &tw, smem_u32(&full[st]), (kb0 + kb) * BK, row0);
            else tma_load_3d(base + st * BYTES, &tw, smem_u32(&full[st]), 0, row0, (kb0 + kb) * BC);
        }
    } else if (threadIdx.x == 0) {
        for (int kb = 0; kb < nkb; ++kb) {
            const int st = kb % STAGES;
            mbar_wait(smem_u32(&full[st]), (kb / STAGES) & 1);
            mbar_arrive(smem_u32(&empty[st]));
        }
    }
}
template <int BK, int BR, int BC, int STAGES>
static void movement(const char* shape, int N, int K, const std::vector<unsigned short*>& w, int split) {
    auto kern = move_k<BK, BR, BC, STAGES>;
    const int smem = STAGES * BK * BR * BC * 2 + 1024, grid = (N + BR - 1) / BR * split;
    CK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    std::vector<KilnTensorMap> tw;
    for (auto p : w) tw.push_back(BC == 1 ? make_tmap_2d(p, N, K, BK, BR, BK == 64) : make_tmap_3d(p, N, K, BR, BC));
    double us = graph_us([&] { for (int i = 0; i < 20; ++i) launch(true, kern, grid, 64, smem, tw[i % tw.size()], N, K, split); }, 20);
    printf("RESULT move shape=%s box=%dx%dx%d stages=%d split=%d grid=%d smem=%d us=%.2f GBps=%.0f\n", shape, BK, BR, BC, STAGES, split, grid,
           smem, us, (double)N * K * 2 / us / 1e3);
}

__global__ void copy_k(const uint4* __restrict__ a, uint4* __restrict__ b, long long n) {
    for (long long i = blockIdx.x * 256LL + threadIdx.x; i < n; i += (long long)gridDim.x * 256) b[i] = a[i];
}
template <class Kern, class... A> static void launch(bool pdl, Kern k, int grid, int block, int smem, A... args) {
    cudaLaunchConfig_t cfg = {}; cfg.gridDim = dim3(grid); cfg.blockDim = dim3(block); cfg.stream = g_stream; cfg.dynamicSmemBytes = smem;
    cudaLaunchAttribute attr[1]; attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1; cfg.attrs = attr; cfg.numAttrs = pdl ? 1 : 0;
    CK(cudaLaunchKernelEx(&cfg, k, args...));
}
static float host_bf16(unsigned short h) { unsigned u = (unsigned)h << 16; float f; memcpy(&f, &u, 4); return f; }
static float host_round_bf16(float f) {   // round to nearest even (finite inputs)
    unsigned u; memcpy(&u, &f, 4); u += 0x7fffu + ((u >> 16) & 1u); return host_bf16((unsigned short)(u >> 16));
}
// Worst relative error of a bf16 [M, n] output against the fp32 reference (or a host-computed SwiGLU of it).
// cols: outputs per token; a token whose worst error exceeds 0.02 is listed (once per process) to locate a bug.
static size_t g_bad = 0;   // outputs off by > 2% since the last reset (check() adds)
static double check(const unsigned short* dev, const std::vector<float>& want, size_t n, size_t cols, bool& nan) {
    static int reported = 0;
    std::vector<unsigned short> got(n);
    CK(cudaMemcpy(got.data(), dev, n * 2, cudaMemcpyDeviceToHost));
    double worst = 0;
    std::vector<double> tok(n / cols, 0.0);
    for (size_t i = 0; i < n; ++i) {
        const float s = host_bf16(got[i]);
        if (s != s) nan = true;
        const double e = (double)fabsf(s - want[i]) / (fabsf(want[i]) + 1e-2);
        worst = std::max(worst, e);
        tok[i / cols] = std::max(tok[i / cols], e);
    }
    for (size_t i = 0; i < n; ++i) g_bad += (double)fabsf(host_bf16(got[i]) - want[i]) / (fabsf(want[i]) + 1e-2) > 0.02;
    if (worst > 0.02 && reported++ < 2) {
        printf("DEBUG per-token worst error:");
        for (double e : tok) printf(" %.2g", e);
        printf("\nDEBUG first outputs of the worst token vs want:");
        size_t wt = std::max_element(tok.begin(), tok.end()) - tok.begin();
        for (size_t i = 0; i < 8; ++i) printf(" %.4f/%.4f", host_bf16(got[wt * cols + i]), want[wt * cols + i]);
        printf("\nDEBUG first wrong (token, column):");
        int shown = 0;
        for (size_t i = 0; i < n && shown < 12; ++i) {
            const double e = (double)fabsf(host_bf16(got[i]) - want[i]) / (fabsf(want[i]) + 1e-2);
            if (e > 0.02) { printf(" (%zu,%zu)", i / cols, i % cols); ++shown; }
        }
        size_t bad = 0;
        for (size_t i = 0; i < n; ++i) bad += (double)fabsf(host_bf16(got[i]) - want[i]) / (fabsf(want[i]) + 1e-2) > 0.02;
        printf(" — %zu of %zu outputs off by > 2%%\n", bad, n);
    }
    return worst;
}

static const size_t kWsBytes = 528ull * 64 * 16 * 4;   // split-K partials: up to 528 CTAs of 64 × 16 floats

int main() {
    setvbuf(stdout, nullptr, _IONBF, 0);
    CK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
    {   // measured copy bandwidth (1 GiB read + 1 GiB written), the % of copy denominator
        const long long n = (1LL << 30) / 16; uint4 *a, *b;
        CK(cudaMalloc(&a, n * 16)); CK(cudaMalloc(&b, n * 16)); CK(cudaMemset(a, 1, n * 16));
        double us = graph_us([&] { for (int i = 0; i < 4; ++i) copy_k<<<132 * 16, 256, 0, g_stream>>>(a, b, n); }, 4);
        printf("RESULT copy GBps=%.0f\n", 2.0 * n * 16 / us / 1e3);
        CK(cudaFree(a)); CK(cudaFree(b));
    }
    struct Shape { const char* name; int N, K; } shapes[] = {{"o", 4096, 4096}, {"qkv", 6144, 4096}, {"down", 4096, 14336}, {"gate_up", 28672, 4096}};
    unsigned short *x, *y0, *y1; float* ref;
    CK(cudaMalloc(&y0, 16LL * 28672 * 4)); CK(cudaMalloc(&y1, 16LL * 28672 * 4));
    CK(cudaMalloc(&x, 16 * 14336 * 2)); CK(cudaMalloc(&ref, 16LL * 28672 * 4));
    fill_k<<<64, 256, 0, g_stream>>>(x, 16LL * 14336, 5);
    for (auto& c : g_cfg) CK(cudaFuncSetAttribute(c.fn, cudaFuncAttributeMaxDynamicSharedMemorySize, KILN_GEMM_STREAM_SMEM(c.nb, c.kb, c.ws)));
    for (auto& c : g_kcfg) CK(cudaFuncSetAttribute(c.fn, cudaFuncAttributeMaxDynamicSharedMemorySize, KILN_GEMM_SWAPAB_SMEM(c.mt, c.kb, c.s)));
    float* ws; unsigned* cnt;   // gemm_swapab's split-K partials and per-tile counters (left zero by every launch)
    CK(cudaMalloc(&ws, kWsBytes)); CK(cudaMalloc(&cnt, 4096 * 4)); CK(cudaMemset(cnt, 0, 4096 * 4));
    int sms = 0;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    for (auto& sh : shapes) {
        const int N = sh.N, K = sh.K;
        if (getenv("ONLY") && strcmp(getenv("ONLY"), sh.name) != 0) continue;
        const int ncopies = getenv("COPIES") ? atoi(getenv("COPIES")) : 4;   // weight copies the timed chain rotates over
        std::vector<unsigned short*> w(ncopies);
        for (int r = 0; r < ncopies; ++r) { CK(cudaMalloc(&w[r], (size_t)N * K * 2)); fill_k<<<1024, 256, 0, g_stream>>>(w[r], (long long)N * K, 11 + r); }
        const double bytes = (double)N * K * 2;
        if (getenv("PROFILE") && sh.N == 4096 && sh.K == 4096) {   // ncu: PROFILE=<config name> M=<m>, o shape, 3 launches
            const int M = atoi(getenv("M") ? getenv("M") : "16");
            for (auto& c : g_cfg) if (!strcmp(c.name, getenv("PROFILE"))) {
                const KilnTensorMap tw0 = make_tmap_3d(w[0], N, K, c.nb, c.kb);
                for (int i = 0; i < 3; ++i)
                    launch(false, c.fn, (N + c.nb - 1) / c.nb, KILN_GEMM_STREAM_THREADS(c.cw), KILN_GEMM_STREAM_SMEM(c.nb, c.kb, c.ws), tw0,
                           (const kiln::bf16*)x, (void*)y0, M, N, K, kiln::Epilogue::bf16);
            }
            if (getenv("MOVE")) movement<64, 16, 4, 5>(sh.name, N, K, w, 1);
            CK(cudaDeviceSynchronize());
            return 0;
        }
        if (getenv("MOVE")) {   // data-movement ceilings by box shape (o and down only)
            if (sh.K == 4096 && sh.N != 4096) { for (auto p : w) CK(cudaFree(p)); continue; }
            movement<64, 16, 4, 10>(sh.name, N, K, w, 1);
            movement<64, 16, 8, 5>(sh.name, N, K, w, 1);
            movement<64, 16, 4, 5>(sh.name, N, K, w, 1);
            movement<64, 32, 4, 5>(sh.name, N, K, w, 1);
            movement<64, 64, 1, 10>(sh.name, N, K, w, 4);
            movement<64, 64, 1, 10>(sh.name, N, K, w, 2);
            movement<64, 64, 2, 5>(sh.name, N, K, w, 4);
            movement<256, 16, 1, 10>(sh.name, N, K, w, 1);
            movement<256, 16, 1, 5>(sh.name, N, K, w, 1);
            movement<256, 32, 1, 5>(sh.name, N, K, w, 1);
            movement<128, 32, 1, 10>(sh.name, N, K, w, 1);
            movement<256, 64, 1, 3>(sh.name, N, K, w, 2);
            movement<64, 16, 1, 20>(sh.name, N, K, w, 1);
            for (auto p : w) CK(cudaFree(p));
            continue;
        }
        for (int M : {16, 8, 1}) {
            if (getenv("M16") && M != 16) continue;   // M16=1: M = 16 only
            ref_k<<<N / 8, 256, 0, g_stream>>>(x, w[0], ref, M, N, K);
            CK(cudaStreamSynchronize(g_stream));   // g_stream does not synchronise with cudaMemcpy's legacy stream
            std::vector<float> want((size_t)M * N), glu((size_t)M * N / 2);
            CK(cudaMemcpy(want.data(), ref, want.size() * 4, cudaMemcpyDeviceToHost));
            for (int m = 0; m < M; ++m)   // SwiGLU of the 16-row interleaved layout, from the bf16-rounded sums
                for (int r = 0; r < N / 2; ++r) {
                    const int t = r / 8, j = r % 8;
                    const float g = host_round_bf16((want[(size_t)m * N + 16 * t + j]));
                    const float u = host_round_bf16((want[(size_t)m * N + 16 * t + 8 + j]));
                    glu[(size_t)m * N / 2 + r] = g / (1.0f + expf(-g)) * u;
                }
                        // Baseline: gemm_whole instances the tuner picks today (perf-notes-gemm.md v6).
            struct W { const char* name; GemmFnW fn; int nt, wk, u; };
            W whole[] = {{"whole_nt2_wk8_u2_b1", kiln_gemm_splitk_whole_nt2_wk8_u2_b1, 2, 8, 2},
                         {"whole_nt2_wk4_u4_b3", kiln_gemm_splitk_whole_nt2_wk4_u4_b3, 2, 4, 4},
                         {"whole_nt2_wk4_u4_b1", kiln_gemm_splitk_whole_nt2_wk4_u4_b1, 2, 4, 4},
                         {"whole_nt1_wk8_u4_b1", kiln_gemm_splitk_whole_nt1_wk8_u4_b1, 1, 8, 4},
                         {"whole_nt1_wk4_u4_b1", kiln_gemm_splitk_whole_nt1_wk4_u4_b1, 1, 4, 4}};
            for (auto& b : whole) {
                if ((M <= 8) != (b.nt == 1)) continue;
                double us = graph_us([&] { for (int i = 0; i < 20; ++i)
                    launch(true, b.fn, N / 16, 32 * b.wk, 0, (const kiln::bf16*)x, (const kiln::bf16*)w[i % ncopies], (void*)((i & 1) ? y1 : y0),
                           (float*)nullptr, (unsigned*)nullptr, M, N, K, kiln::Epilogue::bf16); }, 20);
                printf("RESULT base shape=%s M=%d kernel=%s us=%.2f GBps=%.0f\n", sh.name, M, b.name, us, bytes / us / 1e3);
            }
            // Checks one kernel (plain output, and the SwiGLU epilogue at M = 16) against the reference, then times it.
            // run(i, y, epi, pdl) launches it on weight copy i.
            auto check_and_time = [&](const char* kind, const char* name, auto&& run) {
                bool nan = false;
                double err = 0;
                g_bad = 0;
                for (int rep = 0; rep < 4; ++rep) {   // races show up intermittently: four checked launches
                    CK(cudaMemsetAsync(y0, 0xff, (size_t)M * N * 2, g_stream));   // NaN: an output the kernel skips fails the check
                    CK(cudaMemsetAsync(ws, 0xff, kWsBytes, g_stream));   // NaN: a split-K partial read before it is written fails too
                    run(0, (void*)y0, kiln::Epilogue::bf16, false);
                    CK(cudaStreamSynchronize(g_stream));
                    err = std::max(err, check(y0, want, want.size(), N, nan));
                }
                double err_glu = 0;
                if (M == 16) {
                    CK(cudaMemsetAsync(y0, 0xff, (size_t)M * N, g_stream));
                    run(0, (void*)y0, kiln::Epilogue::swiglu, false);
                    CK(cudaStreamSynchronize(g_stream));
                    err_glu = check(y0, glu, glu.size(), N / 2, nan);
                }
                double us = graph_us([&] { for (int i = 0; i < 20; ++i) run(i % ncopies, (void*)((i & 1) ? y1 : y0), kiln::Epilogue::bf16, true); }, 20);
                printf("RESULT %s shape=%s M=%d kernel=%s us=%.2f GBps=%.0f rel_err=%.2g glu_err=%.2g nan=%d bad=%zu\n", kind, sh.name, M, name, us,
                       bytes / us / 1e3, err, err_glu, (int)nan, g_bad);
            };
            for (auto& c : g_cfg) {
                std::vector<KilnTensorMap> tw;
                for (auto p : w) tw.push_back(make_tmap_3d(p, N, K, c.nb, c.kb));
                const int grid = (N + c.nb - 1) / c.nb, block = KILN_GEMM_STREAM_THREADS(c.cw), smem = KILN_GEMM_STREAM_SMEM(c.nb, c.kb, c.ws);
                check_and_time("stream", c.name, [&](int i, void* y, kiln::Epilogue epi, bool pdl) {
                    launch(pdl, c.fn, grid, block, smem, tw[i], (const kiln::bf16*)x, y, M, N, K, epi); });
            }
            for (auto& c : g_kcfg) {   // grid = 2 · 64-row tiles, within one wave of co-resident CTAs
                if (M > c.mt) continue;
                std::vector<KilnTensorMap> tw;
                for (auto p : w) tw.push_back(make_tmap_3d(p, N, K, 64, c.kb));
                const KilnTensorMap tx = make_tmap_3d(x, M, K, c.mt, c.kb);
                const int smem = KILN_GEMM_SWAPAB_SMEM(c.mt, c.kb, c.s), tiles = (N + 63) / 64;
                int per_sm = 0;
                CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, c.fn, KILN_GEMM_SWAPAB_THREADS, smem));
                for (int sk : {2, 3}) {
                    if (tiles * sk > per_sm * sms) continue;
                    char name[64];
                    snprintf(name, sizeof name, "%s_sk%d(%d/SM)", c.name, sk, per_sm);
                    check_and_time("swapab", name, [&](int i, void* y, kiln::Epilogue epi, bool pdl) {
                        launch(pdl, c.fn, tiles * sk, KILN_GEMM_SWAPAB_THREADS, smem, tw[i], tx, y, ws, cnt, M, N, K, sk, epi); });
                }
            }
        }
        for (auto p : w) CK(cudaFree(p));
    }
    printf("RESULT done\n");
    return 0;
}
