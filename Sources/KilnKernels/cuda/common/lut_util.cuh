// lut_util.cuh — gemm_lut.cu's register-level helpers: the code, scale and activation loads with their cache hints;
// each width's conversion of code bytes into the mma's bf16 pairs (4 and 3 bits: the shared pair-table lookup and the
// 3-bit word shuffle, and the fill of the shared pair table; 2 bits: prmt selects from scaled register tables; 8 bits:
// the exact integer conversion). gemm_lut.cu's header explains the layouts they serve. Needs kiln.cuh and
// attention_util.cuh first.
#pragma once

namespace kiln_lut {

using kiln_attn::U4;

// Codes are streamed once, as every decode GEMM's weights: kiln_attn::ld_weight (16 bytes, L1 skipped, the 256-byte span
// asked of L2); the 3- and 2-bit records' narrower loads below carry the same hints.
using kiln_attn::ld_weight;
// The 3- and 2-bit records: 8 bytes (A, or W0/W1) and 4 bytes (B) per lane, with ld_weight's hints.
__device__ __forceinline__ void ld_codes8(const unsigned char* p, unsigned& a, unsigned& b) {
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v2.u32 {%0,%1}, [%2];" : "=r"(a), "=r"(b) : "l"(p));
}
__device__ __forceinline__ unsigned ld_codes4(const unsigned char* p) {
    unsigned r;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.u32 %0, [%1];" : "=r"(r) : "l"(p));
    return r;
}
__device__ __forceinline__ unsigned ld_scale(const unsigned* p) {
    unsigned r;
    asm volatile("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(r) : "l"(p));
    return r;
}
// Activations are small and shared by every row tile: L1-cached.
__device__ __forceinline__ U4 ld_act(const kiln::bf16* p) { return kiln_attn::ld_nc(p); }

// Table lookup of byte I of `w`: `base` = the shared-memory address of this lane's copy of entry 0 (32-bit, so the
// address arithmetic stays 32-bit), entry b at base + 128·b. The byte is extracted by one prmt (byte I to the bottom,
// zeros above), so the address costs prmt + one shift-add. volatile: never hoisted above the barrier after the fill.
template <int I>
__device__ __forceinline__ unsigned lookup(unsigned base, unsigned w) {
    unsigned b, r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(b) : "r"(w), "r"(0u), "n"(0x4440 | I));
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(r) : "r"(base + (b << 7)));
    return r;
}

