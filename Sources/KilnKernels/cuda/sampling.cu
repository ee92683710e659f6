// Token selection over vocabulary-sized rows of f32 logits.
//
// argmax: greedy decoding; ties go to the lowest index, NaN never wins (the decode graph's greedy path).
//
// sample: one 1024-thread block per row, each row with its own settings (SampleRowParams, filled from
// SamplingOptions), applying the CPU Sampler's steps (KilnCore/Sampler.swift) in its order:
// Settings and state are per slot (`row_slots`, default the row itself), logits and outputs per row.
//   0. penalties, when the row has them and the state buffers are given: repetition over the row's recent-token
//      window (positive ÷ p, negative × p), then presence/frequency over its generated-token counts; NaN is −∞;
//   1. temperature <= 0: the (penalized) argmax, ties to the lowest id;
//   2. top-k (k <= 0 or >= vocab: the whole row): radix select of the k-th largest value (4 passes of 8-bit digit
//      histograms), ties at the cut resolved by index;
//   3. top-p over the top-k set on probabilities at temperature 1: the same radix select on probability mass;
//   4. min-p at temperature 1: exp(l − max) >= min_p;
//   5. the draw: the kept set's argmax of (l − max)/T + Gumbel noise, an exact sample of softmax(l/T) over the set,
//      with one uniform per (seed, step, token) from a counter-based hash: reproducible from (seed, step).
// The order of the candidates is (logit desc, index asc), the CPU's; every cut keeps a prefix of it. The cuts work on
// integer sums of 40-bit fixed-point weights, so they do not depend on the order of the atomics.
// After the draw the block writes the id (the next step's input), optionally log-probabilities (log-softmax of the
// penalized logits at temperature 1 over the whole row), and advances the row's state: step + 1, the chosen token
// counted in the generated counts and pushed into the repetition window.
// KILN_BREAK (the self-test of kiln check) cuts top-p and min-p at the row's temperature: the old, wrong semantics.
#include "kiln.cuh"

