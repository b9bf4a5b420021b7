/* test-ckpt-crc32c.c: CRC-32C known answers; the SSE4.2 and table paths agree. */
#include "engine/crc32c.h"
#include "tests/testutil.h"
#include <string.h>

int main(void)
{
    static const uint8_t zeros[32], ones[32] = {
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
    uint8_t buf[4096];
    uint32_t x = 12345;

    /* RFC 3720 (iSCSI) appendix B.4 vectors and the usual check value. */
    CHECK(hy_crc32c(0, "123456789", 9) == 0xE3069283u, "check value");
    CHECK(hy_crc32c_sw(0, "123456789", 9) == 0xE3069283u, "check value (table)");
    CHECK(hy_crc32c(0, zeros, 32) == 0x8A9136AAu, "32 zero bytes: %08x", hy_crc32c(0, zeros, 32));
    CHECK(hy_crc32c(0, ones, 32) == 0x62A8AB43u, "32 0xff bytes: %08x", hy_crc32c(0, ones, 32));
    CHECK(hy_crc32c(0, "", 0) == 0, "empty");
    /* Incremental == one shot; both paths agree at every alignment and length. */
    for (size_t i = 0; i < sizeof(buf); i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (uint8_t)(x >> 16);
    }
    for (size_t off = 0; off < 9; off++)
        for (size_t len = 0; len + off <= sizeof(buf); len += 1 + len / 3) {
            uint32_t a = hy_crc32c(0, buf + off, len), b = hy_crc32c_sw(0, buf + off, len);
            uint32_t c = hy_crc32c(hy_crc32c(0, buf + off, len / 2), buf + off + len / 2, len - len / 2);
            CHECK(a == b && a == c, "off %zu len %zu: %08x %08x %08x", off, len, a, b, c);
        }
    return hy_test_done("test-ckpt-crc32c");
}
