// rope_cache.cu — the attention prologue of one layer, fused: optional q/k/v bias (qwen2), optional
// per-head RMSNorm of q and k (qwen3), RoPE on q (in place in the fused qkv rows) and k, and the write of
// k and v into the static KV cache.
//
// Why fused: in decode every one of these is a few KB of work; separate launches would cost more
// in launch latency (≈0.6 µs each inside a graph, ×32 layers) than they move in bytes.
//
// Layouts (bf16):
//   qkv    [rows, ldqkv]   row r = [q (Hq·D) | k (Hkv·D) | v (Hkv·D)], ldqkv ≥ (Hq + 2·Hkv)·D
//   bias   [(Hq + 2·Hkv)·D] or 0 (no bias)
//   kcache, vcache [B, Hkv, maxS, D]
// Row r belongs to sequence seq = seqOffset + r / tokensPerSeq at absolute position
//   pos = positions[seq] + r % tokensPerSeq      (positions: int32 [B] on the device, so a
//   captured decode graph reads the current position at replay time).
// The paged variants (`_paged`, the server's cache) take each row's place from the device instead:
//   seq = row_seq[r] (the row's sequence in this step's batch), pos = row_pos[r], and write into a pool of blocks
//   kcache, vcache [blocks, Hkv, page, D] through the sequence's block table: position pos of sequence seq is
//   row pos % page of block table[seq · table_stride + pos / page].
// Angles: pos · invFreq[i] in f32 with accurate sincosf (long contexts make angles large).
#include "kiln.cuh"

