// attention_util.cuh — helpers shared by attention.cu (prefill), attention_decode.cu (decode) and gemm_splitk.cu:
// bf16 conversions, exp2, shared-memory addresses, cp.async, ldmatrix, mma.sync and cache-hinted loads,
// all as inline PTX so the kernels compile under NVRTC with no CUDA headers.
#pragma once
#include "kiln.cuh"   // kiln::bf16 (the raw 16 bits), kiln::Epilogue

namespace kiln_attn {


struct __align__(16) U4 { unsigned x, y, z, w; };

__device__ __forceinline__ float bf16_to_f32(kiln::bf16 h) { return __uint_as_float(((unsigned)h) << 16); }
__device__ __forceinline__ float bf_lo(unsigned u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf_hi(unsigned u) { return __uint_as_float(u & 0xffff0000u); }

// Round to nearest even; NaN stays NaN.
__device__ __forceinline__ kiln::bf16 f32_to_bf16(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (kiln::bf16)0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (kiln::bf16)(u >> 16);
}
// The decode GEMMs' fused SwiGLU epilogue (gemm_splitk, gemm_stream, gemm_swapab): the gate and up fp32 sums are
// rounded to bf16 first, as the unfused path's GEMM output is, then silu(gate)·up is rounded to bf16.
__device__ __forceinline__ kiln::bf16 swiglu_bf16(float gate_sum, float up_sum) {
    const float g = bf16_to_f32(f32_to_bf16(gate_sum)), u = bf16_to_f32(f32_to_bf16(up_sum));
    return f32_to_bf16(g / (1.0f + expf(-g)) * u);
}
// Two floats → packed bf16x2 (lo in bits 0..15), round to nearest even.
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ unsigned smem_addr(const void* p) {
    unsigned r;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
    return r;
}
// 16-byte async copy global → shared; zero-fills the destination when !valid.
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, bool valid) {
    const int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void mma16816(float (&c)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                         unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// Streamed once: skip L1.
__device__ __forceinline__ U4 ld_stream(const kiln::bf16* p) {
    U4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}
// The decode GEMMs' weights (gemm_splitk, gemm_fp8, gemm_lut): streamed once — skip L1, ask L2 for the whole 256-byte
// span. `volatile` keeps the loads where the source puts them, ahead of the previous step's mmas: without it the
// compiler sinks each load next to its mma and only ~3 loads are in flight per warp (seen in SASS). A template on the
// element type, not `const void*`: with void* the bf16 kernels' SASS moved (same instructions, other scheduling).
template <class T> __device__ __forceinline__ U4 ld_weight(const T* p) {
    U4 r;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
        : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}
__device__ __forceinline__ U4 ld_nc(const kiln::bf16* p) {
    U4 r;
    asm volatile("ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}
// Written by other blocks of this launch: read at L2 (L1 is not coherent).
__device__ __forceinline__ float ld_cg(const float* p) {
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
    return v;
}
__device__ __forceinline__ void st_global16(void* p, U4 v) {
    asm volatile("st.global.v4.u32 [%0], {%1,%2,%3,%4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w));
}

#define KILN_NEG_INF (__int_as_float(0xff800000))

// Programmatic dependent launch (same contract as kiln.cuh's pdl_wait/pdl_trigger): wait for the
// previous kernel before reading its output, then let the next kernel launch. No-ops in a kernel
// launched without the PDL attribute.
__device__ __forceinline__ void pdl_wait_then_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

}  // namespace kiln_attn
