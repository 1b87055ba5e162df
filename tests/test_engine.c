/* Engine behaviour on the real model (skipped without it): batched prefill
 * equals chunked prefill equals token-by-token decode; 1 thread equals 2;
 * fork shares the prefix and equals recomputation; context-length, budget and
 * token-id errors leave the sequence untouched; KV accounting; model-load
 * errors (missing file, truncated file, unsupported architecture). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvlite.h"
#include "test.h"

static double max_diff(const float *a, const float *b, int n) {
    double m = 0;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > m) m = d;
    }
    return m;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static kvl_ctx *mkctx(const kvl_model *m, const char *codec, int n_ctx, int n_batch, int threads, size_t budget) {
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.kv_codec = codec;
    p.n_ctx = n_ctx;
    p.n_batch = n_batch;
    p.n_threads = threads;
    p.kv_budget_bytes = budget;
    kvl_ctx *c = NULL;
    char err[256];
    if (kvl_ctx_create(m, &p, &c, err, sizeof err) != KVL_OK) fprintf(stderr, "ctx: %s\n", err);
    return c;
}

/* write bytes to a temp file, return path in buf */
static void write_tmp(char *path, const void *data, size_t n) {
    strcpy(path, "/tmp/kvl_test_XXXXXX");
    int fd = mkstemp(path);
    if (fd >= 0) {
        if (write(fd, data, n) != (ssize_t)n) perror("write");
        close(fd);
    }
}

static void load_errors(const char *model_path) {
    kvl_model *m = (kvl_model *)1;
    char err[512] = "";
    CHECK(kvl_model_load("/nonexistent/model.gguf", &m, err, sizeof err) == KVL_ERR_IO);
    CHECK(m == NULL && strlen(err) > 0);

    /* minimal GGUF v3 with general.architecture = "gpt2" and no tensors */
    unsigned char buf[256];
    size_t o = 0;
    memcpy(buf, "GGUF", 4), o = 4;
    uint32_t ver = 3, vt = 8;
    uint64_t nt = 0, nkv = 1, kl = 20, sl = 4;
    memcpy(buf + o, &ver, 4), o += 4;
    memcpy(buf + o, &nt, 8), o += 8;
    memcpy(buf + o, &nkv, 8), o += 8;
    memcpy(buf + o, &kl, 8), o += 8;
    memcpy(buf + o, "general.architecture", 20), o += 20;
    memcpy(buf + o, &vt, 4), o += 4;
    memcpy(buf + o, &sl, 8), o += 8;
    memcpy(buf + o, "gpt2", 4), o += 4;
    char path[64];
    write_tmp(path, buf, o);
    err[0] = 0;
    kvl_status st = kvl_model_load(path, &m, err, sizeof err);
    CHECK_MSG(st == KVL_ERR_UNSUPPORTED && strstr(err, "gpt2"), "st=%d err=%s", st, err);
    unlink(path);

    if (!model_path) return;
    /* truncated copy of the real model */
    FILE *f = fopen(model_path, "rb");
    if (!f) return;
    size_t n = 3 << 20;
    char *data = malloc(n);
    n = fread(data, 1, n, f);
    fclose(f);
    write_tmp(path, data, n);
    free(data);
    st = kvl_model_load(path, &m, err, sizeof err);
    CHECK_MSG(st == KVL_ERR_FORMAT && m == NULL, "st=%d err=%s", st, err);
    printf("note: truncated model error: %s\n", err);
    unlink(path);
}

