/* Eviction policy tests on synthetic attention patterns where the right
 * answer is known: statistics against a double-precision reference (mass,
 * window mass and square, last query, VEDA votes, window entropy), spec
 * parsing errors, StreamingLLM's sinks and window, an H2O heavy hitter, a
 * SnapKV window target, VEDA's reserved stage and most-voted eviction,
 * CAKE's cascading against splitting after the whole prefill, memory
 * returned to the pool, fork + evict leaving the other sequence intact,
 * mirror tables (the CUDA engine's eviction: hooks replayed after a whole
 * call on a table of placeholder rows keep what the CPU pass keeps);
 * then, with the default model, budgets kept during chunked prefill for
 * every policy, determinism over thread counts, and policies x codecs. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv/kv.h"
#include "kv/policy.h"
#include "kvlite.h"
#include "kv/serial.h"
#include "test.h"

enum { NL = 4, NKV = 2, NH = 4, HD = 16, PG = 8 };

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2 - 1);
}

static kvl_kv_pool *mkpool(const char *policy, int keep, size_t budget) {
    kvl_kv_config cfg = {.n_layer = NL, .n_head_kv = NKV, .head_dim = HD, .page_tokens = PG,
                         .budget_bytes = budget ? budget : (size_t)64 << 20, .codec = kvl_codec_find("f32"),
                         .policy = policy, .n_head = NH, .policy_keep = keep};
    kvl_kv_pool *p = NULL;
    kvl_err err;
    kvl_status s = kvl_kv_pool_create(&cfg, &p, &err);
    if (s) fprintf(stderr, "pool: %s\n", err.msg);
    return p;
}

/* K, V [n][NKV][HD] for positions pos0.. ; `hot` (if >= 0) is a position whose
 * key points along +e0 strongly (queries below all have q0 > 0) */
static void mkrows(int n, int pos0, int hot, float *k, float *v, int32_t *pos) {
    for (int j = 0; j < n; j++) {
        pos[j] = pos0 + j;
        for (int h = 0; h < NKV; h++)
            for (int d = 0; d < HD; d++) {
                k[((size_t)j * NKV + h) * HD + d] = 0.5f * frand();
                v[((size_t)j * NKV + h) * HD + d] = frand();
            }
        if (pos0 + j == hot)
            for (int h = 0; h < NKV; h++) k[((size_t)j * NKV + h) * HD] = 6.0f;
    }
}

static void mkq(int n, float *q) {
    for (int i = 0; i < n * NH * HD; i++) q[i] = 0.5f * frand();
    for (int t = 0; t < n; t++)
        for (int h = 0; h < NH; h++) q[((size_t)t * NH + h) * HD] = 1.0f; /* q0 > 0: the hot key wins */
}

static void attend(kvl_kv_table *t, int layer, int n, const float *q, const int32_t *qp, float *out) {
    const kvl_kv_pool *p = kvl_kv_table_pool(t);
    void *scr = malloc(kvl_kv_attend_scratch_bytes(p));
    for (int ith = 0; ith < 2; ith++) kvl_kv_attend(t, layer, n, q, qp, NH, 1.0f / sqrtf(HD), out, scr, ith, 2);
    free(scr);
}

/* One forward call over all layers: before, append, attend, after (as forward.c). */
static kvl_status call(kvl_kv_table *t, int n, int pos0, int hot, const float *q, kvl_err *err) {
    float *k = malloc(sizeof(float) * n * NKV * HD), *v = malloc(sizeof(float) * n * NKV * HD);
    float *o = malloc(sizeof(float) * n * NH * HD);
    int32_t *pos = malloc(sizeof(int32_t) * n);
    kvl_status s = KVL_OK;
    for (int l = 0; l < NL && !s; l++) {
        mkrows(n, pos0, hot, k, v, pos);
        if ((s = kvl_kv_policy_before(t, l, n, err))) break;
        if ((s = kvl_kv_append(t, l, n, pos, k, v, err))) break;
        attend(t, l, n, q, pos, o);
        s = kvl_kv_policy_after(t, l, n, pos0 + n, err);
    }
    free(k);
    free(v);
    free(o);
    free(pos);
    return s;
}

static int has_pos(const kvl_kv_table *t, int layer, int head, int32_t want) {
    int32_t buf[4096];
    const int n = kvl_kv_table_positions(t, layer, head, buf, 4096);
    for (int i = 0; i < n && i < 4096; i++)
        if (buf[i] == want) return 1;
    return 0;
}

/* ---- statistics against a reference ------------------------------------------------------ */

