/* Sessions (kvl_seq_save / kvl_seq_load / kvl_session_*): round trips for
 * per-token, rotated, sealing (sealed + open pages) and mixed per-layer
 * codecs give bit-identical logits for the next 8 greedy tokens; pages of
 * forked sequences are shared again after a load (pool bytes equal); every
 * single-byte corruption and truncation of a small file is rejected with the
 * pool unchanged (sampled offsets for a big file); mismatches (model,
 * codec, page size, context, budget, policy) name the field; a child saving
 * a session in a loop is SIGKILLed at random points many times and the
 * session always loads as a committed version. Tiny committed models for
 * everything, the default model ($KVL_MODEL) for the round trips again. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"
#include "kv/codec.h"
#include "kv/kv_internal.h"
#include "kv/serial.h"
#include "test.h"
#include "util/crc32c.h"

static kvl_model *load_model(const char *path) {
    char err[256];
    kvl_model *m = NULL;
    if (kvl_model_load(path, &m, err, sizeof err) != KVL_OK) CHECK_MSG(0, "cannot load %s: %s", path, err);
    return m;
}

static const char *tiny_path(const char *name, char *buf, size_t cap) {
    const char *d = getenv("KVL_TINY_DIR");
    snprintf(buf, cap, "%s/%s", d && *d ? d : "tests/data/tiny", name);
    return buf;
}

typedef struct cfg {
    const char *k, *v, *layers;
    int page, n_ctx;
    size_t budget;
} cfg;

static kvl_ctx *mkctx(const kvl_model *m, cfg c) {
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.n_ctx = c.n_ctx ? c.n_ctx : 128;
    p.n_threads = 1;
    p.kv_codec = c.k ? c.k : "f16";
    p.kv_codec_v = c.v;
    p.kv_layers = c.layers;
    p.page_tokens = c.page ? c.page : 8;
    p.n_seq_max = 4;
    p.kv_budget_bytes = c.budget;
    kvl_ctx *ctx = NULL;
    char err[256] = "";
    kvl_status s = kvl_ctx_create(m, &p, &ctx, err, sizeof err);
    CHECK_MSG(s == KVL_OK, "ctx %s: %s", p.kv_codec, err);
    return ctx;
}

static void toks_for(kvl_token *t, int n, int vocab, int salt) {
    for (int i = 0; i < n; i++) t[i] = (kvl_token)((11 + 37 * i + 101 * salt) % vocab);
}

static int argmax(const float *l, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[b]) b = i;
    return b;
}

/* Save a prefilled sequence from one context, load it into a fresh context
 * of the same configuration, decode 8 greedy tokens on both: logits equal
 * bit for bit. */
