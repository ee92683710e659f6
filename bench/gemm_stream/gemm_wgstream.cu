// bench/gemm_stream/gemm_wgstream.cu — PROTOTYPE, harness only (perf-notes-gemm.md v9: lost to gemm_stream). Decode GEMM Y[M,N] = X[M,K] · W[N,K]^T for 1 ≤ M ≤ 16 on Hopper (sm_90a): gemm_stream's
// decomposition (NB weight rows per CTA over the whole K, no split-K, no reduction) with wgmma instead of mma.sync:
// the tensor cores read both operands straight from the TMA ring. bf16 in, fp32 accumulation, bf16 / fp32 / SwiGLU
// out (the same `epi` values and output layouts as gemm_splitk.cu and gemm_stream.cu).
//
// Why: gemm_stream's consumers copy every weight byte shared → registers (ld.shared) before mma.sync; at M = 16 on o
// (4096×4096) that costs 1.0–1.3 µs over the ring's data movement alone (docs/perf-notes-gemm.md v7, v8). wgmma reads
// shared memory itself, asynchronously: the consumer warp group only waits on a barrier and issues 4·KB wgmmas per stage.
//  * wgmma m64n{NB}k16, A = X (tokens as rows), B = W (NB weight rows as N), both K-major with 128B swizzle. The
//    16 tokens fill rows 0–15 of A; rows 16–63 are whatever the next 6 KB of shared memory hold (the next chunk, W, or
//    the tail pad) — a row of D depends only on its row of A, so rows 16–63 of D (warps 1–3) are never stored. That
//    wastes 3/4 of the tensor work (compute is far from the limit here: 64·NB·16 MACs per 16·NB·2 weight bytes), and
//    needs no zeroing and no registers for X. (Weights as A and tokens as N instead needs 64-row tiles, hence split-K
//    for the grid, whose reduction cost 2.2–2.8 µs on o: perf-notes-gemm.md v9.)
//  * Ring (wg_ring.cuh): S stages of [W box {64, NB, KB} | X box {64, 16, KB}], one TMA per operand per stage; rows
//    16–63 of an X chunk's A tile run into the next chunk, the next stage or the 6 KB pad after the ring.
//  * PDL: the producer issues the W boxes of the ring's first fill before griddepcontrol.wait (weights never depend
//    on the previous kernel) and their X boxes after it; the consumers wait before they touch y.
//
// Requirements (the launcher checks them): K % 64 == 0; x, W 16-byte aligned; M ≤ 16; SwiGLU: N % 16 == 0.
// Rows past N and tokens past M are zero-filled by TMA and never stored.
//
// Entry points: one extern "C" kernel per row of KILN_GEMM_WGSTREAM_INSTANCES, named
//   kiln_gemm_wgstream_nb{NB}_kb{KB}_s{S}(const KilnTensorMap tmw /* W {64, N, K/64}, box {64, NB, KB} */,
//       const KilnTensorMap tmx /* X {64, M, K/64}, box {64, 16, KB} */, void* y, int M, int N, int K, int epi)
//   grid = ceil(N / NB); block = KILN_GEMM_WGSTREAM_THREADS threads (warp group 0 consumes, warp 4 produces);
//   dynamic shared memory = KILN_GEMM_WGSTREAM_SMEM(NB, KB, S) bytes.

#include "attention_util.cuh"
#include "hopper_util.cuh"
#include "wg_ring.cuh"

// The ring, 1 KB to realign it, and 6 KB past it for the unused rows 16–63 of the last stage's last X chunk.
#define KILN_GEMM_WGSTREAM_SMEM(NB, KB, S) ((S) * (KB) * (16 + (NB)) * 128 + 1024 + 6144)
#define KILN_GEMM_WGSTREAM_THREADS 160

