// hopper_util.cuh — sm_90a PTX wrappers shared by gemm_hopper.cu, gemm_stream.cu and attention_hopper.cu (and the bench/ harnesses):
// shared-memory addresses, wgmma descriptors, mbarriers (init / arrive / parity wait / transaction bytes / cluster arrive), TMA tile
// loads (plain and multicast) and the wgmma fence / commit / wait group. Inline PTX
// only, so the kernels compile under NVRTC with no CUDA headers.
#pragma once
#include "kiln.cuh"

// Opaque CUtensorMap (cuda.h 13.x: 16 u64, alignas(128)); passed by value as a __grid_constant__ param.
struct __align__(128) KilnTensorMap {
    unsigned long long opaque[16];
};

namespace kiln_hopper {

using kiln::u64;
using kiln::u32;

__device__ __forceinline__ u32 smem_u32(const void* p) { return (u32)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void mbar_init(u32 bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(u32 bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
// Spins until the barrier's phase with this parity has completed.
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
    u32 done;
    do {
        asm volatile(
            "{\n.reg .pred p;\n"
            "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
            "selp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(bar), "r"(parity)
            : "memory");
    } while (!done);
}

// wgmma shared-memory matrix descriptor for a tile written by TMA with 128B swizzle (base 1024-aligned).
// K-major tiles: LBO unused (16), SBO = 1024 (the next 8 rows); moving 16 elements along K inside the 128-byte atom
// = +32 bytes on the start address. MN-major (imm-trans = 1): LBO = bytes between 64-element MN blocks, SBO = bytes
// between groups of 8 K rows (PTX ISA canonical layout ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO))).
__device__ __forceinline__ u64 sw128_desc(u32 addr, u32 lbo, u32 sbo) {
    return (u64)((addr & 0x3FFFF) >> 4) | ((u64)((lbo & 0x3FFFF) >> 4) << 16) |
           ((u64)((sbo & 0x3FFFF) >> 4) << 32) | (1ull << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
// ---- mbarrier (TMA transactions, clusters) ---------------------------------------------------
__device__ __forceinline__ void mbar_arrive_expect_tx(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
// Arrive on the mbarrier at the same shared offset in CTA `cta` of this cluster (may be this CTA).
__device__ __forceinline__ void mbar_arrive_cluster(u32 bar, u32 cta) {
    u32 remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(bar), "r"(cta));
    asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];" ::"r"(remote) : "memory");
}
__device__ __forceinline__ u32 cluster_ctarank() {
    u32 r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}

// ---- TMA -----------------------------------------------------------------------------------
__device__ __forceinline__ void tma_prefetch_desc(const void* tmap) {
    asm volatile("prefetch.tensormap [%0];" ::"l"((u64)tmap) : "memory");
}
// 2-D tile load: box at (c0 = inner/K coordinate, c1 = row coordinate) -> shared dst, completes on bar.
__device__ __forceinline__ void tma_load_2d(u32 dst, const void* tmap, u32 bar, int c0, int c1) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];"
        ::"r"(dst), "l"((u64)tmap), "r"(bar), "r"(c0), "r"(c1)
        : "memory");
}

// 3-D tile load: box at (c0, c1, c2) (innermost dimension first) -> shared dst, completes on bar.
__device__ __forceinline__ void tma_load_3d(u32 dst, const void* tmap, u32 bar, int c0, int c1, int c2) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], [%2];"
        ::"r"(dst), "l"((u64)tmap), "r"(bar), "r"(c0), "r"(c1), "r"(c2)
        : "memory");
}

// Same, multicast: the box lands at the same shared offset in every CTA of cta_mask, and completes
// transaction bytes on the mbarrier at the same offset in each of them.
__device__ __forceinline__ void tma_load_2d_mc(u32 dst, const void* tmap, u32 bar, int c0, int c1, unsigned short cta_mask) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
        " [%0], [%1, {%3, %4}], [%2], %5;"
        ::"r"(dst), "l"((u64)tmap), "r"(bar), "r"(c0), "r"(c1), "h"(cta_mask)
        : "memory");
}

// Compiler-level fence: uses of r after it cannot be hoisted above the preceding volatile asm (a wait).
__device__ __forceinline__ void reg_fence(float& r) { asm volatile("" : "+f"(r)::"memory"); }

}  // namespace kiln_hopper
