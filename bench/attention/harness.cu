// bench/attention/harness.cu — correctness + timing for Sources/KilnKernels/cuda/attention.cu and the
// Hopper (wgmma) prefill in attention_hopper.cu. Built with nvcc on the GPU machine by run.sh.
//
// Correctness: every instance of both instance tables against a plain fp32 reference attention
// kernel on the GPU (expf, fp32 dot products, online softmax over 128-key chunks), fresh random
// bf16 inputs per case (never zeros), outputs poisoned with NaN before each launch, cache rows at
// and past the valid length filled with NaN (a kernel that reads them, or multiplies them by a
// zero probability, fails). Pass: ||out − ref|| / ||ref|| <= 1e-2 and no NaN / Inf anywhere.
// Timing: CUDA events around each launch, median of 25 (prefill) / 25 (decode) after warm-ups.
// Decode is timed with a cold L2 (a 256 MB memset before each launch, outside the events) and
// warm inside a CUDA graph (20 launches per graph, replayed; mean per launch).
//
// Usage: harness [results_file] [all|base|hopper]   (machine-readable RESULT lines go there and to stdout)
//   base: attention.cu's prefill + decode instances; hopper: attention_hopper.cu's prefill instances
//   only (same prefill cases, reference and tolerance); all (default): both. run.sh runs base and
//   hopper as two processes, so that a hang or a sticky CUDA error in one cannot lose the other.

#include <cuda_runtime.h>
#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../../Sources/KilnKernels/cuda/attention.cu"
#include "../../Sources/KilnKernels/cuda/attention_decode.cu"
#include "../../Sources/KilnKernels/cuda/attention_hopper.cu"

#define CK(x)                                                                                        \
    do {                                                                                             \
        cudaError_t e_ = (x);                                                                        \
        if (e_ != cudaSuccess) {                                                                     \
            fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__, __LINE__, #x); \
            exit(1);                                                                                 \
        }                                                                                            \
    } while (0)

typedef void (*PrefillFn)(const kiln::bf16*, const kiln::bf16*, const kiln::bf16*, kiln::bf16*, int, int, int, int, int,
                          int, int, float);
typedef void (*DecodeFn)(const kiln::bf16*, const kiln::bf16*, const kiln::bf16*, kiln::bf16*, float*, unsigned*,
                         const int*, int, int, int, int, int, float);
struct PInst { const char* name; PrefillFn fn; int d, br, bc, kc, w, smem; };
struct DInst { const char* name; DecodeFn fn; int d, gmax, w, kt; };
struct HInst { const char* name; PrefillFn fn; int d, bc, st, pp, smem; };
#define H_STR2(x) #x
#define H_STR(x) H_STR2(x)
#define P_ENTRY(D, BR, BC, KC, W) {H_STR(KILN_ATTN_PREFILL_NAME(D, BR, BC, KC, W)), KILN_ATTN_PREFILL_NAME(D, BR, BC, KC, W), D, BR, BC, KC, W, KILN_ATTN_PREFILL_SMEM(D, BR, BC, KC, W)},
#define D_ENTRY(D, G, W, KT) {H_STR(KILN_ATTN_DECODE_NAME(D, G, W, KT)), KILN_ATTN_DECODE_NAME(D, G, W, KT), D, G, W, KT},
#define H_ENTRY(D, BC, ST, PP) {H_STR(KILN_ATTN_HOPPER_NAME(D, BC, ST, PP)), KILN_ATTN_HOPPER_NAME(D, BC, ST, PP), D, BC, ST, PP, KILN_ATTN_HOPPER_SMEM(D, BC, ST)},
static const PInst g_pinst[] = {KILN_ATTN_PREFILL_INSTANCES(P_ENTRY)};
static const HInst g_hinst[] = {KILN_ATTN_HOPPER_INSTANCES(H_ENTRY)};
static const int g_nh = sizeof(g_hinst) / sizeof(g_hinst[0]);
static const DInst g_dinst[] = {KILN_ATTN_DECODE_INSTANCES(D_ENTRY)};
static const int g_np = sizeof(g_pinst) / sizeof(g_pinst[0]);
static const int g_nd = sizeof(g_dinst) / sizeof(g_dinst[0]);
static FILE* g_res = nullptr;
static int g_fail = 0;