namespace kiln {

struct ArgmaxParams {
    u64 logits;   // f32 [rows, cols]
    u64 out;      // int32 [rows]
    int rows, cols;
};

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

// One row's settings (Sampling.RowParams in Swift, filled from SamplingOptions). 40 bytes.
struct SampleRowParams {
    float temperature;        // <= 0: greedy
    int top_k;                // <= 0 or >= vocab: the whole vocabulary
    float top_p;              // >= 1: off; <= 0: the top token only
    float min_p;              // <= 0: off
    float repeat_penalty;     // 1: off
    int repeat_last_n;        // the repetition window (the ring's length); < 0: the whole history; 0: off
    float presence_penalty;   // 0: off
    float frequency_penalty;  // 0: off
    u64 seed;                 // with the row's step, the whole random stream
};

// One row's progress, advanced by every launch (Sampling.RowState in Swift). 16 bytes.
struct SampleRowState {
    u64 step;        // draws made so far: the counter of the random stream
    int recent_pos;  // the ring's next slot (its oldest token once full)
    int reserved;
};

struct SampleParams {
    u64 logits;          // f32 [rows, logits_stride]; stride 0: every row reads row 0 (the check's many draws)
    u64 params;          // SampleRowParams [rows]
    u64 state;           // SampleRowState [rows]
    u64 out;             // int32 [rows]: the sampled ids
    u64 logprobs;        // f32 [rows, 1 + top_logprobs] or 0: the chosen token's, then the top ones, best first
    u64 top_ids;         // int32 [rows, top_logprobs] (with logprobs): ids of the top ones
    u64 counts;          // int32 [rows, vocab] or 0: generated-token counts (presence / frequency)
    u64 recent_counts;   // int32 [rows, vocab] or 0: occurrences in the repetition window
    u64 recent;          // int32 [rows, recent_capacity] (with recent_counts): the window's ring, -1 = empty
    u64 support;         // int32 [rows, 2] or 0: the kept set's size and its lowest-ranked id (kiln check)
    long long logits_stride;
    int rows, vocab, top_logprobs, recent_capacity;
    u64 row_slots;       // int32 [rows] or 0: row r's settings, state and penalty rows are those of slot row_slots[r]
                         // (the server's sequences move between rows from step to step); 0: slot r
};

constexpr int SAMPLE_THREADS = 1024;
constexpr int TOP_LOGPROBS_MAX = 20;
constexpr int NO_INDEX = 0x7fffffff;
constexpr u32 FULL = 0xffffffffu;
// exp(l − max) ∈ [0, 1] in 40-bit fixed point: 128k weights sum below 2^57, and an integer sum is exact.
constexpr float WEIGHT_ONE = 1099511627776.0f;  // 2^40

struct SampleShared {
    u64 mass[256];
    u32 hist[256];
    u64 red64[32];
    u32 red_key[32];
    int red_index[32];
    int red_count[32];
    float top_val[TOP_LOGPROBS_MAX];
    int top_idx[TOP_LOGPROBS_MAX];
    u32 s_key, s_remaining, s_ties;
    u64 s_mass_remaining, s_mass_bucket;
    int s_index, s_slots;
};

// Monotonic map from float to unsigned (larger float → larger key); -0 is +0 (the CPU compares floats, where they
// tie); NaN never reaches it (the row maps NaN to −∞).
__device__ __forceinline__ u32 sort_key(float v) {
    u32 b = __float_as_uint(v);
    if (v == 0.f) b = 0;
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float key_value(u32 k) { return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k); }

// A cut of the order (logit desc, index asc): (key, c) is kept when key > cut.key, or key == cut.key and c <= cut.index.
struct Cut { u32 key; int index; };
__device__ __forceinline__ Cut keep_all() { Cut c; c.key = 0; c.index = NO_INDEX; return c; }
__device__ __forceinline__ bool kept_by(u32 key, int c, Cut t) { return key > t.key || (key == t.key && c <= t.index); }

// The effective (penalized) logits of one row.
struct Row {
    const float* x;
    const int* counts;         // null when presence/frequency are off
    const int* recent_counts;  // null when repetition is off
    float repeat, presence, frequency;
    int n;
    __device__ __forceinline__ float operator[](int c) const {
        float v = x[c];
        if (v != v) return neg_inf();
        // Explicit roundings: the CPU computes these as separate f32 operations (no fused multiply-add).
        if (recent_counts && recent_counts[c] > 0) v = v > 0.f ? __fdiv_rn(v, repeat) : __fmul_rn(v, repeat);
        if (counts) {
            const int k = counts[c];
            if (k > 0) v = __fsub_rn(v, __fadd_rn(presence, __fmul_rn(frequency, (float)k)));
        }
        return v;
    }
};

__device__ __forceinline__ u64 fixed_weight(float v, float m, float scale) {
    return __float2ull_rn(expf((v - m) * scale) * WEIGHT_ONE);
}

__device__ __forceinline__ u64 splitmix64(u64 z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
// Uniform in (0, 1) for token c of the stream `mix` (23 bits and a half-step offset: never 0, never 1).
__device__ __forceinline__ float token_uniform(u64 mix, int c) {
    const u64 h = splitmix64(mix + (u64)c * 0x9E3779B97F4A7C15ull);
    return ((float)(h >> 41) + 0.5f) * (1.0f / 8388608.0f);
}

// (key, index) pairs: the best has the larger key, then the lower index; the worst the reverse.
__device__ __forceinline__ void take(u32& bk, int& bi, u32 k, int i, bool best) {
    const bool wins = best ? (k > bk || (k == bk && i < bi)) : (k < bk || (k == bk && i > bi));
    if (wins) { bk = k; bi = i; }
}
// Block-wide best (or worst) pair; every thread gets it.
__device__ void block_pick(u32& bk, int& bi, bool best, SampleShared& sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) take(bk, bi, __shfl_xor_sync(FULL, bk, o), __shfl_xor_sync(FULL, bi, o), best);
    __syncthreads();
    if (lane == 0) { sh.red_key[warp] = bk; sh.red_index[warp] = bi; }
    __syncthreads();
    bk = lane < warps ? sh.red_key[lane] : (best ? 0u : 0xffffffffu);
    bi = lane < warps ? sh.red_index[lane] : (best ? NO_INDEX : -1);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) take(bk, bi, __shfl_xor_sync(FULL, bk, o), __shfl_xor_sync(FULL, bi, o), best);
}
__device__ u64 block_sum_u64(u64 v, SampleShared& sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    __syncthreads();
    if (lane == 0) sh.red64[warp] = v;
    __syncthreads();
    v = lane < warps ? sh.red64[lane] : 0ull;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}
