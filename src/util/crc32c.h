/* CRC32C (Castagnoli) checksums for the session / KV file format. */
#ifndef KVL_UTIL_CRC32C_H
#define KVL_UTIL_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC32C of data[0..n) (data may be NULL when n == 0). */
uint32_t kvl_crc32c(const void *data, size_t n);
/* Continue a CRC: kvl_crc32c_update(kvl_crc32c(a, na), b, nb) == CRC of a then b.
 * Start with crc = 0. */
uint32_t kvl_crc32c_update(uint32_t crc, const void *data, size_t n);
/* The byte-table reference of kvl_crc32c_update (which uses the SSE4.2
 * crc32 instruction where the CPU has it). */
uint32_t kvl_crc32c_update_scalar(uint32_t crc, const void *data, size_t n);

#endif
