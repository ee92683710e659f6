// rope_cache.cu — the attention prologue of one layer, fused: optional q/k/v bias (qwen2), RoPE on
// q (in place in the fused qkv rows) and k, and the write of k and v into the static KV cache.
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
// Angles: pos · invFreq[i] in f32 with accurate sincosf (long contexts make angles large).
#include "kiln.cuh"

namespace kiln {

struct RoPECacheParams {
    u64 qkv, bias, positions, inv_freq, kcache, vcache;
    int rows, tokens_per_seq, seq_offset, hq, hkv, head_dim, ldqkv, max_seq;
};

// One thread per (row, head of q|k|v, rotation pair). PAIRING 0: (2i, 2i+1); 1: (i, i + D/2).
template <int PAIRING> __global__ void __launch_bounds__(256) rope_qkv_cache(RoPECacheParams p) {
    pdl_wait();      // PDL (kiln.cuh): nothing is read before the previous kernel is done; then the next may launch
    pdl_trigger();
    const int half = p.head_dim / 2;
    const int heads = p.hq + 2 * p.hkv;
    const long long total = (long long)p.rows * heads * half;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    const int i = (int)(idx % half);
    const int h = (int)((idx / half) % heads);
    const int r = (int)(idx / ((long long)half * heads));
    const int seq = p.seq_offset + r / p.tokens_per_seq;
    const int pos = ((const int*)p.positions)[seq] + r % p.tokens_per_seq;
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
    bf16* cache = (bf16*)(h < p.hq + p.hkv ? p.kcache : p.vcache) + (((long long)seq * p.hkv + kvh) * p.max_seq + pos) * p.head_dim;
    cache[e0] = from_float<bf16>(x0);
    cache[e1] = from_float<bf16>(x1);
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