static void test_stats_reference(void) {
    kvl_kv_pool *p = mkpool("full", 0, 0);
    kvl_kv_table *t;
    kvl_err err;
    CHECK(kvl_kv_table_create(p, &t, &err) == KVL_OK);
    kvl_kv_table_stats_params(t, 3, 1.0f, 0.5f);
    CHECK(kvl_kv_table_stats_enable(t, KVL_KV_STAT_MASS | KVL_KV_STAT_WIN | KVL_KV_STAT_LAST | KVL_KV_STAT_VOTE |
                                           KVL_KV_STAT_ENT, &err) == KVL_OK);
    enum { N = 37, T = 7 };
    float k[N * NKV * HD], v[N * NKV * HD], q[T * NH * HD], o[T * NH * HD];
    int32_t pos[N], qp[T];
    mkrows(N, 0, 11, k, v, pos);
    CHECK(kvl_kv_append(t, 0, N, pos, k, v, &err) == KVL_OK);
    mkq(T, q);
    for (int i = 0; i < T; i++) qp[i] = 20 + 2 * i; /* causal: later queries see more */
    attend(t, 0, T, q, qp, o);
    const float scale = 1.0f / sqrtf(HD);
    double mass[NH][N] = {{0}}, ws[NH][N] = {{0}}, w2[NH][N] = {{0}}, last[NH][N] = {{0}}, vote[NH][N] = {{0}},
           ent[NH][N] = {{0}};
    for (int ti = 0; ti < T; ti++)
        for (int h = 0; h < NH; h++) {
            const int kvh = h / (NH / NKV);
            double sc[N], mx = -1e30, sum = 0, mean = 0, m2 = 0;
            int nv = 0;
            for (int i = 0; i < N; i++) {
                if (pos[i] > qp[ti]) continue;
                double d = 0;
                for (int j = 0; j < HD; j++)
                    d += (double)q[((size_t)ti * NH + h) * HD + j] * scale * k[((size_t)i * NKV + kvh) * HD + j];
                sc[i] = d;
                mx = d > mx ? d : mx;
                mean += d;
                m2 += d * d;
                nv++;
            }
            mean /= nv;
            const double sd = sqrt(m2 / nv - mean * mean), th = mean - 0.5 * sd;
            for (int i = 0; i < N; i++)
                if (pos[i] <= qp[ti]) sum += exp(sc[i] - mx);
            for (int i = 0; i < N; i++) {
                const double pr = pos[i] <= qp[ti] ? exp(sc[i] - mx) / sum : 0;
                mass[h][i] += pr;
                if (ti >= T - 3) {
                    ws[h][i] += pr;
                    w2[h][i] += pr * pr;
                    if (pr > 0) ent[h][i] -= pr * log(pr);
                }
                if (ti == T - 1) last[h][i] = pr;
                if (pos[i] <= qp[ti] && sc[i] < th) vote[h][i] += 1;
            }
        }
    int bad = 0, badv = 0;
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < N; i++) {
            bad += fabs(kvl_kv_table_stat(t, 0, h, KVL_KV_ACC_MASS)[i] - mass[h][i]) > 1e-5;
            bad += fabs(kvl_kv_table_stat(t, 0, h, KVL_KV_ACC_WSUM)[i] - ws[h][i]) > 1e-5;
            bad += fabs(kvl_kv_table_stat(t, 0, h, KVL_KV_ACC_WSQ)[i] - w2[h][i]) > 1e-5;
            bad += fabs(kvl_kv_table_stat(t, 0, h, KVL_KV_ACC_LAST)[i] - last[h][i]) > 1e-5;
            bad += fabs(kvl_kv_table_stat(t, 0, h, KVL_KV_ACC_WENT)[i] - ent[h][i]) > 1e-4;
            badv += kvl_kv_table_stat(t, 0, h, KVL_KV_ACC_VOTE)[i] != (float)vote[h][i];
        }
    CHECK_MSG(bad == 0, "%d statistics differ from the reference", bad);
    CHECK_MSG(badv == 0, "%d vote counts differ from the definition", badv);
    CHECK(kvl_kv_table_stat_window_n(t, 0) == 3.0f);
    /* only-window voting */
    kvl_kv_table_stats_reset(t);
    kvl_kv_table_stats_vote_window(t, 1);
    attend(t, 0, T, q, qp, o);
    double vw = 0, vref = 0;
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < N; i++) vw += kvl_kv_table_stat(t, 0, h, KVL_KV_ACC_VOTE)[i];
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < N; i++) vref += vote[h][i];
    CHECK(vw > 0 && vw < vref);
    CHECK(kvl_kv_table_stats_bytes(t) > 0);
    kvl_kv_table_free(t);
    kvl_kv_pool_free(p);
}

/* ---- parsing ------------------------------------------------------------------------------------ */

static void test_parse(void) {
    kvl_policy_cfg c;
    kvl_err err;
    CHECK(kvl_policy_parse(NULL, &c, &err) == KVL_OK && !strcmp(c.ops->name, "full"));
    CHECK(kvl_policy_parse("snapkv:window=16,pool=5", &c, &err) == KVL_OK && c.window == 16 && c.pool == 5);
    CHECK(kvl_policy_parse("cake:gamma=100,tau1=2", &c, &err) == KVL_OK && c.gamma == 100 && c.tau1 == 2);
    CHECK(kvl_policy_parse("nope", &c, &err) == KVL_ERR_ARG && strstr(err.msg, "unknown KV policy 'nope'"));
    CHECK(kvl_policy_parse("h2o:window=3", &c, &err) == KVL_ERR_ARG && strstr(err.msg, "unknown parameter 'window'"));
    CHECK(kvl_policy_parse("snapkv:pool=4", &c, &err) == KVL_ERR_ARG && strstr(err.msg, "bad value"));
    CHECK(kvl_policy_parse("snapkv:pool", &c, &err) == KVL_ERR_ARG);
    CHECK(kvl_policy_parse("snapkv:window=1.5", &c, &err) == KVL_ERR_ARG);
    CHECK(kvl_policy_parse("streaming:sink=-1", &c, &err) == KVL_ERR_ARG);
    for (int i = 0; kvl_policy_get(i); i++)
        CHECK(kvl_policy_parse(kvl_policy_get(i)->name, &c, &err) == KVL_OK && c.ops == kvl_policy_get(i));
    /* keep out of range at the pool */
    kvl_kv_config cfg = {.n_layer = NL, .n_head_kv = NKV, .head_dim = HD, .page_tokens = PG, .budget_bytes = 1 << 20,
                         .codec = kvl_codec_find("f32"), .policy = "h2o", .n_head = NH, .policy_keep_frac = 2};
    kvl_kv_pool *p = NULL;
    CHECK(kvl_kv_pool_create(&cfg, &p, &err) == KVL_ERR_ARG && p == NULL);
}

/* ---- single policies on planted patterns ------------------------------------------------------ */

static void test_streaming(void) {
    kvl_kv_pool *p = mkpool("streaming:sink=4,slack=0", 20, 0);
    kvl_kv_table *t;
    kvl_err err;
    CHECK(kvl_kv_table_create(p, &t, &err) == KVL_OK);
    float q[100 * NH * HD];
    mkq(100, q);
    CHECK(call(t, 100, 0, -1, q, &err) == KVL_OK);
    int ok = 1;
    for (int l = 0; l < NL; l++)
        for (int h = 0; h < NKV; h++) {
            ok &= kvl_kv_table_len(t, l, h) == 20;
            for (int i = 0; i < 4; i++) ok &= has_pos(t, l, h, i);
            for (int i = 84; i < 100; i++) ok &= has_pos(t, l, h, i);
        }
    CHECK_MSG(ok, "streaming keeps the 4 sinks and the 16 newest");
    /* decode-like calls: one token each, the window slides, sinks stay */
    for (int i = 0; i < 10; i++) CHECK(call(t, 1, 100 + i, -1, q, &err) == KVL_OK);
    CHECK(kvl_kv_table_len(t, 0, 0) == 20 && has_pos(t, 0, 0, 0) && has_pos(t, 0, 0, 109) && !has_pos(t, 0, 0, 84));
    kvl_kv_table_free(t);
    CHECK(kvl_kv_pool_used(p) == 0);
    kvl_kv_pool_free(p);
}

