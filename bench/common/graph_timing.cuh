// bench/common/graph_timing.cuh — shared by the nvcc bench harnesses (bench/boundary, bench/gemm_stream): the
// CUDA error check and the graph-chain timing every decode-GEMM number in docs/perf-notes-gemm.md uses.
#pragma once
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { fprintf(stderr, "CUDA %s at line %d\n", cudaGetErrorString(e_), __LINE__); exit(1); } } while (0)

static cudaStream_t g_stream;   // every timed launch goes to this non-blocking stream

// µs per node: `nodes` launches captured into one graph, replayed 20 times after one warm replay.
template <class F> static double graph_us(F&& body, int nodes) {
    cudaGraph_t g; cudaGraphExec_t ex;
    CK(cudaStreamBeginCapture(g_stream, cudaStreamCaptureModeThreadLocal));
    body();
    CK(cudaStreamEndCapture(g_stream, &g));
    CK(cudaGraphInstantiate(&ex, g, 0));
    CK(cudaGraphLaunch(ex, g_stream));
    CK(cudaStreamSynchronize(g_stream));
    cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
    std::vector<float> t;
    for (int r = 0; r < 7; ++r) {
        CK(cudaEventRecord(a, g_stream));
        for (int i = 0; i < 3; ++i) CK(cudaGraphLaunch(ex, g_stream));
        CK(cudaEventRecord(b, g_stream));
        CK(cudaEventSynchronize(b));
        float ms; CK(cudaEventElapsedTime(&ms, a, b)); t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    CK(cudaGraphExecDestroy(ex)); CK(cudaGraphDestroy(g)); CK(cudaEventDestroy(a)); CK(cudaEventDestroy(b));
    return 1000.0 * t[t.size() / 2] / (3 * nodes);
}