static void roundtrip(const kvl_model *m, cfg c, int n_prompt, const char *what) {
    const int V = m->n_vocab;
    kvl_ctx *a = mkctx(m, c), *b = mkctx(m, c);
    if (!a || !b) {
        kvl_ctx_free(a);
        kvl_ctx_free(b);
        return;
    }
    kvl_token *t = malloc(sizeof *t * (size_t)n_prompt);
    toks_for(t, n_prompt, V, 1);
    float *la = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V);
    kvl_seq *s = NULL, *r = NULL;
    CHECK(kvl_seq_create(a, &s) == KVL_OK);
    CHECK_MSG(kvl_prefill(s, t, n_prompt, la, NULL) == KVL_OK, "%s: prefill: %s", what, kvl_ctx_error(a));
    void *buf = NULL;
    size_t len = 0;
    CHECK_MSG(kvl_seq_save(s, &buf, &len) == KVL_OK, "%s: save: %s", what, kvl_ctx_error(a));
    const size_t used0 = kvl_kv_pool_used(b->pool);
    kvl_status st = kvl_seq_load(b, buf, len, &r);
    CHECK_MSG(st == KVL_OK, "%s: load: %s", what, kvl_ctx_error(b));
    if (st == KVL_OK) {
        CHECK(kvl_kv_pool_used(b->pool) - used0 == kvl_kv_pool_used(a->pool));
        CHECK(kvl_seq_pos(r) == n_prompt);
        kvl_token *rt = malloc(sizeof *rt * (size_t)n_prompt);
        CHECK(kvl_seq_tokens(r, rt, n_prompt) == n_prompt && !memcmp(rt, t, sizeof *rt * (size_t)n_prompt));
        free(rt);
        int sealed = 0, open_pages = 0;
        for (int l = 0; l < m->n_layer; l++)
            for (int h = 0; h < m->n_head_kv; h++) {
                CHECK(kvl_kv_table_len(r->t, l, h) == kvl_kv_table_len(s->t, l, h));
                CHECK(kvl_kv_table_n_sealed(r->t, l, h) == kvl_kv_table_n_sealed(s->t, l, h));
                sealed += kvl_kv_table_n_sealed(r->t, l, h);
                open_pages += (kvl_kv_table_len(r->t, l, h) + c.page - 1) / c.page - kvl_kv_table_n_sealed(r->t, l, h);
            }
        if (c.k && strstr(c.k, "kivi")) CHECK_MSG(sealed > 0 && open_pages > 0, "%s: %d sealed, %d open pages", what, sealed, open_pages);
        /* the loaded file re-saves to the same bytes */
        void *buf2 = NULL;
        size_t len2 = 0;
        CHECK(kvl_seq_save(r, &buf2, &len2) == KVL_OK && len2 == len && !memcmp(buf, buf2, len));
        free(buf2);
        int same = 1;
        for (int i = 0; i < 8; i++) {
            const kvl_token nt = (kvl_token)argmax(la, V);
            CHECK(kvl_decode(s, nt, la) == KVL_OK && kvl_decode(r, nt, lb) == KVL_OK);
            same &= !memcmp(la, lb, sizeof(float) * V);
        }
        CHECK_MSG(same, "%s: logits after restore differ", what);
    }
    kvl_seq_free(r);
    kvl_seq_free(s);
    free(buf);
    free(t);
    free(la);
    free(lb);
    kvl_ctx_free(a);
    kvl_ctx_free(b);
}

static const cfg CODECS[] = {
    {.k = "f16"}, {.k = "int8"}, {.k = "int4z+rot"}, {.k = "kivi2"}, {.k = "f16", .v = "int8", .layers = "0=kivi2;k1=int4z+rot"},
};

static void roundtrips(const kvl_model *m, int n_prompt, int page) {
    for (size_t i = 0; i < sizeof CODECS / sizeof CODECS[0]; i++) {
        cfg c = CODECS[i];
        c.page = page;
        char what[128];
        snprintf(what, sizeof what, "%s/%s/%s page %d", c.k, c.v ? c.v : "-", c.layers ? c.layers : "-", page);
        roundtrip(m, c, n_prompt, what);
    }
}

/* Two forked sequences saved together: after the load the pool holds as
 * many bytes as before the save (shared pages once), both continue
 * bit-identically. */
static void fork_sharing(const kvl_model *m, cfg c) {
    const int V = m->n_vocab;
    kvl_ctx *a = mkctx(m, c), *b = mkctx(m, c);
    if (!a || !b) return;
    kvl_token t[40];
    toks_for(t, 40, V, 2);
    kvl_seq *s = NULL, *f = NULL;
    CHECK(kvl_seq_create(a, &s) == KVL_OK && kvl_prefill(s, t, 30, NULL, NULL) == KVL_OK);
    CHECK(kvl_seq_fork(s, &f) == KVL_OK);
    CHECK(kvl_prefill(f, t + 30, 5, NULL, NULL) == KVL_OK && kvl_prefill(s, t + 35, 3, NULL, NULL) == KVL_OK);
    const kvl_seq *both[2] = {s, f};
    void *buf = NULL;
    size_t len = 0;
    const kvl_chat_msg msgs[2] = {{"user", "hello"}, {"assistant", "hi there"}};
    CHECK(kvl_seqs_save(both, 2, msgs, 2, &buf, &len) == KVL_OK);
    void *one = NULL;
    size_t one_len = 0;
    CHECK(kvl_seq_save(s, &one, &one_len) == KVL_OK);
    CHECK_MSG(len < 2 * one_len, "shared pages written once: %zu bytes for two, %zu for one", len, one_len);
    free(one);
    kvl_seq *out[4] = {0};
    int n = 0, nm = 0;
    kvl_chat_msg *rm = NULL;
    kvl_status st = kvl_seqs_load(b, buf, len, out, 4, &n, &rm, &nm);
    CHECK_MSG(st == KVL_OK, "load 2: %s", kvl_ctx_error(b));
    if (st == KVL_OK) {
        CHECK(n == 2 && nm == 2 && rm && !strcmp(rm[1].role, "assistant") && !strcmp(rm[1].content, "hi there"));
        CHECK_MSG(kvl_kv_pool_used(b->pool) == kvl_kv_pool_used(a->pool), "pool bytes %zu after load, %zu before save",
                  kvl_kv_pool_used(b->pool), kvl_kv_pool_used(a->pool));
        CHECK(kvl_seq_pos(out[0]) == 33 && kvl_seq_pos(out[1]) == 35);
        float *la = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V);
        for (int k = 0; k < 2; k++) {
            CHECK(kvl_decode(both[k] == s ? s : f, 7, la) == KVL_OK && kvl_decode(out[k], 7, lb) == KVL_OK);
            CHECK(!memcmp(la, lb, sizeof(float) * V));
        }
        free(la);
        free(lb);
        /* cap too small */
        kvl_seq *o1[1];
        int n1 = -1;
        CHECK(kvl_seqs_load(b, buf, len, o1, 1, &n1, NULL, NULL) == KVL_ERR_ARG && n1 == 0);
        CHECK(kvl_seq_load(b, buf, len, o1) == KVL_ERR_ARG);
    }
    free(rm);
    for (int i = 0; i < n; i++) kvl_seq_free(out[i]);
    kvl_seq_free(s);
    kvl_seq_free(f);
    free(buf);
    kvl_ctx_free(a);
    kvl_ctx_free(b);
}