__device__ int block_sum_int(int v, SampleShared& sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    __syncthreads();
    if (lane == 0) sh.red_count[warp] = v;
    __syncthreads();
    v = lane < warps ? sh.red_count[lane] : 0;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

// Warp 0: walking the buckets from 255 down, the first d at which the running total reaches `target`, and the total
// of the buckets above it (bucket 0 when none does). Lanes sum 8 buckets each, scan, and the lane where the target
// falls walks its own 8.
template <typename T> __device__ void find_bucket(const T* hist, T target, int& d_out, T& above_out) {
    const int lane = threadIdx.x & 31;
    T local = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) local += hist[255 - 8 * lane - j];
    T incl = local;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const T y = __shfl_up_sync(FULL, incl, o);
        if (lane >= o) incl += y;
    }
    const u32 hit = __ballot_sync(FULL, incl >= target);
    int d = 0;
    T above = __shfl_sync(FULL, incl, 31) - hist[0];
    if (hit) {
        const int l = __ffs(hit) - 1;
        if (lane == l) {
            T acc = incl - local;
            for (int j = 0; j < 8; ++j) {
                d = 255 - 8 * l - j;
                if (acc + hist[d] >= target) break;
                acc += hist[d];
            }
            above = acc;
        }
        d = __shfl_sync(FULL, d, l);
        above = __shfl_sync(FULL, above, l);
    }
    d_out = d;
    above_out = above;
}

// The index of the j-th (1-based) lowest-index element with `key` inside `limit` (the caller knows it exists).
__device__ int tie_index(const Row& row, u32 key, int j, Cut limit, SampleShared& sh) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
    int taken = 0;
    for (int c0 = 0; c0 < row.n; c0 += blockDim.x) {
        const int c = c0 + tid;
        bool eq = false;
        if (c < row.n) {
            const u32 k = sort_key(row[c]);
            eq = k == key && kept_by(k, c, limit);
        }
        const u32 ballot = __ballot_sync(FULL, eq);
        if (lane == 0) sh.red_count[warp] = __popc(ballot);
        __syncthreads();
        int before = 0, total = 0;
        for (int w = 0; w < warps; ++w) {
            before += w < warp ? sh.red_count[w] : 0;
            total += sh.red_count[w];
        }
        if (eq && taken + before + __popc(ballot & ((1u << lane) - 1u)) + 1 == j) sh.s_index = c;
        taken += total;
        __syncthreads();
        if (taken >= j) break;
    }
    return sh.s_index;
}

// The cut keeping the k largest elements of the row (1 <= k < n).
__device__ Cut select_top(const Row& row, int k, SampleShared& sh) {
    const int tid = threadIdx.x;
    u32 prefix = 0, mask = 0, remaining = (u32)k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = tid; i < 256; i += blockDim.x) sh.hist[i] = 0;
        __syncthreads();
        for (int c = tid; c < row.n; c += blockDim.x) {
            const u32 key = sort_key(row[c]);
            if ((key & mask) == prefix) atomicAdd(&sh.hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (tid < 32) {
            int d;
            u32 above;
            find_bucket<u32>(sh.hist, remaining, d, above);
            if (tid == 0) {
                sh.s_remaining = remaining - above;
                sh.s_key = prefix | ((u32)d << shift);
                sh.s_ties = sh.hist[d];
            }
        }
        __syncthreads();
        prefix = sh.s_key;
        remaining = sh.s_remaining;
        mask |= 255u << shift;
    }
    // After the last digit the bucket holds exactly the elements equal to the k-th: `ties` of them, `remaining` kept.
    const u32 ties = sh.s_ties;
    Cut cut;
    cut.key = prefix;
    cut.index = remaining >= ties ? NO_INDEX : tie_index(row, prefix, (int)remaining, keep_all(), sh);
    return cut;
}

// Fixed-point probability mass (weights exp((l − m)·scale)) of the elements inside `limit`.
__device__ u64 mass_within(const Row& row, float m, float scale, Cut limit, SampleShared& sh) {
    u64 s = 0;
    for (int c = threadIdx.x; c < row.n; c += blockDim.x) {
        const float v = row[c];
        if (kept_by(sort_key(v), c, limit)) s += fixed_weight(v, m, scale);
    }
    return block_sum_u64(s, sh);
}

