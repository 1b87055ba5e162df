/* Prefix store (kvl_prefix_*): 256-token chunks put by one sequence are
 * reused by a new prompt with the same start (RAM tier, then the disk tier
 * from a new store), with bit-identical logits for a per-token codec; a
 * prompt sharing one chunk reuses one; another codec misses; a corrupted
 * disk chunk is a miss (the prompt recomputes, the pool is unchanged);
 * sealing codecs store sealed chunks only; the RAM tier evicts LRU under its
 * budget. On the committed tiny model. */
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "engine/engine.h"
#include "test.h"

enum { N = 700, V_SALT = 3 };

static kvl_ctx *mkctx(const kvl_model *m, const char *codec, int page) {
    kvl_ctx_params p;
    kvl_ctx_params_default(&p);
    p.n_ctx = 1024;
    p.n_threads = 1;
    p.kv_codec = codec;
    p.page_tokens = page;
    p.n_seq_max = 3;
    kvl_ctx *c = NULL;
    char err[256] = "";
    CHECK_MSG(kvl_ctx_create(m, &p, &c, err, sizeof err) == KVL_OK, "%s", err);
    return c;
}

/* Fresh sequence of c: prefix from the store, the rest prefilled; returns tokens reused. */
static int run_prompt(kvl_prefix *pf, kvl_ctx *c, const kvl_token *t, int n, float *logits, kvl_seq **out) {
    kvl_seq *s = NULL;
    int reused = -1;
    CHECK(kvl_seq_create(c, &s) == KVL_OK);
    CHECK(kvl_prefix_get(pf, s, t, n, &reused) == KVL_OK);
    CHECK(kvl_seq_pos(s) == reused);
    CHECK_MSG(kvl_prefill(s, t + reused, n - reused, logits, NULL) == KVL_OK, "%s", kvl_ctx_error(c));
    if (out) *out = s;
    else kvl_seq_free(s);
    return reused;
}

