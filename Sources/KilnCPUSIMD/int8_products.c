// Interleaving of GGML rows and the VNNI int8 products over them (KilnCPUSIMD.h).
#include "KilnCPUSIMD.h"
#include <string.h>

static int record_bytes(kiln_interleaved_format format) {
    switch (format) {
    case KILN_INTERLEAVED_Q4_0: return 16 + 128;     // d ×8, 8 rows × 16 bytes of nibbles
    case KILN_INTERLEAVED_Q4_1: return 32 + 128;     // d ×8, m ×8, nibbles
    case KILN_INTERLEAVED_Q8_0: return 16 + 256;     // d ×8, 8 rows × 32 quants
    case KILN_INTERLEAVED_Q5_0: return 16 + 256;     // d ×8, 8 rows × 32 five-bit quants in bytes
    case KILN_INTERLEAVED_Q5_1: return 32 + 256;     // d ×8, m ×8, quants in bytes
    case KILN_INTERLEAVED_IQ4_NL: return 16 + 128;   // d ×8, nibbles
    case KILN_INTERLEAVED_Q4_K: return 32 + 128 + 1024;   // d ×8, dmin ×8, scales [8][8], mins [8][8], 8 rows × 128 B
    case KILN_INTERLEAVED_Q6_K: return 16 + 128 + 2048;   // d ×8, scales [16][8], 8 rows × 256 quants
    }
    return 0;
}

/// Whether the format's record holds one byte per quant (else two nibbles per byte).
static int whole_bytes(kiln_interleaved_format f) {
    return f == KILN_INTERLEAVED_Q8_0 || f == KILN_INTERLEAVED_Q5_0 || f == KILN_INTERLEAVED_Q5_1;
}

/// Whether the format has a per-block minimum (Q4_1, Q5_1): the record's second half of the header.
static int has_min(kiln_interleaved_format f) { return f == KILN_INTERLEAVED_Q4_1 || f == KILN_INTERLEAVED_Q5_1; }

int kiln_interleaved_record_bytes(kiln_interleaved_format format) { return record_bytes(format); }

/// Bytes of one GGML block of `format` in the file.
static int source_block_bytes(kiln_interleaved_format format) {
    switch (format) {
    case KILN_INTERLEAVED_Q4_0: case KILN_INTERLEAVED_IQ4_NL: return 18;
    case KILN_INTERLEAVED_Q4_1: return 20;
    case KILN_INTERLEAVED_Q8_0: return 34;
    case KILN_INTERLEAVED_Q5_0: return 22;
    case KILN_INTERLEAVED_Q5_1: return 24;
    case KILN_INTERLEAVED_Q4_K: return 144;
    case KILN_INTERLEAVED_Q6_K: return 210;
    }
    return 0;
}

/// The 32-element formats: d (and m) at 2i (16 + 2i), then the quants after the header — nibble formats keep their
/// bytes (bytes 4m..4m+3 of qs hold quants 4m.. in the low nibbles and 16+4m.. in the high), whole-byte formats store
/// each quant in a byte (Q8_0 plus 128, Q5_0/Q5_1 with the fifth bit from qh).
static void put_block(kiln_interleaved_format format, const uint8_t *blk, uint8_t *r, int i) {
    const int header = has_min(format) ? 32 : 16;
    memcpy(r + 2 * i, blk, 2);                                  // d
    if (has_min(format)) memcpy(r + 16 + 2 * i, blk + 2, 2);    // m
    if (!whole_bytes(format)) {
        const uint8_t *qs = blk + (format == KILN_INTERLEAVED_Q4_1 ? 4 : 2);
        for (int m = 0; m < 4; m++) memcpy(r + header + 32 * m + 4 * i, qs + 4 * m, 4);
        return;
    }
    uint8_t q[32];
    if (format == KILN_INTERLEAVED_Q8_0) {
        for (int j = 0; j < 32; j++) q[j] = (uint8_t)((int8_t)blk[2 + j] + 128);
    } else {
        const int h = format == KILN_INTERLEAVED_Q5_1 ? 4 : 2;
        uint32_t qh;
        memcpy(&qh, blk + h, 4);
        const uint8_t *qs = blk + h + 4;
        for (int j = 0; j < 32; j++) {
            const uint8_t nibble = j < 16 ? qs[j] & 0xF : qs[j - 16] >> 4;
            q[j] = (uint8_t)(nibble | ((qh >> j) & 1) << 4);
        }
    }
    for (int m = 0; m < 8; m++) memcpy(r + header + 32 * m + 4 * i, q + 4 * m, 4);
}

