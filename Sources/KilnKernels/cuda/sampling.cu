// Token selection over vocabulary-sized rows of f32 logits.
//
// argmax: greedy decoding; ties go to the lowest index, NaN never wins.
//
// sample_top_k_top_p: one 1024-thread block per row, deterministic given a uniform number u in
// [0,1) per row from the host (so the CPU reference reproduces the choice exactly):
//   1. radix-select the k-th largest logit (4 passes of 8-bit digit histograms over the row);
//   2. collect the k candidates: all logits above that threshold, then the lowest-index ties;
//   3. rank-sort them by (logit desc, index asc);
//   4. p_j = softmax(logits / T) over the WHOLE row; keep the shortest sorted prefix whose
//      cumulative probability reaches top_p (at least one token);
//   5. pick the first j in that prefix with cum_j > u * cum_last.
// k is capped at SAMPLE_K_MAX (top_k <= 0 means that cap). NaN logits count as the lowest value
// and get probability 0. No sorting of the whole vocabulary, no global scratch memory.
#include "kiln.cuh"

namespace kiln {

struct ArgmaxParams {
    u64 logits;   // f32 [rows, cols]
    u64 out;      // int32 [rows]
    int rows, cols;
};

struct SampleParams {
    u64 logits;     // f32 [rows, cols]
    u64 uniforms;   // f32 [rows], in [0, 1)
    u64 out;        // int32 [rows]
    int rows, cols, top_k;
    float top_p, inv_temperature;
};

constexpr int SAMPLE_THREADS = 1024;
constexpr int SAMPLE_K_MAX = 1024;

__device__ __forceinline__ void take_better(float& bv, int& bi, float v, int i) {
    if (v > bv || (v == bv && i < bi)) { bv = v; bi = i; }
}

__global__ void __launch_bounds__(1024) argmax(ArgmaxParams p) {
    __shared__ float wv[32];
    __shared__ int wi[32];
    const float* x = (const float*)p.logits + (long long)blockIdx.x * p.cols;
    float bv = neg_inf();
    int bi = 0x7fffffff;
    for (int c = threadIdx.x; c < p.cols; c += blockDim.x) {
        const float v = x[c];
        if (v == v) take_better(bv, bi, v, c);
    }
    // The comparison is a total order (value, then index), so butterfly shuffles agree on every lane.
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) take_better(bv, bi, __shfl_xor_sync(0xffffffffu, bv, o), __shfl_xor_sync(0xffffffffu, bi, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { wv[warp] = bv; wi[warp] = bi; }
    __syncthreads();
    if (warp == 0) {
        const int warps = (blockDim.x + 31) >> 5;
        bv = lane < warps ? wv[lane] : neg_inf();
        bi = lane < warps ? wi[lane] : 0x7fffffff;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) take_better(bv, bi, __shfl_xor_sync(0xffffffffu, bv, o), __shfl_xor_sync(0xffffffffu, bi, o));
        if (lane == 0) ((int*)p.out)[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
    }
}

// Monotonic map from float to unsigned (larger float → larger key); NaN → 0, below everything.
__device__ __forceinline__ u32 order_key(float v) {
    if (v != v) return 0;
    const u32 b = __float_as_uint(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__global__ void __launch_bounds__(SAMPLE_THREADS) sample_top_k_top_p(SampleParams p) {
    __shared__ u32 hist[256];
    __shared__ float cand_val[SAMPLE_K_MAX];
    __shared__ int cand_idx[SAMPLE_K_MAX];
    __shared__ float sorted_val[SAMPLE_K_MAX];
    __shared__ int sorted_idx[SAMPLE_K_MAX];
    __shared__ float cum[SAMPLE_K_MAX];
    __shared__ int warp_counts[32];
    __shared__ float scratch[32];
    __shared__ u32 s_prefix, s_remaining;
    __shared__ int s_count;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
    const float* x = (const float*)p.logits + (long long)blockIdx.x * p.cols;
    int k = p.top_k <= 0 || p.top_k > SAMPLE_K_MAX ? SAMPLE_K_MAX : p.top_k;
    if (k > p.cols) k = p.cols;

    // 1. Radix select: after the 4 digit passes, `prefix` is the k-th largest key and `remaining`
    //    how many elements equal to it belong to the top k.
    u32 prefix = 0, mask = 0, remaining = (u32)k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = tid; i < 256; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        for (int c = tid; c < p.cols; c += blockDim.x) {
            const u32 key = order_key(x[c]);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (tid == 0) {
            u32 above = 0;
            int d = 255;
            for (; d > 0; --d) {
                if (above + hist[d] >= remaining) break;
                above += hist[d];
            }
            s_remaining = remaining - above;
            s_prefix = prefix | ((u32)d << shift);
        }
        __syncthreads();
        prefix = s_prefix;
        remaining = s_remaining;
        mask |= 255u << shift;
    }
    const u32 threshold = prefix;

    // 2. Candidates: everything above the threshold (any order; sorted below) ...
    if (tid == 0) s_count = 0;
    __syncthreads();
    for (int c = tid; c < p.cols; c += blockDim.x) {
        const float v = x[c];
        if (order_key(v) > threshold) {
            const int s = atomicAdd(&s_count, 1);
            cand_val[s] = v;
            cand_idx[s] = c;
        }
    }
    __syncthreads();
    const int greater = s_count;
    // ... then the lowest-index elements equal to it, in index order (ballot + per-warp prefix).
    int taken = 0;
    for (int c0 = 0; c0 < p.cols && taken < (int)remaining; c0 += blockDim.x) {
        const int c = c0 + tid;
        const bool eq = c < p.cols && order_key(x[c]) == threshold;
        const u32 ballot = __ballot_sync(0xffffffffu, eq);
        if (lane == 0) warp_counts[warp] = __popc(ballot);
        __syncthreads();
        int before = 0, total = 0;
        for (int w = 0; w < warps; ++w) {
            before += w < warp ? warp_counts[w] : 0;
            total += warp_counts[w];
        }
        const int slot = taken + before + __popc(ballot & ((1u << lane) - 1u));
        if (eq && slot < (int)remaining) {
            cand_val[greater + slot] = x[c];
            cand_idx[greater + slot] = c;
        }
        taken += total;
        __syncthreads();
    }
    __syncthreads();

    // 3. Rank sort of the k candidates: (value desc, index asc) is a total order.
    if (tid < k) {
        const u32 kt = order_key(cand_val[tid]);
        const int it = cand_idx[tid];
        int r = 0;
        for (int j = 0; j < k; ++j) {
            const u32 kj = order_key(cand_val[j]);
            r += (kj > kt) || (kj == kt && cand_idx[j] < it);
        }
        sorted_val[r] = cand_val[tid];
        sorted_idx[r] = it;
    }
    __syncthreads();

    // 4. Softmax normaliser over the whole row at temperature T.
    const float m = sorted_val[0];
    float s = 0.f;
    for (int c = tid; c < p.cols; c += blockDim.x) {
        const float v = x[c];
        if (v == v) s += expf((v - m) * p.inv_temperature);
    }
    const float z = block_sum(s, scratch);

    // 5. Nucleus cut and the draw: at most k serial steps, on one thread, in the reference's order.
    if (tid == 0) {
        float acc = 0.f;
        int n = k;
        for (int j = 0; j < k; ++j) {
            const float v = sorted_val[j];
            acc += v == v ? expf((v - m) * p.inv_temperature) / z : 0.f;
            cum[j] = acc;
            if (acc >= p.top_p) { n = j + 1; break; }
        }
        const float target = ((const float*)p.uniforms)[blockIdx.x] * cum[n - 1];
        int pick = n - 1;
        for (int j = 0; j < n; ++j) {
            if (cum[j] > target) { pick = j; break; }
        }
        ((int*)p.out)[blockIdx.x] = sorted_idx[pick];
    }
}

}  // namespace kiln