static void test_heavy_hitter(const char *spec, int keep) {
    kvl_kv_pool *p = mkpool(spec, keep, 0);
    kvl_kv_table *t;
    kvl_err err;
    CHECK(kvl_kv_table_create(p, &t, &err) == KVL_OK);
    float q[200 * NH * HD];
    mkq(200, q);
    CHECK(call(t, 200, 0, 37, q, &err) == KVL_OK);
    int ok = 1, total = 0;
    for (int l = 0; l < NL; l++)
        for (int h = 0; h < NKV; h++) ok &= has_pos(t, l, h, 37), total += kvl_kv_table_len(t, l, h);
    const int len = total <= keep * NL * NKV; /* on average: layer (PyramidKV) and head (headwise) budgets differ */
    CHECK_MSG(ok, "%s keeps the planted heavy hitter", spec);
    CHECK_MSG(len, "%s keeps at most the budget", spec);
    kvl_kv_table_free(t);
    kvl_kv_pool_free(p);
}

/* VEDA: the reserved stage survives; the most-voted token is the one evicted */
static void test_veda_votes(void) {
    kvl_kv_pool *p = mkpool("veda:sink=2,recent=2,slack=0", 1 << 20, 0);
    kvl_kv_table *t;
    kvl_err err;
    CHECK(kvl_kv_table_create(p, &t, &err) == KVL_OK);
    float q[40 * NH * HD];
    mkq(40, q);
    CHECK(call(t, 40, 0, 9, q, &err) == KVL_OK);
    /* predict the victim: the most votes over the group among the middle tokens */
    int victim = -1;
    float best = -1;
    for (int i = 2; i < 38; i++) {
        float v = kvl_kv_table_stat(t, 0, 0, KVL_KV_ACC_VOTE)[i] + kvl_kv_table_stat(t, 0, 1, KVL_KV_ACC_VOTE)[i];
        if (v > best) best = v, victim = i; /* ties go to the older token: the first maximum */
    }
    kvl_kv_policy_set_keep(t, 39);
    CHECK(kvl_kv_policy_after(t, 0, 1, 41, &err) == KVL_OK);
    CHECK(kvl_kv_table_len(t, 0, 0) == 39);
    CHECK(!has_pos(t, 0, 0, victim) && has_pos(t, 0, 0, 0) && has_pos(t, 0, 0, 1) && has_pos(t, 0, 0, 9));
    kvl_kv_table_free(t);
    kvl_kv_pool_free(p);
}

/* CAKE: cascading (evict after every layer) == splitting after the whole prefill */
static void test_cake_cascade(void) {
    const int keep = 30, n = 160;
    kvl_kv_pool *p = mkpool("cake:window=8,slack=4", keep, 0);
    kvl_kv_table *a, *b;
    kvl_err err;
    CHECK(kvl_kv_table_create(p, &a, &err) == KVL_OK);
    CHECK(kvl_kv_table_create(p, &b, &err) == KVL_OK);
    float *q = malloc(sizeof(float) * n * NH * HD);
    mkq(n, q);
    const uint64_t seed = rng;
    CHECK(call(a, n, 0, 70, q, &err) == KVL_OK);
    size_t peak_a = kvl_kv_table_peak_bytes(a);
    /* b: the same call with eviction held back until the last layer */
    rng = seed;
    kvl_kv_policy_set_keep(b, 1 << 20);
    {
        float *k = malloc(sizeof(float) * n * NKV * HD), *v = malloc(sizeof(float) * n * NKV * HD);
        float *o = malloc(sizeof(float) * n * NH * HD);
        int32_t *pos = malloc(sizeof(int32_t) * n);
        for (int l = 0; l < NL; l++) {
            mkrows(n, 0, 70, k, v, pos);
            CHECK(kvl_kv_policy_before(b, l, n, &err) == KVL_OK);
            CHECK(kvl_kv_append(b, l, n, pos, k, v, &err) == KVL_OK);
            attend(b, l, n, q, pos, o);
            if (l == NL - 1) kvl_kv_policy_set_keep(b, keep);
            CHECK(kvl_kv_policy_after(b, l, n, n, &err) == KVL_OK);
        }
        free(k);
        free(v);
        free(o);
        free(pos);
    }
    int same = 1, total = 0;
    for (int l = 0; l < NL; l++)
        for (int h = 0; h < NKV; h++) {
            int32_t pa[512], pb[512];
            const int na = kvl_kv_table_positions(a, l, h, pa, 512), nb = kvl_kv_table_positions(b, l, h, pb, 512);
            same &= na == nb && !memcmp(pa, pb, sizeof(int32_t) * (size_t)na);
            total += na;
        }
    CHECK_MSG(same, "cascading kept sets equal those of splitting after the prefill");
    CHECK(total <= keep * NL * NKV);
    const int *ba = kvl_kv_policy_budgets(a), *bb = kvl_kv_policy_budgets(b);
    int sb = 1, differ = 0;
    for (int l = 0; l < NL; l++) sb &= ba[l] == bb[l], differ |= ba[l] != ba[0];
    CHECK(sb);
    CHECK_MSG(differ, "preference-weighted budgets differ across layers");
    /* cascading kept memory lower during the prefill */
    CHECK(peak_a < kvl_kv_table_peak_bytes(b));
    free(q);
    kvl_kv_table_free(a);
    kvl_kv_table_free(b);
    CHECK(kvl_kv_pool_used(p) == 0);
    kvl_kv_pool_free(p);
}

