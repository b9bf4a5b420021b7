/* sha256.h: SHA-256 (FIPS 180-4), for model fingerprints. */
#ifndef HYMBA_ENGINE_SHA256_H
#define HYMBA_ENGINE_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct hy_sha256 {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t fill;
} hy_sha256;

void hy_sha256_init(hy_sha256 *c);
void hy_sha256_update(hy_sha256 *c, const void *data, size_t n);
void hy_sha256_final(hy_sha256 *c, uint8_t out[32]);

#endif
