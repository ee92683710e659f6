// Rotary position embedding, in place on q or k laid out [tokens, heads, head_dim] with a token
// stride (so q and k can be views into a fused qkv buffer).
//
// The inverse frequencies come from the host (ropeInverseFrequencies in KilnCore), which applies
// Llama 3.1's "llama3" scaling once; the kernel only computes angle = position * inv_freq[i] in
// f32 and rotates pairs with accurate sincosf (no fast-math: long contexts make angles large).
//
// Pairings (the template argument):
//   PAIR_INTERLEAVED = 0: (x[2i], x[2i+1])        — Meta's original checkpoints, GGUF
//   PAIR_HALVES      = 1: (x[i],  x[i + d/2])     — Hugging Face `rotate_half` checkpoints
#include "kiln.cuh"

namespace kiln {

struct RoPEParams {
    u64 x;            // T [tokens, heads, head_dim], token stride `token_stride` elements
    u64 positions;    // int32 [tokens]
    u64 inv_freq;     // f32 [head_dim / 2]
    int tokens, heads, head_dim, token_stride;
};

template <typename T, int PAIRING> __global__ void __launch_bounds__(256) rope(RoPEParams p) {
    const int half = p.head_dim / 2;
    const long long total = (long long)p.tokens * p.heads * half;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    const int i = (int)(idx % half);
    const int h = (int)((idx / half) % p.heads);
    const int t = (int)(idx / ((long long)half * p.heads));
    const float angle = (float)((const int*)p.positions)[t] * ((const float*)p.inv_freq)[i];
    float s, c;
    sincosf(angle, &s, &c);
    const long long base = (long long)t * p.token_stride + (long long)h * p.head_dim;
    const long long i0 = base + (PAIRING == 0 ? 2 * i : i);
    const long long i1 = base + (PAIRING == 0 ? 2 * i + 1 : i + half);
    const float x0 = load<T>(p.x, i0), x1 = load<T>(p.x, i1);
    store<T>(p.x, i0, x0 * c - x1 * s);
    store<T>(p.x, i1, x0 * s + x1 * c);
}

}  // namespace kiln