/* memory returns; fork + evict leaves the other intact; make-room under a byte cap */
static void test_memory(void) {
    kvl_kv_pool *p = mkpool("h2o:slack=0", 16, 0);
    kvl_kv_table *t, *f;
    kvl_err err;
    CHECK(kvl_kv_table_create(p, &t, &err) == KVL_OK);
    float q[120 * NH * HD];
    mkq(120, q);
    kvl_kv_policy_set_keep(t, -1);
    CHECK(call(t, 120, 0, 5, q, &err) == KVL_OK);
    const size_t full = kvl_kv_pool_used(p);
    CHECK(kvl_kv_table_fork(t, &f, &err) == KVL_OK);
    int32_t before[NL * NKV][128];
    for (int l = 0; l < NL; l++)
        for (int h = 0; h < NKV; h++) kvl_kv_table_positions(t, l, h, before[l * NKV + h], 128);
    kvl_kv_policy_set_keep(f, 16);
    CHECK(call(f, 1, 120, -1, q, &err) == KVL_OK);
    CHECK(kvl_kv_table_len(f, 0, 0) == 16 && kvl_kv_table_len(t, 0, 0) == 120);
    int intact = 1;
    for (int l = 0; l < NL; l++)
        for (int h = 0; h < NKV; h++) {
            int32_t now[128];
            kvl_kv_table_positions(t, l, h, now, 128);
            intact &= !memcmp(now, before[l * NKV + h], sizeof now[0] * 120);
        }
    CHECK(intact);
    kvl_kv_table_free(t);
    CHECK_MSG(kvl_kv_pool_used(p) < full / 4, "evicted pages return to the pool (%zu of %zu)", kvl_kv_pool_used(p), full);
    kvl_kv_table_free(f);
    CHECK(kvl_kv_pool_used(p) == 0);
    kvl_kv_pool_free(p);

    /* byte cap: 2 pages per list + the chunk of one layer; a long input streams through */
    kvl_kv_pool *probe = mkpool("h2o", 0, 0);
    const size_t page = kvl_kv_page_bytes(probe);
    kvl_kv_pool_free(probe);
    const size_t cap = page * (NL * NKV * 3 + NKV * 2 + NKV);
    p = mkpool("h2o:slack=0", 0, cap);
    CHECK(kvl_kv_table_create(p, &t, &err) == KVL_OK);
    int ok = 1;
    for (int c = 0; c < 20 && ok; c++) {
        ok &= call(t, PG, c * PG, -1, q, &err) == KVL_OK;
        ok &= kvl_kv_pool_used(p) <= cap;
    }
    CHECK_MSG(ok, "a byte cap is kept by evicting: %s", ok ? "" : err.msg);
    CHECK(kvl_kv_table_len(t, 0, 0) < 20 * PG);
    kvl_kv_table_free(t);
    kvl_kv_pool_free(p);
}

/* Re-quantization after many evictions on sealed pages: rows moved by a
 * compaction are decoded and sealed again. Measures how the error of the
 * surviving original rows grows over 60 eviction rounds (printed as
 * "measured:"), for a sealing codec and a per-token one (exact moves). */
/* relative squared error of cached row i of (0, 0) against the original rows */
static void row_err(const kvl_kv_table *t, int i, int32_t pos, const float *ok, const float *ov, int D, double *ek,
                    double *ev) {
    float kr[256], vr[256];
    kvl_kv_table_decode(t, 0, 0, i, kr, vr);
    double dk = 0, nk = 0, dv = 0, nv = 0;
    for (int j = 0; j < D; j++) {
        const double a = ok[(size_t)pos * D + j], b = ov[(size_t)pos * D + j];
        dk += (kr[j] - a) * (kr[j] - a), nk += a * a;
        dv += (vr[j] - b) * (vr[j] - b), nv += b * b;
    }
    *ek = dk / nk;
    *ev = dv / nv;
}

static void test_requant(const char *codec) {
    enum { D64 = 64, P16 = 16, N0 = 256, ROUNDS = 60, NEWT = 16 };
    kvl_kv_config cfg = {.n_layer = 1, .n_head_kv = 1, .head_dim = D64, .page_tokens = P16,
                         .budget_bytes = (size_t)64 << 20, .k_spec = codec, .policy = "full", .n_head = 1};
    kvl_kv_pool *p = NULL;
    kvl_err err;
    if (kvl_kv_pool_create(&cfg, &p, &err) != KVL_OK) {
        CHECK_MSG(0, "%s: %s", codec, err.msg);
        return;
    }
    kvl_kv_table *t;
    CHECK(kvl_kv_table_create(p, &t, &err) == KVL_OK);
    const int total = N0 + ROUNDS * NEWT;
    float *ok = malloc(sizeof(float) * total * D64), *ov = malloc(sizeof(float) * total * D64);
    double *e0k = calloc(total, sizeof(double)), *e0v = calloc(total, sizeof(double));
    for (int i = 0; i < total * D64; i++) ok[i] = frand() * 2, ov[i] = frand();
    int32_t pos[NEWT], pb[4096];
    int n = 0;
    for (int c = 0; c < N0 / NEWT; c++, n += NEWT) {
        for (int j = 0; j < NEWT; j++) pos[j] = n + j;
        CHECK(kvl_kv_append(t, 0, NEWT, pos, ok + (size_t)n * D64, ov + (size_t)n * D64, &err) == KVL_OK);
        CHECK(kvl_kv_seal(t, 0, &err) == KVL_OK);
    }
    int len = kvl_kv_table_positions(t, 0, 0, pb, 4096);
    for (int i = 0; i < len; i++) row_err(t, i, pb[i], ok, ov, D64, &e0k[pb[i]], &e0v[pb[i]]);
    /* each round: 16 new rows; one old row near the front goes (every later row
     * moves: the worst case, as H2O/TOVA evicting old tokens) and 15 of the newer ones */
    for (int r = 0; r < ROUNDS; r++, n += NEWT) {
        for (int j = 0; j < NEWT; j++) pos[j] = n + j;
        CHECK(kvl_kv_append(t, 0, NEWT, pos, ok + (size_t)n * D64, ov + (size_t)n * D64, &err) == KVL_OK);
        len = kvl_kv_table_len(t, 0, 0);
        int idx[NEWT];
        idx[0] = 2;
        for (int j = 1; j < NEWT; j++) idx[j] = len - 2 * NEWT - 15 * 3 + 3 * j;
        CHECK(kvl_kv_drop(t, 0, 0, idx, NEWT, &err) == KVL_OK);
        CHECK(kvl_kv_seal(t, 0, &err) == KVL_OK);
    }
    double s0k = 0, s0v = 0, s1k = 0, s1v = 0;
    int cnt = 0;
    len = kvl_kv_table_positions(t, 0, 0, pb, 4096);
    for (int i = 0; i < len; i++) {
        if (pb[i] >= N0 - 2 * P16) continue; /* original rows sealed at the start that survived */
        double ek, ev;
        row_err(t, i, pb[i], ok, ov, D64, &ek, &ev);
        s0k += e0k[pb[i]], s0v += e0v[pb[i]], s1k += ek, s1v += ev, cnt++;
    }
    const double gk = s1k / s0k, gv = s1v / s0v;
    printf("measured: %s, %d eviction rounds moving every surviving row: K rel. MSE %.3g -> %.3g (x%.2f), "
           "V %.3g -> %.3g (x%.2f) over the same %d rows\n",
           codec, ROUNDS, s0k / cnt, s1k / cnt, gk, s0v / cnt, s1v / cnt, gv, cnt);
    CHECK(cnt > 100 && isfinite(gk) && isfinite(gv));
    if (strcmp(codec, "int8") == 0) CHECK_MSG(gk == 1 && gv == 1, "%s moves rows exactly", codec);
    free(ok);
    free(ov);
    free(e0k);
    free(e0v);
    kvl_kv_table_free(t);
    kvl_kv_pool_free(p);
}

