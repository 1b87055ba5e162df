/* CRC32C against the standard check value ("123456789" -> 0xE3069283, RFC
 * 3720 / iSCSI), the empty input, and incremental updates equal to one pass. */
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
    KVL_TEST_END();
}
