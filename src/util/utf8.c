/* The public UTF-8 validator (kvlite.h), on the decoder of util/utf8.h that
 * the tokenizer uses, so tools and library agree on what is valid. */
#include "util/utf8.h"

#include "kvlite.h"

int64_t kvl_utf8_invalid_at(const char *text, size_t len) {
    if (!text) return len ? 0 : -1;
    const uint8_t *s = (const uint8_t *)text;
    for (size_t i = 0; i < len;) {
        size_t l = kvl_utf8_len(s + i, len - i);
        if (!l) return (int64_t)i;
        i += l;
    }
    return -1;
}