/* ---- engine: budget during chunked prefill, determinism, codecs -------------------------------------- */

static void test_engine(const char *model) {
    kvl_model *m = NULL;
    char err[256];
    if (kvl_model_load(model, &m, err, sizeof err) != KVL_OK) {
        CHECK_MSG(0, "load: %s", err);
        return;
    }
    kvl_model_info mi;
    kvl_model_get_info(m, &mi);
    /* a text-like token stream */
    enum { N = 800 };
    kvl_token *tok = malloc(sizeof *tok * N);
    const char *text = "The quick brown fox jumps over the lazy dog while the lighthouse keeper counts ships. ";
    kvl_token buf[64];
    int nb = (int)kvl_tokenize(m, text, strlen(text), 0, 0, buf, 64);
    for (int i = 0; i < N; i++) tok[i] = buf[i % nb];
    static const char *const pols[] = {"streaming", "h2o", "tova", "snapkv", "pyramidkv", "veda", "cake"};
    float *lg = malloc(sizeof(float) * (size_t)mi.n_vocab), *lg2 = malloc(sizeof(float) * (size_t)mi.n_vocab);
    for (int pi = 0; pi < 7; pi++) {
        /* --kv-keep 128 with 256-token chunks: bytes after each chunk stay at the bound */
        kvl_ctx_params p;
        kvl_ctx_params_default(&p);
        p.n_ctx = 2048;
        p.n_batch = 256;
        p.n_threads = 2;
        p.kv_policy = pols[pi];
        p.kv_keep = 128;
        kvl_ctx *c = NULL;
        if (kvl_ctx_create(m, &p, &c, err, sizeof err) != KVL_OK) {
            CHECK_MSG(0, "%s: %s", pols[pi], err);
            continue;
        }
        kvl_seq *s;
        CHECK(kvl_seq_create(c, &s) == KVL_OK);
        kvl_kv_stats st;
        size_t page = 0;
        int ok = 1;
        for (int off = 0; off < N; off += 256) {
            ok &= kvl_prefill(s, tok + off, off + 256 <= N ? 256 : N - off, lg, NULL) == KVL_OK;
            kvl_seq_kv_stats(s, &st);
            page = st.bytes_used / (size_t)(st.n_pages ? st.n_pages : 1);
            /* bound: (keep + slack) per list, rounded up to pages */
            const size_t bound = (size_t)mi.n_layer * mi.n_head_kv * (size_t)((128 + 32 + 31) / 32 + 1) * page; /* + a page per list: unequal layer budgets (PyramidKV, CAKE) round up separately */
            ok &= st.bytes_used <= bound;
        }
        CHECK_MSG(ok, "%s: KV bytes stay within the bound after every chunk", pols[pi]);
        CHECK_MSG(st.tokens_cached <= 160 && st.tokens_cached >= 64, "%s: %lld tokens kept", pols[pi],
                  (long long)st.tokens_cached);
        CHECK(st.tokens_evicted > 0 && st.keep == 128);
        /* saved and restored with its statistics and policy state: the restored
         * sequence evicts and predicts exactly as the original */
        {
            void *sb = NULL;
            size_t sl = 0;
            kvl_seq *r = NULL;
            CHECK(kvl_seq_save(s, &sb, &sl) == KVL_OK && kvl_seq_load(c, sb, sl, &r) == KVL_OK);
            int same = r != NULL;
            for (int i = 0; i < 40 && same; i++) {
                same &= kvl_decode(s, tok[i], lg) == KVL_OK && kvl_decode(r, tok[i], lg2) == KVL_OK;
                same &= !memcmp(lg, lg2, sizeof(float) * (size_t)mi.n_vocab);
            }
            kvl_kv_stats a, b;
            kvl_seq_kv_stats(s, &a);
            if (r) kvl_seq_kv_stats(r, &b);
            CHECK_MSG(same && r && a.tokens_cached == b.tokens_cached, "%s: restored sequence decodes identically",
                      pols[pi]);
            kvl_seq_free(r);
            free(sb);
        }
        /* a prompt many times the budget in one call also fits (per-layer eviction) */
        kvl_seq *s2;
        CHECK(kvl_seq_create(c, &s2) == KVL_OK);
        CHECK(kvl_prefill(s2, tok, N, lg2, NULL) == KVL_OK);
        kvl_seq_kv_stats(s2, &st);
        CHECK(st.tokens_cached <= 160);
        kvl_seq_free(s2);
        kvl_seq_free(s);
        kvl_kv_stats z;
        CHECK(kvl_seq_create(c, &s) == KVL_OK);
        kvl_seq_kv_stats(s, &z);
        CHECK_MSG(z.pool_used == 0, "%s: pool bytes return to zero", pols[pi]);
        kvl_seq_free(s);
        kvl_ctx_free(c);
    }
    /* determinism over thread counts, policies x codecs */
    static const char *const codecs[] = {"f16", "int8", "kivi2", "int4z+rot"};
    for (int ci = 0; ci < 4; ci++)
        for (int pi = ci ? 1 : 0; pi < 7; pi += (ci ? 5 : 1)) { /* f16: every policy; others: h2o, cake */
            int same = 1;
            for (int th = 1; th <= 3; th += 2) {
                kvl_ctx_params p;
                kvl_ctx_params_default(&p);
                p.n_ctx = 1024;
                p.n_threads = th;
                p.kv_policy = pols[pi];
                p.kv_keep_frac = 0.25f;
                p.kv_codec = codecs[ci];
                kvl_ctx *c = NULL;
                kvl_seq *s = NULL;
                if (kvl_ctx_create(m, &p, &c, err, sizeof err) != KVL_OK || kvl_seq_create(c, &s) != KVL_OK) {
                    CHECK_MSG(0, "%s x %s: %s", pols[pi], codecs[ci], err);
                    kvl_ctx_free(c);
                    continue;
                }
                CHECK(kvl_prefill(s, tok, 300, lg, NULL) == KVL_OK);
                for (int i = 0; i < 4; i++) CHECK(kvl_decode(s, tok[300 + i], lg) == KVL_OK);
                kvl_kv_stats st;
                kvl_seq_kv_stats(s, &st);
                CHECK(st.tokens_cached <= 76 + 32 && st.bits_per_value > 0);
                if (th == 1) {
                    memcpy(lg2, lg, sizeof(float) * (size_t)mi.n_vocab);
                } else same &= !memcmp(lg, lg2, sizeof(float) * (size_t)mi.n_vocab);
                kvl_seq_free(s);
                kvl_ctx_free(c);
            }
            CHECK_MSG(same, "%s x %s: logits identical on 1 and 3 threads", pols[pi], codecs[ci]);
        }
    /* bad input: budget under one page per (layer, head); keep over the context */
    {
        kvl_ctx_params p;
        kvl_ctx_params_default(&p);
        p.n_ctx = 512;
        p.kv_policy = "h2o";
        p.kv_budget_bytes = 4096;
        kvl_ctx *c = NULL;
        CHECK(kvl_ctx_create(m, &p, &c, err, sizeof err) == KVL_ERR_ARG && strstr(err, "one page per"));
        p.kv_budget_bytes = 0;
        p.kv_keep = 100000;
        CHECK(kvl_ctx_create(m, &p, &c, err, sizeof err) == KVL_ERR_ARG && strstr(err, "kv_keep"));
        p.kv_keep = 0;
        p.kv_policy = "h2o:bogus=1";
        CHECK(kvl_ctx_create(m, &p, &c, err, sizeof err) == KVL_ERR_ARG && strstr(err, "bogus"));
        /* a byte budget alone sets the keep */
        p.kv_policy = "snapkv";
        p.kv_budget_bytes = (size_t)8 << 20;
        CHECK(kvl_ctx_create(m, &p, &c, err, sizeof err) == KVL_OK);
        kvl_seq *s;
        CHECK(kvl_seq_create(c, &s) == KVL_OK);
        CHECK(kvl_prefill(s, tok, 500, lg, NULL) == KVL_OK);
        kvl_kv_stats st;
        kvl_seq_kv_stats(s, &st);
        CHECK_MSG(st.pool_used <= p.kv_budget_bytes && st.tokens_cached < 500, "budget %zu used %zu kept %lld",
                  p.kv_budget_bytes, st.pool_used, (long long)st.tokens_cached);
        kvl_seq_free(s);
        kvl_ctx_free(c);
    }
    free(lg);
    free(lg2);
    free(tok);
    kvl_model_free(m);
}


