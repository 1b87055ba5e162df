/* The engine on several threads, on the committed tiny models (no real model
 * needed, so it is cheap enough for `make tsan`): past one attention chunk
 * (512 tokens) decode on 2-3 threads splits each kv-head's pages over the
 * threads (llama_k has one kv-head) and must equal the batched prefill bit for
 * bit; 1, 2 and 3 threads give identical logits; and two application threads
 * using their own contexts on one shared model at the same time (prefill,
 * fork, decode, tokenize) get the same results as one after the other. */
#include <pthread.h>
#include <string.h>

#include "kvlite.h"
#include "test.h"

enum { NL = 640, NT = 4, MAXV = 512 }; /* NL: past one 512-token attention chunk */

static char model_dir[512] = "tests/data/tiny";

static kvl_ctx *mkctx(const kvl_model *m, const char *codec, int n_ctx, int threads) {
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.kv_codec = codec;
    p.n_ctx = n_ctx;
    p.n_threads = threads;
    p.n_seq_max = 2; /* parent and fork */
    kvl_ctx *c = NULL;
    char err[256] = "";
    if (kvl_ctx_create(m, &p, &c, err, sizeof err) != KVL_OK) fprintf(stderr, "ctx: %s\n", err);
    return c;
}

static void tokens(kvl_token *t, int n, int V, unsigned seed) {
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        t[i] = (kvl_token)((seed >> 8) % (unsigned)V);
    }
}

/* Prefill n_pre tokens, fork; the parent prefills the next n_tail in one
 * batch, the fork decodes them one by one. Returns 0 on any API error. */
static int batch_vs_decode_n(const kvl_model *m, const char *codec, int threads, const kvl_token *t, int n_pre,
                             int n_tail, float *batch, float *dec) {
    kvl_ctx *c = mkctx(m, codec, NL + 16, threads);
    kvl_seq *s = NULL, *f = NULL;
    int ok = c && kvl_seq_create(c, &s) == KVL_OK && kvl_prefill(s, t, n_pre, NULL, NULL) == KVL_OK &&
             kvl_seq_fork(s, &f) == KVL_OK && kvl_prefill(s, t + n_pre, n_tail, batch, NULL) == KVL_OK;
    for (int i = n_pre; ok && i < n_pre + n_tail; i++) ok = kvl_decode(f, t[i], dec) == KVL_OK;
    if (!ok && c) fprintf(stderr, "%s %d threads: %s\n", codec, threads, kvl_ctx_error(c));
    kvl_seq_free(f);
    kvl_seq_free(s);
    kvl_ctx_free(c);
    return ok;
}
static int batch_vs_decode(const kvl_model *m, const char *codec, int threads, const kvl_token *t, float *batch,
                           float *dec) {
    return batch_vs_decode_n(m, codec, threads, t, NL - NT, NT, batch, dec);
}

static int diff(const float *a, const float *b, int n) { return memcmp(a, b, sizeof(float) * (size_t)n) != 0; }

/* ---- concurrent contexts on one model ---- */

typedef struct {
    const kvl_model *m;
    int threads;
    unsigned seed;
    int V;
    float logits[MAXV];
    kvl_token ids[64];
    int64_t n_ids;
    int ok;
} worker;

static void *worker_main(void *a_) {
    worker *w = a_;
    kvl_token t[200];
    tokens(t, 200, w->V, w->seed);
    kvl_ctx *c = mkctx(w->m, "int8", 256, w->threads);
    kvl_seq *s = NULL, *f = NULL;
    w->ok = c && kvl_seq_create(c, &s) == KVL_OK && kvl_prefill(s, t, 190, NULL, NULL) == KVL_OK &&
            kvl_seq_fork(s, &f) == KVL_OK;
    for (int i = 190; w->ok && i < 200; i++) w->ok = kvl_decode(f, t[i], w->logits) == KVL_OK;
    static const char text[] = "the thread pool and the KV cache, in parallel: <|im_start|>user\nhello<|im_end|>";
    w->n_ids = kvl_tokenize(w->m, text, sizeof text - 1, 0, 1, w->ids, 64);
    kvl_seq_free(f);
    kvl_seq_free(s);
    kvl_ctx_free(c);
    return NULL;
}