/* Recompute every section CRC and the header CRC of a (modified) file. */
static void fix_crcs(uint8_t *b, size_t n) {
    if (n < KVL_SER_HEADER_BYTES) return;
    uint32_t ns;
    memcpy(&ns, b + 24, 4);
    size_t off = KVL_SER_HEADER_BYTES;
    for (uint32_t i = 0; i < ns && off + KVL_SER_SECTION_BYTES <= n; i++) {
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

/* Corrupt / truncate: every offset when the file is small, else `samples`
 * random ones. Each load must fail and leave the pool's bytes unchanged. */
static void corruption(const kvl_model *m, cfg c, int n_prompt, int samples) {
    kvl_ctx *a = mkctx(m, c);
    if (!a) return;
    kvl_token t[64];
    toks_for(t, n_prompt, m->n_vocab, 3);
    kvl_seq *s = NULL;
    CHECK(kvl_seq_create(a, &s) == KVL_OK && kvl_prefill(s, t, n_prompt, NULL, NULL) == KVL_OK);
    uint8_t *buf = NULL;
    size_t len = 0;
    const kvl_chat_msg msg = {"user", "corrupt me"};
    CHECK(kvl_seqs_save((const kvl_seq *const *)&s, 1, &msg, 1, (void **)&buf, &len) == KVL_OK);
    uint8_t *w = malloc(len);
    const size_t used = kvl_kv_pool_used(a->pool);
    const int all = samples <= 0;
    const size_t n_off = all ? len : (size_t)samples;
    int rejected = 0, unchanged = 0, msg_ok = 0;
    unsigned rng = 12345;
    for (size_t k = 0; k < n_off; k++) {
        rng = rng * 1103515245u + 12345u;
        const size_t off = all ? k : (size_t)(rng >> 4) % len;
        memcpy(w, buf, len);
        w[off] ^= (uint8_t)(1u << (k % 8)) | 0x10;
        kvl_seq *r = NULL;
        kvl_status st = kvl_seq_load(a, w, len, &r);
        rejected += st != KVL_OK && r == NULL;
        unchanged += kvl_kv_pool_used(a->pool) == used;
        msg_ok += strncmp(kvl_ctx_error(a), "session", 7) == 0;
        kvl_seq_free(r);
        /* truncation */
        r = NULL;
        st = kvl_seq_load(a, buf, off, &r);
        rejected += st != KVL_OK && r == NULL;
        unchanged += kvl_kv_pool_used(a->pool) == used;
        kvl_seq_free(r);
    }
    CHECK_MSG(rejected == (int)(2 * n_off), "%d of %zu corrupted/truncated files rejected", rejected, 2 * n_off);
    CHECK_MSG(unchanged == (int)(2 * n_off), "pool changed after %d rejected loads", (int)(2 * n_off) - unchanged);
    CHECK_MSG(msg_ok == (int)n_off, "%d of %zu messages start with 'session'", msg_ok, n_off);
    /* the same corruptions with valid checksums reach the structural checks:
     * a load may succeed (an unused byte) but never crash or leak */
    int loaded = 0;
    for (size_t k = 0; k < (all ? len : (size_t)samples); k++) {
        rng = rng * 1103515245u + 12345u;
        const size_t off = all ? k : (size_t)(rng >> 4) % len;
        memcpy(w, buf, len);
        w[off] ^= (uint8_t)(rng >> 24) | 1;
        fix_crcs(w, len);
        kvl_seq *r = NULL;
        if (kvl_seq_load(a, w, len, &r) == KVL_OK) {
            loaded++;
            kvl_seq_free(r);
        } else {
            CHECK(r == NULL && kvl_kv_pool_used(a->pool) == used);
        }
    }
    CHECK(kvl_kv_pool_used(a->pool) == used);
    printf("note: corruption (%zu-byte file, %s): all rejected; with checksums fixed %d of %zu still load\n", len,
           c.k ? c.k : "f16", loaded, all ? len : (size_t)samples);
    free(w);
    free(buf);
    kvl_seq_free(s);
    kvl_ctx_free(a);
}

/* Find the payload of section `type` in a file. */
static uint8_t *section(uint8_t *b, size_t n, uint32_t type, size_t *sl) {
    size_t off = KVL_SER_HEADER_BYTES;
    while (off + KVL_SER_SECTION_BYTES <= n) {
        uint32_t t;
        uint64_t l;
        memcpy(&t, b + off, 4);
        memcpy(&l, b + off + 8, 8);
        if (t == type) {
            *sl = (size_t)l;
            return b + off + KVL_SER_SECTION_BYTES;
        }
        off += KVL_SER_SECTION_BYTES + (size_t)l;
    }
    return NULL;
}

static void expect_fail(kvl_ctx *c, const void *buf, size_t len, const char *needle, const char *what) {
    if (!c) return;
    kvl_seq *r = NULL;
    const size_t used = kvl_kv_pool_used(c->pool);
    const kvl_status st = kvl_seq_load(c, buf, len, &r);
    CHECK_MSG(st != KVL_OK && r == NULL, "%s: loaded", what);
    CHECK_MSG(strstr(kvl_ctx_error(c), needle) != NULL, "%s: message '%s' lacks '%s'", what, kvl_ctx_error(c), needle);
    CHECK(kvl_kv_pool_used(c->pool) == used);
    kvl_seq_free(r);
}

static void mismatches(const kvl_model *m, const kvl_model *other) {
    cfg c = {.k = "f16", .page = 8, .n_ctx = 64};
    kvl_ctx *a = mkctx(m, c);
    if (!a) return;
    kvl_token t[40];
    toks_for(t, 40, m->n_vocab, 4);
    kvl_seq *s = NULL;
    CHECK(kvl_seq_create(a, &s) == KVL_OK && kvl_prefill(s, t, 40, NULL, NULL) == KVL_OK);
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK(kvl_seq_save(s, (void **)&buf, &len) == KVL_OK);
    kvl_ctx *x;
    if (other) {
        x = mkctx(other, c);
        expect_fail(x, buf, len, "model identity differs", "other model");
        kvl_ctx_free(x);
    }
    x = mkctx(m, (cfg){.k = "int8", .page = 8, .n_ctx = 64});
    expect_fail(x, buf, len, "codec spec of layer 0 K differs", "codec");
    kvl_ctx_free(x);
    x = mkctx(m, (cfg){.k = "f16", .layers = "v1=int8", .page = 8, .n_ctx = 64});
    expect_fail(x, buf, len, "codec spec of layer 1 V differs", "per-layer codec");
    kvl_ctx_free(x);
    x = mkctx(m, (cfg){.k = "f16", .page = 16, .n_ctx = 64});
    expect_fail(x, buf, len, "page size differs", "page size");
    kvl_ctx_free(x);
    x = mkctx(m, (cfg){.k = "f16", .page = 8, .n_ctx = 32});
    expect_fail(x, buf, len, "context too small", "n_ctx");
    kvl_ctx_free(x);
    x = mkctx(m, (cfg){.k = "f16", .page = 8, .n_ctx = 64, .budget = kvl_kv_pool_used(a->pool) - 1});
    expect_fail(x, buf, len, "budget too small", "budget");
    kvl_ctx_free(x);
    /* another policy's file (name patched, checksums fixed) */
    uint8_t *w = malloc(len);
    memcpy(w, buf, len);
    size_t sl = 0;
    uint8_t *pol = section(w, len, KVL_SER_POLICY, &sl);
    CHECK(pol && sl >= 8 && !memcmp(pol + 4, "full", 4));
    if (pol) memcpy(pol + 4, "h2o_", 4);
    fix_crcs(w, len);
    expect_fail(a, w, len, "KV policy differs (file 'h2o_', context 'full')", "policy");
    /* model identity patched */
    memcpy(w, buf, len);
    w[16] ^= 1;
    fix_crcs(w, len);
    expect_fail(a, w, len, "model identity differs (file 0x", "identity");
    /* a non-finite scale in a loaded int8 page fails validation */
    kvl_ctx *q = mkctx(m, (cfg){.k = "int8", .page = 8, .n_ctx = 64});
    kvl_seq *qs = NULL;
    uint8_t *qb = NULL;
    size_t ql = 0;
    if (q && kvl_seq_create(q, &qs) == KVL_OK && kvl_prefill(qs, t, 12, NULL, NULL) == KVL_OK &&
        kvl_seq_save(qs, (void **)&qb, &ql) == KVL_OK) {
        uint8_t *pg = section(qb, ql, KVL_SER_PAGES, &sl);
        /* first page: u32 count, u32 class, then the page: positions, K segment (f32 scales first) */
        const kvi_class *k0 = &q->pool->cls[0];
        const float inf = INFINITY;
        memcpy(pg + 8 + k0->koff, &inf, 4);
        fix_crcs(qb, ql);
        expect_fail(q, qb, ql, "invalid int8/int8 codec metadata", "int8 inf scale");
    }
    free(qb);
    kvl_seq_free(qs);
    kvl_ctx_free(q);
    /* load into a sequence that is not fresh */
    kvl_seq *ns = NULL;
    CHECK(kvl_seq_create(a, &ns) == KVL_OK && kvl_prefill(ns, t, 3, NULL, NULL) == KVL_OK);
    CHECK(kvl_seq_load_into(ns, buf, len) == KVL_ERR_ARG && kvl_seq_pos(ns) == 3);
    kvl_seq_free(ns);
    CHECK(kvl_seq_create(a, &ns) == KVL_OK && kvl_seq_load_into(ns, buf, len) == KVL_OK && kvl_seq_pos(ns) == 40);
    kvl_seq_free(ns);
    /* description without a model */
    char *text = NULL, err[256] = "";
    CHECK(kvl_session_describe(buf, len, &text, err, sizeof err) == KVL_OK && text && strstr(text, "checksums ok") &&
          strstr(text, "position 40"));
    free(text);
    CHECK(kvl_session_describe(buf, len - 1, &text, err, sizeof err) != KVL_OK && text == NULL && err[0]);
    free(w);
    free(buf);
    kvl_seq_free(s);
    kvl_ctx_free(a);
}

/* ---- session files ------------------------------------------------------------------------ */

static int count_cb(const char *name, void *user) {
    int *n = user;
    n[0]++;
    if (strcmp(name, "crash") != 0 && strcmp(name, "a.b-c_1") != 0) n[1]++;
    return 0;
}

static void rm_rf(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) CHECK_MSG(0, "rm -rf %s failed", dir);
}

static void files(const kvl_model *m, const char *dir) {
    CHECK(kvl_session_name_ok("a.b-c_1") && kvl_session_name_ok("x"));
    CHECK(!kvl_session_name_ok("") && !kvl_session_name_ok(".hidden") && !kvl_session_name_ok("a/b") &&
          !kvl_session_name_ok("a b") && !kvl_session_name_ok(NULL));
    char long_name[70];
    memset(long_name, 'a', 65);
    long_name[65] = 0;
    CHECK(!kvl_session_name_ok(long_name));
    long_name[64] = 0;
    CHECK(kvl_session_name_ok(long_name));
    kvl_ctx *c = mkctx(m, (cfg){.k = "f16", .page = 8});
    if (!c) return;
    kvl_token t[20];
    toks_for(t, 20, m->n_vocab, 5);
    kvl_seq *s = NULL, *r = NULL;
    CHECK(kvl_seq_create(c, &s) == KVL_OK && kvl_prefill(s, t, 20, NULL, NULL) == KVL_OK);
    const kvl_chat_msg msgs[3] = {{"system", "be brief"}, {"user", "q"}, {"assistant", "a"}};
    CHECK_MSG(kvl_session_save(c, s, dir, "a.b-c_1", msgs, 3) == KVL_OK, "%s", kvl_ctx_error(c));
    CHECK(kvl_session_save(c, s, dir, "../evil", NULL, 0) == KVL_ERR_ARG && strstr(kvl_ctx_error(c), "invalid name"));
    kvl_chat_msg *rm = NULL;
    int nm = 0;
    CHECK(kvl_session_load(c, dir, "a.b-c_1", &r, &rm, &nm) == KVL_OK && r && kvl_seq_pos(r) == 20 && nm == 3 &&
          !strcmp(rm[0].content, "be brief"));
    free(rm);
    kvl_seq_free(r);
    r = NULL;
    CHECK(kvl_session_load(c, dir, "missing", &r, NULL, NULL) == KVL_ERR_IO && r == NULL);
    int cnt[2] = {0, 0};
    char err[256] = "";
    CHECK(kvl_session_list(dir, count_cb, cnt, err, sizeof err) == KVL_OK && cnt[0] == 1 && cnt[1] == 0);
    CHECK(kvl_session_delete(dir, "a.b-c_1", err, sizeof err) == KVL_OK);
    CHECK(kvl_session_delete(dir, "a.b-c_1", err, sizeof err) == KVL_ERR_IO && strstr(err, "cannot delete"));
    cnt[0] = cnt[1] = 0;
    CHECK(kvl_session_list(dir, count_cb, cnt, err, sizeof err) == KVL_OK && cnt[0] == 0);
    CHECK(kvl_session_list("/nonexistent/kvlite", count_cb, cnt, err, sizeof err) == KVL_ERR_IO);
    kvl_seq_free(s);
    kvl_ctx_free(c);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Version k of the crash test's session: BASE + k tokens, message "v<k>". */
enum { BASE = 10, KILLS_DEFAULT = 60 };

static kvl_token crash_tok(int i, int V) { return (kvl_token)((7 + 13 * i) % V); }

/* ready: a pipe written once the child has loaded the session (the kill
 * delays count from there, so a slow start on a loaded machine does not
 * leave every kill before the first save). */
static void crash_child(const kvl_model *m, const char *dir, int ready) {
    kvl_ctx *c = mkctx(m, (cfg){.k = "kivi2", .page = 8, .n_ctx = 4096});
    kvl_seq *s = NULL;
    kvl_chat_msg *rm = NULL;
    int nm = 0;
    if (!c || kvl_session_load(c, dir, "crash", &s, &rm, &nm) != KVL_OK) _exit(3);
    free(rm);
    if (write(ready, "r", 1) != 1) _exit(6);
    close(ready);
    for (int k = kvl_seq_pos(s) - BASE + 1; k < 4096 - BASE; k++) {
        const kvl_token t = crash_tok(kvl_seq_pos(s), m->n_vocab);
        if (kvl_decode(s, t, NULL) != KVL_OK) _exit(4);
        char v[32];
        snprintf(v, sizeof v, "v%d", k);
        const kvl_chat_msg msg = {"user", v};
        if (kvl_session_save(c, s, dir, "crash", &msg, 1) != KVL_OK) _exit(5);
    }
    _exit(0);
}

static void crash(const kvl_model *m, const char *dir) {
    const int V = m->n_vocab;
    kvl_ctx *c = mkctx(m, (cfg){.k = "kivi2", .page = 8, .n_ctx = 4096});
    if (!c) return;
    kvl_token t[BASE];
    for (int i = 0; i < BASE; i++) t[i] = crash_tok(i, V);
    kvl_seq *s = NULL;
    CHECK(kvl_seq_create(c, &s) == KVL_OK && kvl_prefill(s, t, BASE, NULL, NULL) == KVL_OK);
    const kvl_chat_msg msg = {"user", "v0"};
    CHECK(kvl_session_save(c, s, dir, "crash", &msg, 1) == KVL_OK);
    /* kill delays scaled to this machine: the child's start (context + load) and a few saves */
    const double t0 = now_s();
    kvl_seq *probe = NULL;
    kvl_ctx *pc = mkctx(m, (cfg){.k = "kivi2", .page = 8, .n_ctx = 4096});
    CHECK(pc && kvl_session_load(pc, dir, "crash", &probe, NULL, NULL) == KVL_OK);
    const double t1 = now_s();
    for (int i = 0; i < 3; i++) CHECK(kvl_session_save(c, s, dir, "crash", &msg, 1) == KVL_OK);
    const double t_start = t1 - t0, t_save = (now_s() - t1) / 3;
    kvl_seq_free(probe);
    kvl_ctx_free(pc);
    kvl_seq_free(s);
    fflush(NULL);
    int last = 0, ok = 0, advanced = 0, listed_ok = 0;
    unsigned seed = (unsigned)time(NULL);
    /* KVL_KILLS: more kills for the benchmark run (docs/RESULTS.md: 300) */
    const char *ks = getenv("KVL_KILLS");
    const int KILLS = ks && atoi(ks) > 0 ? atoi(ks) : KILLS_DEFAULT;
    for (int it = 0; it < KILLS; it++) {
        int rp[2];
        CHECK(pipe(rp) == 0);
        const pid_t pid = fork();
        if (pid == 0) {
            close(rp[0]);
            crash_child(m, dir, rp[1]);
        }
        close(rp[1]);
        char rb;
        const int started = read(rp[0], &rb, 1) == 1; /* blocks until the child has loaded (or died) */
        close(rp[0]);
        CHECK(started);
        seed = seed * 1103515245u + 12345u;
        /* t_start is still spent after the load (the first decode and save's setup), then saves */
        const double delay = 0.25 * t_start + (double)((seed >> 8) % 1000) / 1000.0 * 6.0 * t_save + 2e-4;
        const struct timespec d = {(time_t)delay, (long)((delay - (double)(time_t)delay) * 1e9)};
        nanosleep(&d, NULL);
        kill(pid, SIGKILL);
        int wst = 0;
        waitpid(pid, &wst, 0);
        kvl_seq *r = NULL;
        kvl_chat_msg *rm = NULL;
        int nm = 0;
        const kvl_status st = kvl_session_load(c, dir, "crash", &r, &rm, &nm);
        int k = -1;
        if (st == KVL_OK && nm == 1 && sscanf(rm[0].content, "v%d", &k) == 1 && k >= last && kvl_seq_pos(r) == BASE + k) {
            /* the loaded version is exactly committed version k: its tokens, and logits of a
             * fresh prefill of them (kivi2 prefilled one token at a time, as the child did) */
            kvl_token *rt = malloc(sizeof *rt * (size_t)(BASE + k));
            int good = kvl_seq_tokens(r, rt, BASE + k) == BASE + k;
            for (int i = 0; i < BASE + k && good; i++) good = rt[i] == crash_tok(i, V);
            free(rt);
            ok += good;
            advanced += k > last;
            last = k;
        } else {
            CHECK_MSG(0, "kill %d: session did not load as a committed version (status %d, %s, version %d, last %d)", it,
                      (int)st, kvl_ctx_error(c), k, last);
        }
        free(rm);
        kvl_seq_free(r);
        int cnt[2] = {0, 0};
        listed_ok += kvl_session_list(dir, count_cb, cnt, NULL, 0) == KVL_OK && cnt[0] == 1 && cnt[1] == 0;
    }
    CHECK_MSG(ok == KILLS, "%d of %d kills left a committed version", ok, KILLS);
    CHECK_MSG(listed_ok == KILLS, "temporary files listed as sessions after %d kills", KILLS - listed_ok);
    CHECK_MSG(advanced >= KILLS / 4, "only %d of %d kills found a newer version (the child never committed?)", advanced, KILLS);
    int temps = 0; /* temporary files of saves killed mid-write */
    DIR *dd = opendir(dir);
    for (struct dirent *de; dd && (de = readdir(dd));) temps += !strncmp(de->d_name, ".crash.kvls.tmp.", 16);
    if (dd) closedir(dd);
    printf("note: crash test: %d SIGKILLs (child start %.1f ms, save %.2f ms), the session advanced %d times to version %d, "
           "always a committed one; %d kills interrupted a write (temporary files left, never listed)\n",
           KILLS, t_start * 1e3, t_save * 1e3, advanced, last, temps);
    kvl_ctx_free(c);
}

/* Seeds for tests/fuzz_session.c: KVL_WRITE_SEEDS=DIR writes saved files of the tiny model. */
static void write_seeds(const kvl_model *m, const char *dir) {
    static const cfg seeds[] = {{.k = "f16", .page = 8}, {.k = "int8", .page = 8}, {.k = "kivi2", .page = 8},
                                {.k = "int4z+rot", .page = 8}};
    static const char *names[] = {"f16", "int8", "kivi2", "int4z_rot"};
    for (int i = 0; i < 4; i++) {
        kvl_ctx *c = mkctx(m, seeds[i]);
        kvl_seq *s = NULL, *f = NULL;
        kvl_token t[20];
        toks_for(t, 20, m->n_vocab, i);
        if (!c || kvl_seq_create(c, &s) || kvl_prefill(s, t, 19, NULL, NULL) || kvl_seq_fork(s, &f) ||
            kvl_prefill(f, t + 19, 1, NULL, NULL))
            continue;
        const kvl_seq *both[2] = {s, f};
        const kvl_chat_msg msg[2] = {{"user", "hi"}, {"assistant", "hello"}};
        void *buf = NULL;
        size_t len = 0;
        if (i == 0 || i == 2) { /* a prefix-store chunk payload: pages 0-1 of every list */
            kvl_ser_buf cb = {0};
            kvl_kv_chunk_write(&cb, s->t, 0, 2);
            char path[512];
            snprintf(path, sizeof path, "%s/chunk_%s", dir, names[i]);
            FILE *fo = fopen(path, "wb");
            if (fo && !cb.oom) fwrite(cb.p, 1, cb.n, fo);
            if (fo) fclose(fo);
            free(cb.p);
        }
        if (kvl_seqs_save(both, i == 0 ? 2 : 1, msg, 2, &buf, &len) == KVL_OK) {
            char path[512];
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            FILE *fo = fopen(path, "wb");
            if (fo) {
                fwrite(buf, 1, len, fo);
                fclose(fo);
            }
        }
        free(buf);
        kvl_seq_free(f);
        kvl_seq_free(s);
        kvl_ctx_free(c);
    }
}

int main(void) {
    char p1[512], p2[512];
    kvl_model *tq = load_model(tiny_path("llama_q.gguf", p1, sizeof p1));
    kvl_model *tf = load_model(tiny_path("llama_f16.gguf", p2, sizeof p2));
    if (tq && getenv("KVL_WRITE_SEEDS")) {
        write_seeds(tq, getenv("KVL_WRITE_SEEDS"));
        kvl_model_free(tq);
        kvl_model_free(tf);
        KVL_TEST_END();
    }
    char dir[] = "/tmp/kvl_test_session_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    if (tq) {
        CHECK(kvl_model_identity(tq) != 0 && (!tf || kvl_model_identity(tq) != kvl_model_identity(tf)));
        roundtrips(tq, 21, 8);
        fork_sharing(tq, (cfg){.k = "f16", .page = 8});
        fork_sharing(tq, (cfg){.k = "kivi2", .page = 8});
        corruption(tq, (cfg){.k = "f16", .page = 8, .n_ctx = 32}, 10, 0);
        corruption(tq, (cfg){.k = "kivi2", .page = 8, .n_ctx = 32}, 20, 0);
        mismatches(tq, tf);
        files(tq, dir);
        crash(tq, dir);
    }
    const char *path = kvl_test_model("default-model round trips");
    if (path) {
        kvl_model *m = load_model(path);
        if (m) {
            roundtrips(m, 45, 32);
            fork_sharing(m, (cfg){.k = "int4z+rot", .page = 32});
            corruption(m, (cfg){.k = "kivi2", .page = 32, .n_ctx = 64}, 40, 300);
            mismatches(m, tq);
            kvl_model_free(m);
        }
    }
    rm_rf(dir);
    kvl_model_free(tq);
    kvl_model_free(tf);
    KVL_TEST_END();
}
