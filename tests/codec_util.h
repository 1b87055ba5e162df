/* Test helper: write rows into a codec segment whatever the codec's kind.
 * Per-token codecs: encode each row. Sealing codecs: n must be P; rows are
 * encoded in the open format into a scratch segment and sealed into seg. */
#ifndef KVL_TESTS_CODEC_UTIL_H
#define KVL_TESTS_CODEC_UTIL_H

#include <stdlib.h>

#include "kv/codec.h"

/* x: [n][D]; st: codec state or NULL. Returns 0 on success. */
static inline int codec_fill(const kvl_codec *c, const void *st, uint8_t *seg, int D, int P, int n, const float *x) {
    if (c->encode) {
        for (int i = 0; i < n; i++) c->encode(st, seg, D, P, i, x + (size_t)i * D);
        return 0;
    }
    if (n != P || !c->open || !c->seal) return -1;
    uint8_t *open = malloc(c->open->seg_bytes(D, P));
    if (!open) return -1;
    for (int i = 0; i < n; i++) c->open->encode(NULL, open, D, P, i, x + (size_t)i * D);
    c->seal(st, seg, open, D, P);
    free(open);
    return 0;
}

#endif
