/* libFuzzer target for the GGUF reader: any byte string must either open
 * cleanly or be rejected with a message, never crash or read out of bounds.
 * When it opens, every key, array element and tensor byte is touched so that
 * sanitizers check the validated bounds. Build (not part of `make`):
 *   clang -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -g -O1 \
 *     -fsanitize=fuzzer,address,undefined -Iinclude -Isrc tests/fuzz_gguf.c \
 *     src/model/gguf.c src/cpu/types.c src/util/err.c -o fuzz_gguf -lm */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "model/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kvl_gguf *g = NULL;
    kvl_err err;
    if (kvl_gguf_open_mem(data, size, &g, &err) != KVL_OK) {
        if (g || !err.msg[0]) abort();
        return 0;
    }
    volatile unsigned acc = 0;
    for (int64_t i = 0; i < kvl_gguf_n_kv(g); i++) {
        const char *k = kvl_gguf_key_name(g, i);
        uint32_t u;
        int64_t v;
        float f;
        int b;
        const char *s;
        size_t n;
        kvl_gguf_vtype et;
        uint64_t cnt;
        if (kvl_gguf_find_key(g, k) != i) abort();
        acc += (unsigned)kvl_gguf_get_u32(g, k, &u) + (unsigned)kvl_gguf_get_i64(g, k, &v) +
               (unsigned)kvl_gguf_get_f32(g, k, &f) + (unsigned)kvl_gguf_get_bool(g, k, &b);
        if (kvl_gguf_get_str(g, k, &s, &n) && n) acc += (uint8_t)s[n - 1];
        if (kvl_gguf_get_arr(g, k, &et, &cnt)) {
            for (uint64_t j = 0; j < cnt; j++) {
                double d;
                if (kvl_gguf_arr_str(g, k, j, &s, &n) && n) acc += (uint8_t)s[n - 1];
                acc += (unsigned)kvl_gguf_arr_i64(g, k, j, &v) + (unsigned)kvl_gguf_arr_f64(g, k, j, &d);
            }
        }
    }
    for (int64_t i = 0; i < kvl_gguf_n_tensors(g); i++) {
        const kvl_gguf_tensor *t = kvl_gguf_tensor_at(g, i);
        if (kvl_gguf_find_tensor(g, t->name) != t) abort();
        for (size_t j = 0; j < t->nbytes; j++) acc += ((const uint8_t *)t->data)[j];
    }
    kvl_gguf_free(g);
    (void)acc;
    return 0;
}
