/* libFuzzer target for the rANS decoder (src/util/rans.c): the input is
 * [u8 n_ctx-1][u16 n symbols][models][stream]; the models are parsed from
 * untrusted bytes, contexts are assigned round-robin, and both decoders
 * must agree (same status, same symbols on success) without reading out of
 * bounds. A decoded stream must re-encode to the same bytes (the format has
 * one encoding per symbol sequence and models).
 * Built by `make fuzz` (build-fuzz/fuzz_rans); seeds in tests/fuzz/corpus/fuzz_rans/. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/rans.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    const int n_ctx = data[0] + 1;
    const size_t n = (size_t)data[1] | (size_t)data[2] << 8;
    data += 3, size -= 3;
    kvl_err e;
    kvl_rans_models *m = NULL;
    if (kvl_rans_models_create(n_ctx, &m, &e) != KVL_OK) abort();
    size_t used = 0;
    if (kvl_rans_models_read(m, data, size, &used, &e) == KVL_OK) {
        uint16_t *ctx = malloc((n + 1) * sizeof *ctx);
        uint8_t *a = malloc(n + 1), *b = malloc(n + 1);
        for (size_t i = 0; i < n; i++) ctx[i] = (uint16_t)(i % (size_t)n_ctx);
        const kvl_status s1 = kvl_rans_decode(m, ctx, n, data + used, size - used, a, &e);
        const kvl_status s2 = kvl_rans_decode_ref(m, ctx, n, data + used, size - used, b, &e);
        if (s1 != s2 || (s1 == KVL_OK && n && memcmp(a, b, n))) abort();
        if (s1 == KVL_OK) {
            const size_t cap = kvl_rans_bound(n);
            uint8_t *enc = malloc(cap);
            size_t len = 0;
            if (kvl_rans_encode(m, a, ctx, n, enc, cap, &len, &e) != KVL_OK) abort();
            if (len != size - used || memcmp(enc, data + used, len)) abort();
            free(enc);
        }
        free(ctx), free(a), free(b);
    }
    kvl_rans_models_free(m);
    return 0;
}