int main(void) {
    const char *path = kvl_test_model("engine checks on the real model");
    load_errors(path);
    if (!path) KVL_TEST_END();
    kvl_model *m = NULL;
    char err[512];
    kvl_status st = kvl_model_load(path, &m, err, sizeof err);
    CHECK_MSG(st == KVL_OK, "%s", err);
    if (st) KVL_TEST_END();
    kvl_model_info mi;
    kvl_model_get_info(m, &mi);
    CHECK(mi.n_layer == 30 && mi.n_head == 9 && mi.n_head_kv == 3 && mi.head_dim == 64);
    CHECK(mi.n_vocab == 49152 && mi.n_ctx_train == 8192 && strcmp(mi.arch, "llama") == 0);
    const int V = mi.n_vocab;

    const char *text = "The quick brown fox jumps over the lazy dog. Paged KV caches store keys and values in "
                       "fixed-size blocks so that sequences can share prefixes.";
    kvl_token toks[128];
    int n = (int)kvl_tokenize(m, text, strlen(text), 0, 0, toks, 128);
    CHECK(n > 20 && n < 128);

    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V), *d = malloc(sizeof(float) * V);
    float *all = malloc(sizeof(float) * (size_t)V * n);

    /* 1. one batch (2 threads) vs chunks of 7 vs token by token (1 thread) */
    kvl_ctx *c1 = mkctx(m, "f32", 256, 512, 2, 0);
    kvl_ctx *c2 = mkctx(m, "f32", 256, 7, 2, 0);
    kvl_ctx *c3 = mkctx(m, "f32", 256, 512, 1, 0);
    CHECK(c1 && c2 && c3);
    kvl_seq *s1, *s2, *s3;
    kvl_seq_create(c1, &s1);
    kvl_seq_create(c2, &s2);
    kvl_seq_create(c3, &s3);
    CHECK(kvl_prefill(s1, toks, n, a, all) == KVL_OK);
    CHECK(max_diff(a, all + (size_t)(n - 1) * V, V) == 0);
    CHECK(kvl_prefill(s2, toks, n, b, NULL) == KVL_OK);
    for (int i = 0; i < n; i++) CHECK(kvl_decode(s3, toks[i], d) == KVL_OK);
    CHECK(kvl_seq_pos(s1) == n && kvl_seq_pos(s2) == n && kvl_seq_pos(s3) == n);
    double e12 = max_diff(a, b, V), e13 = max_diff(a, d, V);
    printf("note: batch vs chunked max |dlogit| %.3g, batch vs decode %.3g\n", e12, e13);
    /* batch invariance is a contract (codec.h, quant_avx2.c): bit-identical */
    CHECK(e12 == 0);
    CHECK(e13 == 0);
    CHECK(argmax(a, V) == argmax(d, V));

    /* 1b. past one attention chunk (512 tokens): decode on 2 threads splits
     * each kv-head's pages over the threads (flash-decoding) and must still
     * equal the batched prefill of the same tokens bit for bit */
    {
        enum { NL = 1100, NT = 4 };
        kvl_token *lt = malloc(sizeof(kvl_token) * NL);
        for (int i = 0; i < NL; i++) lt[i] = toks[1 + i % (n - 1)];
        kvl_ctx *cl = mkctx(m, "f16", 1200, 512, 2, 0);
        kvl_seq *sl, *fl;
        CHECK(cl && kvl_seq_create(cl, &sl) == KVL_OK);
        CHECK(kvl_prefill(sl, lt, NL - NT, NULL, NULL) == KVL_OK);
        CHECK(kvl_seq_fork(sl, &fl) == KVL_OK);
        CHECK(kvl_prefill(sl, lt + NL - NT, NT, b, NULL) == KVL_OK);
        for (int i = NL - NT; i < NL; i++) CHECK(kvl_decode(fl, lt[i], d) == KVL_OK);
        CHECK_MSG(max_diff(b, d, V) == 0, "1100 tokens: batch vs split decode %g", max_diff(b, d, V));
        kvl_seq_free(fl);
        kvl_seq_free(sl);
        kvl_ctx_free(cl);
        free(lt);
    }

    /* 2. KV accounting */
    kvl_kv_stats ks;
    kvl_seq_kv_stats(s1, &ks);
    CHECK(ks.tokens_cached == n);
    CHECK(ks.bytes_per_token == 30.0 * 3 * 64 * 2 * 4);
    CHECK(ks.bytes_used > 0 && ks.bytes_used == ks.pool_used && ks.bytes_peak >= ks.bytes_used);
    CHECK(ks.n_pages == 30 * 3 * ((n + 31) / 32));

    /* 3. fork: prefix shared, continuation equals recomputation */
    int half = n / 2;
    kvl_seq *p, *f1, *f2;
    kvl_seq_free(s2);
    kvl_seq_create(c2, &p);
    CHECK(kvl_prefill(p, toks, half, NULL, NULL) == KVL_OK);
    kvl_seq_kv_stats(p, &ks);
    size_t used_before = ks.pool_used;
    CHECK(kvl_seq_fork(p, &f1) == KVL_OK && kvl_seq_fork(p, &f2) == KVL_OK);
    kvl_seq_kv_stats(p, &ks);
    CHECK(ks.pool_used == used_before);
    CHECK(kvl_seq_pos(f1) == half);
    CHECK(kvl_prefill(f1, toks + half, n - half, b, NULL) == KVL_OK);
    CHECK_MSG(max_diff(a, b, V) < 1e-3, "fork diff %g", max_diff(a, b, V));
    kvl_token other[3] = {toks[0], toks[1], toks[2]};
    CHECK(kvl_prefill(f2, other, 3, d, NULL) == KVL_OK);
    CHECK(kvl_prefill(p, other, 3, b, NULL) == KVL_OK); /* parent continues the same way */
    CHECK(max_diff(b, d, V) < 1e-3);
    kvl_seq_free(f1);
    kvl_seq_free(f2);
    kvl_seq_free(p);
    kvl_seq *empty;
    kvl_seq_create(c2, &empty);
    kvl_seq_kv_stats(empty, &ks);
    CHECK_MSG(ks.pool_used == 0, "pool used %zu after freeing all sequences", ks.pool_used);
    kvl_seq_free(empty);

    /* 4. errors leave the sequence untouched */
    kvl_ctx *cs = mkctx(m, "f16", 16, 512, 2, 0);
    kvl_seq *q;
    kvl_seq_create(cs, &q);
    CHECK(kvl_prefill(q, toks, 20, NULL, NULL) == KVL_ERR_CTX_FULL);
    CHECK(kvl_seq_pos(q) == 0 && strlen(kvl_ctx_error(cs)) > 0);
    kvl_token bad[2] = {1, V};
    CHECK(kvl_prefill(q, bad, 2, NULL, NULL) == KVL_ERR_ARG);
    CHECK(kvl_prefill(q, toks, 16, a, NULL) == KVL_OK);
    CHECK(kvl_decode(q, toks[0], a) == KVL_ERR_CTX_FULL);
    CHECK(kvl_seq_pos(q) == 16);
    kvl_seq_free(q);
    kvl_ctx_free(cs);
    /* budget: exactly 2 pages per (layer, head) = 64 tokens. The exact byte
     * count must be enough for 64 tokens; one byte or one page less must fail
     * with KVL_ERR_NOMEM, a message, and the sequence untouched. */
    kvl_token many[100];
    for (int i = 0; i < 100; i++) many[i] = toks[i % n];
    kvl_ctx *cb = mkctx(m, "int8", 1024, 512, 2, 0);
    CHECK(cb && kvl_seq_create(cb, &q) == KVL_OK);
    CHECK(kvl_prefill(q, many, 1, NULL, NULL) == KVL_OK);
    kvl_seq_kv_stats(q, &ks);
    CHECK(ks.n_pages == 30 * 3 && ks.bytes_used % ks.n_pages == 0);
    const size_t page = ks.bytes_used / (size_t)(ks.n_pages > 0 ? ks.n_pages : 1);
    const size_t exact = page * 30 * 3 * 2;
    kvl_seq_free(q);
    kvl_ctx_free(cb);
    cb = mkctx(m, "int8", 1024, 512, 2, exact);
    CHECK(cb && kvl_seq_create(cb, &q) == KVL_OK);
    st = kvl_prefill(q, many, 64, NULL, NULL);
    CHECK_MSG(st == KVL_OK, "exact budget %zu bytes: st=%d %s", exact, st, kvl_ctx_error(cb));
    kvl_seq_kv_stats(q, &ks);
    CHECK_MSG(ks.pool_used == exact && ks.pool_budget == exact, "pool used %zu budget %zu, want %zu",
              ks.pool_used, ks.pool_budget, exact);
    st = kvl_decode(q, many[64], NULL); /* token 65 needs a third page everywhere */
    CHECK_MSG(st == KVL_ERR_NOMEM && strlen(kvl_ctx_error(cb)) > 0, "65th token: st=%d", st);
    CHECK(kvl_seq_pos(q) == 64);
    kvl_seq *q2;
    CHECK(kvl_seq_create(cb, &q2) == KVL_OK);
    st = kvl_prefill(q2, many, 100, NULL, NULL);
    CHECK_MSG(st == KVL_ERR_NOMEM, "st=%d %s", st, kvl_ctx_error(cb));
    CHECK(kvl_seq_pos(q2) == 0);
    kvl_seq_free(q2);
    kvl_seq_free(q);
    kvl_ctx_free(cb);
    const size_t short_by[2] = {1, page};
    for (int i = 0; i < 2; i++) {
        cb = mkctx(m, "int8", 1024, 512, 2, exact - short_by[i]);
        CHECK(cb && kvl_seq_create(cb, &q) == KVL_OK);
        st = kvl_prefill(q, many, 64, NULL, NULL);
        CHECK_MSG(st == KVL_ERR_NOMEM && strlen(kvl_ctx_error(cb)) > 0,
                  "budget %zu bytes short: st=%d %s", short_by[i], st, kvl_ctx_error(cb));
        CHECK(kvl_seq_pos(q) == 0);
        kvl_seq_kv_stats(q, &ks);
        CHECK_MSG(ks.pool_used == 0, "failed prefill left %zu bytes in the pool", ks.pool_used);
        CHECK(kvl_prefill(q, many, 32, NULL, NULL) == KVL_OK); /* one page per (layer, head) still fits */
        kvl_seq_free(q);
        kvl_ctx_free(cb);
    }
    /* unknown codec */
    kvl_ctx_params pp;
    kvl_ctx_params_default(&pp);
    pp.kv_codec = "int3";
    kvl_ctx *cx = NULL;
    CHECK(kvl_ctx_create(m, &pp, &cx, err, sizeof err) == KVL_ERR_ARG && cx == NULL && strstr(err, "int3"));

    kvl_seq_free(s1);
    kvl_seq_free(s3);
    kvl_ctx_free(c1);
    kvl_ctx_free(c2);
    kvl_ctx_free(c3);
    kvl_model_free(m);
    kvl_model_free(NULL);
    kvl_ctx_free(NULL);
    kvl_seq_free(NULL);
    free(a);
    free(b);
    free(d);
    free(all);
    KVL_TEST_END();
}