// Top-p: walking the elements inside `limit` in order, the cut at the first where the running mass reaches `target`.
__device__ Cut select_mass(const Row& row, float m, float scale, Cut limit, u64 target, SampleShared& sh) {
    const int tid = threadIdx.x;
    u32 prefix = 0, mask = 0;
    u64 remaining = target;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = tid; i < 256; i += blockDim.x) sh.mass[i] = 0;
        __syncthreads();
        for (int c = tid; c < row.n; c += blockDim.x) {
            const float v = row[c];
            const u32 key = sort_key(v);
            if ((key & mask) == prefix && kept_by(key, c, limit)) {
                const u64 w = fixed_weight(v, m, scale);
                if (w) atomicAdd((unsigned long long*)&sh.mass[(key >> shift) & 255u], (unsigned long long)w);
            }
        }
        __syncthreads();
        if (tid < 32) {
            int d;
            u64 above;
            find_bucket<u64>(sh.mass, remaining, d, above);
            if (tid == 0) {
                sh.s_mass_remaining = remaining - above;
                sh.s_key = prefix | ((u32)d << shift);
                sh.s_mass_bucket = sh.mass[d];
            }
        }
        __syncthreads();
        prefix = sh.s_key;
        remaining = sh.s_mass_remaining;
        mask |= 255u << shift;
    }
    // The last bucket holds the elements equal to the cut value inside `limit`, all of one weight: take as many
    // (lowest index first) as the remaining mass needs. The bucket reaches the target, so its weight is not 0.
    const u64 bucket = sh.s_mass_bucket;
    const u64 w = fixed_weight(key_value(prefix), m, scale);
    const u64 ties = w ? bucket / w : 1;
    u64 need = w ? (remaining + w - 1) / w : 1;
    if (need < 1) need = 1;
    Cut cut;
    cut.key = prefix;
    cut.index = need >= ties ? NO_INDEX : tie_index(row, prefix, (int)need, limit, sh);
    return cut;
}

