// Element type conversions between f32, bf16 and f16 (round to nearest even, like KilnCore's
// floatToBF16/floatToHalf). 8-element packs with 16-byte accesses when both sides are aligned.
#include "kiln.cuh"

namespace kiln {

struct ConvertParams {
    u64 x, y;
    long long n;
};

template <typename TIn, typename TOut> __global__ void __launch_bounds__(256) convert(ConvertParams p) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (aligned16(p.x) && aligned16(p.y)) {
        const long long packs = p.n / 8;
        for (; i < packs; i += stride) store8<TOut>(p.y, 8 * i, load8<TIn>(p.x, 8 * i));
        i = packs * 8 + (long long)blockIdx.x * blockDim.x + threadIdx.x;
    }
    for (; i < p.n; i += stride) store<TOut>(p.y, i, load<TIn>(p.x, i));
}

}  // namespace kiln