namespace kiln {

struct RoPECacheParams {
    u64 qkv, bias, positions, inv_freq, kcache, vcache;
    int rows, tokens_per_seq, seq_offset, hq, hkv, head_dim, ldqkv, max_seq;
};

// The paged cache's addressing (the server's; KVPages.swift).
struct KVPaging {
    u64 row_seq, row_pos;   // int32 [rows]: each row's sequence (index into the table) and position
    u64 table;              // int32 [sequences, table_stride]: block ids
    int table_stride, page;
};

// Where the rows of the static cache go: sequence and position from the launch shape, rows [B, Hkv, maxS, D].
struct StaticPlace {
    const RoPECacheParams& p;
    __device__ __forceinline__ void locate(int r, int& seq, int& pos) const {
        seq = p.seq_offset + r / p.tokens_per_seq;
        pos = ((const int*)p.positions)[seq] + r % p.tokens_per_seq;
    }
    __device__ __forceinline__ bf16* cache_row(u64 cache, int seq, int kvh, int pos) const {
        return (bf16*)cache + (((long long)seq * p.hkv + kvh) * p.max_seq + pos) * p.head_dim;
    }
};

// Where the rows of the paged cache go: sequence and position per row from the device, blocks through the table.
struct PagedPlace {
    const RoPECacheParams& p;
    const KVPaging& g;
    __device__ __forceinline__ void locate(int r, int& seq, int& pos) const {
        seq = ((const int*)g.row_seq)[r];
        pos = ((const int*)g.row_pos)[r];
    }
    __device__ __forceinline__ bf16* cache_row(u64 cache, int seq, int kvh, int pos) const {
        const int block = ((const int*)g.table)[(long long)seq * g.table_stride + pos / g.page];
        return (bf16*)cache + (((long long)block * p.hkv + kvh) * g.page + pos % g.page) * p.head_dim;
    }
};

// One thread per (row, head of q|k|v, rotation pair). PAIRING 0: (2i, 2i+1); 1: (i, i + D/2).
template <int PAIRING, class Place> __device__ __forceinline__ void rope_rows(const RoPECacheParams& p, const Place& place) {
    const int half = p.head_dim / 2;
    const int heads = p.hq + 2 * p.hkv;
    const long long total = (long long)p.rows * heads * half;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    const int i = (int)(idx % half);
    const int h = (int)((idx / half) % heads);
    const int r = (int)(idx / ((long long)half * heads));
    int seq, pos;
    place.locate(r, seq, pos);
    const int e0 = PAIRING == 0 ? 2 * i : i;
    const int e1 = PAIRING == 0 ? 2 * i + 1 : i + half;
    const long long col = (long long)h * p.head_dim;
    bf16* row = (bf16*)p.qkv + (long long)r * p.ldqkv;
    float x0 = to_float(row[col + e0]), x1 = to_float(row[col + e1]);
    if (p.bias) {
        // Round after the bias add, as a bf16 Linear with bias does.
        x0 = to_float(from_float<bf16>(x0 + to_float(((const bf16*)p.bias)[col + e0])));
        x1 = to_float(from_float<bf16>(x1 + to_float(((const bf16*)p.bias)[col + e1])));
    }
    if (h < p.hq + p.hkv) {
        float s, c;
        sincosf((float)pos * ((const float*)p.inv_freq)[i], &s, &c);
        const float y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
        x0 = y0; x1 = y1;
    }
    if (h < p.hq) {
        row[col + e0] = from_float<bf16>(x0);
        row[col + e1] = from_float<bf16>(x1);
        return;
    }
    const int kvh = h < p.hq + p.hkv ? h - p.hq : h - p.hq - p.hkv;
    bf16* cache = place.cache_row(h < p.hq + p.hkv ? p.kcache : p.vcache, seq, kvh, pos);
    cache[e0] = from_float<bf16>(x0);
    cache[e1] = from_float<bf16>(x1);
}

template <int PAIRING> __global__ void __launch_bounds__(256) rope_qkv_cache(RoPECacheParams p) {
    pdl_wait();      // PDL (kiln.cuh): nothing is read before the previous kernel is done; then the next may launch
    pdl_trigger();
    rope_rows<PAIRING>(p, StaticPlace{p});
}

struct RoPECachePagedParams {
    RoPECacheParams rope;
    KVPaging paging;
};

template <int PAIRING> __global__ void __launch_bounds__(256) rope_qkv_cache_paged(RoPECachePagedParams p) {
    pdl_wait();
    pdl_trigger();
    rope_rows<PAIRING>(p.rope, PagedPlace{p.rope, p.paging});
}

// The qwen3 variant: q and k heads are RMS-normalized over head_dim with their [head_dim] weight before the
// rotation, as transformers' Qwen3RMSNorm does (f32 statistics; the normalized value rounded to bf16, times
// the bf16 weight, rounded again). The norm needs the whole head, so one warp owns a (row, head) and each
// lane up to 4 rotation pairs (head_dim ≤ 256). A separate kernel, so the Llama path is untouched.
struct RoPECacheQKNormParams {
    RoPECacheParams rope;
    u64 q_norm, k_norm;   // bf16 [head_dim] each
    float eps;
};

template <int PAIRING, class Place>
__device__ __forceinline__ void rope_rows_qknorm(const RoPECacheQKNormParams& params, const Place& place) {
    const RoPECacheParams& p = params.rope;
    const int half = p.head_dim / 2;
    const int heads = p.hq + 2 * p.hkv;
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (warp >= (long long)p.rows * heads) return;   // uniform per warp
    const int h = (int)(warp % heads);
    const int r = (int)(warp / heads);
    int seq, pos;
    place.locate(r, seq, pos);
    const long long col = (long long)h * p.head_dim;
    bf16* row = (bf16*)p.qkv + (long long)r * p.ldqkv;
    float x0[4], x1[4], ss = 0.f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int i = lane + 32 * j;
        x0[j] = 0.f; x1[j] = 0.f;
        if (i < half) {
            const int e0 = PAIRING == 0 ? 2 * i : i, e1 = PAIRING == 0 ? 2 * i + 1 : i + half;
            x0[j] = to_float(row[col + e0]); x1[j] = to_float(row[col + e1]);
            if (p.bias) {
                x0[j] = to_float(from_float<bf16>(x0[j] + to_float(((const bf16*)p.bias)[col + e0])));
                x1[j] = to_float(from_float<bf16>(x1[j] + to_float(((const bf16*)p.bias)[col + e1])));
            }
            ss += x0[j] * x0[j] + x1[j] * x1[j];
        }
    }
    const bool is_q = h < p.hq, is_k = !is_q && h < p.hq + p.hkv;
    if (is_q || is_k) {
        const float scale = rsqrtf(warp_sum(ss) / (float)p.head_dim + params.eps);
        const bf16* w = (const bf16*)(is_q ? params.q_norm : params.k_norm);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int i = lane + 32 * j;
            if (i < half) {
                const int e0 = PAIRING == 0 ? 2 * i : i, e1 = PAIRING == 0 ? 2 * i + 1 : i + half;
                const float n0 = to_float(from_float<bf16>(to_float(from_float<bf16>(x0[j] * scale)) * to_float(w[e0])));
                const float n1 = to_float(from_float<bf16>(to_float(from_float<bf16>(x1[j] * scale)) * to_float(w[e1])));
                float s, c;
                sincosf((float)pos * ((const float*)p.inv_freq)[i], &s, &c);
                x0[j] = n0 * c - n1 * s;
                x1[j] = n0 * s + n1 * c;
            }
        }
    }
    const int kvh = h < p.hq + p.hkv ? h - p.hq : h - p.hq - p.hkv;
    bf16* dst = is_q ? row + col : place.cache_row(is_k ? p.kcache : p.vcache, seq, kvh, pos);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int i = lane + 32 * j;
        if (i < half) {
            const int e0 = PAIRING == 0 ? 2 * i : i, e1 = PAIRING == 0 ? 2 * i + 1 : i + half;
            dst[e0] = from_float<bf16>(x0[j]);
            dst[e1] = from_float<bf16>(x1[j]);
        }
    }
}

template <int PAIRING> __global__ void __launch_bounds__(256) rope_qkv_cache_qknorm(RoPECacheQKNormParams params) {
    pdl_wait();
    pdl_trigger();
    rope_rows_qknorm<PAIRING>(params, StaticPlace{params.rope});
}

struct RoPECacheQKNormPagedParams {
    RoPECacheQKNormParams qk;
    KVPaging paging;
};

template <int PAIRING> __global__ void __launch_bounds__(256) rope_qkv_cache_qknorm_paged(RoPECacheQKNormPagedParams p) {
    pdl_wait();
    pdl_trigger();
    rope_rows_qknorm<PAIRING>(p.qk, PagedPlace{p.qk.rope, p.paging});
}

struct AdvanceParams {
    u64 positions, lens;
    int batch;
};

// After a decode step: every sequence moves one position on (the graph's last kernel).
__global__ void advance_decode(AdvanceParams p) {
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b < p.batch) {
        ((int*)p.positions)[b] += 1;
        ((int*)p.lens)[b] += 1;
    }
}

}  // namespace kiln
