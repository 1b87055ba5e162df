/* CRC32C against the standard check value ("123456789" -> 0xE3069283, RFC
 * 3720 / iSCSI), the empty input, incremental updates equal to one pass, and
 * the SSE4.2 path equal to the table reference at every length / alignment. */
#include <string.h>

#include "test.h"
#include "util/crc32c.h"

int main(void) {
    CHECK(kvl_crc32c("123456789", 9) == 0xE3069283u);
    CHECK(kvl_crc32c(NULL, 0) == 0);
    unsigned char z[32] = {0}, o[32];
    memset(o, 0xff, sizeof o);
    CHECK(kvl_crc32c(z, 32) == 0x8A9136AAu); /* RFC 3720 B.4: 32 bytes of zeros */
    CHECK(kvl_crc32c(o, 32) == 0x62A8AB43u); /* 32 bytes of 0xff */
    const char *s = "The quick brown fox jumps over the lazy dog";
    const size_t n = strlen(s);
    for (size_t cut = 0; cut <= n; cut++)
        CHECK(kvl_crc32c_update(kvl_crc32c(s, cut), s + cut, n - cut) == kvl_crc32c(s, n));
    /* the fast path (SSE4.2 where present) equals the table reference at every length and alignment */
    unsigned char buf[600];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)(i * 167 + (i >> 3));
    int agree = 1;
    for (size_t off = 0; off < 9; off++)
        for (size_t len = 0; len + off <= sizeof buf; len += (len < 40 ? 1 : 37))
            agree &= kvl_crc32c_update(0x12345678u, buf + off, len) == kvl_crc32c_update_scalar(0x12345678u, buf + off, len);
    CHECK(agree);
    KVL_TEST_END();
}
