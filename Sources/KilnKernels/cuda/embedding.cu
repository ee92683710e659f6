// Embedding gather: out[t, :] = table[ids[t], :], converted to the activation type.
// One block per token; 16-byte packs when the row length is a multiple of 8. An id outside the
// vocabulary writes NaN (the host validates token ids; NaN makes a slip visible, never silent).
#include "kiln.cuh"

namespace kiln {

struct EmbeddingParams {
    u64 table;   // TTable [vocab, dim]
    u64 ids;     // int32 [tokens]
    u64 out;     // TOut [tokens, dim]
    int tokens, dim, vocab;
};

template <typename TTable, typename TOut> __global__ void __launch_bounds__(256) embedding(EmbeddingParams p) {
    const int t = blockIdx.x;
    const int id = ((const int*)p.ids)[t];
    const long long dst = (long long)t * p.dim;
    if (id < 0 || id >= p.vocab) {
        for (int c = threadIdx.x; c < p.dim; c += blockDim.x) store<TOut>(p.out, dst + c, __int_as_float(0x7fc00000));
        return;
    }
    const long long src = (long long)id * p.dim;
    if (p.dim % 8 == 0 && aligned16(p.table) && aligned16(p.out)) {
        for (int j = threadIdx.x; j < p.dim / 8; j += blockDim.x) store8<TOut>(p.out, dst + 8LL * j, load8<TTable>(p.table, src + 8LL * j));
    } else {
        for (int c = threadIdx.x; c < p.dim; c += blockDim.x) store<TOut>(p.out, dst + c, load<TTable>(p.table, src + c));
    }
}

}  // namespace kiln
