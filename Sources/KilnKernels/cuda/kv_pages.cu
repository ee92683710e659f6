// kv_pages.cu — the server's paged KV cache outside the hot decode kernels.
//
// gather: one sequence's keys and values, scattered over blocks of the pool, copied into contiguous rows so that
// the prefill attention kernels (attention.cu, attention_hopper.cu, written for the static cache) can attend a prompt
// chunk to its whole cached prefix. Once per layer per prefill chunk: for a 2,000-token prefix of Llama-3-8B, 8 MB per
// layer, ~2 µs at copy bandwidth, against milliseconds of prefill GEMMs.
//
// Layouts (bf16):
//   kpool, vpool [blocks, Hkv, page, D]   position pos of the sequence: row pos % page of block table[pos / page]
//   table        int32 [ceil(len / page)] the sequence's block ids (its row of the step's table)
//   kout, vout   [Hkv, cap, D]            position pos of head h at (h · cap + pos) · D, pos < len <= cap
// D % 8 == 0; every row 16-byte aligned. One thread per 16 bytes; blockIdx.z: 0 keys, 1 values.
#include "kiln.cuh"

namespace kiln {

struct KVGatherParams {
    u64 kpool, vpool, table, kout, vout;
    int len, hkv, head_dim, page, cap;
};

__global__ void __launch_bounds__(256) kv_gather(KVGatherParams p) {
    const int chunks = p.head_dim / 8;   // 16-byte pieces per row
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)p.len * chunks) return;
    const int pos = (int)(i / chunks), c = (int)(i % chunks), h = blockIdx.y;
    const int block = ((const int*)p.table)[pos / p.page];
    const uint4* src = (const uint4*)((const bf16*)(blockIdx.z ? p.vpool : p.kpool)
                                      + (((long long)block * p.hkv + h) * p.page + pos % p.page) * p.head_dim) + c;
    uint4* dst = (uint4*)((bf16*)(blockIdx.z ? p.vout : p.kout) + ((long long)h * p.cap + pos) * p.head_dim) + c;
    *dst = *src;
}

}  // namespace kiln
