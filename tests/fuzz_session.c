/* libFuzzer target for the session loader (kvl_seqs_load, kvl_session_describe;
 * src/kv/serial.c, src/engine/session.c): any byte string must either load
 * or be rejected with a message, never crash, leak or read out of bounds,
 * and a rejected load must leave the pool's bytes unchanged. Each input is
 * described (no model), then loaded into contexts of the committed tiny
 * model (tests/data/tiny/llama_q.gguf, or $KVL_TINY_DIR) with f16, int8,
 * kivi2 and int4z+rot pages of 8 tokens; a sequence that loads decodes one
 * token (the kernels read the loaded pages) and is freed, after which the
 * pool must be back to empty. Every input also runs with its checksums
 * recomputed, so mutations reach the structural checks behind the CRCs.
 * An input that does not start with the session magic is also taken as a
 * prefix-store chunk payload of 2 pages per list (kvl_kv_chunk_load, the
 * path of the disk tier's files) for every context.
 * Built by `make fuzz` (build-fuzz/fuzz_session); seeds in
 * tests/fuzz/corpus/fuzz_session/ (written by
 * `KVL_WRITE_SEEDS=tests/fuzz/corpus/fuzz_session build/tests/test_session`). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "kv/serial.h"
#include "util/crc32c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define N_CTX 4
static kvl_model *model;
static kvl_ctx *ctxs[N_CTX];

static void setup(void) {
    if (model) return;
    const char *d = getenv("KVL_TINY_DIR");
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/llama_q.gguf", d && *d ? d : "tests/data/tiny");
    if (kvl_model_load(path, &model, err, sizeof err) != KVL_OK) {
        fprintf(stderr, "fuzz_session: cannot load %s: %s\n", path, err);
        abort();
    }
    static const char *codecs[N_CTX] = {"f16", "int8", "kivi2", "int4z+rot"};
    for (int i = 0; i < N_CTX; i++) {
        kvl_ctx_params p;
        kvl_ctx_params_default(&p);
        p.n_ctx = 128;
        p.n_threads = 1;
        p.page_tokens = 8;
        p.n_seq_max = 4;
        p.kv_codec = codecs[i];
        if (kvl_ctx_create(model, &p, &ctxs[i], err, sizeof err) != KVL_OK) {
            fprintf(stderr, "fuzz_session: ctx %s: %s\n", codecs[i], err);
            abort();
        }
    }
}

static void fix_crcs(uint8_t *b, size_t n) {
    if (n < KVL_SER_HEADER_BYTES) return;
    uint32_t ns;
    memcpy(&ns, b + 24, 4);
    size_t off = KVL_SER_HEADER_BYTES;
    for (uint32_t i = 0; i < ns && i < 64 && off + KVL_SER_SECTION_BYTES <= n; i++) {
        uint64_t sl;
        memcpy(&sl, b + off + 8, 8);
        if (sl > n - off - KVL_SER_SECTION_BYTES) break;
        const uint32_t c = kvl_crc32c(b + off + KVL_SER_SECTION_BYTES, (size_t)sl);
        memcpy(b + off + 4, &c, 4);
        off += KVL_SER_SECTION_BYTES + (size_t)sl;
    }
    const uint32_t h = kvl_crc32c(b, 28);
    memcpy(b + 28, &h, 4);
}

static void run(const uint8_t *data, size_t size) {
    char *text = NULL, err[256];
    if (kvl_session_describe(data, size, &text, err, sizeof err) == KVL_OK && (!text || !text[0])) abort();
    free(text);
    for (int i = 0; i < N_CTX; i++) {
        kvl_ctx *c = ctxs[i];
        kvl_seq *out[4] = {0};
        int n = 0, nm = 0;
        kvl_chat_msg *msgs = NULL;
        const kvl_status st = kvl_seqs_load(c, data, size, out, 4, &n, &msgs, &nm);
        if (st != KVL_OK) {
            if (n || msgs || kvl_kv_pool_used(c->pool) != 0 || !kvl_ctx_error(c)[0]) abort();
            continue;
        }
        for (int j = 0; j < nm; j++)
            if (!msgs[j].role || !msgs[j].content) abort();
        for (int k = 0; k < n; k++) {
            if (kvl_seq_pos(out[k]) < c->p.n_ctx) {
                const kvl_status d = kvl_decode(out[k], 1, NULL);
                if (d != KVL_OK && d != KVL_ERR_NOMEM && d != KVL_ERR_CTX_FULL) abort();
            }
            kvl_seq_free(out[k]);
        }
        free(msgs);
        if (kvl_kv_pool_used(c->pool) != 0) abort(); /* every loaded page went back */
    }
}

/* The input as a 2-page chunk payload for a fresh sequence of each context. */
static void run_chunk(const uint8_t *data, size_t size) {
    for (int i = 0; i < N_CTX; i++) {
        kvl_ctx *c = ctxs[i];
        kvl_seq *s = NULL;
        if (kvl_seq_create(c, &s) != KVL_OK) abort();
        const uint8_t *pl[1] = {data};
        const size_t len[1] = {size};
        kvl_err e;
        if (kvl_kv_chunk_load(c->pool, s->t, pl, len, 1, 2, c->p.n_ctx, &e) == KVL_OK) {
            s->pos = 0; /* pages only: free them with the sequence */
        } else if (kvl_kv_pool_used(c->pool) != 0) {
            abort();
        }
        kvl_seq_free(s);
        if (kvl_kv_pool_used(c->pool) != 0) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    run(data, size);
    if (size < 8 || memcmp(data, KVL_SER_MAGIC, 8) != 0) run_chunk(data, size);
    if (size >= KVL_SER_HEADER_BYTES && size < (1u << 24)) {
        uint8_t *w = malloc(size);
        if (!w) return 0;
        memcpy(w, data, size);
        fix_crcs(w, size);
        run(w, size);
        free(w);
    }
    return 0;
}
