/* crc32c.c: CRC-32C, slicing-by-8 tables with an SSE4.2 fast path chosen at run time. */
#include "engine/crc32c.h"
#include <pthread.h>
#include <string.h>

#define CRC32C_POLY_REFLECTED 0x82F63B78u
#define CRC32C_SLICES 8

static uint32_t crc_table[CRC32C_SLICES][256]; /* [slice][byte] */
static pthread_once_t crc_table_once = PTHREAD_ONCE_INIT;

static void crc_table_init(void)
{
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ CRC32C_POLY_REFLECTED : c >> 1;
        crc_table[0][b] = c;
    }
    for (uint32_t b = 0; b < 256; b++)
        for (int s = 1; s < CRC32C_SLICES; s++)
            crc_table[s][b] = (crc_table[s - 1][b] >> 8) ^ crc_table[0][crc_table[s - 1][b] & 0xff];
}

uint32_t hy_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    pthread_once(&crc_table_once, crc_table_init);
    crc = ~crc;
    while (len >= 8) {
        /* Byte-wise loads keep this independent of host endianness and alignment. */
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
              crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
              crc_table[3][p[4]] ^ crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    uint64_t c = ~crc;

    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, sizeof(v));
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        len -= 8;
    }
    while (len--)
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    return ~(uint32_t)c;
}

static int have_sse42;
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;

static void cpu_probe(void)
{
    __builtin_cpu_init();
    have_sse42 = __builtin_cpu_supports("sse4.2");
}

uint32_t hy_crc32c(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&cpu_once, cpu_probe);
    return have_sse42 ? crc32c_hw(crc, buf, len) : hy_crc32c_sw(crc, buf, len);
}
#else
uint32_t hy_crc32c(uint32_t crc, const void *buf, size_t len)
{
    return hy_crc32c_sw(crc, buf, len);
}
#endif
