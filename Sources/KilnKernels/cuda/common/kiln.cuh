// kiln.cuh — the one header every Kiln kernel includes.
//
// Why no CUDA headers: NVRTC does not find cuda_fp16.h/cuda_bf16.h without the toolkit's include
// directories (and the PyPI NVRTC used for CPU-only compiles ships none), so the kernels define the
// little they need here: bf16/f16 as 16-bit storage types converted through bit operations and
// inline PTX `cvt`, 8-element packs moved with 16-byte loads, and warp/block reductions. NVRTC
// gets this file as an in-memory header, so compiles need no include paths at all.
//
// Kernel parameters: every kernel takes ONE struct of u64 device addresses, ints and floats; the
// Swift launcher declares the same struct in the same order (plain C layout on both sides). The
// tensor-core kernels (gemm_*, attention*) list the same kinds of fields as separate parameters —
// typed pointers (const bf16*), ints, kiln::Epilogue, tensor maps — in one C layout the launcher's
// Params struct mirrors field for field.
#pragma once

namespace kiln {

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;

// The one bf16 type of every kernel: its raw 16 bits (what the tensor-core kernels move, shift and pack).
// f16 is a tagged struct, so overloads and templates (to_float, from_float<T>, load8<T>) tell the two apart.
typedef u16 bf16;
struct f16 { u16 bits; };
__device__ __forceinline__ u16 bits_of(bf16 x) { return x; }
__device__ __forceinline__ u16 bits_of(f16 x) { return x.bits; }

// What a decode GEMM (gemm_splitk, gemm_stream, gemm_swapab) writes: its `epi` parameter. GemmSplitK.Epilogue in
// Swift has the same names and values (a test reads them from this text), so keep both in step.
enum class Epilogue : int {
    bf16 = 0,     // Y bf16 [M, N]
    f32 = 1,      // Y fp32 [M, N]
    swiglu = 2,   // Y bf16 [M, N/2] = silu(gate)·up, W's gate/up rows interleaved per 16-row tile, both rounded to bf16 first
};

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __uint_as_float(((u32)x) << 16); }
__device__ __forceinline__ float to_float(f16 x) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
    return f;
}

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
// Round to nearest even, as the CPU reference (KilnCore floatToBF16 / floatToHalf) does.
template <> __device__ __forceinline__ bf16 from_float<bf16>(float x) {
    bf16 r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
    return r;
}
template <> __device__ __forceinline__ f16 from_float<f16>(float x) {
    f16 r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(x));
    return r;
}

template <typename T> __device__ __forceinline__ float load(u64 base, long long i) { return to_float(((const T*)base)[i]); }
template <typename T> __device__ __forceinline__ void store(u64 base, long long i, float v) { ((T*)base)[i] = from_float<T>(v); }

// Eight consecutive elements as floats, moved with 16-byte loads/stores (one for 2-byte types, two
// for f32). The address must be 16-byte aligned: callers take this path only when the row length
// is a multiple of 8 and the base addresses are aligned, and fall back to scalar code otherwise.
struct Pack8 { float v[8]; };

__device__ __forceinline__ void unpack2(u32 w, float& a, float& b, bf16) {
    a = __uint_as_float(w << 16);
    b = __uint_as_float(w & 0xffff0000u);
}
__device__ __forceinline__ void unpack2(u32 w, float& a, float& b, f16) {
    f16 lo, hi;
    lo.bits = (u16)(w & 0xffff);
    hi.bits = (u16)(w >> 16);
    a = to_float(lo);
    b = to_float(hi);
}
template <typename T> __device__ __forceinline__ u32 pack2(float a, float b) {
    return (u32)bits_of(from_float<T>(a)) | ((u32)bits_of(from_float<T>(b)) << 16);
}

// The same 8 elements still in storage form (16 bytes for 2-byte types, 32 for f32): half the
// registers of a Pack8 when a kernel keeps data in flight across a barrier, unpacked when used.
template <typename T> struct Raw8 { uint4 a; };
template <> struct Raw8<float> { float4 a, b; };