/* ---- policy state through a session round trip (kv/serial_policy.c) ------------------------ */

/* Serialize t, load into a fresh table of q; returns the loaded table or NULL (err set). */
static kvl_kv_table *roundtrip(kvl_kv_table *t, kvl_kv_pool *q, uint8_t **bytes, size_t *len, kvl_err *err) {
    kvl_ser_buf b = {0};
    kvl_ser_header(&b, 42);
    const kvl_kv_table *const tt[1] = {t};
    if (kvl_kv_ser_write(&b, tt, 1, 4096, err) || kvl_ser_finish(&b, err)) {
        free(b.p);
        return NULL;
    }
    *bytes = b.p;
    *len = b.n;
    kvl_ser_file f;
    kvl_kv_table *u = NULL;
    if (kvl_kv_ser_parse(b.p, b.n, &f, err) || kvl_kv_table_create(q, &u, err)) return NULL;
    if (kvl_kv_ser_load(q, &f, &u, 1, 4096, err)) {
        kvl_kv_table_free(u);
        return NULL;
    }
    return u;
}

static int same_state(const kvl_kv_table *a, const kvl_kv_table *b) {
    int ok = 1;
    for (int l = 0; l < NL; l++) {
        ok &= kvl_kv_table_stat_window_n(a, l) == kvl_kv_table_stat_window_n(b, l);
        for (int h = 0; h < NKV; h++) {
            const int n = kvl_kv_table_len(a, l, h);
            ok &= n == kvl_kv_table_len(b, l, h);
            for (int g = 0; g < NH / NKV && ok; g++)
                for (int acc = 0; acc < KVL_KV_N_ACC; acc++) {
                    const float *x = kvl_kv_table_stat(a, l, h * (NH / NKV) + g, acc);
                    const float *y = kvl_kv_table_stat(b, l, h * (NH / NKV) + g, acc);
                    ok &= (x == NULL) == (y == NULL);
                    if (x && y) ok &= memcmp(x, y, sizeof(float) * (size_t)n) == 0;
                }
        }
    }
    const int *ba = kvl_kv_policy_budgets(a), *bb = kvl_kv_policy_budgets(b);
    ok &= (ba == NULL) == (bb == NULL);
    if (ba && bb) ok &= memcmp(ba, bb, sizeof(int) * NL) == 0;
    return ok;
}

