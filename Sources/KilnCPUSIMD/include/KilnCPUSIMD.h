// Kiln's CPU int8 dot-product kernels (x86-64 VNNI), called from KilnCPU's BlockProducts.
// C rather than Swift because Swift cannot mark one function for an instruction set the rest of the module may not
// assume (AVX-VNNI / AVX512-VNNI): these are compiled per function for it and chosen at run time.
#ifndef KILN_CPU_SIMD_H
#define KILN_CPU_SIMD_H

#include <stdint.h>

/// Weight formats of the interleaved layout (`kiln_interleave_rows`): GGML's blocks of 32 elements.
typedef enum {
    KILN_INTERLEAVED_Q4_0 = 0,   // f16 d, 16 bytes of nibbles (value - 8)
    KILN_INTERLEAVED_Q4_1 = 1,   // f16 d, f16 m, 16 bytes of nibbles
    KILN_INTERLEAVED_Q8_0 = 2,   // f16 d, 32 int8
    KILN_INTERLEAVED_Q5_0 = 3,   // f16 d, 32 high bits, 16 bytes of nibbles (value - 16); stored as one byte per quant
    KILN_INTERLEAVED_Q5_1 = 4,   // f16 d, f16 m, 32 high bits, 16 bytes of nibbles; stored as one byte per quant
    KILN_INTERLEAVED_IQ4_NL = 5, // f16 d, 16 bytes of nibbles indexing ggml's kvalues_iq4nl
    KILN_INTERLEAVED_Q4_K = 6,   // 256-element super-blocks: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes
                                 // of nibbles; against Q8_K activations (d per 256, sums per 16)
    KILN_INTERLEAVED_Q6_K = 7,   // 256-element super-blocks: 128 B low nibbles, 64 B high bit pairs, int8 scales per
                                 // 16, f16 d; quants stored whole (0..63, one byte each); against Q8_K activations
} kiln_interleaved_format;

/// Which int8 dot-product instructions the kernels use on this CPU: 0 none (the caller keeps its own path),
/// 1 AVX-VNNI (256-bit VEX), 2 AVX512-VNNI with AVX512VL (the same 256-bit operations, EVEX-encoded, 32 registers).
int kiln_int8_dot_level(void);

/// Bytes of one interleaved record (eight rows × one block: 32 elements, or 256 for Q4_K and Q6_K) of `format`.
int kiln_interleaved_record_bytes(kiln_interleaved_format format);

/// Rewrites `rows` GGML rows of `blocks` blocks each (`row_bytes` apart, at `src`) into the interleaved layout at `dst`:
/// for every group of eight rows and every block, one record of the eight rows' scales (f16 d ×8, then f16 m ×8 for Q4_1)
/// and their quants arranged so that one 32-byte load holds four consecutive quants of each of the eight rows
/// (a 32-bit lane per row). 4-bit formats keep their nibbles (IQ4_NL's are looked up in the kernel); Q5_0/Q5_1 quants
/// are stored whole, one byte each; Q8_0 quants are stored plus 128 (unsigned); a last partial group is padded with
/// zero rows.
/// `dst` must hold ceil(rows/8) × blocks records.
void kiln_interleave_rows(kiln_interleaved_format format, const uint8_t *src, int64_t row_bytes, int rows, int blocks,
                          uint8_t *dst);

/// One product call: out[t × out_stride + r] = Σ_blocks (integer dot of row r and token t's int8 block) × d_w × d_a
/// (+ Q4_1's m_w × s_a), for rows [row_begin, row_end) and `tokens` tokens.
typedef struct {
    kiln_interleaved_format format;
    const uint8_t *records;   // [ceil(rows/8)][blocks] interleaved records
    int blocks;               // cols / 32 (Q4_K, Q6_K: cols / 256)
    int row_begin, row_end;
    const int8_t *q;          // [tokens][q_stride] activations quantized per block (natural order)
    int64_t q_stride;
    const float *d;           // [tokens][scale_stride] activation block scales (Q8_0/Q8_1: half-rounded; Q8_K: per 256)
    const float *sum_q;       // [tokens][sum_stride] Σ q per block (Q8_K: per 16 elements; exact small integers)
    const float *s;           // [tokens][scale_stride] llama.cpp's Q8_1 s (Q4_1 and Q5_1 only)
    int64_t scale_stride;
    int64_t sum_stride;
    int tokens;
    float *out;
    int64_t out_stride;
} kiln_int8_product;

/// Runs `p` with the instructions `kiln_int8_dot_level` reports; returns 0, or -1 where the level is 0 (nothing written).
int kiln_int8_product_run(const kiln_int8_product *p);

#endif
