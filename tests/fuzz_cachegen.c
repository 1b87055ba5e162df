/* libFuzzer target for the CacheGen loader (src/kv/cachegen.c,
 * src/engine/cachegen_seq.c): any byte string must be described or
 * rejected with a message (kvl_cachegen_describe, no model), and loaded or
 * rejected into contexts of the committed tiny model
 * (tests/data/tiny/llama_q.gguf, or $KVL_TINY_DIR) with f16, int8 and
 * kivi2 pages; a rejected load leaves the pool's bytes unchanged, a
 * sequence that loads decodes one token (the kernels read the pages) and is
 * freed, after which the pool is empty again; appended as a chunk to a
 * sequence of 2 tokens it loads or leaves the sequence and pool unchanged.
 * Every input also runs with
 * its checksums recomputed, so mutations reach the structural checks and
 * the rANS decoder behind the CRCs.
 * Built by `make fuzz` (build-fuzz/fuzz_cachegen); seeds in
 * tests/fuzz/corpus/fuzz_cachegen/ (written by
 * `KVL_WRITE_SEEDS=tests/fuzz/corpus/fuzz_cachegen build/tests/test_cachegen`). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "kv/serial.h"
#include "util/crc32c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define N_CTX 3
static kvl_model *model;
static kvl_ctx *ctxs[N_CTX];
static float *logits;

static void setup(void) {
    if (model) return;
    const char *d = getenv("KVL_TINY_DIR");
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/llama_q.gguf", d && *d ? d : "tests/data/tiny");
    if (kvl_model_load(path, &model, err, sizeof err) != KVL_OK) {
        fprintf(stderr, "fuzz_cachegen: cannot load %s: %s\n", path, err);
        abort();
    }
    kvl_model_info info;
    kvl_model_get_info(model, &info);
    logits = malloc(sizeof(float) * (size_t)info.n_vocab);
    static const char *const codecs[N_CTX] = {"f16", "int8", "kivi2"};
    for (int i = 0; i < N_CTX; i++) {
        kvl_ctx_params p;
        kvl_ctx_params_default(&p);
        p.n_ctx = 128;
        p.n_threads = 1;
        p.kv_codec = codecs[i];
        p.page_tokens = 8;
        if (kvl_ctx_create(model, &p, &ctxs[i], err, sizeof err) != KVL_OK) {
            fprintf(stderr, "fuzz_cachegen: ctx %s: %s\n", codecs[i], err);
            abort();
        }
    }
}

static void one(const uint8_t *data, size_t size) {
    char *text = NULL, err[256];
    int max_pos = 0;
    if (kvl_cachegen_describe(data, size, &text, &max_pos, err, sizeof err) == KVL_OK) {
        if (!text) abort();
        free(text);
    } else if (text || !err[0]) {
        abort();
    }
    for (int i = 0; i < N_CTX; i++) {
        kvl_ctx *c = ctxs[i];
        const size_t used = kvl_kv_pool_used(c->pool);
        kvl_seq *s = NULL;
        if (kvl_seq_load_cachegen(c, data, size, &s) == KVL_OK) {
            if (kvl_seq_pos(s) < 128) kvl_decode(s, 1, logits);
            kvl_seq_free(s);
            if (kvl_kv_pool_used(c->pool) != used) abort();
        } else {
            if (s || kvl_kv_pool_used(c->pool) != used || !kvl_ctx_error(c)[0]) abort();
        }
    }
}

/* Append as a chunk to a sequence that already holds 2 tokens (kvl_seq_append_cachegen):
 * on failure the position and the pool are unchanged. */
static void append(const uint8_t *data, size_t size) {
    kvl_ctx *c = ctxs[0];
    kvl_seq *s = NULL;
    const kvl_token t[2] = {1, 2};
    if (kvl_seq_create(c, &s) != KVL_OK || kvl_prefill(s, t, 2, NULL, NULL) != KVL_OK) abort();
    const size_t used = kvl_kv_pool_used(c->pool);
    if (kvl_seq_append_cachegen(s, data, size) != KVL_OK && (kvl_seq_pos(s) != 2 || kvl_kv_pool_used(c->pool) != used))
        abort();
    kvl_seq_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    one(data, size);
    append(data, size);
    if (size >= KVL_SER_HEADER_BYTES && size < (1u << 22)) { /* the same bytes with fresh checksums */
        uint8_t *b = malloc(size);
        memcpy(b, data, size);
        size_t off = KVL_SER_HEADER_BYTES;
        while (off + KVL_SER_SECTION_BYTES <= size) {
            uint64_t sl;
            memcpy(&sl, b + off + 8, 8);
            if (sl > size - off - KVL_SER_SECTION_BYTES) break;
            const uint32_t c = kvl_crc32c(b + off + KVL_SER_SECTION_BYTES, (size_t)sl);
            memcpy(b + off + 4, &c, 4);
            off += KVL_SER_SECTION_BYTES + (size_t)sl;
        }
        const uint32_t c = kvl_crc32c(b, 28);
        memcpy(b + 28, &c, 4);
        one(b, size);
        append(b, size);
        free(b);
    }
    return 0;
}