/// Q4_K: d ×8 and dmin ×8 (f16), then the 6-bit scales and minimums unpacked to bytes (scales[s][i] at 32 + 8s + i,
/// mins[s][i] at 96 + 8s + i for sub-block s of row i; ggml's get_scale_min_k4), then the nibbles: for chunk c
/// (sub-blocks 2c and 2c+1, qs bytes 32c ..< 32c+32) and m = 0..7, 32 bytes whose lane i is row i's
/// qs[32c + 4m ..< 32c + 4m + 4] (low nibbles: elements 64c + 4m.., high: 64c + 32 + 4m..).
static void put_q4_k(const uint8_t *blk, uint8_t *r, int i) {
    memcpy(r + 2 * i, blk, 2);
    memcpy(r + 16 + 2 * i, blk + 2, 2);
    const uint8_t *sc = blk + 4;
    for (int j = 0; j < 8; j++) {
        uint8_t scale, min;
        if (j < 4) { scale = sc[j] & 63; min = sc[j + 4] & 63; }
        else { scale = (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4); min = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4); }
        r[32 + 8 * j + i] = scale;
        r[96 + 8 * j + i] = min;
    }
    const uint8_t *qs = blk + 16;
    for (int c = 0; c < 4; c++)
        for (int m = 0; m < 8; m++) memcpy(r + 160 + 256 * c + 32 * m + 4 * i, qs + 32 * c + 4 * m, 4);
}

/// Q6_K: d ×8 (f16), the int8 scales (scales[s][i] at 16 + 8s + i for the 16 elements 16s ..< 16s+16 of row i), then
/// the quants whole (0..63, ggml's dequantize_row_q6_K order): for s = 0..15 and m = 0..3, 32 bytes whose lane i is
/// row i's quants 16s + 4m ..< 16s + 4m + 4.
static void put_q6_k(const uint8_t *blk, uint8_t *r, int i) {
    const uint8_t *ql = blk, *qh = blk + 128;
    memcpy(r + 2 * i, blk + 208, 2);
    for (int s = 0; s < 16; s++) r[16 + 8 * s + i] = blk[192 + s];
    uint8_t q[256];
    for (int h = 0; h < 2; h++) {
        const uint8_t *l8 = ql + 64 * h, *h8 = qh + 32 * h;
        for (int l = 0; l < 32; l++) {
            q[128 * h + l] = (uint8_t)((l8[l] & 0xF) | ((h8[l] >> 0) & 3) << 4);
            q[128 * h + l + 32] = (uint8_t)((l8[l + 32] & 0xF) | ((h8[l] >> 2) & 3) << 4);
            q[128 * h + l + 64] = (uint8_t)((l8[l] >> 4) | ((h8[l] >> 4) & 3) << 4);
            q[128 * h + l + 96] = (uint8_t)((l8[l + 32] >> 4) | ((h8[l] >> 6) & 3) << 4);
        }
    }
    for (int k = 0; k < 64; k++) memcpy(r + 144 + 32 * k + 4 * i, q + 4 * k, 4);
}

void kiln_interleave_rows(kiln_interleaved_format format, const uint8_t *src, int64_t row_bytes, int rows, int blocks,
                          uint8_t *dst) {
    const int rec = record_bytes(format), block_bytes = source_block_bytes(format);
    for (int g = 0; g < (rows + 7) / 8; g++) {
        for (int b = 0; b < blocks; b++) {
            uint8_t *r = dst + ((int64_t)g * blocks + b) * rec;
            memset(r, 0, rec);   // rows past the end stay zero
            for (int i = 0; i < 8 && g * 8 + i < rows; i++) {
                const uint8_t *blk = src + (int64_t)(g * 8 + i) * row_bytes + (int64_t)b * block_bytes;
                switch (format) {
                case KILN_INTERLEAVED_Q4_K: put_q4_k(blk, r, i); break;
                case KILN_INTERLEAVED_Q6_K: put_q6_k(blk, r, i); break;
                default: put_block(format, blk, r, i); break;
                }
            }
        }
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

#define KILN_TARGET "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni"
#define KILN_DPBUSD _mm256_dpbusd_epi32
#define KILN_SUFFIX avx512vnni
#include "int8_product_body.inc"
#undef KILN_TARGET
#undef KILN_DPBUSD
#undef KILN_SUFFIX

#define KILN_TARGET "avx2,fma,f16c,avxvnni"
#define KILN_DPBUSD _mm256_dpbusd_avx_epi32
#define KILN_SUFFIX avxvnni
#include "int8_product_body.inc"
#undef KILN_TARGET
#undef KILN_DPBUSD
#undef KILN_SUFFIX

static int detect_level(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma")) return 2;
    if (__builtin_cpu_supports("avxvnni") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma")) return 1;
    return 0;
}

int kiln_int8_dot_level(void) {
    static int level = -1;   // a benign race: every thread computes the same value
    if (level < 0) level = detect_level();
    return level;
}

int kiln_int8_product_run(const kiln_int8_product *p) {
    switch (kiln_int8_dot_level()) {
    case 2: run_avx512vnni(p); return 0;
    case 1: run_avxvnni(p); return 0;
    default: return -1;
    }
}
#else
int kiln_int8_dot_level(void) { return 0; }
int kiln_int8_product_run(const kiln_int8_product *p) { (void)p; return -1; }
#endif
