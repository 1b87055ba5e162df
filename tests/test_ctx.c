/* Context parameters and lifetime (on a committed tiny model): the kernel
 * choice comes from kvl_ctx_params.no_simd, never from the environment; the
 * default KV budget product is overflow-checked; freeing the context while
 * sequences are alive is safe (they may only be freed, the last one
 * releases the context). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "kv/codec.h"
#include "kv/kv.h"
#include "test.h"

static kvl_model *load_tiny(void) {
    const char *d = getenv("KVL_TINY_DIR");
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/llama_q.gguf", d && *d ? d : "tests/data/tiny");
    kvl_model *m = NULL;
    if (kvl_model_load(path, &m, err, sizeof err) != KVL_OK) CHECK_MSG(0, "cannot load %s: %s", path, err);
    return m;
}

static void test_no_simd(kvl_model *m) {
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.n_ctx = 64;
    p.n_threads = 1;
    kvl_ctx *a, *b;
    setenv("KVL_NO_SIMD", "1", 1); /* must be ignored by the library */
    CHECK(kvl_ctx_create(m, &p, &a, NULL, 0) == KVL_OK);
    unsetenv("KVL_NO_SIMD");
    p.no_simd = 1;
    CHECK(kvl_ctx_create(m, &p, &b, NULL, 0) == KVL_OK);
    CHECK(strcmp(b->k->name, "scalar") == 0 && strcmp(kvl_kv_pool_isa(b->pool), "scalar") == 0);
    const kvl_cpu_kernels *best = kvl_cpu_kernels_get(1);
    CHECK_MSG(a->k == best, "env var changed the kernels: %s (best %s)", a->k->name, best->name);
    /* both give nearly the same logits */
    kvl_token toks[12];
    kvl_model_info mi;
    kvl_model_get_info(m, &mi);
    for (int i = 0; i < 12; i++) toks[i] = (kvl_token)((100 + 37 * i) % mi.n_vocab);
    float *la = malloc(sizeof(float) * mi.n_vocab), *lb = malloc(sizeof(float) * mi.n_vocab);
    kvl_seq *sa, *sb;
    CHECK(kvl_seq_create(a, &sa) == KVL_OK && kvl_seq_create(b, &sb) == KVL_OK);
    CHECK(kvl_prefill(sa, toks, 12, la, NULL) == KVL_OK && kvl_prefill(sb, toks, 12, lb, NULL) == KVL_OK);
    double d = 0, amax = 0;
    for (int i = 0; i < mi.n_vocab; i++) d = fmax(d, fabs(la[i] - lb[i])), amax = fmax(amax, fabs(la[i]));
    CHECK_MSG(d <= 0.01 * amax, "scalar vs simd logits differ by %g (max |logit| %g)", d, amax);
    kvl_seq_free(sa);
    kvl_seq_free(sb);
    kvl_ctx_free(a);
    kvl_ctx_free(b);
    free(la);
    free(lb);
}

/* Needs a model whose per-token KV bytes make the product overflow: the
 * default model (30 layers x 3 kv-heads); the tiny ones are too small. */
static void test_budget_overflow(void) {
    const char *path = getenv("KVL_MODEL");
    if (!path || !*path) {
        printf("skip: budget overflow check needs KVL_MODEL (the default model)\n");
        return;
    }
    char err[256] = "";
    kvl_model *m = NULL;
    if (kvl_model_load(path, &m, err, sizeof err) != KVL_OK) {
        CHECK_MSG(0, "cannot load %s: %s", path, err);
        return;
    }
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.n_ctx = 1 << 24;
    p.page_tokens = 1;
    p.n_seq_max = INT32_MAX; /* the default budget product overflows size_t */
    p.n_threads = 1;
    kvl_ctx *c = NULL;
    CHECK(kvl_ctx_create(m, &p, &c, err, sizeof err) == KVL_ERR_ARG && c == NULL);
    CHECK_MSG(strstr(err, "overflow") != NULL, "message: %s", err);
    p.kv_budget_bytes = (size_t)1 << 20; /* an explicit budget needs no product */
    p.n_ctx = 256;
    p.n_batch = 64;
    CHECK(kvl_ctx_create(m, &p, &c, err, sizeof err) == KVL_OK);
    kvl_ctx_free(c);
    kvl_model_free(m);
}