static void test_policy_state(const char *spec) {
    kvl_kv_pool *p = mkpool(spec, 48, 0), *q = mkpool(spec, 48, 0);
    kvl_kv_table *t = NULL;
    kvl_err err;
    CHECK(p && q && kvl_kv_table_create(p, &t, &err) == KVL_OK);
    float *qv = malloc(sizeof(float) * 64 * NH * HD);
    mkq(64, qv);
    int pos = 0, ok = 1;
    for (int c = 0; c < 3; c++, pos += 64) ok &= call(t, 64, pos, 70, qv, &err) == KVL_OK;
    CHECK(ok);
    uint8_t *bytes = NULL;
    size_t len = 0;
    kvl_kv_table *u = roundtrip(t, q, &bytes, &len, &err);
    CHECK_MSG(u != NULL, "%s: %s", spec, err.msg);
    if (u) {
        CHECK_MSG(same_state(t, u), "%s: state after load", spec);
        /* both continue identically: same evictions, same statistics */
        const uint64_t r0 = rng;
        ok = call(t, 64, pos, -1, qv, &err) == KVL_OK;
        rng = r0;
        ok &= call(u, 64, pos, -1, qv, &err) == KVL_OK;
        CHECK(ok);
        int same_pos = 1;
        for (int l = 0; l < NL; l++)
            for (int h = 0; h < NKV; h++) {
                int32_t a[4096], b2[4096];
                const int na = kvl_kv_table_positions(t, l, h, a, 4096), nb = kvl_kv_table_positions(u, l, h, b2, 4096);
                same_pos &= na == nb && memcmp(a, b2, sizeof(int32_t) * (size_t)na) == 0;
            }
        CHECK_MSG(same_pos && same_state(t, u), "%s: kept sets and statistics after one more call", spec);
        kvl_kv_table_free(u);
    }
    CHECK(kvl_kv_pool_used(q) == 0);
    /* a NaN statistic with the checksums fixed: refused, nothing loaded */
    if (bytes && len > 200) {
        kvl_ser_file f;
        CHECK(kvl_kv_ser_parse(bytes, len, &f, &err) == KVL_OK);
        const kvl_ser_section *sp = kvl_kv_ser_find(&f, KVL_SER_POLICY);
        CHECK(sp && sp->len > 100);
        if (sp && sp->len > 100) {
            /* the first statistic (or, without statistics, the keep override) made invalid */
            const size_t st0 = (size_t)(sp->data - bytes) + 4 + strlen(spec) + 8 + 8;
            uint32_t mask;
            memcpy(&mask, bytes + st0, 4);
            const size_t off = st0 + 8 + 4 * NL;
            if (mask) {
                const float nanv = NAN;
                memcpy(bytes + off, &nanv, 4);
            } else {
                const int32_t m5 = -5;
                memcpy(bytes + off, &m5, 4);
            }
            kvl_ser_buf nb = {0};
            kvl_ser_header(&nb, 42);
            for (int i = 0; i < f.n_sec; i++) {
                const size_t at = kvl_ser_section_begin(&nb, f.sec[i].type);
                kvl_ser_put(&nb, f.sec[i].data, f.sec[i].len);
                kvl_ser_section_end(&nb, at);
            }
            CHECK(kvl_ser_finish(&nb, &err) == KVL_OK);
            kvl_kv_table *w = NULL;
            CHECK(kvl_kv_ser_parse(nb.p, nb.n, &f, &err) == KVL_OK && kvl_kv_table_create(q, &w, &err) == KVL_OK);
            err.msg[0] = 0;
            const kvl_status st = kvl_kv_ser_load(q, &f, &w, 1, 4096, &err);
            CHECK_MSG(st != KVL_OK && strstr(err.msg, "policy state"), "%s: %s", spec, err.msg);
            CHECK(kvl_kv_pool_used(q) == 0 && kvl_kv_table_len(w, 0, 0) == 0);
            kvl_kv_table_free(w);
            free(nb.p);
        }
    }
    /* another policy's context refuses the file by name */
    kvl_kv_pool *o = mkpool(strcmp(spec, "tova") ? "tova" : "h2o", 48, 0);
    kvl_kv_table *w = NULL;
    kvl_ser_file f;
    free(bytes);
    bytes = NULL;
    kvl_ser_buf b = {0};
    kvl_ser_header(&b, 42);
    const kvl_kv_table *const tt[1] = {t};
    CHECK(kvl_kv_ser_write(&b, tt, 1, 4096, &err) == KVL_OK && kvl_ser_finish(&b, &err) == KVL_OK);
    CHECK(kvl_kv_ser_parse(b.p, b.n, &f, &err) == KVL_OK && kvl_kv_table_create(o, &w, &err) == KVL_OK);
    CHECK(kvl_kv_ser_load(o, &f, &w, 1, 4096, &err) == KVL_ERR_ARG && strstr(err.msg, "policy differs"));
    kvl_kv_table_free(w);
    free(b.p);
    kvl_kv_pool_free(o);
    free(qv);
    kvl_kv_table_free(t);
    kvl_kv_pool_free(p);
    kvl_kv_pool_free(q);
}

/* ---- mirror tables (kv.h; the CUDA engine's eviction, src/engine/forward_cuda_evict.c) ---- */

/* The device's part played by a CPU table R: it appends and attends with
 * statistics but runs no policy hook; the mirror M holds the same positions
 * with zero rows, fetches R's statistics rows when the policy reads them
 * and repeats each of its drops on R (the device compaction). Replaying the
 * hooks on M after each whole call must keep exactly what the CPU forward
 * pass (C: hooks after each layer's attention) keeps. */
typedef struct mirror_sim {
    kvl_kv_table *r;
    uint8_t stale[NL];
    int fetches, drops;
} mirror_sim;

static void sim_fetch(void *user, kvl_kv_table *t, int layer) {
    mirror_sim *u = user;
    u->stale[layer] = 0;
    u->fetches++;
    int n = 0;
    for (int h = 0; h < NKV; h++) n = kvl_kv_table_len(u->r, layer, h) > n ? kvl_kv_table_len(u->r, layer, h) : n;
    for (int a = 0; a < KVL_KV_N_ACC; a++)
        for (int qh = 0; qh < NH; qh++) {
            float *dst = kvl_kv_table_stat_rows(t, layer, qh, a);
            const float *src = kvl_kv_table_stat(u->r, layer, qh, a);
            if (dst && src) memcpy(dst, src, sizeof(float) * (size_t)n);
        }
}

static void sim_drop(void *user, kvl_kv_table *t, int layer, int head, const int *idx, int n_idx, int len) {
    mirror_sim *u = user;
    if (u->stale[layer]) sim_fetch(user, t, layer); /* before the host rows move */
    kvl_err err;
    u->drops += kvl_kv_table_len(u->r, layer, head) == len &&
                kvl_kv_drop(u->r, layer, head, idx, n_idx, &err) == KVL_OK;
}

static int same_positions(const kvl_kv_table *a, const kvl_kv_table *b, int *n_lists) {
    int same = 0;
    for (int l = 0; l < NL; l++)
        for (int h = 0; h < NKV; h++) {
            int32_t x[4096], y[4096];
            const int nx = kvl_kv_table_positions(a, l, h, x, 4096), ny = kvl_kv_table_positions(b, l, h, y, 4096);
            same += nx == ny && memcmp(x, y, sizeof(int32_t) * (size_t)nx) == 0;
        }
    *n_lists = NL * NKV;
    return same;
}