static void result(const char* fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    printf("RESULT %s\n", buf);
    if (g_res) { fprintf(g_res, "RESULT %s\n", buf); fflush(g_res); }
}

// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t hash32(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
    return (uint32_t)x;
}
__global__ void fill_rand(kiln::bf16* p, size_t n, uint64_t seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = ((hash32(i * 0x9E3779B97F4A7C15ULL + seed) >> 8) * (1.0f / 16777216.0f) * 2.f - 1.f) * scale;
        kiln::bf16 b = kiln_attn::f32_to_bf16(v);
        if ((b & 0x7fff) == 0) b = 0x3c00;  // never zero
        p[i] = b;
    }
}
__global__ void fill_u16(kiln::bf16* p, size_t n, kiln::bf16 v) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) p[i] = v;
}
// Cache rows pos >= lens[b] (up to maxS) := NaN.
__global__ void poison_tail(kiln::bf16* p, int B, int Hkv, int maxS, int D, const int* lens) {
    const size_t n = (size_t)B * Hkv * maxS * D;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t row = i / D;
        const int pos = (int)(row % maxS);
        const int b = (int)(row / maxS / Hkv);
        if (pos >= lens[b]) p[i] = 0x7fc0;
    }
}
__device__ __forceinline__ float bf(kiln::bf16 h) { return __uint_as_float(((unsigned)h) << 16); }

// Reference: one block (128 threads) per (query row, q head, sequence); rows rowBase + blockIdx.x.
__global__ void ref_attn(const kiln::bf16* q, const kiln::bf16* k, const kiln::bf16* v, float* out, int S, int Hq,
                         int Hkv, int D, int maxS, int ldq, int qStart, const int* lens, int causal, float scale,
                         int rowBase) {
    const int i = rowBase + blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int kvh = h / (Hq / Hkv);
    __shared__ float qs[128], sc[128], red[4];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    if (tid < D) qs[tid] = bf(q[((size_t)b * S + i) * ldq + (size_t)h * D + tid]);
    const int len = lens[b];
    const int n = causal ? min(len, qStart + i + 1) : len;
    const kiln::bf16* kb = k + (size_t)(b * Hkv + kvh) * maxS * D;
    const kiln::bf16* vb = v + (size_t)(b * Hkv + kvh) * maxS * D;
    float m = -INFINITY, l = 0.f, acc = 0.f;
    __syncthreads();
    for (int c0 = 0; c0 < n; c0 += 128) {
        const int key = c0 + tid;
        float s = -INFINITY;
        if (key < n) {
            float d = 0.f;
            for (int e = 0; e < D; ++e) d += qs[e] * bf(kb[(size_t)key * D + e]);
            s = d * scale;
        }
        float mx = s;
        for (int o = 16; o; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        if (lane == 0) red[warp] = mx;
        __syncthreads();
        mx = fmaxf(fmaxf(red[0], red[1]), fmaxf(red[2], red[3]));
        __syncthreads();
        const float mnew = fmaxf(m, mx);
        const float p = key < n ? expf(s - mnew) : 0.f;
        sc[tid] = p;
        float ps = p;
        for (int o = 16; o; o >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, o);
        if (lane == 0) red[warp] = ps;
        __syncthreads();
        ps = red[0] + red[1] + red[2] + red[3];
        const float alpha = (m == -INFINITY) ? 0.f : expf(m - mnew);
        l = l * alpha + ps;
        if (tid < D) {
            acc *= alpha;
            const int kn = min(128, n - c0);
            for (int kk = 0; kk < kn; ++kk) acc += sc[kk] * bf(vb[(size_t)(c0 + kk) * D + tid]);
        }
        m = mnew;
        __syncthreads();
    }
    if (tid < D) out[(((size_t)b * S + i) * Hq + h) * D + tid] = n > 0 ? acc / l : 0.f;
}
// sums[0] += (o-ref)^2, sums[1] += ref^2, sums[2] += non-finite count, sums[3] = max |o-ref|
__global__ void compare(const kiln::bf16* o, const float* ref, int S, int Hq, int D, int B, int rowBase, int rows,
                        double* sums) {
    const size_t n = (size_t)B * rows * Hq * D;
    double e2 = 0, r2 = 0, bad = 0, mx = 0;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        const size_t hd = idx % ((size_t)Hq * D);
        const size_t rr = idx / ((size_t)Hq * D);
        const int b = (int)(rr / rows), i = rowBase + (int)(rr % rows);
        const size_t off = (((size_t)b * S + i) * Hq) * D + hd;
        const float a = bf(o[off]), r = ref[off];
        if (!isfinite(a)) { bad += 1; continue; }
        const double d = (double)a - r;
        e2 += d * d; r2 += (double)r * r; mx = fmax(mx, fabs(d));
    }
    atomicAdd(&sums[0], e2); atomicAdd(&sums[1], r2); atomicAdd(&sums[2], bad);
    // max via CAS on the bit pattern (non-negative doubles order like their bits)
    unsigned long long* p = (unsigned long long*)&sums[3];
    unsigned long long cur = *p, want = __double_as_longlong(mx);
    while (want > cur) { unsigned long long prev = atomicCAS(p, cur, want); if (prev == cur) break; cur = prev; }
}