template <typename T> __device__ __forceinline__ Raw8<T> load_raw8(u64 base, long long i) {
    Raw8<T> r;
    r.a = *(const uint4*)((const T*)base + i);
    return r;
}
template <> __device__ __forceinline__ Raw8<float> load_raw8<float>(u64 base, long long i) {
    Raw8<float> r;
    const float4* q = (const float4*)((const float*)base + i);
    r.a = q[0]; r.b = q[1];
    return r;
}
template <typename T> __device__ __forceinline__ void store_raw8(u64 base, long long i, const Raw8<T>& r) {
    *(uint4*)((T*)base + i) = r.a;
}
template <> __device__ __forceinline__ void store_raw8<float>(u64 base, long long i, const Raw8<float>& r) {
    float4* q = (float4*)((float*)base + i);
    q[0] = r.a; q[1] = r.b;
}
template <typename T> __device__ __forceinline__ Pack8 unpack8(const Raw8<T>& r) {
    Pack8 p;
    unpack2(r.a.x, p.v[0], p.v[1], T()); unpack2(r.a.y, p.v[2], p.v[3], T());
    unpack2(r.a.z, p.v[4], p.v[5], T()); unpack2(r.a.w, p.v[6], p.v[7], T());
    return p;
}
template <> __device__ __forceinline__ Pack8 unpack8<float>(const Raw8<float>& r) {
    Pack8 p;
    p.v[0] = r.a.x; p.v[1] = r.a.y; p.v[2] = r.a.z; p.v[3] = r.a.w;
    p.v[4] = r.b.x; p.v[5] = r.b.y; p.v[6] = r.b.z; p.v[7] = r.b.w;
    return p;
}
template <typename T> __device__ __forceinline__ Raw8<T> pack8(const Pack8& p) {
    Raw8<T> r;
    r.a.x = pack2<T>(p.v[0], p.v[1]); r.a.y = pack2<T>(p.v[2], p.v[3]);
    r.a.z = pack2<T>(p.v[4], p.v[5]); r.a.w = pack2<T>(p.v[6], p.v[7]);
    return r;
}
template <> __device__ __forceinline__ Raw8<float> pack8<float>(const Pack8& p) {
    Raw8<float> r;
    r.a = make_float4(p.v[0], p.v[1], p.v[2], p.v[3]);
    r.b = make_float4(p.v[4], p.v[5], p.v[6], p.v[7]);
    return r;
}
template <typename T> __device__ __forceinline__ Pack8 load8(u64 base, long long i) { return unpack8<T>(load_raw8<T>(base, i)); }
template <typename T> __device__ __forceinline__ void store8(u64 base, long long i, const Pack8& p) { store_raw8<T>(base, i, pack8<T>(p)); }

// Programmatic dependent launch (PDL): when the launcher sets the PROGRAMMATIC_STREAM_SERIALIZATION
// attribute, a kernel may start while the previous kernel on the stream is still running.
// pdl_wait() blocks until that kernel has completed and its writes are visible; it must come before
// reading the previous kernel's output and before writing anything it may still read. pdl_trigger()
// lets the NEXT kernel launch (once every block of this one has triggered or exited). Both are no-ops
// in a kernel launched without the attribute, and compile to nothing below sm_90.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }
__device__ __forceinline__ bool aligned16(u64 a) { return (a & 15) == 0; }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide sum/max; every thread gets the result. `scratch` holds 32 floats of shared memory.
// The leading barrier lets callers reuse the same scratch for consecutive reductions.
template <bool IS_MAX> __device__ __forceinline__ float block_reduce(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = IS_MAX ? warp_max(v) : warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = lane < warps ? scratch[lane] : (IS_MAX ? neg_inf() : 0.0f);
    r = IS_MAX ? warp_max(r) : warp_sum(r);
    return r;
}
__device__ __forceinline__ float block_sum(float v, float* s) { return block_reduce<false>(v, s); }
__device__ __forceinline__ float block_max(float v, float* s) { return block_reduce<true>(v, s); }

// FP8 activation quantization of one 128-column block held by a warp, 4 values per lane (lane l: columns 4l…4l+3; zeros
// past the row): s = absmax / 448 over the warp, and the lane's codes e4m3(v / s) — IEEE division, as transformers'
// act_quant and the CPU reference divide; round to nearest even with saturation — packed little-endian (0 when s = 0,
// an all-zero block). Shared by gemm_fp8.cu's quantizer and swiglu.cu's fused one, so they agree bit for bit.
__device__ __forceinline__ u32 e4m3_block_codes(const float (&v)[4], float& s) {
    s = warp_max(fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])))) / 448.f;
    unsigned short lo = 0, hi = 0;
    if (s > 0.f) {
        // cvt …e4m3x2.f32 d, a, b puts a in the upper byte and b in the lower one.
        asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(lo) : "f"(v[1] / s), "f"(v[0] / s));
        asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(hi) : "f"(v[3] / s), "f"(v[2] / s));
    }
    return (u32)lo | ((u32)hi << 16);
}

}  // namespace kiln