static void test_model(const char *file, const char *codec) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", model_dir, file);
    kvl_model *m = NULL;
    char err[256] = "";
    CHECK_MSG(kvl_model_load(path, &m, err, sizeof err) == KVL_OK, "%s: %s (run from the repo root)", path, err);
    if (!m) return;
    kvl_model_info mi;
    kvl_model_get_info(m, &mi);
    const int V = mi.n_vocab;
    CHECK(V > 0 && V <= MAXV);
    if (V <= 0 || V > MAXV) {
        kvl_model_free(m);
        return;
    }
    kvl_token *t = malloc(sizeof(kvl_token) * NL);
    tokens(t, NL, V, 7);
    float ref_b[MAXV], ref_d[MAXV], b[MAXV], d[MAXV];
    CHECK_MSG(batch_vs_decode(m, codec, 1, t, ref_b, ref_d), "%s 1 thread", file);
    CHECK_MSG(!diff(ref_b, ref_d, V), "%s %s 1 thread: batch vs decode differ", file, codec);
    for (int th = 2; th <= 3; th++) {
        CHECK_MSG(batch_vs_decode(m, codec, th, t, b, d), "%s %d threads", file, th);
        CHECK_MSG(!diff(b, d, V), "%s %s %d threads: batch vs split decode differ", file, codec, th);
        CHECK_MSG(!diff(b, ref_b, V), "%s %s: %d threads differ from 1", file, codec, th);
    }

    /* two application threads, one context each (2 pool threads each) */
    worker seq[2], par[2];
    for (int i = 0; i < 2; i++) {
        seq[i] = (worker){.m = m, .threads = 2, .seed = 100u + (unsigned)i, .V = V};
        worker_main(&seq[i]);
        CHECK_MSG(seq[i].ok && seq[i].n_ids > 0, "%s sequential worker %d", file, i);
        par[i] = (worker){.m = m, .threads = 2, .seed = 100u + (unsigned)i, .V = V};
    }
    pthread_t th[2];
    int started[2];
    for (int i = 0; i < 2; i++) started[i] = pthread_create(&th[i], NULL, worker_main, &par[i]) == 0;
    for (int i = 0; i < 2; i++)
        if (started[i]) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        CHECK_MSG(started[i] && par[i].ok, "%s concurrent worker %d", file, i);
        CHECK_MSG(!diff(par[i].logits, seq[i].logits, V), "%s worker %d: concurrent logits differ", file, i);
        CHECK(par[i].n_ids == seq[i].n_ids &&
              memcmp(par[i].ids, seq[i].ids, sizeof(kvl_token) * (size_t)(seq[i].n_ids > 0 ? seq[i].n_ids : 0)) == 0);
    }
    free(t);
    kvl_model_free(m);
}

/* Sealing codecs (kv/codec.h): rows quantize when their page seals at the
 * end of a forward call, so one batch and token-by-token decode legitimately
 * differ once a page fills between two decode calls (the tail 600..611
 * crosses the page boundary at 608); each of the two must still be
 * deterministic and the same on 1, 2 and 3 threads. */
static void test_sealing(const char *file, const char *codec) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", model_dir, file);
    kvl_model *m = NULL;
    char err[256] = "";
    CHECK_MSG(kvl_model_load(path, &m, err, sizeof err) == KVL_OK, "%s: %s", path, err);
    if (!m) return;
    kvl_model_info mi;
    kvl_model_get_info(m, &mi);
    const int V = mi.n_vocab;
    kvl_token *t = malloc(sizeof(kvl_token) * NL);
    tokens(t, NL, V, 11);
    float ref_b[MAXV], ref_d[MAXV], b[MAXV], d[MAXV];
    CHECK_MSG(batch_vs_decode_n(m, codec, 1, t, 600, 12, ref_b, ref_d), "%s %s 1 thread", file, codec);
    CHECK_MSG(diff(ref_b, ref_d, V), "%s %s: batch and decode should differ (rows seal between decode calls)", file,
              codec);
    for (int th = 2; th <= 3; th++) {
        CHECK_MSG(batch_vs_decode_n(m, codec, th, t, 600, 12, b, d), "%s %s %d threads", file, codec, th);
        CHECK_MSG(!diff(b, ref_b, V) && !diff(d, ref_d, V), "%s %s: %d threads differ from 1", file, codec, th);
    }
    CHECK_MSG(batch_vs_decode_n(m, codec, 2, t, 600, 12, b, d) && !diff(b, ref_b, V) && !diff(d, ref_d, V),
              "%s %s: a second run differs", file, codec);
    free(t);
    kvl_model_free(m);
}

int main(void) {
    const char *d = getenv("KVL_TINY_DIR");
    if (d && *d) snprintf(model_dir, sizeof model_dir, "%s", d);
    test_model("llama_k.gguf", "f16");  /* GQA 4/1: one kv-head, so decode splits */
    test_model("qwen2_q8.gguf", "int8"); /* biases, NeoX RoPE, int8 KV */
    test_model("llama_k.gguf", "int4z+rot"); /* per-token quantized + rotation: still batch-invariant */
    test_model("qwen2_q8.gguf", "fp8");
    test_sealing("llama_k.gguf", "kivi2");
    test_sealing("qwen2_q8.gguf", "kivi4+rot");
    KVL_TEST_END();
}