static void frand(kiln::bf16* p, size_t n, uint64_t seed, float scale) {
    fill_rand<<<1024, 256>>>(p, n, seed, scale);
    CK(cudaGetLastError());
}
static double g_relerr, g_maxerr; static long long g_bad;
static bool check(const kiln::bf16* o, const float* ref, int S, int Hq, int D, int B, int rowBase, int rows) {
    double* ds; CK(cudaMalloc(&ds, 4 * sizeof(double))); CK(cudaMemset(ds, 0, 4 * sizeof(double)));
    compare<<<512, 256>>>(o, ref, S, Hq, D, B, rowBase, rows, ds);
    CK(cudaGetLastError());
    double h[4]; CK(cudaMemcpy(h, ds, sizeof h, cudaMemcpyDeviceToHost)); CK(cudaFree(ds));
    g_relerr = sqrt(h[0] / std::max(h[1], 1e-300)); g_maxerr = h[3]; g_bad = (long long)h[2];
    return g_bad == 0 && g_relerr <= 1e-2 && std::isfinite(g_relerr);
}
static float median(std::vector<float> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; }

// ------------------------------------------------------------------------------------------------
struct PCase { int B, S, Hq, Hkv, D, qStart, kvLen, maxS, fusedQ; float scale; bool time; };