int main(void) {
    const char *d = getenv("KVL_TINY_DIR");
    char path[512], err[256] = "";
    snprintf(path, sizeof path, "%s/llama_q.gguf", d && *d ? d : "tests/data/tiny");
    kvl_model *m = NULL;
    if (kvl_model_load(path, &m, err, sizeof err) != KVL_OK) {
        CHECK_MSG(0, "cannot load %s: %s", path, err);
        KVL_TEST_END();
    }
    const int V = m->n_vocab;
    kvl_token t[N], t2[N];
    for (int i = 0; i < N; i++) t[i] = (kvl_token)((5 + 31 * i + (i * i) % 17) % V);
    memcpy(t2, t, sizeof t);
    for (int i = 300; i < N; i++) t2[i] = (kvl_token)((t[i] + 1) % V);
    float *la = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V);
    char dir[] = "/tmp/kvl_test_prefix_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);

    kvl_prefix *pf = NULL;
    CHECK(kvl_prefix_create(dir, (size_t)64 << 20, &pf, err, sizeof err) == KVL_OK);
    kvl_ctx *c = mkctx(m, "f16", 8);
    kvl_seq *a = NULL, *x = NULL;
    /* first prompt: nothing cached */
    CHECK(run_prompt(pf, c, t, N, la, &a) == 0);
    int stored = -1;
    CHECK(kvl_prefix_put(pf, a, &stored) == KVL_OK && stored == 2);
    CHECK(kvl_prefix_put(pf, a, &stored) == KVL_OK && stored == 0); /* already there */
    /* the same prompt again: two chunks from RAM, logits bit-identical */
    const size_t used_a = kvl_kv_pool_used(c->pool);
    CHECK(run_prompt(pf, c, t, N, lb, &x) == 512);
    CHECK_MSG(!memcmp(la, lb, sizeof(float) * V), "logits with a reused prefix differ");
    CHECK(kvl_kv_pool_used(c->pool) == 2 * used_a);
    /* the loaded sequence decodes like the original */
    CHECK(kvl_decode(a, 9, la) == KVL_OK && kvl_decode(x, 9, lb) == KVL_OK && !memcmp(la, lb, sizeof(float) * V));
    kvl_seq_free(x);
    /* a prompt sharing 300 tokens reuses one chunk */
    CHECK(run_prompt(pf, c, t2, N, lb, NULL) == 256);
    /* a prompt of exactly 512 tokens leaves one to compute: one chunk */
    CHECK(run_prompt(pf, c, t, 512, lb, NULL) == 256);
    kvl_prefix_stats st;
    kvl_prefix_get_stats(pf, &st);
    CHECK(st.ram_hits == 4 && st.stored == 2 && st.ram_chunks == 2 && st.bad == 0);
    /* not fresh */
    int reused = 0;
    CHECK(kvl_prefix_get(pf, a, t, N, &reused) == KVL_ERR_ARG && reused == 0);
    kvl_prefix_free(pf);

    /* a new store on the same directory, no RAM tier: from disk */
    CHECK(kvl_prefix_create(dir, 0, &pf, err, sizeof err) == KVL_OK);
    CHECK(run_prompt(pf, c, t, N, lb, NULL) == 512);
    kvl_prefix_get_stats(pf, &st);
    CHECK(st.disk_hits == 2 && st.ram_chunks == 0);
    /* another codec: another key, a miss */
    kvl_ctx *c8 = mkctx(m, "int8", 8);
    CHECK(run_prompt(pf, c8, t, N, lb, NULL) == 0);
    /* corrupt the second chunk's file: one chunk reused, the rest recomputed, logits as before */
    {
        char cmd[700];
        snprintf(cmd, sizeof cmd,
                 "for f in %s/*.kvc; do python3 -c 'import sys; b=bytearray(open(sys.argv[1],\"rb\").read()); "
                 "i=int.from_bytes(b[32:36],\"little\"); b[2000]^=(0x20 if i==1 else 0); open(sys.argv[1],\"wb\").write(b)' $f; done",
                 dir);
        CHECK(system(cmd) == 0);
        const size_t used = kvl_kv_pool_used(c->pool);
        kvl_seq *y = NULL;
        CHECK(run_prompt(pf, c, t, N, lb, &y) == 256);
        kvl_prefix_get_stats(pf, &st);
        CHECK(st.bad >= 1);
        kvl_seq_free(y);
        CHECK(kvl_kv_pool_used(c->pool) == used);
    }
    kvl_prefix_free(pf);

    /* RAM tier LRU under a budget of about one chunk */
    CHECK(kvl_prefix_create(NULL, 100 << 10, &pf, err, sizeof err) == KVL_OK);
    CHECK(kvl_prefix_put(pf, a, &stored) == KVL_OK && stored == 2);
    kvl_prefix_get_stats(pf, &st);
    CHECK_MSG(st.ram_chunks == 1 && st.evicted == 1 && st.ram_bytes <= (100 << 10), "%d chunks, %lld evicted, %zu bytes",
              st.ram_chunks, (long long)st.evicted, st.ram_bytes);
    kvl_prefix_free(pf);

    /* sealing codec: chunks stored once sealed; reuse works and decodes */
    CHECK(kvl_prefix_create(NULL, (size_t)64 << 20, &pf, err, sizeof err) == KVL_OK);
    kvl_ctx *ck = mkctx(m, "kivi2", 8);
    kvl_seq *k1 = NULL;
    CHECK(run_prompt(pf, ck, t, N, la, &k1) == 0);
    CHECK(kvl_prefix_put(pf, k1, &stored) == KVL_OK && stored == 2);
    kvl_seq *k2 = NULL;
    CHECK(run_prompt(pf, ck, t, N, lb, &k2) == 512);
    CHECK(kvl_kv_table_n_sealed(k2->t, 0, 0) >= 64);
    int agree = 0;
    for (int i = 0; i < 4; i++) {
        int b1 = 0, b2 = 0;
        for (int j = 1; j < V; j++) b1 = la[j] > la[b1] ? j : b1, b2 = lb[j] > lb[b2] ? j : b2;
        agree += b1 == b2;
        CHECK(kvl_decode(k1, (kvl_token)b1, la) == KVL_OK && kvl_decode(k2, (kvl_token)b1, lb) == KVL_OK);
    }
    printf("note: kivi2 with a reused sealed prefix: greedy token agrees %d/4 with the sequence prefilled at once\n", agree);
    kvl_seq_free(k1);
    kvl_seq_free(k2);
    kvl_prefix_free(pf);
    kvl_ctx_free(ck);

    /* page size not dividing 256: nothing stored, nothing reused */
    CHECK(kvl_prefix_create(NULL, (size_t)64 << 20, &pf, err, sizeof err) == KVL_OK);
    kvl_ctx *c48 = mkctx(m, "f16", 48);
    kvl_seq *z = NULL;
    CHECK(run_prompt(pf, c48, t, N, la, &z) == 0);
    CHECK(kvl_prefix_put(pf, z, &stored) == KVL_OK && stored == 0);
    kvl_seq_free(z);
    kvl_ctx_free(c48);
    kvl_prefix_free(pf);

    /* CacheGen in the disk tier (remote_level 1): the files are several times
     * smaller than pages, reuse from disk only is close to (not bit-identical
     * with) the exact prefix; RAM pages then CacheGen disk chunks stack */
    {
        char gdir[] = "/tmp/kvl_test_prefix_cg_XXXXXX";
        CHECK(mkdtemp(gdir) != NULL);
        kvl_prefix_params pp;
        kvl_prefix_params_default(&pp);
        pp.dir = gdir;
        pp.remote_level = 1;
        CHECK(kvl_prefix_create_ex(&pp, &pf, err, sizeof err) == KVL_OK);
        CHECK(kvl_prefix_put(pf, a, &stored) == KVL_OK && stored == 2);
        kvl_prefix_free(pf);
        char cmd[700];
        snprintf(cmd, sizeof cmd, "test $(cat %s/*.kvc | wc -c) -lt $(cat %s/*.kvc | wc -c)", gdir, dir);
        CHECK_MSG(system(cmd) == 0, "CacheGen chunk files are not smaller than page chunk files");
        pp.ram_bytes = 0;
        CHECK(kvl_prefix_create_ex(&pp, &pf, err, sizeof err) == KVL_OK);
        kvl_seq *g = NULL;
        CHECK(run_prompt(pf, c, t, N, lb, &g) == 512);
        kvl_prefix_get_stats(pf, &st);
        CHECK(st.disk_hits == 2 && st.bad == 0);
        kvl_seq *ref = NULL; /* the same context prefilled at once */
        CHECK(kvl_seq_create(c, &ref) == KVL_OK && kvl_prefill(ref, t, N, la, NULL) == KVL_OK);
        CHECK(kvl_decode(ref, 9, la) == KVL_OK && kvl_decode(g, 9, lb) == KVL_OK);
        kvl_seq_free(ref);
        double mx = 0;
        for (int i = 0; i < V; i++) mx = fabs(la[i] - lb[i]) > mx ? fabs(la[i] - lb[i]) : mx;
        CHECK_MSG(mx > 0 && mx < 1.0, "CacheGen reuse: max logit difference %g", mx);
        printf("note: prefix reuse from CacheGen level-1 disk chunks: max logit difference %.3g after a decode\n", mx);
        kvl_seq_free(g);
        kvl_prefix_free(pf);
        /* bad remote level */
        pp.remote_level = 7;
        CHECK(kvl_prefix_create_ex(&pp, &pf, err, sizeof err) == KVL_ERR_ARG && strstr(err, "remote_level"));
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", gdir);
        CHECK(system(cmd) == 0);
    }

    kvl_seq_free(a);
    kvl_ctx_free(c8);
    kvl_ctx_free(c);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    free(la);
    free(lb);
    kvl_model_free(m);
    KVL_TEST_END();
}
