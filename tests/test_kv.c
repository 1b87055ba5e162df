/* Paged KV cache tests: append/len/positions, attention over pages against a
 * dense double-precision reference (GQA, several page sizes, causal masks,
 * every codec, scalar and SIMD kernels, thread split), fork sharing and
 * copy-on-write, exact pool accounting, the budget (atomic KVL_ERR_NOMEM),
 * drop + compaction, attention statistics, and a test codec with a seal hook
 * (page-level quantization path). */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv/codec.h"
#include "kv/kv.h"
#include "test.h"

enum { L = 2, HKV = 3, NH = 9, D = 64 };

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static double urand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
static float frand(float a) { return (float)((2 * urand() - 1) * a); }

/* ---- dense reference of what the cache holds (original floats) ------------------ */

#define RCAP 1024
typedef struct refkv {
    int n[L * HKV];
    int32_t pos[L * HKV][RCAP];
    float k[L * HKV][RCAP][D], v[L * HKV][RCAP][D];
} refkv;

static void ref_append(refkv *r, int layer, int n_tok, const int32_t *pos, const float *k, const float *v) {
    for (int h = 0; h < HKV; h++) {
        const int li = layer * HKV + h;
        for (int j = 0; j < n_tok; j++) {
            const int i = r->n[li]++;
            r->pos[li][i] = pos[j];
            memcpy(r->k[li][i], k + ((size_t)j * HKV + h) * D, sizeof(float) * D);
            memcpy(r->v[li][i], v + ((size_t)j * HKV + h) * D, sizeof(float) * D);
        }
    }
}

static void ref_drop(refkv *r, int layer, int head, const int *idx, int n_idx) {
    const int li = layer * HKV + head;
    int w = 0, d = 0;
    for (int i = 0; i < r->n[li]; i++) {
        if (d < n_idx && idx[d] == i) {
            d++;
            continue;
        }
        r->pos[li][w] = r->pos[li][i];
        memmove(r->k[li][w], r->k[li][i], sizeof(float) * D);
        memmove(r->v[li][w], r->v[li][i], sizeof(float) * D);
        w++;
    }
    r->n[li] = w;
}

/* Dense causal softmax attention in double. q, out: [n_tok][NH][D].
 * prob (optional): [NH][RCAP] summed probabilities per cached token. */
static void ref_attend(const refkv *r, int layer, int n_tok, const float *q, const int32_t *qpos, float scale,
                       float *out, double (*prob)[RCAP]) {
    static double s[RCAP];
    for (int t = 0; t < n_tok; t++)
        for (int h = 0; h < NH; h++) {
            const int li = layer * HKV + h / (NH / HKV);
            const float *qr = q + ((size_t)t * NH + h) * D;
            double m = -INFINITY, l = 0, acc[D] = {0};
            for (int i = 0; i < r->n[li]; i++) {
                s[i] = -INFINITY;
                if (r->pos[li][i] > qpos[t]) continue;
                double d = 0;
                for (int j = 0; j < D; j++) d += (double)qr[j] * r->k[li][i][j];
                s[i] = d * scale;
                if (s[i] > m) m = s[i];
            }
            for (int i = 0; i < r->n[li]; i++) {
                s[i] = r->pos[li][i] > qpos[t] ? 0 : exp(s[i] - m);
                l += s[i];
            }
            for (int i = 0; i < r->n[li]; i++)
                for (int j = 0; j < D; j++) acc[j] += s[i] * r->v[li][i][j];
            for (int j = 0; j < D; j++) out[((size_t)t * NH + h) * D + j] = l > 0 ? (float)(acc[j] / l) : 0;
            if (prob && l > 0)
                for (int i = 0; i < r->n[li]; i++) prob[h][i] += s[i] / l;
        }
}

/* ---- helpers -------------------------------------------------------------------------- */

static int g_chunk; /* attention chunk tokens of new pools (0 = default) */

static kvl_kv_pool *mkpool(const char *codec, int P, size_t budget, int scalar_only) {
    kvl_kv_config cfg = {L, HKV, D, P, budget, kvl_codec_find(codec), "full", NULL, NH, scalar_only, g_chunk, NULL, NULL, NULL, NULL, 0, 0};
    kvl_kv_pool *p = NULL;
    kvl_err err;
    kvl_status s = kvl_kv_pool_create(&cfg, &p, &err);
    CHECK_MSG(s == KVL_OK, "pool create: %s", err.msg);
    return p;
}

/* Append n_tok random tokens with positions pos0, pos0+step, ... to layer. */
static kvl_status add_tokens(kvl_kv_table *t, refkv *r, int layer, int n_tok, int pos0, int step) {
    int32_t *pos = malloc(sizeof(int32_t) * n_tok);
    float *k = malloc(sizeof(float) * n_tok * HKV * D), *v = malloc(sizeof(float) * n_tok * HKV * D);
    for (int j = 0; j < n_tok; j++) pos[j] = pos0 + j * step;
    for (int i = 0; i < n_tok * HKV * D; i++) {
        k[i] = frand(2);
        v[i] = frand(1);
    }
    kvl_err err;
    kvl_status s = kvl_kv_append(t, layer, n_tok, pos, k, v, &err);
    if (s == KVL_OK && r) ref_append(r, layer, n_tok, pos, k, v);
    free(pos), free(k), free(v);
    return s;
}

static void rand_q(float *q, int n_tok) {
    for (int i = 0; i < n_tok * NH * D; i++) q[i] = frand(2);
}

/* Run attention with nth threads (called one after another). */
static void attend(const kvl_kv_table *t, int layer, int n_tok, const float *q, const int32_t *qpos, float *out,
                   int nth) {
    const kvl_kv_pool *p = kvl_kv_table_pool(t);
    void *scratch = malloc(kvl_kv_attend_scratch_bytes(p));
    for (int ith = 0; ith < nth; ith++)
        kvl_kv_attend(t, layer, n_tok, q, qpos, NH, 1.0f / sqrtf(D), out, scratch, ith, nth);
    free(scratch);
}