// One prefill instance on one case: poison o, launch, check against ref (rows rowBase.., NaN scan of the
// rest), optionally time (median of 25 after 3 warm-ups), print the RESULT line.
template <typename Launch>
static void prefill_instance(const char* name, const PCase& c, int ldq, kiln::bf16* o, const float* ref, size_t no,
                             int rowBase, int rows, Launch launch) {
    const double flops = 4.0 * c.B * c.Hq * (double)c.S * c.S * c.D / 2.0;
    fill_u16<<<1024, 256>>>(o, no, 0xffff);
    launch();
    CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
    // every output element written (poison gone) is part of check(): rows outside the reference
    // range are checked for NaN separately below
    bool ok = check(o, ref, c.S, c.Hq, c.D, c.B, rowBase, rows);
    if (rowBase > 0) {   // NaN scan of the unchecked rows
        double rel = g_relerr, mx = g_maxerr; long long bad = g_bad;
        // compare against ref (garbage outside range): only the non-finite count matters
        check(o, ref, c.S, c.Hq, c.D, c.B, 0, rowBase);
        if (g_bad) ok = false;
        bad += g_bad; g_relerr = rel; g_maxerr = mx; g_bad = bad;
    }
    if (!ok) g_fail++;
    float us = 0;
    if (c.time) {
        cudaEvent_t e0, e1; CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
        std::vector<float> ts;
        for (int r = 0; r < 28; ++r) {
            CK(cudaEventRecord(e0));
            launch();
            CK(cudaEventRecord(e1)); CK(cudaEventSynchronize(e1));
            float ms; CK(cudaEventElapsedTime(&ms, e0, e1));
            if (r >= 3) ts.push_back(ms * 1000.f);
        }
        CK(cudaGetLastError());
        us = median(ts);
        CK(cudaEventDestroy(e0)); CK(cudaEventDestroy(e1));
    }
    result("prefill %s B=%d S=%d Hq=%d Hkv=%d D=%d qStart=%d kvLen=%d ldq=%d scale=%.5f relerr=%.2e maxabs=%.2e nonfinite=%lld %s%s",
           name, c.B, c.S, c.Hq, c.Hkv, c.D, c.qStart, c.kvLen, ldq, c.scale, g_relerr, g_maxerr, g_bad,
           ok ? "PASS" : "FAIL",
           c.time ? (" us=" + std::to_string(us) + " tflops=" + std::to_string(flops / us * 1e-6)).c_str() : "");
}

static void run_prefill_case(const PCase& c, uint64_t seed, bool base, bool hopper) {
    const int ldq = c.fusedQ ? (c.Hq + 2 * c.Hkv) * c.D : c.Hq * c.D;
    const size_t nq = (size_t)c.B * c.S * ldq, nkv = (size_t)c.B * c.Hkv * c.maxS * c.D, no = (size_t)c.B * c.S * c.Hq * c.D;
    kiln::bf16 *q, *k, *v, *o; float* ref; int* lens;
    CK(cudaMalloc(&q, nq * 2)); CK(cudaMalloc(&k, nkv * 2)); CK(cudaMalloc(&v, nkv * 2)); CK(cudaMalloc(&o, no * 2));
    CK(cudaMalloc(&ref, no * 4)); CK(cudaMalloc(&lens, c.B * sizeof(int)));
    std::vector<int> hl(c.B, c.kvLen);
    CK(cudaMemcpy(lens, hl.data(), c.B * sizeof(int), cudaMemcpyHostToDevice));
    frand(q, nq, seed * 3 + 1, 2.0f); frand(k, nkv, seed * 3 + 2, 2.0f); frand(v, nkv, seed * 3 + 3, 1.0f);
    poison_tail<<<1024, 256>>>(k, c.B, c.Hkv, c.maxS, c.D, lens);
    poison_tail<<<1024, 256>>>(v, c.B, c.Hkv, c.maxS, c.D, lens);
    // Reference on all rows for small S, on the last 256 rows (the longest) for large S.
    const int rows = c.S > 1024 ? 256 : c.S, rowBase = c.S - rows;
    ref_attn<<<dim3(rows, c.Hq, c.B), 128>>>(q, k, v, ref, c.S, c.Hq, c.Hkv, c.D, c.maxS, ldq, c.qStart, lens, 1,
                                             c.scale, rowBase);
    CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
    for (int ii = 0; base && ii < g_np; ++ii) {
        const PInst& in = g_pinst[ii];
        if (in.d != c.D) continue;
        CK(cudaFuncSetAttribute((const void*)in.fn, cudaFuncAttributeMaxDynamicSharedMemorySize, in.smem));
        dim3 grid(((c.S + in.br - 1) / in.br) * c.Hq, c.B), block(32 * in.w);
        prefill_instance(in.name, c, ldq, o, ref, no, rowBase, rows, [&]() {
            in.fn<<<grid, block, in.smem>>>(q, k, v, o, c.S, c.Hq, c.Hkv, c.maxS, ldq, c.qStart, c.kvLen, c.scale);
        });
    }
    for (int ii = 0; hopper && ii < g_nh; ++ii) {
        const HInst& in = g_hinst[ii];
        if (in.d != c.D) continue;
        CK(cudaFuncSetAttribute((const void*)in.fn, cudaFuncAttributeMaxDynamicSharedMemorySize, in.smem));
        dim3 grid(((c.S + KILN_ATTN_HOPPER_BR - 1) / KILN_ATTN_HOPPER_BR) * c.Hq, c.B), block(KILN_ATTN_HOPPER_THREADS);
        prefill_instance(in.name, c, ldq, o, ref, no, rowBase, rows, [&]() {
            in.fn<<<grid, block, in.smem>>>(q, k, v, o, c.S, c.Hq, c.Hkv, c.maxS, ldq, c.qStart, c.kvLen, c.scale);
        });
    }
    CK(cudaFree(q)); CK(cudaFree(k)); CK(cudaFree(v)); CK(cudaFree(o)); CK(cudaFree(ref)); CK(cudaFree(lens));
}

