/* crc32c.h: CRC-32C (Castagnoli), the checksum of every checkpoint section. */
#ifndef HYMBA_ENGINE_CRC32C_H
#define HYMBA_ENGINE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continue a CRC: crc = 0 starts one; hy_crc32c(0, "123456789", 9) == 0xE3069283.
 * Uses the SSE4.2 crc32 instruction when the CPU has it, else a table. */
uint32_t hy_crc32c(uint32_t crc, const void *buf, size_t len);

/* The portable table-driven version (tests compare the two paths). */
uint32_t hy_crc32c_sw(uint32_t crc, const void *buf, size_t len);

#endif
