#ifndef JUNCTION_CRC32C_H
#define JUNCTION_CRC32C_H
#include <stddef.h>
#include <stdint.h>

/// Extends a CRC32C (Castagnoli, the checksum of iSCSI, ext4 and Kafka) over
/// `length` bytes. Start with 0; the result of one call is the `crc` of the next.
uint32_t junction_crc32c(uint32_t crc, const void *bytes, size_t length);

/// 1 when the SSE4.2 CRC instruction is used, 0 for the portable tables.
int junction_crc32c_is_hardware(void);

#endif