static void test_mirror(const char *spec, int keep) {
    kvl_kv_pool *pc = mkpool(spec, keep, 0), *pr = mkpool(spec, keep, 0), *pm = mkpool(spec, keep, 0);
    kvl_kv_table *c = NULL, *r = NULL, *m = NULL;
    kvl_err err;
    CHECK(pc && pr && pm && kvl_kv_table_create(pc, &c, &err) == KVL_OK && kvl_kv_table_create(pr, &r, &err) == KVL_OK &&
          kvl_kv_table_create(pm, &m, &err) == KVL_OK);
    if (!c || !r || !m) return;
    mirror_sim u = {r, {0}, 0, 0};
    const kvl_kv_mirror mir = {sim_fetch, sim_drop, &u, u.stale};
    enum { NC = 6 };
    const int ns[NC] = {96, 1, 1, 40, 1, 33}; /* a prefill, decode steps, chunks */
    float *k = malloc(sizeof(float) * NL * 96 * NKV * HD), *v = malloc(sizeof(float) * NL * 96 * NKV * HD);
    float *z = calloc((size_t)96 * NKV * HD, sizeof(float)), *q = malloc(sizeof(float) * 96 * NH * HD);
    float *o = malloc(sizeof(float) * 96 * NH * HD);
    int32_t pos[96];
    int pos0 = 0, ok = 1, worst = NL * NKV, lists = 0;
    for (int ci = 0; ci < NC && ok; ci++) {
        const int n = ns[ci];
        mkq(n, q);
        for (int l = 0; l < NL; l++)
            mkrows(n, pos0, ci == 0 ? 21 : -1, k + (size_t)l * 96 * NKV * HD, v + (size_t)l * 96 * NKV * HD, pos);
        /* C: the CPU forward pass's order */
        for (int l = 0; l < NL && ok; l++) {
            ok &= kvl_kv_policy_before(c, l, n, &err) == KVL_OK;
            ok &= kvl_kv_append(c, l, n, pos, k + (size_t)l * 96 * NKV * HD, v + (size_t)l * 96 * NKV * HD, &err) ==
                  KVL_OK;
            attend(c, l, n, q, pos, o);
            ok &= kvl_kv_policy_after(c, l, n, pos0 + n, &err) == KVL_OK;
        }
        ok &= kvl_kv_policy_step(c, &err) == KVL_OK;
        /* R: the whole call's appends and attention first */
        for (int l = 0; l < NL && ok; l++) {
            ok &= kvl_kv_append(r, l, n, pos, k + (size_t)l * 96 * NKV * HD, v + (size_t)l * 96 * NKV * HD, &err) ==
                  KVL_OK;
            attend(r, l, n, q, pos, o);
        }
        /* M: the hooks replayed after the call */
        kvl_kv_table_set_mirror(m, &mir);
        memset(u.stale, 1, sizeof u.stale);
        for (int l = 0; l < NL && ok; l++) {
            ok &= kvl_kv_policy_before(m, l, n, &err) == KVL_OK;
            ok &= kvl_kv_append(m, l, n, pos, z, z, &err) == KVL_OK;
            kvl_kv_table_stats_note_queries(m, l, n);
            ok &= kvl_kv_policy_after(m, l, n, pos0 + n, &err) == KVL_OK;
        }
        ok &= kvl_kv_policy_step(m, &err) == KVL_OK;
        kvl_kv_table_set_mirror(m, NULL);
        for (int l = 0; l < NL; l++) /* the device clears an evicted layer's window statistics at once */
            if (kvl_kv_policy_layer_evicted(m, l))
                kvl_kv_table_stats_reset_layer(r, l, 1u << KVL_KV_ACC_WSUM | 1u << KVL_KV_ACC_WSQ | 1u << KVL_KV_ACC_WENT);
        int same = same_positions(c, m, &lists);
        worst = same < worst ? same : worst;
        int rm;
        ok &= same_positions(r, m, &rm) == rm; /* the "device" rows follow the mirror's drops */
        pos0 += n;
    }
    CHECK_MSG(ok, "%s: mirror replay ran (%s)", spec, ok ? "" : err.msg);
    CHECK_MSG(worst == lists, "%s: mirror keeps what the CPU pass keeps in %d of %d lists", spec, worst, lists);
    CHECK_MSG(u.drops > 0, "%s: the mirror's drops reached the other table (%d)", spec, u.drops);
    const kvl_policy_cfg *cfg = kvl_kv_pool_policy(pm);
    CHECK_MSG(!cfg->ops->stats || u.fetches > 0, "%s: statistics fetched (%d)", spec, u.fetches);
    free(k), free(v), free(z), free(q), free(o);
    kvl_kv_table_free(c), kvl_kv_table_free(r), kvl_kv_table_free(m);
    kvl_kv_pool_free(pc), kvl_kv_pool_free(pr), kvl_kv_pool_free(pm);
}

int main(void) {
    test_stats_reference();
    test_parse();
    test_streaming();
    test_heavy_hitter("h2o:slack=0", 24);
    test_heavy_hitter("tova:slack=0", 24);
    test_heavy_hitter("snapkv:slack=0,window=8", 24);
    test_heavy_hitter("pyramidkv:slack=0,window=8,beta=2", 24);
    test_heavy_hitter("cake:slack=0,window=8", 24);
    test_heavy_hitter("veda:slack=0,norm=1,recent=40", 60);
    test_heavy_hitter("veda:slack=0,recent=40", 60);
    test_heavy_hitter("h2o:slack=0,headwise=1", 24);
    test_veda_votes();
    test_cake_cascade();
    test_mirror("streaming:slack=8", 32);
    test_mirror("h2o:slack=8", 32);
    test_mirror("tova:slack=8", 32);
    test_mirror("snapkv:slack=8,window=8", 32);
    test_mirror("pyramidkv:slack=8,window=8,beta=2", 32);
    test_mirror("veda:slack=8,recent=16", 40);
    test_mirror("cake:slack=8,window=8", 32);
    test_mirror("h2o:slack=8,headwise=1", 32);
    test_memory();
    test_requant("int8");
    test_requant("kivi2");
    test_requant("kivi4z");
    const char *state_specs[] = {"h2o", "snapkv", "tova", "veda", "cake", "pyramidkv", "streaming"};
    for (int i = 0; i < 7; i++) test_policy_state(state_specs[i]);
    const char *model = kvl_test_model("engine policy tests");
    if (model) test_engine(model);
    KVL_TEST_END();
}