__global__ void __launch_bounds__(SAMPLE_THREADS) sample(SampleParams p) {
    __shared__ SampleShared sh;
    const int r = blockIdx.x, tid = threadIdx.x;
    const int slot = p.row_slots ? ((const int*)p.row_slots)[r] : r;
    const SampleRowParams rp = ((const SampleRowParams*)p.params)[slot];
    SampleRowState* state = (SampleRowState*)p.state + slot;
    const u64 step = state->step;

    Row row;
    row.x = (const float*)p.logits + (long long)r * p.logits_stride;
    row.n = p.vocab;
    const bool repetition = p.recent_counts && rp.repeat_penalty != 1.f && rp.repeat_last_n != 0;
    const bool presence = p.counts && (rp.presence_penalty != 0.f || rp.frequency_penalty != 0.f);
    row.recent_counts = repetition ? (const int*)p.recent_counts + (long long)slot * p.vocab : nullptr;
    row.counts = presence ? (const int*)p.counts + (long long)slot * p.vocab : nullptr;
    row.repeat = rp.repeat_penalty;
    row.presence = rp.presence_penalty;
    row.frequency = rp.frequency_penalty;

    // 1. The top element: greedy's answer, and the maximum the weights are relative to.
    u32 top_key = 0;
    int top = NO_INDEX;
    for (int c = tid; c < row.n; c += blockDim.x) take(top_key, top, sort_key(row[c]), c, true);
    block_pick(top_key, top, true, sh);
    const float m = key_value(top_key);

    int chosen = top, kept = 1, last = top;
    if (rp.temperature > 0.f && m > neg_inf()) {
        const float inv_t = 1.f / rp.temperature;
#ifdef KILN_BREAK
        const float cut_scale = inv_t;
#else
        const float cut_scale = 1.f;
#endif
        // 2. Top-k.
        Cut kcut = keep_all(), pcut = keep_all();
        if (rp.top_k > 0 && rp.top_k < row.n) kcut = select_top(row, rp.top_k, sh);
        // 3. Top-p over the top-k set.
        if (rp.top_p <= 0.f) {
            pcut.key = top_key;
            pcut.index = top;
        } else if (rp.top_p < 1.f) {
            const u64 z = mass_within(row, m, cut_scale, kcut, sh);
            u64 target = (u64)ceil((double)rp.top_p * (double)z);
            if (target < 1) target = 1;
            if (target > z) target = z;
            pcut = select_mass(row, m, cut_scale, kcut, target, sh);
        }
        // 4. Min-p (the top element always stays), 5. the draw over what is left.
        const u64 mix = splitmix64(rp.seed ^ splitmix64(step));
        u32 best_key = 0, worst_key = 0xffffffffu;
        int best = NO_INDEX, worst = -1, count = 0;
        for (int c = tid; c < row.n; c += blockDim.x) {
            const float v = row[c];
            const u32 key = sort_key(v);
            if (!kept_by(key, c, kcut) || !kept_by(key, c, pcut)) continue;
            if (!(expf((v - m) * cut_scale) >= rp.min_p) && c != top) continue;
            ++count;
            take(worst_key, worst, key, c, false);
            const float gumbel = -logf(-logf(token_uniform(mix, c)));
            take(best_key, best, sort_key((v - m) * inv_t + gumbel), c, true);
        }
        block_pick(best_key, best, true, sh);
        block_pick(worst_key, worst, false, sh);
        kept = block_sum_int(count, sh);
        chosen = best;
        last = worst;
    }

    // Log-probabilities: log-softmax of the penalized logits at temperature 1 over the whole row.
    // Rows of the log-probability buffers are 1 + top_logprobs and top_logprobs long; a vocabulary smaller than
    // top_logprobs fills only the first n_top.
    const int lp_stride = p.top_logprobs;
    const int n_top = p.logprobs ? min(min(p.top_logprobs, TOP_LOGPROBS_MAX), row.n) : 0;
    float log_z = 0.f;
    if (p.logprobs && m > neg_inf()) {
        const u64 z = mass_within(row, m, 1.f, keep_all(), sh);
        log_z = (float)(log((double)z) - 40.0 * 0.69314718055994530942);
    }
    if (n_top > 0) {
        const Cut tcut = n_top < row.n ? select_top(row, n_top, sh) : keep_all();
        if (tid == 0) sh.s_slots = 0;
        __syncthreads();
        for (int c = tid; c < row.n; c += blockDim.x) {
            const float v = row[c];
            if (kept_by(sort_key(v), c, tcut)) {
                const int s = atomicAdd(&sh.s_slots, 1);
                if (s < TOP_LOGPROBS_MAX) { sh.top_val[s] = v; sh.top_idx[s] = c; }
            }
        }
        __syncthreads();
        if (tid < n_top) {
            const float v = sh.top_val[tid];
            const int c = sh.top_idx[tid];
            const u32 k = sort_key(v);
            int rank = 0;
            for (int j = 0; j < n_top; ++j) {
                const u32 kj = sort_key(sh.top_val[j]);
                rank += kj > k || (kj == k && sh.top_idx[j] < c);
            }
            ((int*)p.top_ids)[(long long)r * lp_stride + rank] = c;
            ((float*)p.logprobs)[(long long)r * (1 + lp_stride) + 1 + rank] = m > neg_inf() ? v - m - log_z : neg_inf();
        }
    }
    __syncthreads();   // every read of the counts is done before they change

    if (tid == 0) {
        ((int*)p.out)[r] = chosen;
        if (p.logprobs) ((float*)p.logprobs)[(long long)r * (1 + lp_stride)] = m > neg_inf() ? row[chosen] - m - log_z : neg_inf();
        if (p.support) {
            ((int*)p.support)[2 * r] = kept;
            ((int*)p.support)[2 * r + 1] = last;
        }
        if (p.counts) ((int*)p.counts)[(long long)slot * p.vocab + chosen] += 1;
        if (p.recent_counts && rp.repeat_last_n != 0) {
            int* window = (int*)p.recent_counts + (long long)slot * p.vocab;
            const int n = min(rp.repeat_last_n, p.recent_capacity);
            if (rp.repeat_last_n > 0 && p.recent && n > 0) {
                int* ring = (int*)p.recent + (long long)slot * p.recent_capacity;
                int pos = state->recent_pos;
                if (pos < 0 || pos >= n) pos = 0;
                const int old = ring[pos];
                if (old >= 0 && old < p.vocab) window[old] -= 1;
                ring[pos] = chosen;
                window[chosen] += 1;
                state->recent_pos = (pos + 1) % n;
            } else if (rp.repeat_last_n < 0) {
                window[chosen] += 1;
            }
        }
        state->step = step + 1;
    }
}

}  // namespace kiln
