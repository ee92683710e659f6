// Interleaving of GGML rows and the VNNI int8 products over them (KilnCPUSIMD.h).
#include "KilnCPUSIMD.h"
#include <string.h>

static int record_bytes(kiln_interleaved_format format) {
    switch (format) {
    case KILN_INTERLEAVED_Q4_0: return 16 + 128;   // d ×8, 8 rows × 16 bytes of nibbles
    case KILN_INTERLEAVED_Q4_1: return 32 + 128;   // d ×8, m ×8, nibbles
    case KILN_INTERLEAVED_Q8_0: return 16 + 256;   // d ×8, 8 rows × 32 quants
    }
    return 0;
}

int kiln_interleaved_record_bytes(kiln_interleaved_format format) { return record_bytes(format); }

void kiln_interleave_rows(kiln_interleaved_format format, const uint8_t *src, int64_t row_bytes, int rows, int blocks,
                          uint8_t *dst) {
    const int rec = record_bytes(format);
    const int header = format == KILN_INTERLEAVED_Q4_1 ? 32 : 16;
    const int block_bytes = format == KILN_INTERLEAVED_Q4_0 ? 18 : format == KILN_INTERLEAVED_Q4_1 ? 20 : 34;
    for (int g = 0; g < (rows + 7) / 8; g++) {
        for (int b = 0; b < blocks; b++) {
            uint8_t *r = dst + ((int64_t)g * blocks + b) * rec;
            memset(r, 0, rec);
            for (int i = 0; i < 8 && g * 8 + i < rows; i++) {
                const uint8_t *blk = src + (int64_t)(g * 8 + i) * row_bytes + (int64_t)b * block_bytes;
                memcpy(r + 2 * i, blk, 2);                                            // d
                if (format == KILN_INTERLEAVED_Q4_1) memcpy(r + 16 + 2 * i, blk + 2, 2);   // m
                if (format == KILN_INTERLEAVED_Q8_0) {
                    for (int m = 0; m < 8; m++)
                        for (int j = 0; j < 4; j++) r[header + 32 * m + 4 * i + j] = (uint8_t)((int8_t)blk[2 + 4 * m + j] + 128);
                } else {
                    const uint8_t *qs = blk + (format == KILN_INTERLEAVED_Q4_1 ? 4 : 2);
                    for (int m = 0; m < 4; m++) memcpy(r + header + 32 * m + 4 * i, qs + 4 * m, 4);
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
