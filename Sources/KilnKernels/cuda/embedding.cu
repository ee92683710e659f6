// Embedding gather: out[t, :] = table[ids[t] - vocab_start, :], converted to the activation type.
// One block per token; 16-byte packs when the row length is a multiple of 8. An id outside the
// vocabulary writes NaN (the host validates token ids; NaN makes a slip visible, never silent).
// The table may hold a slice of the vocabulary, rows [vocab_start, vocab_start + vocab_count) (a tensor-parallel
// rank's): an id of the vocabulary outside the slice writes a zero row, and the all-reduce over the ranks adds the
// one rank's row. The whole vocabulary (vocab_start 0, vocab_count vocab) is the plain lookup.
#include "kiln.cuh"

namespace kiln {

struct EmbeddingParams {
    u64 table;   // TTable [vocab, dim]
    u64 ids;     // int32 [tokens]
    u64 out;     // TOut [tokens, dim]
    int tokens, dim, vocab;
    int vocab_start, vocab_count;   // the rows the table holds: ids [vocab_start, vocab_start + vocab_count)
};

template <typename TTable, typename TOut> __global__ void __launch_bounds__(256) embedding(EmbeddingParams p) {
    const int t = blockIdx.x;
    const int id = ((const int*)p.ids)[t];
    const long long dst = (long long)t * p.dim;
    if (id < 0 || id >= p.vocab) {
        for (int c = threadIdx.x; c < p.dim; c += blockDim.x) store<TOut>(p.out, dst + c, __int_as_float(0x7fc00000));
        return;
    }
    const int row = id - p.vocab_start;
    if (row < 0 || row >= p.vocab_count) {
        for (int c = threadIdx.x; c < p.dim; c += blockDim.x) store<TOut>(p.out, dst + c, 0.0f);
        return;
    }
    const long long src = (long long)row * p.dim;
    if (p.dim % 8 == 0 && aligned16(p.table) && aligned16(p.out)) {
        for (int j = threadIdx.x; j < p.dim / 8; j += blockDim.x) store8<TOut>(p.out, dst + 8LL * j, load8<TTable>(p.table, src + 8LL * j));
    } else {
        for (int c = threadIdx.x; c < p.dim; c += blockDim.x) store<TOut>(p.out, dst + c, load<TTable>(p.table, src + c));
    }
}

}  // namespace kiln