__device__ __forceinline__ unsigned prmt(unsigned a, unsigned sel) {
    unsigned r;
    asm("prmt.b32 %0, %1, %1, %2;" : "=r"(r) : "r"(a), "r"(sel));
    return r;
}
// d = a·b + c on bf16 pairs, one rounding (round to nearest even).
__device__ __forceinline__ unsigned fma_bf16x2(unsigned a, unsigned b, unsigned c) {
    unsigned d;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// Table entry b as the shared-memory table holds it (the dequantizer reads the 16 f32 values directly).
__device__ __forceinline__ unsigned lut_value(const float* table, unsigned b) {
    return kiln_attn::pack_bf16x2(__ldg(table + (b & 15u)), __ldg(table + (b >> 4)));
}

// The codes of 3-bit pair-table entry b (bits 0-1 / 2-3: low bits of the even / odd code, 4 / 5: their high bits).
__device__ __forceinline__ unsigned lut3_even(unsigned b) { return (b & 3u) | ((b >> 2) & 4u); }
__device__ __forceinline__ unsigned lut3_odd(unsigned b) { return ((b >> 2) & 3u) | ((b >> 3) & 4u); }
__device__ __forceinline__ unsigned lut3_value(const float* table, unsigned b) {
    return kiln_attn::pack_bf16x2(__ldg(table + lut3_even(b)), __ldg(table + lut3_odd(b)));
}

// The four pair-index words a lane looks up per chunk (byte i of word j = register a_i of mma j): the 4-bit codes as
// loaded; 3 bits: A0 = q.x, A1 = q.y, B = q.z combined as the header says (bits 6-7 of each byte are left as junk,
// which the 3-bit table ignores).
template <int BITS>
__device__ __forceinline__ void pair_words(const U4& q, unsigned (&w)[4]) {
    if constexpr (BITS == 4) {
        w[0] = q.x; w[1] = q.y; w[2] = q.z; w[3] = q.w;
    } else {
        static_assert(BITS == 3, "pair_words: 4 or 3 bits");
        constexpr unsigned lo = 0x0F0F0F0Fu;
        w[0] = (q.x & lo) | (q.z & ~lo);                 // high bits: B bits 4-5 of each byte
        w[1] = ((q.x >> 4) & lo) | ((q.z >> 2) & ~lo);   // B bits 6-7
        w[2] = (q.y & lo) | ((q.z << 4) & ~lo);          // B bits 0-1
        w[3] = ((q.y >> 4) & lo) | ((q.z << 2) & ~lo);   // B bits 2-3
    }
}

// The shared pair table (4 and 3 bits), 32 copies: entry b of lane l at word 32·b + l, so a warp's 32 lookups hit 32
// different banks. Declared by the kernel entry (once for both POST instantiations of gemm_lut) and filled here with
// 16-byte stores of one entry's value four times: 2048 stores per block at a compile-time stride, 8–16 per thread — a
// tenth of the instructions of filling it word by word (for a small matrix that fill was a fifth of the kernel's work).
template <int BITS, int WARPS>
__device__ __forceinline__ void fill_table(unsigned* lut_smem, const float* table) {
    static_assert(BITS == 4 || BITS == 3, "fill_table: 4 or 3 bits");
    const int lane = threadIdx.x & 31;
    const float v = __ldg(table + (lane & (BITS == 4 ? 15 : 7)));   // lane l holds table[l mod 2^BITS]
#pragma unroll 1
    for (int q = threadIdx.x; q < 256 * 8; q += 32 * WARPS) {
        const unsigned b = q >> 3;   // entry; q & 7 = which 4 of its 32 copies
        const int lo_src = BITS == 4 ? (b & 15) : lut3_even(b), hi_src = BITS == 4 ? (b >> 4) : lut3_odd(b);
        const float lo = __shfl_sync(0xffffffffu, v, lo_src), hi = __shfl_sync(0xffffffffu, v, hi_src);
        const unsigned e = kiln_attn::pack_bf16x2(lo, hi);
        *reinterpret_cast<U4*>(lut_smem + 4 * q) = U4{e, e, e, e};
    }
}

// prmt over the byte pool {a (bytes 0-3), b (bytes 4-7)}, selector bits 0-15.
__device__ __forceinline__ unsigned prmt2(unsigned a, unsigned b, unsigned sel) {
    unsigned r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
    return r;
}
// 2 bits: the pairs of selector group S of word w — slot (2w' + (S >> 1), 2·(S & 1)) of the top row from {top01, top23}
// and the next slot (bottom row) from {bottom01, bottom23}, each register pair = the row's 4 scaled table entries.
template <int S>
__device__ __forceinline__ void select2(unsigned w, unsigned top01, unsigned top23, unsigned bottom01, unsigned bottom23,
                                        unsigned& top, unsigned& bottom) {
    const unsigned x = (w >> (2 * S)) & 0x03030303u;                      // 4 codes, one per byte
    top = prmt2(top01, top23, x * 0x22u + 0x10101010u);                   // bytes 0, 1: {2c, 2c+1} per code
    bottom = prmt2(bottom01, bottom23, __umulhi(x, 0x220000u) + 0x1010u);  // bytes 2, 3, moved to bits 0-15
}
// The row's 4 entries times its group scale (+ offset), as two bf16 pairs: {entry 0, 1}, {entry 2, 3}.
__device__ __forceinline__ void scaled_table2(unsigned t01, unsigned t23, unsigned s, unsigned o, unsigned& e01, unsigned& e23) {
    e01 = fma_bf16x2(t01, s, o); e23 = fma_bf16x2(t23, s, o);
}

constexpr unsigned kNegZero2 = 0x80008000u;   // {−0, −0}: a·b + (−0) = a·b exactly, sign of zero included

// 8 bits: the two f16 halves of a scale word (row g low, row g+8 high) as f32, exactly.
__device__ __forceinline__ void half2_to_f32(unsigned w, float& lo, float& hi) {
    asm("{\n\t.reg .f16 l, h;\n\tmov.b32 {l, h}, %2;\n\tcvt.f32.f16 %0, l;\n\tcvt.f32.f16 %1, h;\n\t}" : "=f"(lo), "=f"(hi) : "r"(w));
}
// 8 bits: byte I of `w` (code c = q + 128) times the scale, exactly: prmt puts c into the low mantissa byte of 2^23
// (0x4B0000cc = 2^23 + c), the FADD of −(2^23 + 128) leaves q, the FMUL gives q·d (≤ 19 significant bits). _rn: never
// contracted into an fma (that would round (2^23 + c)·d).
template <int I>
__device__ __forceinline__ float int8_times(unsigned w, float d) {
    const float magic = __uint_as_float(prmt2(w, 0x4B000000u, 0x7650u | I));
    return __fmul_rn(__fadd_rn(magic, -8388736.0f), d);
}
// Bytes I (even column) and I+1 of `w` as the mma's bf16x2 register: bf16(q·d) each, one rounding (cvt.rn.bf16x2.f32).
template <int I>
__device__ __forceinline__ unsigned int8_pair(unsigned w, float d) {
    return kiln_attn::pack_bf16x2(int8_times<I>(w, d), int8_times<I + 1>(w, d));
}
// The lane's 8 code words of chunk u, tile tt (words 0-3 = mmas 0, 1; 4-7 = mmas 2, 3), and its rows' scales, as the
// 16 registers a[j][i] of mmas j = 0…3 (the header's "8 bits").
template <class Regs>
__device__ __forceinline__ void int8_fragments(const Regs& r, int u, int tt, unsigned (&a)[4][4]) {
    float d_top, d_bottom;
    half2_to_f32(r.s[u][tt], d_top, d_bottom);
    const unsigned words[8] = {r.q[u][tt].x, r.q[u][tt].y, r.q[u][tt].z, r.q[u][tt].w,
                               r.q_hi[u][tt].x, r.q_hi[u][tt].y, r.q_hi[u][tt].z, r.q_hi[u][tt].w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        a[j][0] = int8_pair<0>(words[2 * j], d_top);
        a[j][1] = int8_pair<2>(words[2 * j], d_bottom);
        a[j][2] = int8_pair<0>(words[2 * j + 1], d_top);
        a[j][3] = int8_pair<2>(words[2 * j + 1], d_bottom);
    }
}

}  // namespace kiln_lut