// ------------------------------------------------------------------------------------------------
struct DCase { int B, Hq, Hkv, D, maxS; std::vector<int> lens; bool time; std::vector<int> splits; float scale; };
static void* g_scrub = nullptr;
static const size_t SCRUB = 256ull << 20;

static void run_decode_case(const DCase& c, uint64_t seed) {
    const int ldq = c.Hq * c.D;
    const size_t nq = (size_t)c.B * ldq, nkv = (size_t)c.B * c.Hkv * c.maxS * c.D, no = nq;
    kiln::bf16 *q, *k, *v, *o; float *ref, *ws; int* lens; unsigned* cnt;
    CK(cudaMalloc(&q, nq * 2)); CK(cudaMalloc(&k, nkv * 2)); CK(cudaMalloc(&v, nkv * 2)); CK(cudaMalloc(&o, no * 2));
    CK(cudaMalloc(&ref, no * 4)); CK(cudaMalloc(&lens, c.B * sizeof(int)));
    const int maxSplits = 128;
    CK(cudaMalloc(&ws, KILN_ATTN_DECODE_WS_FLOATS(c.B, c.Hq, maxSplits, c.D) * sizeof(float)));
    CK(cudaMalloc(&cnt, c.B * c.Hkv * sizeof(unsigned))); CK(cudaMemset(cnt, 0, c.B * c.Hkv * sizeof(unsigned)));
    CK(cudaMemcpy(lens, c.lens.data(), c.B * sizeof(int), cudaMemcpyHostToDevice));
    frand(q, nq, seed * 3 + 1, 2.0f); frand(k, nkv, seed * 3 + 2, 2.0f); frand(v, nkv, seed * 3 + 3, 1.0f);
    poison_tail<<<1024, 256>>>(k, c.B, c.Hkv, c.maxS, c.D, lens);
    poison_tail<<<1024, 256>>>(v, c.B, c.Hkv, c.maxS, c.D, lens);
    ref_attn<<<dim3(1, c.Hq, c.B), 128>>>(q, k, v, ref, 1, c.Hq, c.Hkv, c.D, c.maxS, ldq, 0, lens, 0, c.scale, 0);
    CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
    long long keys = 0; for (int x : c.lens) keys += x;
    const double bytes = (double)keys * c.Hkv * c.D * 2 * 2;
    std::string lstr; for (int x : c.lens) lstr += (lstr.empty() ? "" : ",") + std::to_string(x);
    cudaEvent_t e0, e1; CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
    cudaStream_t st; CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    for (int ii = 0; ii < g_nd; ++ii) {
        const DInst& in = g_dinst[ii];
        if (in.d != c.D || c.Hq / c.Hkv > in.gmax) continue;
        for (int sp : c.splits) {
            fill_u16<<<1024, 256>>>(o, no, 0xffff);
            dim3 grid(sp, c.Hkv, c.B), block(32 * in.w);
            in.fn<<<grid, block>>>(q, k, v, o, ws, cnt, lens, c.Hq, c.Hkv, c.maxS, ldq, sp, c.scale);
            CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
            bool ok = check(o, ref, 1, c.Hq, c.D, c.B, 0, 1);
            std::vector<unsigned> hc(c.B * c.Hkv);
            CK(cudaMemcpy(hc.data(), cnt, hc.size() * 4, cudaMemcpyDeviceToHost));
            for (unsigned x : hc) if (x) ok = false;
            if (!ok) g_fail++;
            std::string tim;
            if (c.time) {
                std::vector<float> ts;
                for (int r = 0; r < 28; ++r) {
                    CK(cudaMemsetAsync(g_scrub, r & 0xff, SCRUB, st));
                    CK(cudaEventRecord(e0, st));
                    in.fn<<<grid, block, 0, st>>>(q, k, v, o, ws, cnt, lens, c.Hq, c.Hkv, c.maxS, ldq, sp, c.scale);
                    CK(cudaEventRecord(e1, st)); CK(cudaEventSynchronize(e1));
                    float ms; CK(cudaEventElapsedTime(&ms, e0, e1));
                    if (r >= 3) ts.push_back(ms * 1000.f);
                }
                CK(cudaGetLastError());
                const float cold = median(ts);
                // warm, inside a graph of 20 launches
                cudaGraph_t gr; cudaGraphExec_t ge;
                CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
                for (int r = 0; r < 20; ++r)
                    in.fn<<<grid, block, 0, st>>>(q, k, v, o, ws, cnt, lens, c.Hq, c.Hkv, c.maxS, ldq, sp, c.scale);
                CK(cudaStreamEndCapture(st, &gr));
                CK(cudaGraphInstantiate(&ge, gr, 0));
                CK(cudaGraphLaunch(ge, st)); CK(cudaStreamSynchronize(st));
                std::vector<float> gs;
                for (int r = 0; r < 7; ++r) {
                    CK(cudaEventRecord(e0, st)); CK(cudaGraphLaunch(ge, st)); CK(cudaEventRecord(e1, st));
                    CK(cudaEventSynchronize(e1));
                    float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); gs.push_back(ms * 1000.f / 20.f);
                }
                CK(cudaGraphExecDestroy(ge)); CK(cudaGraphDestroy(gr));
                const float warm = median(gs);
                char b2[256];
                snprintf(b2, sizeof b2, " us_cold=%.2f us_graph_warm=%.2f GBps_cold=%.0f", cold, warm, bytes / cold * 1e-3);
                tim = b2;
                // re-check after the timing loops (counters must have been reset every time)
                CK(cudaMemcpy(hc.data(), cnt, hc.size() * 4, cudaMemcpyDeviceToHost));
                for (unsigned x : hc) if (x) { ok = false; g_fail++; break; }
            }
            result("decode %s B=%d lens=%s Hq=%d Hkv=%d D=%d maxS=%d splits=%d relerr=%.2e maxabs=%.2e nonfinite=%lld %s%s",
                   in.name, c.B, lstr.c_str(), c.Hq, c.Hkv, c.D, c.maxS, sp, g_relerr, g_maxerr, g_bad,
                   ok ? "PASS" : "FAIL", tim.c_str());
        }
    }
    CK(cudaEventDestroy(e0)); CK(cudaEventDestroy(e1)); CK(cudaStreamDestroy(st));
    CK(cudaFree(q)); CK(cudaFree(k)); CK(cudaFree(v)); CK(cudaFree(o)); CK(cudaFree(ref)); CK(cudaFree(lens));
    CK(cudaFree(ws)); CK(cudaFree(cnt));
}