namespace kiln_gemm_wgstream {

using namespace kiln_hopper;
using kiln_attn::f32_to_bf16;
using kiln_attn::swiglu_bf16;

// Warp 0's accumulators: d[4j + q] of lane l is token l/4 + 8·(q ≥ 2), weight row row0 + 8j + 2(l % 4) + (q & 1).
// epi: 0 bf16 [M, N]; 1 fp32 [M, N]; 2 SwiGLU bf16 [M, N/2] with gate/up rows interleaved per 16 (8-row groups
// j = 2p gate, 2p + 1 up: the same lane and q), gate and up rounded to bf16 first (as gemm_splitk).
template <int NB>
__device__ __forceinline__ void store_rows(const float (&d)[NB / 2], void* __restrict__ y, int row0, int M, int N, int epi) {
    const int l = threadIdx.x % 32;
#pragma unroll
    for (int j = 0; j < NB / 8; ++j)
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const int m = l / 4 + 8 * (q >> 1), c = 8 * j + 2 * (l % 4) + (q & 1), r = row0 + c;
            if (m >= M) continue;
            if (epi == 2) {
                if (j % 2 == 0 && r < N)
                    ((kiln_bf16*)y)[(long long)m * (N >> 1) + (row0 >> 1) + 4 * j + 2 * (l % 4) + (q & 1)] =
                        swiglu_bf16(d[4 * j + q], d[4 * j + 4 + q]);
            } else if (r < N) {
                if (epi == 1) ((float*)y)[(long long)m * N + r] = d[4 * j + q];
                else ((kiln_bf16*)y)[(long long)m * N + r] = f32_to_bf16(d[4 * j + q]);
            }
        }
}

template <int NB, int KB, int S>
__device__ __forceinline__ void gemm_wgstream(const KilnTensorMap* tmw, const KilnTensorMap* tmx, void* __restrict__ y,
                                              int M, int N, int K, int epi) {
    static_assert(NB == 16 || NB == 32, "NB: weight rows per CTA = wgmma N (n16 or n32)");
    using RG = kiln_wg_ring::Ring<16, NB, KB, S>;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    __shared__ __align__(8) u64 full[S], empty[S];
    const u32 base = (smem_u32(smem_raw) + 1023) & ~1023u;
    const int row0 = blockIdx.x * NB, n = (K / 64 + KB - 1) / KB;
    if (threadIdx.x == 0) RG::init(full, empty);
    __syncthreads();
    if (threadIdx.x >= 128) {   // producer warp: one lane issues a W box and an X box per stage
        if (threadIdx.x == 128) RG::produce(base, full, empty, tmw, tmx, row0, 0, n);
        else kiln_attn::pdl_wait_then_trigger();
        return;
    }
    kiln_attn::pdl_wait_then_trigger();
    float d[NB / 2];
    RG::consume(d, base, full, empty, n, [](float (&acc)[NB / 2], u32 w, u32 x, int keep) {
        kiln_wg_ring::wgmma_n<NB>(acc, sw128_desc(x, 16, 1024), sw128_desc(w, 16, 1024), keep);   // tokens as A, W rows as N
    });
    if (threadIdx.x < 32) store_rows<NB>(d, y, row0, M, N, epi);
}

}  // namespace kiln_gemm_wgstream

// X(NB, KB, S): NB weight rows per CTA (wgmma n16 / n32), KB 64-k chunks per stage, S ring stages.
#define KILN_GEMM_WGSTREAM_INSTANCES(X) X(16, 2, 12) X(16, 4, 6) X(16, 2, 8) X(16, 1, 24) X(32, 2, 8) X(32, 4, 4)

#define KILN_GEMM_WGSTREAM_NAME(NB, KB, S) kiln_gemm_wgstream_nb##NB##_kb##KB##_s##S
#define KILN_GEMM_WGSTREAM_DEFINE(NB, KB, S)                                                                        \
    extern "C" __global__ void __launch_bounds__(KILN_GEMM_WGSTREAM_THREADS) KILN_GEMM_WGSTREAM_NAME(NB, KB, S)(      \
        const __grid_constant__ KilnTensorMap tmw, const __grid_constant__ KilnTensorMap tmx, void* __restrict__ y,   \
        int M, int N, int K, int epi) {                                                                              \
        kiln_gemm_wgstream::gemm_wgstream<NB, KB, S>(&tmw, &tmx, y, M, N, K, epi);                                   \
    }

KILN_GEMM_WGSTREAM_INSTANCES(KILN_GEMM_WGSTREAM_DEFINE)