/* Same, on nth real threads running concurrently (each with its own scratch). */
typedef struct th_arg {
    const kvl_kv_table *t;
    int layer, n_tok, ith, nth;
    const float *q;
    const int32_t *qpos;
    float *out;
} th_arg;
static void *th_main(void *a_) {
    th_arg *a = a_;
    void *scratch = malloc(kvl_kv_attend_scratch_bytes(kvl_kv_table_pool(a->t)));
    kvl_kv_attend(a->t, a->layer, a->n_tok, a->q, a->qpos, NH, 1.0f / sqrtf(D), a->out, scratch, a->ith, a->nth);
    free(scratch);
    return NULL;
}
static void attend_threads(const kvl_kv_table *t, int layer, int n_tok, const float *q, const int32_t *qpos,
                           float *out, int nth) {
    pthread_t th[8];
    th_arg a[8];
    for (int i = 0; i < nth; i++) {
        a[i] = (th_arg){t, layer, n_tok, i, nth, q, qpos, out};
        pthread_create(&th[i], NULL, th_main, &a[i]);
    }
    for (int i = 0; i < nth; i++) pthread_join(th[i], NULL);
}

static double max_diff(const float *a, const float *b, int n) {
    double m = 0;
    for (int i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static double codec_tol(const char *c) { return !strcmp(c, "f32") ? 2e-5 : !strcmp(c, "f16") ? 3e-3 : 3e-2; }

static int pages_for(int len, int P) { return (len + P - 1) / P; }

/* ---- tests ------------------------------------------------------------------------------ */

static refkv R, R2; /* large: static */

static void test_append_positions(const char *codec, int P) {
    kvl_kv_pool *p = mkpool(codec, P, (size_t)64 << 20, 0);
    kvl_kv_table *t;
    kvl_err err;
    CHECK(kvl_kv_table_create(p, &t, &err) == KVL_OK);
    memset(&R, 0, sizeof R);
    const int chunks[] = {5, 1, 37, 13};
    int pos0 = 0;
    for (int c = 0; c < 4; c++) {
        CHECK(add_tokens(t, &R, 0, chunks[c], pos0, 1) == KVL_OK);
        pos0 += chunks[c];
    }
    CHECK(add_tokens(t, &R, 1, 3, 100, 2) == KVL_OK);
    CHECK(add_tokens(t, &R, 1, 0, 0, 1) == KVL_OK);
    int pages = 0, bad = 0;
    for (int l = 0; l < L; l++)
        for (int h = 0; h < HKV; h++) {
            const int li = l * HKV + h;
            CHECK(kvl_kv_table_len(t, l, h) == R.n[li]);
            int32_t pos[RCAP];
            CHECK(kvl_kv_table_positions(t, l, h, pos, RCAP) == R.n[li]);
            for (int i = 0; i < R.n[li]; i++) {
                bad += pos[i] != R.pos[li][i];
                float k[D], v[D];
                CHECK(kvl_kv_table_decode(t, l, h, i, k, v) == KVL_OK);
                if (!strcmp(codec, "f32"))
                    bad += memcmp(k, R.k[li][i], sizeof k) != 0 || memcmp(v, R.v[li][i], sizeof v) != 0;
            }
            pages += pages_for(R.n[li], P);
        }
    CHECK(bad == 0);
    CHECK(kvl_kv_table_len(t, 0, 0) == 56 && kvl_kv_table_len(t, 1, 2) == 3);
    CHECK(kvl_kv_table_n_pages(t) == pages);
    CHECK(kvl_kv_table_bytes(t) == (size_t)pages * kvl_kv_page_bytes(p));
    CHECK(kvl_kv_pool_used(p) == kvl_kv_table_bytes(t));
    CHECK(kvl_kv_table_peak_bytes(t) == kvl_kv_table_bytes(t));
    CHECK(kvl_kv_page_bytes(p) % 64 == 0);
    const double bpt = !strcmp(codec, "f32") ? 2 * 4 * D : !strcmp(codec, "f16") ? 2 * 2 * D : 2 * (D + 4);
    CHECK(kvl_kv_bytes_per_token(p) == bpt * L * HKV);
    CHECK(kvl_kv_append(t, 2, 1, NULL, NULL, NULL, &err) == KVL_ERR_ARG);
    kvl_kv_table_free(t);
    CHECK(kvl_kv_pool_used(p) == 0);
    kvl_kv_pool_free(p);
}

/* Attention vs dense reference; SIMD vs scalar; thread split. */
static void test_attention(const char *codec, int P) {
    kvl_kv_pool *p = mkpool(codec, P, (size_t)64 << 20, 0), *ps = mkpool(codec, P, (size_t)64 << 20, 1);
    kvl_kv_table *t, *ts;
    kvl_err err;
    CHECK(kvl_kv_table_create(p, &t, &err) == KVL_OK && kvl_kv_table_create(ps, &ts, &err) == KVL_OK);
    memset(&R, 0, sizeof R);
    /* same data into both pools: append through the reference */
    const uint64_t seed = rng_state;
    CHECK(add_tokens(t, &R, 0, 60, 0, 3) == KVL_OK);
    CHECK(add_tokens(t, &R, 0, 43, 180, 3) == KVL_OK);
    CHECK(add_tokens(t, &R, 1, 20, 0, 1) == KVL_OK);
    rng_state = seed;
    CHECK(add_tokens(ts, NULL, 0, 60, 0, 3) == KVL_OK);
    CHECK(add_tokens(ts, NULL, 0, 43, 180, 3) == KVL_OK);
    CHECK(add_tokens(ts, NULL, 1, 20, 0, 1) == KVL_OK);

    /* query batches: prefill tail (causal), sparse positions that mask whole pages, decode */
    const int32_t qa[8] = {285, 288, 291, 294, 297, 300, 303, 306};
    const int32_t qb[5] = {0, 4, 30, 151, 1000};
    const int32_t qc[1] = {306};
    const int32_t qd[3] = {-1, 5, 19}; /* layer 1; -1 sees nothing */
    const struct { int layer, n; const int32_t *qp; } cases[] = {{0, 8, qa}, {0, 5, qb}, {0, 1, qc}, {1, 3, qd}};
    float *q = malloc(sizeof(float) * 8 * NH * D), *o = malloc(sizeof(float) * 8 * NH * D);
    float *oref = malloc(sizeof(float) * 8 * NH * D), *os = malloc(sizeof(float) * 8 * NH * D);
    float *ot = malloc(sizeof(float) * 8 * NH * D);
    for (int c = 0; c < 4; c++) {
        const int n = cases[c].n, sz = n * NH * D;
        rand_q(q, n);
        ref_attend(&R, cases[c].layer, n, q, cases[c].qp, 1.0f / sqrtf(D), oref, NULL);
        attend(t, cases[c].layer, n, q, cases[c].qp, o, 1);
        attend(ts, cases[c].layer, n, q, cases[c].qp, os, 1);
        const double e = max_diff(o, oref, sz), es = max_diff(os, oref, sz), ss = max_diff(o, os, sz);
        CHECK_MSG(e <= codec_tol(codec), "%s P=%d case %d: err %g", codec, P, c, e);
        CHECK_MSG(es <= codec_tol(codec), "%s P=%d case %d scalar: err %g", codec, P, c, es);
        CHECK_MSG(ss <= 2e-5, "%s P=%d case %d: simd vs scalar %g (%s)", codec, P, c, ss, kvl_kv_pool_isa(p));
        const int nths[] = {2, 3, 4, 7, 40};
        for (int k = 0; k < 5; k++) {
            memset(ot, 0xff, sizeof(float) * sz);
            attend(t, cases[c].layer, n, q, cases[c].qp, ot, nths[k]);
            CHECK_MSG(memcmp(ot, o, sizeof(float) * sz) == 0, "%s P=%d nth=%d differs", codec, P, nths[k]);
        }
        memset(ot, 0xff, sizeof(float) * sz);
        attend_threads(t, cases[c].layer, n, q, cases[c].qp, ot, 4);
        CHECK_MSG(memcmp(ot, o, sizeof(float) * sz) == 0, "%s P=%d: concurrent threads differ", codec, P);
    }
    free(q), free(o), free(oref), free(os), free(ot);
    kvl_kv_table_free(t);
    kvl_kv_table_free(ts);
    CHECK(kvl_kv_pool_used(p) == 0 && kvl_kv_pool_used(ps) == 0);
    kvl_kv_pool_free(p);
    kvl_kv_pool_free(ps);
}

/* A query's output does not depend on how tokens were batched: one prefill
 * call, chunks of 7, and token-by-token decode give bit-identical outputs
 * (the engine's batch-vs-decode consistency relies on it). */
static void test_batch_invariance(const char *codec, int P, int scalar_only) {
    enum { N = 45 };
    static float k[N * HKV * D], v[N * HKV * D], q[N * NH * D], ob[N * NH * D], oc[N * NH * D], od[N * NH * D];
    int32_t pos[N];
    for (int i = 0; i < N; i++) pos[i] = i;
    for (int i = 0; i < N * HKV * D; i++) k[i] = frand(2), v[i] = frand(1);
    rand_q(q, N);
    kvl_kv_pool *p = mkpool(codec, P, (size_t)64 << 20, scalar_only);
    kvl_kv_table *tb, *tc, *td;
    kvl_err err;
    CHECK(kvl_kv_table_create(p, &tb, &err) == KVL_OK && kvl_kv_table_create(p, &tc, &err) == KVL_OK &&
          kvl_kv_table_create(p, &td, &err) == KVL_OK);
    CHECK(kvl_kv_append(tb, 0, N, pos, k, v, &err) == KVL_OK);
    attend(tb, 0, N, q, pos, ob, 2);
    for (int i0 = 0; i0 < N; i0 += 7) {
        const int n = N - i0 < 7 ? N - i0 : 7;
        const size_t kv0 = (size_t)i0 * HKV * D, q0 = (size_t)i0 * NH * D;
        CHECK(kvl_kv_append(tc, 0, n, pos + i0, k + kv0, v + kv0, &err) == KVL_OK);
        attend(tc, 0, n, q + q0, pos + i0, oc + q0, 3);
    }
    for (int i = 0; i < N; i++) {
        const size_t kv0 = (size_t)i * HKV * D, q0 = (size_t)i * NH * D;
        CHECK(kvl_kv_append(td, 0, 1, pos + i, k + kv0, v + kv0, &err) == KVL_OK);
        attend(td, 0, 1, q + q0, pos + i, od + q0, 1);
    }
    CHECK_MSG(memcmp(ob, oc, sizeof ob) == 0, "%s P=%d %s: batch vs chunked %g", codec, P, kvl_kv_pool_isa(p),
              max_diff(ob, oc, N * NH * D));
    CHECK_MSG(memcmp(ob, od, sizeof ob) == 0, "%s P=%d %s: batch vs decode %g", codec, P, kvl_kv_pool_isa(p),
              max_diff(ob, od, N * NH * D));
    kvl_kv_table_free(tb);
    kvl_kv_table_free(tc);
    kvl_kv_table_free(td);
    kvl_kv_pool_free(p);
}

/* int8 keys with f16 values. */
static void test_mixed_codecs(void) {
    kvl_kv_config cfg = {L, HKV, D, 16, (size_t)8 << 20, kvl_codec_find("int8"), NULL, kvl_codec_find("f16"), NH, 0, 0, NULL, NULL, NULL, NULL, 0, 0};
    kvl_kv_pool *p;
    kvl_kv_table *t;
    kvl_err err;
    CHECK(kvl_kv_pool_create(&cfg, &p, &err) == KVL_OK && kvl_kv_table_create(p, &t, &err) == KVL_OK);
    CHECK(kvl_kv_bytes_per_token(p) == (double)((D + 4) + 2 * D) * L * HKV);
    memset(&R, 0, sizeof R);
    CHECK(add_tokens(t, &R, 0, 77, 0, 1) == KVL_OK);
    float q[4 * NH * D], o[4 * NH * D], oref[4 * NH * D];
    const int32_t qp[4] = {73, 74, 75, 76};
    rand_q(q, 4);
    ref_attend(&R, 0, 4, q, qp, 1.0f / sqrtf(D), oref, NULL);
    attend(t, 0, 4, q, qp, o, 2);
    CHECK(max_diff(o, oref, 4 * NH * D) <= 3e-2);
    kvl_kv_table_free(t);
    kvl_kv_pool_free(p);
}

static void test_fork_cow(const char *codec, int P, int n0) {
    kvl_kv_pool *p = mkpool(codec, P, (size_t)64 << 20, 0);
    const size_t pb = kvl_kv_page_bytes(p);
    kvl_kv_table *a, *b;
    kvl_err err;
    CHECK(kvl_kv_table_create(p, &a, &err) == KVL_OK);
    memset(&R, 0, sizeof R);
    CHECK(add_tokens(a, &R, 0, n0, 0, 1) == KVL_OK);
    const size_t u0 = kvl_kv_pool_used(p);
    CHECK(kvl_kv_table_fork(a, &b, &err) == KVL_OK);
    CHECK(kvl_kv_pool_used(p) == u0); /* fork shares pages */
    CHECK(kvl_kv_table_bytes(b) == kvl_kv_table_bytes(a) && kvl_kv_table_n_pages(b) == kvl_kv_table_n_pages(a));
    CHECK(kvl_kv_table_len(b, 0, 1) == n0);

    float q[NH * D], o0[NH * D], o1[NH * D], oref[NH * D];
    const int32_t qp[1] = {100000};
    rand_q(q, 1);
    attend(a, 0, 1, q, qp, o0, 1);
    R2 = R;
    /* child appends one token: partial last page -> copy-on-write of each head's last page */
    CHECK(add_tokens(b, &R2, 0, 1, n0, 1) == KVL_OK);
    const int partial = n0 % P != 0;
    CHECK(kvl_kv_pool_used(p) == u0 + (size_t)HKV * pb);
    (void)partial; /* either a COW copy or a fresh page: one page per head */
    attend(a, 0, 1, q, qp, o1, 1);
    CHECK(memcmp(o0, o1, sizeof o0) == 0); /* parent unchanged */
    ref_attend(&R2, 0, 1, q, qp, 1.0f / sqrtf(D), oref, NULL);
    attend(b, 0, 1, q, qp, o1, 1);
    CHECK(max_diff(o1, oref, NH * D) <= codec_tol(codec));
    /* parent appends: its last page is now exclusive again (or full) */
    const size_t u1 = kvl_kv_pool_used(p);
    CHECK(add_tokens(a, &R, 0, 1, n0, 1) == KVL_OK);
    CHECK(kvl_kv_pool_used(p) == u1 + (partial ? 0 : (size_t)HKV * pb));
    ref_attend(&R, 0, 1, q, qp, 1.0f / sqrtf(D), oref, NULL);
    attend(a, 0, 1, q, qp, o1, 1);
    CHECK(max_diff(o1, oref, NH * D) <= codec_tol(codec));
    ref_attend(&R2, 0, 1, q, qp, 1.0f / sqrtf(D), oref, NULL);
    attend(b, 0, 1, q, qp, o1, 1);
    CHECK(max_diff(o1, oref, NH * D) <= codec_tol(codec));
    /* fork of a fork, then free in a mixed order */
    kvl_kv_table *c;
    CHECK(kvl_kv_table_fork(b, &c, &err) == KVL_OK);
    kvl_kv_table_free(b);
    attend(c, 0, 1, q, qp, o0, 1);
    CHECK(max_diff(o0, oref, NH * D) <= codec_tol(codec));
    kvl_kv_table_free(a);
    CHECK(kvl_kv_pool_used(p) == kvl_kv_table_bytes(c));
    kvl_kv_table_free(c);
    CHECK(kvl_kv_pool_used(p) == 0);
    kvl_kv_table_free(NULL);
    kvl_kv_pool_free(p);
}

static void test_budget(void) {
    const int P = 8;
    kvl_kv_pool *p = mkpool("f16", P, 1, 0);
    const size_t pb = kvl_kv_page_bytes(p);
    kvl_kv_pool_free(p);
    p = mkpool("f16", P, pb * 10 + 100, 0); /* 10 pages */
    kvl_kv_table *t;
    kvl_err err;
    CHECK(kvl_kv_table_create(p, &t, &err) == KVL_OK);
    CHECK(kvl_kv_append_need(t, 8) == (size_t)L * HKV * pb);
    for (int i = 0; i < 3; i++) CHECK(add_tokens(t, NULL, 0, 8, 8 * i, 1) == KVL_OK);
    CHECK(kvl_kv_pool_used(p) == 9 * pb);
    int32_t pos[8] = {0};
    float kv[8 * HKV * D] = {0};
    kvl_err_clear(&err);
    CHECK(kvl_kv_append(t, 0, 1, pos, kv, kv, &err) == KVL_ERR_NOMEM); /* needs 3 pages, 1 free */
    CHECK(err.status == KVL_ERR_NOMEM && strstr(err.msg, "budget") != NULL);
    for (int h = 0; h < HKV; h++) CHECK(kvl_kv_table_len(t, 0, h) == 24);
    CHECK(kvl_kv_pool_used(p) == 9 * pb && kvl_kv_table_bytes(t) == 9 * pb);
    CHECK(kvl_kv_table_peak_bytes(t) == 9 * pb);
    /* drop one page's worth from every head: memory returns, the append fits */
    int idx[8];
    for (int i = 0; i < 8; i++) idx[i] = 3 + i;
    for (int h = 0; h < HKV; h++) CHECK(kvl_kv_drop(t, 0, h, idx, 8, &err) == KVL_OK);
    CHECK(kvl_kv_pool_used(p) == 6 * pb && kvl_kv_table_peak_bytes(t) == 9 * pb);
    CHECK(kvl_kv_append(t, 0, 1, pos, kv, kv, &err) == KVL_OK);
    CHECK(kvl_kv_pool_used(p) == 9 * pb && kvl_kv_table_len(t, 0, 2) == 17);
    /* fork + copy-on-write over budget fails without changing anything */
    kvl_kv_table *f;
    CHECK(kvl_kv_table_fork(t, &f, &err) == KVL_OK);
    CHECK(kvl_kv_append(f, 0, 1, pos, kv, kv, &err) == KVL_ERR_NOMEM);
    CHECK(kvl_kv_table_len(f, 0, 0) == 17 && kvl_kv_pool_used(p) == 9 * pb);
    kvl_kv_table_free(f);
    kvl_kv_table_free(t);
    CHECK(kvl_kv_pool_used(p) == 0);
    kvl_kv_pool_free(p);
}

static void test_drop(const char *codec, int P) {
    kvl_kv_pool *p = mkpool(codec, P, (size_t)64 << 20, 0);
    const size_t pb = kvl_kv_page_bytes(p);
    kvl_kv_table *t;
    kvl_err err;
    CHECK(kvl_kv_table_create(p, &t, &err) == KVL_OK);
    memset(&R, 0, sizeof R);
    CHECK(add_tokens(t, &R, 0, 100, 0, 1) == KVL_OK);
    CHECK(add_tokens(t, &R, 1, 10, 0, 1) == KVL_OK);
    /* bad index lists change nothing */
    const int badidx[] = {5, 3};
    CHECK(kvl_kv_drop(t, 0, 1, badidx, 2, &err) == KVL_ERR_ARG);
    const int oob[] = {100};
    CHECK(kvl_kv_drop(t, 0, 1, oob, 1, &err) == KVL_ERR_ARG);
    CHECK(kvl_kv_table_len(t, 0, 1) == 100);

    int idx[100], n = 0;
    for (int i = 0; i < 100; i++)
        if (i == 0 || urand() < 0.4) idx[n++] = i;
    const size_t u0 = kvl_kv_pool_used(p);
    CHECK(kvl_kv_drop(t, 0, 1, idx, n, &err) == KVL_OK);
    ref_drop(&R, 0, 1, idx, n);
    CHECK(kvl_kv_table_len(t, 0, 1) == 100 - n);
    CHECK(kvl_kv_pool_used(p) == u0 - (size_t)(pages_for(100, P) - pages_for(100 - n, P)) * pb);
    int32_t pos[RCAP];
    kvl_kv_table_positions(t, 0, 1, pos, RCAP);
    CHECK(memcmp(pos, R.pos[1], sizeof(int32_t) * R.n[1]) == 0);

    float q[6 * NH * D], o[6 * NH * D], oref[6 * NH * D];
    const int32_t qp[6] = {10, 50, 60, 95, 98, 99};
    rand_q(q, 6);
    ref_attend(&R, 0, 6, q, qp, 1.0f / sqrtf(D), oref, NULL);
    attend(t, 0, 6, q, qp, o, 3);
    CHECK_MSG(max_diff(o, oref, 6 * NH * D) <= codec_tol(codec), "%s P=%d drop: %g", codec, P,
              max_diff(o, oref, 6 * NH * D));

    /* drop on a forked table: the parent stays intact; shared pages are not written */
    kvl_kv_table *c;
    CHECK(kvl_kv_table_fork(t, &c, &err) == KVL_OK);
    attend(t, 0, 6, q, qp, o, 1);
    R2 = R;
    const int two[] = {3, 50};
    const size_t u1 = kvl_kv_pool_used(p);
    CHECK(kvl_kv_drop(c, 0, 2, two, 2, &err) == KVL_OK);
    ref_drop(&R2, 0, 2, two, 2);
    CHECK(kvl_kv_pool_used(p) == u1 + (size_t)pages_for(98 - (3 / P) * P, P) * pb); /* rewritten pages are fresh */
    float o2[6 * NH * D];
    attend(t, 0, 6, q, qp, o2, 1);
    CHECK(memcmp(o, o2, sizeof o) == 0);
    ref_attend(&R2, 0, 6, q, qp, 1.0f / sqrtf(D), oref, NULL);
    attend(c, 0, 6, q, qp, o2, 2);
    CHECK(max_diff(o2, oref, 6 * NH * D) <= codec_tol(codec));
    kvl_kv_table_free(c);
    CHECK(kvl_kv_pool_used(p) == u1);

    /* drop everything of a head: its query heads see no tokens (zero output) */
    for (int i = 0; i < 100; i++) idx[i] = i;
    CHECK(kvl_kv_drop(t, 0, 0, idx, 100, &err) == KVL_OK);
    ref_drop(&R, 0, 0, idx, 100);
    CHECK(kvl_kv_table_len(t, 0, 0) == 0);
    ref_attend(&R, 0, 6, q, qp, 1.0f / sqrtf(D), oref, NULL);
    attend(t, 0, 6, q, qp, o, 1);
    CHECK(max_diff(o, oref, 6 * NH * D) <= codec_tol(codec));
    /* the emptied list takes new tokens again */
    CHECK(add_tokens(t, &R, 0, 3, 200, 1) == KVL_OK);
    CHECK(kvl_kv_table_len(t, 0, 0) == 3 && kvl_kv_table_len(t, 0, 1) == 103 - n);
    int pages = 0;
    for (int l = 0; l < L; l++)
        for (int h = 0; h < HKV; h++) pages += pages_for(kvl_kv_table_len(t, l, h), P);
    CHECK(kvl_kv_table_n_pages(t) == pages && kvl_kv_pool_used(p) == (size_t)pages * pb);
    kvl_kv_table_free(t);
    CHECK(kvl_kv_pool_used(p) == 0);
    kvl_kv_pool_free(p);
}

static void test_stats(int P) {
    kvl_kv_pool *p = mkpool("f32", P, (size_t)64 << 20, 0);
    kvl_kv_table *t;
    kvl_err err;
    CHECK(kvl_kv_table_create(p, &t, &err) == KVL_OK);
    CHECK(kvl_kv_table_stat_mass(t, 0, 0) == NULL);
    memset(&R, 0, sizeof R);
    CHECK(add_tokens(t, &R, 0, 40, 0, 1) == KVL_OK);
    CHECK(kvl_kv_table_stats_enable(t, KVL_KV_STAT_MASS, &err) == KVL_OK);
    CHECK(add_tokens(t, &R, 0, 30, 40, 1) == KVL_OK);
    float q[5 * NH * D], o[5 * NH * D], o1[5 * NH * D];
    const int32_t qp[5] = {-3, 10, 40, 68, 69};
    rand_q(q, 5);
    static double prob[NH][RCAP];
    memset(prob, 0, sizeof prob);
    ref_attend(&R, 0, 5, q, qp, 1.0f / sqrtf(D), o1, prob);
    attend_threads(t, 0, 5, q, qp, o, 4);
    CHECK(max_diff(o, o1, 5 * NH * D) <= 2e-5);
    int bad = 0;
    for (int h = 0; h < NH; h++) {
        const float *m = kvl_kv_table_stat_mass(t, 0, h);
        double sum = 0;
        for (int i = 0; i < 70; i++) {
            sum += m[i];
            bad += fabs(m[i] - prob[h][i]) > 1e-5;
        }
        CHECK_NEAR(sum, 4.0, 1e-4); /* 4 queries see at least one token */
    }
    CHECK(bad == 0);
    /* statistics follow compaction */
    float before[70];
    memcpy(before, kvl_kv_table_stat_mass(t, 0, 4), sizeof before);
    const int idx[] = {0, 1, 2, 20, 69};
    CHECK(kvl_kv_drop(t, 0, 1, idx, 5, &err) == KVL_OK);
    const float *m4 = kvl_kv_table_stat_mass(t, 0, 4);
    bad = 0;
    for (int i = 0, w = 0, d = 0; i < 70; i++) {
        if (d < 5 && idx[d] == i) {
            d++;
            continue;
        }
        bad += m4[w++] != before[i];
    }
    CHECK(bad == 0);
    /* forks copy statistics; reset clears */
    kvl_kv_table *c;
    CHECK(kvl_kv_table_fork(t, &c, &err) == KVL_OK);
    CHECK(kvl_kv_table_stats_flags(c) == KVL_KV_STAT_MASS);
    CHECK(memcmp(kvl_kv_table_stat_mass(c, 0, 7), kvl_kv_table_stat_mass(t, 0, 7), 70 * sizeof(float)) == 0);
    kvl_kv_table_stats_reset(t);
    CHECK(kvl_kv_table_stat_mass(t, 0, 7)[5] == 0);
    CHECK(kvl_kv_policy_step(t, &err) == KVL_OK);
    kvl_kv_table_free(c);
    kvl_kv_table_free(t);
    CHECK(kvl_kv_pool_used(p) == 0);
    kvl_kv_pool_free(p);
}

/* ---- a test codec with page-level metadata and a seal hook -------------------------------- */

#define SEALED 0x5EA1EDu
static int seal_violations, seals;

static size_t ts_seg_bytes(int d, int P) { return (size_t)P * d * 4 + 4; }
static uint32_t *ts_flag(const uint8_t *seg, int d, int P) { return (uint32_t *)(seg + (size_t)P * d * 4); }
static void ts_seal(const void *st, uint8_t *seg, const uint8_t *open, int d, int P) {
    memcpy(seg, open, (size_t)P * d * 4);
    *ts_flag(seg, d, P) = SEALED;
    seals++;
}
static void ts_decode(const uint8_t *seg, int d, int P, int i, float *x) { memcpy(x, seg + (size_t)i * d * 4, (size_t)d * 4); }
static void ts_check(const uint8_t *seg, int d, int P, int n) {
    if ((n == P) != (*ts_flag(seg, d, P) == SEALED)) seal_violations++;
}
static void ts_qk(const uint8_t *seg, int d, int P, int n, const float *q, float *s) {
    ts_check(seg, d, P, n);
    kvl_codec_find("f32")->ref.qk(seg, d, P, n, q, s);
}
static void ts_av(const uint8_t *seg, int d, int P, int n, const float *pr, float *acc) {
    ts_check(seg, d, P, n);
    kvl_codec_find("f32")->ref.av(seg, d, P, n, pr, acc);
}
extern const kvl_codec kvl_codec_f32;
/* rows open in f32, sealed into f32 rows + a flag */
static const kvl_codec codec_sealed = {.name = "test-sealed", .seg_bytes = ts_seg_bytes, .open = &kvl_codec_f32,
                                       .seal = ts_seal, .decode = ts_decode, .ref = {"scalar", ts_qk, ts_av, NULL, NULL}};

/* A sealing codec (open pages f32, sealed pages f32 + a flag, so results are
 * exact): nothing seals until kvl_kv_seal, which repacks every full page
 * outside the residual into the sealed class and frees the open pages;
 * drops rewrite into open pages that seal again; a fork keeps its pages. */
static void test_seal_codec(int P) {
    kvl_kv_config cfg = {L, HKV, D, P, (size_t)16 << 20, &codec_sealed, "full", NULL, NH, 0, 0, NULL, NULL, NULL, NULL, 0, 0};
    kvl_kv_pool *p;
    kvl_kv_table *t, *c;
    kvl_err err;
    CHECK(kvl_kv_pool_create(&cfg, &p, &err) == KVL_OK && kvl_kv_table_create(p, &t, &err) == KVL_OK);
    CHECK(kvl_kv_pool_n_classes(p) == 2);
    const size_t ob = kvl_kv_pool_class_bytes(p, 0), sb = kvl_kv_pool_class_bytes(p, 1);
    CHECK(kvl_kv_page_bytes(p) == (ob > sb ? ob : sb) && sb == ob + 2 * 64 * ((P * D * 4 + 4 + 63) / 64 - (P * D * 4 + 63) / 64));
    seal_violations = seals = 0;
    memset(&R, 0, sizeof R);
    CHECK(add_tokens(t, &R, 0, 45, 0, 1) == KVL_OK);
    CHECK(seals == 0 && kvl_kv_table_n_sealed(t, 0, 0) == 0);
    CHECK(kvl_kv_pool_used(p) == (size_t)HKV * pages_for(45, P) * ob);
    CHECK(kvl_kv_seal(t, 0, &err) == KVL_OK && kvl_kv_seal(t, 1, &err) == KVL_OK);
    CHECK(seals == 2 * HKV * (45 / P));
    CHECK(kvl_kv_table_n_sealed(t, 0, 1) == 45 / P && kvl_kv_table_n_sealed(t, 1, 1) == 0);
    const size_t u_sealed = (size_t)HKV * ((45 / P) * sb + (pages_for(45, P) - 45 / P) * ob);
    CHECK(kvl_kv_pool_used(p) == u_sealed && kvl_kv_table_bytes(t) == u_sealed);
    CHECK(kvl_kv_table_layer_bytes(t, 0) == u_sealed && kvl_kv_table_layer_bytes(t, 1) == 0);
    CHECK(kvl_kv_seal(t, 0, &err) == KVL_OK && seals == 2 * HKV * (45 / P)); /* idempotent */
    CHECK(kvl_kv_table_fork(t, &c, &err) == KVL_OK);
    const int idx[] = {1, 2, 30};
    const size_t u0 = kvl_kv_pool_used(p);
    CHECK(kvl_kv_drop(t, 0, 2, idx, 3, &err) == KVL_OK); /* shared pages: rewritten to fresh open pages */
    ref_drop(&R, 0, 2, idx, 3);
    CHECK(kvl_kv_table_n_sealed(t, 0, 2) == 1 / P);
    CHECK(kvl_kv_pool_used(p) == u0 + (size_t)pages_for(42 - (1 / P) * P, P) * ob);
    CHECK(kvl_kv_table_n_sealed(c, 0, 2) == 45 / P); /* the fork is untouched */
    kvl_kv_table_free(c);
    CHECK(kvl_kv_drop(t, 0, 0, idx, 3, &err) == KVL_OK); /* exclusive pages: also re-encoded into open pages */
    ref_drop(&R, 0, 0, idx, 3);
    CHECK(add_tokens(t, &R, 0, 4, 100, 1) == KVL_OK);
    float q[3 * NH * D], o[3 * NH * D], oref[3 * NH * D];
    const int32_t qp[3] = {20, 44, 103};
    rand_q(q, 3);
    ref_attend(&R, 0, 3, q, qp, 1.0f / sqrtf(D), oref, NULL);
    attend(t, 0, 3, q, qp, o, 2); /* open and sealed pages mixed */
    CHECK(max_diff(o, oref, 3 * NH * D) <= 2e-5);
    CHECK(kvl_kv_seal(t, 0, &err) == KVL_OK);
    CHECK(kvl_kv_table_n_sealed(t, 0, 0) == 46 / P && kvl_kv_table_n_sealed(t, 0, 2) == 46 / P);
    attend(t, 0, 3, q, qp, o, 2);
    CHECK(max_diff(o, oref, 3 * NH * D) <= 2e-5);
    CHECK_MSG(seal_violations == 0, "P=%d: %d seal violations", P, seal_violations);
    kvl_kv_table_free(t);
    CHECK(kvl_kv_pool_used(p) == 0);
    kvl_kv_pool_free(p);
}

/* A full budget: an exclusive open page still seals (from a copy, its bytes
 * freed first); a shared one stays open, without an error, until there is
 * room. */
static void test_seal_tight_budget(void) {
    const int P = 8;
    kvl_kv_config cfg = {L, HKV, D, P, 0, &codec_sealed, "full", NULL, NH, 0, 0, NULL, NULL, NULL, NULL, 0, 0};
    kvl_kv_pool *p;
    kvl_err err;
    CHECK(kvl_kv_pool_create(&cfg, &p, &err) == KVL_OK);
    const size_t ob = kvl_kv_pool_class_bytes(p, 0), sb = kvl_kv_pool_class_bytes(p, 1);
    kvl_kv_pool_free(p);
    /* two open pages per head of layer 0, plus what sealing one page per head adds */
    cfg.budget_bytes = (size_t)HKV * (2 * ob + (sb > ob ? sb - ob : 0));
    kvl_kv_table *t, *f;
    CHECK(kvl_kv_pool_create(&cfg, &p, &err) == KVL_OK && kvl_kv_table_create(p, &t, &err) == KVL_OK);
    memset(&R, 0, sizeof R);
    CHECK(add_tokens(t, &R, 0, 12, 0, 1) == KVL_OK); /* 1 full + 1 partial open page per head: budget full */
    CHECK(kvl_kv_pool_used(p) == (size_t)HKV * 2 * ob);
    CHECK(kvl_kv_table_fork(t, &f, &err) == KVL_OK);
    CHECK(kvl_kv_seal(t, 0, &err) == KVL_OK && kvl_kv_table_n_sealed(t, 0, 0) == 0); /* shared: stays open */
    kvl_kv_table_free(f);
    CHECK(kvl_kv_seal(t, 0, &err) == KVL_OK && kvl_kv_table_n_sealed(t, 0, 0) == 1); /* exclusive now */
    CHECK(kvl_kv_pool_used(p) <= cfg.budget_bytes);
    kvl_kv_table_free(t);
    kvl_kv_pool_free(p);
}

static void test_config_errors(void) {
    kvl_kv_config cfg = {L, HKV, D, 32, 1 << 20, kvl_codec_find("f16"), "nope", NULL, 0, 0, 0, NULL, NULL, NULL, NULL, 0, 0};
    kvl_kv_pool *p = (kvl_kv_pool *)1;
    kvl_err err;
    CHECK(kvl_kv_pool_create(&cfg, &p, &err) == KVL_ERR_ARG && p == NULL);
    CHECK(strstr(err.msg, "full") != NULL);
    cfg.policy = NULL;
    cfg.n_head = 10; /* not a multiple of n_head_kv */
    CHECK(kvl_kv_pool_create(&cfg, &p, &err) == KVL_ERR_ARG);
    cfg.n_head = 0;
    cfg.codec = NULL;
    CHECK(kvl_kv_pool_create(&cfg, &p, &err) == KVL_ERR_ARG);
    kvl_kv_pool_free(NULL);
}

/* Split (flash-decoding) attention: for lists of several chunks, every
 * thread count, unit order and merge split gives exactly kvl_kv_attend's
 * result, which matches the dense reference; kv-heads of different lengths
 * (after a drop) and queries that see nothing work; no split without a large
 * enough partial buffer, or with many tokens. */
static void test_split(const char *codec, int P) {
    g_chunk = 3 * P > 20 ? 3 * P : 20; /* several chunks on short lists */
    kvl_kv_pool *p = mkpool(codec, P, (size_t)64 << 20, 0);
    g_chunk = 0;
    kvl_kv_table *t;
    kvl_err err;
    CHECK(kvl_kv_table_create(p, &t, &err) == KVL_OK);
    memset(&R, 0, sizeof R);
    CHECK(add_tokens(t, &R, 0, 150, 0, 1) == KVL_OK);
    CHECK(add_tokens(t, &R, 1, 97, 0, 2) == KVL_OK);
    int idx[70];
    for (int i = 0; i < 70; i++) idx[i] = 10 + i; /* head 1 of layer 0 becomes 80 tokens long */
    CHECK(kvl_kv_drop(t, 0, 1, idx, 70, &err) == KVL_OK);
    ref_drop(&R, 0, 1, idx, 70);
    const size_t pb = kvl_kv_attn_part_bytes(p, NH, 256);
    float *part = malloc(pb);
    void *scratch = malloc(kvl_kv_attend_scratch_bytes(p));
    static float q[8 * NH * D], o[8 * NH * D], os[8 * NH * D], oref[8 * NH * D];
    const int32_t qa[1] = {149}, qb[2] = {148, 149}, qc[3] = {40, 120, 149}, qd[1] = {-5}, qe[4] = {3, 50, 100, 200};
    const struct { int layer, n; const int32_t *qp; } cases[] = {
        {0, 1, qa}, {0, 2, qb}, {0, 3, qc}, {0, 1, qd}, {1, 4, qe}, {1, 1, qe + 3}};
    for (int c = 0; c < 6; c++) {
        const int n = cases[c].n, sz = n * NH * D, layer = cases[c].layer;
        rand_q(q, n);
        ref_attend(&R, layer, n, q, cases[c].qp, 1.0f / sqrtf(D), oref, NULL);
        attend(t, layer, n, q, cases[c].qp, o, 1);
        CHECK_MSG(max_diff(o, oref, sz) <= codec_tol(codec), "%s P=%d split case %d: unsplit err %g", codec, P, c,
                  max_diff(o, oref, sz));
        const int nths[] = {1, 2, 3, 4, 8, 16};
        for (int k = 0; k < 6; k++) {
            kvl_kv_attn a;
            memset(os, 0xff, sizeof(float) * sz);
            const long nu = kvl_kv_attn_init(&a, t, layer, n, q, cases[c].qp, NH, 1.0f / sqrtf(D), os, part, pb,
                                             nths[k]);
            /* splits exactly when (token, kv-head) units leave threads idle */
            CHECK_MSG(a.split == ((long)n * HKV < 2L * nths[k]), "%s P=%d case %d nth %d: split %d", codec, P, c,
                      nths[k], a.split);
            for (long u = nu - 1; u >= 0; u--) kvl_kv_attn_run(&a, scratch, u, u + 1); /* any order */
            for (int i = 0; i < 3; i++) kvl_kv_attn_merge(&a, i, 3);
            CHECK_MSG(memcmp(os, o, sizeof(float) * sz) == 0, "%s P=%d case %d nth %d: split differs by %g", codec,
                      P, c, nths[k], max_diff(os, o, sz));
        }
        kvl_kv_attn a; /* too small a buffer, or none: no split, same result */
        kvl_kv_attn_init(&a, t, layer, n, q, cases[c].qp, NH, 1.0f / sqrtf(D), os, part, 8, 16);
        CHECK(!a.split);
        kvl_kv_attn_init(&a, t, layer, n, q, cases[c].qp, NH, 1.0f / sqrtf(D), os, NULL, 0, 16);
        CHECK(!a.split);
        memset(os, 0xff, sizeof(float) * sz);
        for (long u = 0; u < a.n_units; u++) kvl_kv_attn_run(&a, scratch, u, u + 1);
        kvl_kv_attn_merge(&a, 0, 1);
        CHECK(memcmp(os, o, sizeof(float) * sz) == 0);
    }
    { /* many tokens: no split */
        kvl_kv_attn a;
        int32_t qp[8];
        for (int i = 0; i < 8; i++) qp[i] = 142 + i;
        kvl_kv_attn_init(&a, t, 0, 8, q, qp, NH, 1.0f, os, part, pb, 2);
        CHECK(!a.split);
    }
    free(part), free(scratch);
    kvl_kv_table_free(t);
    kvl_kv_pool_free(p);
}

int main(void) {
    const char *codecs[] = {"f32", "f16", "int8"};
    const int pages[] = {1, 7, 32};
    for (int c = 0; c < 3; c++)
        for (int k = 0; k < 3; k++) {
            test_append_positions(codecs[c], pages[k]);
            test_attention(codecs[c], pages[k]);
            test_fork_cow(codecs[c], pages[k], 17);
            test_fork_cow(codecs[c], pages[k], 32);
            test_drop(codecs[c], pages[k]);
            test_batch_invariance(codecs[c], pages[k], 0);
            test_batch_invariance(codecs[c], pages[k], 1);
            test_split(codecs[c], pages[k]);
            g_chunk = 2 * pages[k] > 9 ? 2 * pages[k] : 9; /* the same with lists of several chunks */
            test_attention(codecs[c], pages[k]);
            test_batch_invariance(codecs[c], pages[k], 0);
            test_fork_cow(codecs[c], pages[k], 17);
            test_drop(codecs[c], pages[k]);
            g_chunk = 0;
        }
    test_mixed_codecs();
    test_budget();
    for (int k = 0; k < 3; k++) {
        test_stats(pages[k]);
        g_chunk = 2 * pages[k] > 9 ? 2 * pages[k] : 9;
        test_stats(pages[k]);
        g_chunk = 0;
        test_seal_codec(pages[k]);
    }
    test_seal_tight_budget();
    test_config_errors();
    KVL_TEST_END();
}