int main(int argc, char** argv) {
    setvbuf(stdout, nullptr, _IONBF, 0);
    if (argc > 1) g_res = fopen(argv[1], "w");
    const std::string mode = argc > 2 ? argv[2] : "all";
    const bool base = mode != "hopper", hopper = mode != "base";
    cudaDeviceProp prop; CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
    CK(cudaMalloc(&g_scrub, SCRUB));
    const float s128 = 1.f / sqrtf(128.f), s64 = 0.125f, granite = 0.0078125f;
    uint64_t seed = 1;
    // ---- prefill correctness (odd lengths, chunked prefill, fused-QKV row stride, Granite scale) ----
    std::vector<PCase> pc = {
        {1, 1, 32, 8, 128, 0, 1, 64, 0, s128, false},
        {1, 17, 32, 8, 128, 0, 17, 40, 0, s128, false},
        {2, 100, 32, 8, 128, 0, 100, 131, 1, s128, false},
        {1, 1000, 32, 8, 128, 0, 1000, 1003, 0, granite, false},
        {2, 300, 32, 8, 128, 700, 1000, 1100, 1, s128, false},   // chunked prefill: positions 700..999
        {1, 77, 32, 8, 128, 4000, 4077, 4100, 0, s128, false},
        {1, 1, 9, 3, 64, 0, 1, 16, 0, s64, false},
        {2, 100, 9, 3, 64, 0, 100, 101, 1, s64, false},
        {1, 1000, 32, 8, 64, 0, 1000, 1024, 0, s64, false},
        {1, 250, 15, 5, 64, 333, 583, 600, 0, s64, false},
        // timed shapes (last 256 rows checked)
        {1, 4096, 32, 8, 128, 0, 4096, 4096, 0, s128, true},
        {1, 4096, 32, 8, 64, 0, 4096, 4096, 0, s64, true},
        {4, 1024, 32, 8, 128, 0, 1024, 1024, 0, s128, true},
    };
    for (auto& c : pc) run_prefill_case(c, seed++, base, hopper);
    if (!base) {
        printf("failures: %d\n", g_fail);
        if (g_res) { fprintf(g_res, "failures: %d\n", g_fail); fclose(g_res); }
        return g_fail ? 1 : 0;
    }
    // ---- decode ----
    std::vector<int> sp_check = {1, 3, 8, 32};
    std::vector<int> sp_time = {1, 2, 4, 8, 16, 32, 64};
    std::vector<DCase> dc = {
        {1, 32, 8, 128, 64, {1}, false, sp_check, s128},
        {3, 32, 8, 128, 1100, {17, 1000, 1031}, false, sp_check, granite},
        {8, 32, 8, 128, 5000, {1, 15, 16, 100, 767, 2049, 4097, 4999}, false, sp_check, s128},
        {2, 24, 8, 128, 900, {513, 899}, false, sp_check, s128},     // G = 3
        {2, 32, 32, 128, 300, {100, 257}, false, sp_check, s128},    // G = 1
        {2, 32, 4, 128, 300, {100, 257}, false, sp_check, s128},     // G = 8
        {2, 9, 3, 64, 1200, {1, 1111}, false, sp_check, s64},
        {2, 32, 8, 64, 700, {33, 650}, false, sp_check, s64},
        // timed
        {2, 32, 8, 128, 768, {768, 768}, true, sp_time, s128},
        {1, 32, 8, 128, 4096, {4096}, true, sp_time, s128},
        {8, 32, 8, 128, 4096, {4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096}, true, sp_time, s128},
        {1, 32, 8, 128, 32768, {32768}, true, sp_time, s128},
        {8, 32, 8, 128, 32768, {32768, 32768, 32768, 32768, 32768, 32768, 32768, 32768}, true, sp_time, s128},
    };
    for (auto& c : dc) run_decode_case(c, seed++);
    printf("failures: %d\n", g_fail);
    if (g_res) { fprintf(g_res, "failures: %d\n", g_fail); fclose(g_res); }
    return g_fail ? 1 : 0;
}
