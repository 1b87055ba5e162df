/* A minimal in-memory GGUF v3 writer for tests and fuzz targets that need a
 * tokenizer without a model file: metadata only (no tensors), written byte by
 * byte. Usage: gw w = {0}; kv_str(&w, ...); ...; buf = gw_finish(&w, &size)
 * (the caller frees buf), then kvl_gguf_open_mem(buf, size, ...). Aborts on
 * allocation failure. */
#ifndef KVL_TESTS_GGUF_WRITER_H
#define KVL_TESTS_GGUF_WRITER_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct gw {
    uint8_t *p;
    size_t n, cap;
    uint64_t n_kv;
} gw;

static inline void gw_bytes(gw *w, const void *d, size_t n) {
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2 + 256;
        w->p = realloc(w->p, w->cap);
        if (!w->p) abort();
    }
    memcpy(w->p + w->n, d, n);
    w->n += n;
}
static inline void gw_u32(gw *w, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    gw_bytes(w, b, 4);
}
static inline void gw_u64(gw *w, uint64_t v) {
    gw_u32(w, (uint32_t)v);
    gw_u32(w, (uint32_t)(v >> 32));
}
static inline void gw_str(gw *w, const char *s) {
    gw_u64(w, strlen(s));
    gw_bytes(w, s, strlen(s));
}
static inline void gw_key(gw *w, const char *k, uint32_t type) {
    gw_str(w, k);
    gw_u32(w, type);
    w->n_kv++;
}
static inline void kv_str(gw *w, const char *k, const char *v) { gw_key(w, k, 8); gw_str(w, v); }
static inline void kv_u32(gw *w, const char *k, uint32_t v) { gw_key(w, k, 4); gw_u32(w, v); }
static inline void kv_bool(gw *w, const char *k, int v) {
    gw_key(w, k, 7);
    uint8_t b = (uint8_t)(v != 0);
    gw_bytes(w, &b, 1);
}
static inline void kv_arr_str(gw *w, const char *k, char **v, size_t n) {
    gw_key(w, k, 9);
    gw_u32(w, 8);
    gw_u64(w, n);
    for (size_t i = 0; i < n; i++) gw_str(w, v[i]);
}
static inline void kv_arr_i32(gw *w, const char *k, const int32_t *v, size_t n) {
    gw_key(w, k, 9);
    gw_u32(w, 5);
    gw_u64(w, n);
    for (size_t i = 0; i < n; i++) gw_u32(w, (uint32_t)v[i]);
}
static inline void kv_arr_f32(gw *w, const char *k, const float *v, size_t n) {
    gw_key(w, k, 9);
    gw_u32(w, 6);
    gw_u64(w, n);
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        gw_u32(w, u);
    }
}
/* Header + body as one malloc'd buffer (caller frees). */
static inline uint8_t *gw_finish(gw *body, size_t *size) {
    gw h = {0};
    gw_bytes(&h, "GGUF", 4);
    gw_u32(&h, 3);
    gw_u64(&h, 0);
    gw_u64(&h, body->n_kv);
    gw_bytes(&h, body->p, body->n);
    free(body->p);
    *size = h.n;
    return h.p;
}

#endif