static void test_free_order(kvl_model *m) {
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.n_ctx = 64;
    p.n_threads = 2;
    kvl_ctx *c;
    CHECK(kvl_ctx_create(m, &p, &c, NULL, 0) == KVL_OK);
    kvl_seq *s, *f;
    kvl_token toks[5] = {1, 2, 3, 4, 5};
    CHECK(kvl_seq_create(c, &s) == KVL_OK && kvl_prefill(s, toks, 5, NULL, NULL) == KVL_OK);
    CHECK(kvl_seq_fork(s, &f) == KVL_OK);
    kvl_ctx_free(c); /* two sequences alive */
    kvl_ctx_free(c); /* a second free is a no-op while deferred */
    CHECK(kvl_decode(s, 6, NULL) == KVL_ERR_ARG);
    kvl_seq *g = NULL;
    CHECK(kvl_seq_fork(f, &g) == KVL_ERR_ARG && g == NULL);
    kvl_kv_stats st;
    kvl_seq_kv_stats(f, &st);
    CHECK(st.tokens_cached == 5);
    kvl_seq_free(s);
    kvl_seq_free(f); /* the context goes here (ASan checks the rest) */
}

/* --kv-k/--kv-v and per-layer overrides reach the pages: per-layer codecs,
 * page bytes per layer and bits per value in the stats. */
static void test_mixed_codecs(kvl_model *m) {
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.n_ctx = 64;
    p.n_threads = 1;
    p.kv_codec = "f16";
    p.kv_codec_v = "int8";
    p.kv_layers = "k-1=f32";
    kvl_ctx *c;
    char err[256] = "";
    CHECK_MSG(kvl_ctx_create(m, &p, &c, err, sizeof err) == KVL_OK, "%s", err);
    const int NL = m->n_layer, D = m->head_dim, H = m->n_head_kv;
    for (int l = 0; l < NL; l++) {
        CHECK(!strcmp(kvl_kv_pool_codec(c->pool, l, 0)->name, l == NL - 1 ? "f32" : "f16"));
        CHECK(!strcmp(kvl_kv_pool_codec(c->pool, l, 1)->name, "int8"));
    }
    kvl_seq *s;
    kvl_token toks[40];
    for (int i = 0; i < 40; i++) toks[i] = (kvl_token)(5 + 3 * i);
    CHECK(kvl_seq_create(c, &s) == KVL_OK && kvl_prefill(s, toks, 40, NULL, NULL) == KVL_OK);
    const int pages = 2; /* 40 tokens in 32-token pages */
    for (int l = 0; l < NL; l++) {
        const size_t kseg = (size_t)32 * D * (l == NL - 1 ? 4 : 2), vseg = (size_t)32 * (D + 4);
        const size_t page = 128 + (kseg + 63) / 64 * 64 + (vseg + 63) / 64 * 64;
        CHECK_MSG(kvl_kv_table_layer_bytes(s->t, l) == (size_t)H * pages * page, "layer %d: %zu bytes", l,
                  kvl_kv_table_layer_bytes(s->t, l));
    }
    kvl_kv_stats st;
    kvl_seq_kv_stats(s, &st);
    const double kbits = (16.0 * (NL - 1) + 32.0) / NL, vbits = 8.0 * (D + 4) / D;
    CHECK_MSG(fabs(st.bits_per_value - 64.0 / 40.0 * (kbits + vbits) / 2) < 1e-9, "bits/value %g",
              st.bits_per_value); /* 64 rows stored per 40 tokens: two full pages' segments */
    CHECK(strstr(st.codec, "f16 / int8 (+layers)") != NULL && !st.sealing);
    kvl_seq_free(s);
    kvl_ctx_free(c);
}

/* Device sampling needs a device context: refused on a CPU one with a
 * message, nothing drawn (kvl_seq_sampled -1); the CPU path unchanged. */
static void test_device_sampling_refused(kvl_model *m) {
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.n_ctx = 64;
    p.n_threads = 1;
    kvl_ctx *c;
    CHECK(kvl_ctx_create(m, &p, &c, NULL, 0) == KVL_OK);
    kvl_sampler_params sp;
    kvl_sampler_params_default(&sp);
    CHECK(kvl_ctx_set_device_sampling(c, &sp) == KVL_ERR_UNSUPPORTED);
    CHECK(strlen(kvl_ctx_error(c)) > 0);
    CHECK(kvl_ctx_set_device_sampling(NULL, &sp) == KVL_ERR_ARG);
    kvl_seq *s;
    kvl_token toks[3] = {1, 2, 3};
    CHECK(kvl_seq_create(c, &s) == KVL_OK && kvl_prefill(s, toks, 3, NULL, NULL) == KVL_OK);
    CHECK(kvl_seq_sampled(s) == -1 && kvl_seq_sampled(NULL) == -1);
    kvl_seq_free(s);
    kvl_ctx_free(c);
}

int main(void) {
    kvl_model *m = load_tiny();
    if (m) {
        test_device_sampling_refused(m);
        test_mixed_codecs(m);
        test_no_simd(m);
        test_free_order(m);
        kvl_model_free(m);
    }
    test_budget_overflow();
    KVL_TEST_END();
}
