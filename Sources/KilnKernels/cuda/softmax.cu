// Softmax over each row, in f32 arithmetic: y = exp(x - max) / sum(exp(x - max)).
// One block per row, three passes (max, sum, write); the row is re-read from L2. Rows are
// attention-score or vocabulary sized; x and y may alias.
#include "kiln.cuh"

namespace kiln {

struct SoftmaxParams {
    u64 x, y;
    int rows, cols;
};

template <typename T> __global__ void __launch_bounds__(512) softmax(SoftmaxParams p) {
    __shared__ float scratch[32];
    const long long base = (long long)blockIdx.x * p.cols;
    float m = neg_inf();
    for (int c = threadIdx.x; c < p.cols; c += blockDim.x) m = fmaxf(m, load<T>(p.x, base + c));
    m = block_max(m, scratch);
    float s = 0.f;
    for (int c = threadIdx.x; c < p.cols; c += blockDim.x) s += expf(load<T>(p.x, base + c) - m);
    const float inv = 1.0f / block_sum(s, scratch);
    for (int c = threadIdx.x; c < p.cols; c += blockDim.x) store<T>(p.y, base + c, expf(load<T>(p.x, base + c) - m) * inv);
}

}  // namespace kiln
