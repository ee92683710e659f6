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

void kiln_interleave_rows(kiln_interleaved_format format, const uint8_t *src, int64_t row_bytes, int rows, int blocks,
                          uint8_t *dst) {
    const int rec = record_bytes(format);
    const int header = has_min(format) ? 32 : 16;
    int block_bytes = 0;
    switch (format) {
    case KILN_INTERLEAVED_Q4_0: case KILN_INTERLEAVED_IQ4_NL: block_bytes = 18; break;
    case KILN_INTERLEAVED_Q4_1: block_bytes = 20; break;
    case KILN_INTERLEAVED_Q8_0: block_bytes = 34; break;
    case KILN_INTERLEAVED_Q5_0: block_bytes = 22; break;
    case KILN_INTERLEAVED_Q5_1: block_bytes = 24; break;
    }
    for (int g = 0; g < (rows + 7) / 8; g++) {
        for (int b = 0; b < blocks; b++) {
            uint8_t *r = dst + ((int64_t)g * blocks + b) * rec;
            memset(r, 0, rec);
            for (int i = 0; i < 8 && g * 8 + i < rows; i++) {
                const uint8_t *blk = src + (int64_t)(g * 8 + i) * row_bytes + (int64_t)b * block_bytes;
                memcpy(r + 2 * i, blk, 2);                                  // d
                if (has_min(format)) memcpy(r + 16 + 2 * i, blk + 2, 2);    // m
                uint8_t q[32];   // the block's 32 quants as stored in the record (whole-byte formats)
                switch (format) {
                case KILN_INTERLEAVED_Q8_0:
                    for (int j = 0; j < 32; j++) q[j] = (uint8_t)((int8_t)blk[2 + j] + 128);
                    break;
                case KILN_INTERLEAVED_Q5_0: case KILN_INTERLEAVED_Q5_1: {
                    const int h = format == KILN_INTERLEAVED_Q5_1 ? 4 : 2;
                    uint32_t qh;
                    memcpy(&qh, blk + h, 4);
                    const uint8_t *qs = blk + h + 4;
                    for (int j = 0; j < 32; j++) {
                        const uint8_t nibble = j < 16 ? qs[j] & 0xF : qs[j - 16] >> 4;
                        q[j] = (uint8_t)(nibble | ((qh >> j) & 1) << 4);
                    }
                    break;
                }
                default: {   // nibble formats: bytes 4m..4m+3 of qs hold quants 4m.. (low) and 16+4m.. (high)
                    const uint8_t *qs = blk + (format == KILN_INTERLEAVED_Q4_1 ? 4 : 2);
                    for (int m = 0; m < 4; m++) memcpy(r + header + 32 * m + 4 * i, qs + 4 * m, 4);
                    continue;
                }
                }
                for (int m = 0; m < 8; m++) memcpy(r + header + 32 * m + 4 * i, q + 4 * m, 4);
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
