/* Every registered codec through the paged cache: for each codec (and its V
 * twin), page sizes 7, 16 and 32, scalar and SIMD kernels, lists of
 * unequal lengths (drops) mixing sealed and open pages, attention computed
 * on the encoded pages must equal dense attention over the rows the cache
 * decodes (kvl_kv_table_decode, in double): fused dequantization = decode
 * then attend. For sealing codecs also: full pages are sealed after each
 * call, and sealed pages are smaller than open ones. Round-trip error
 * bounds per format are in the codecs' own tests. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kv/codec.h"
#include "kv/codec_spec.h"
#include "kv/kv.h"
#include "test.h"

enum { NL = 2, NKV = 3, NH = 9, D = 64, NMAX = 160 };

static unsigned rs = 1;
static float frand(void) {
    rs = rs * 1103515245u + 12345u;
    return (float)((rs >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* n tokens to every layer: K with a few large channels (as real keys have), V plain. */
static void add(kvl_kv_table *t, int pos0, int n) {
    float *k = malloc(sizeof(float) * n * NKV * D), *v = malloc(sizeof(float) * n * NKV * D);
    int32_t *pos = malloc(sizeof(int32_t) * n);
    kvl_err err;
    for (int l = 0; l < NL; l++) {
        for (int i = 0; i < n * NKV * D; i++) {
            const int j = i % D;
            k[i] = frand() * (j == 5 || j == 37 ? 8.0f : 1.0f) + (j == 9 ? 2.0f : 0.0f);
            v[i] = frand();
        }
        for (int i = 0; i < n; i++) pos[i] = pos0 + i;
        CHECK(kvl_kv_append(t, l, n, pos, k, v, &err) == KVL_OK);
        CHECK(kvl_kv_seal(t, l, &err) == KVL_OK);
    }
    free(k);
    free(v);
    free(pos);
}

/* Dense attention in double over the decoded rows of t. */
static double check_attention(const kvl_kv_table *t, int layer, int n_tok, const float *q, const int32_t *qp,
                              const float *out) {
    static float K[NMAX][D], V[NMAX][D];
    static int32_t pos[NMAX];
    double worst = 0;
    for (int h = 0; h < NH; h++) {
        const int kvh = h / (NH / NKV), n = kvl_kv_table_len(t, layer, kvh);
        kvl_kv_table_positions(t, layer, kvh, pos, NMAX);
        for (int i = 0; i < n; i++) kvl_kv_table_decode(t, layer, kvh, i, K[i], V[i]);
        for (int tk = 0; tk < n_tok; tk++) {
            const float *qr = q + ((size_t)tk * NH + h) * D;
            double s[NMAX], m = -INFINITY, l = 0, acc[D] = {0}, mag = 0;
            for (int i = 0; i < n; i++) {
                s[i] = -INFINITY;
                if (pos[i] > qp[tk]) continue;
                double d = 0;
                for (int j = 0; j < D; j++) d += (double)qr[j] * K[i][j];
                s[i] = d * 0.125;
                m = fmax(m, s[i]);
            }
            for (int i = 0; i < n; i++) {
                s[i] = pos[i] > qp[tk] ? 0 : exp(s[i] - m);
                l += s[i];
            }
            for (int i = 0; i < n; i++)
                for (int j = 0; j < D; j++) acc[j] += s[i] * V[i][j];
            for (int j = 0; j < D; j++) mag = fmax(mag, fabs(acc[j] / l));
            for (int j = 0; j < D; j++)
                worst = fmax(worst, fabs(acc[j] / l - out[((size_t)tk * NH + h) * D + j]) / (mag + 1e-6));
        }
    }
    return worst;
}

static void case_codec(const char *spec, int P, int scalar) {
    kvl_kv_config cfg = {.n_layer = NL, .n_head_kv = NKV, .head_dim = D, .page_tokens = P,
                         .budget_bytes = (size_t)64 << 20, .n_head = NH, .scalar_only = scalar, .k_spec = spec};
    kvl_kv_pool *p;
    kvl_kv_table *t;
    kvl_err err;
    if (kvl_kv_pool_create(&cfg, &p, &err) != KVL_OK) {
        CHECK_MSG(0, "%s P=%d: %s", spec, P, err.msg);
        return;
    }
    CHECK(kvl_kv_table_create(p, &t, &err) == KVL_OK);
    const int seals = kvl_kv_pool_codec(p, 0, 0)->seal || kvl_kv_pool_codec(p, 0, 1)->seal;
    rs = 1234u + (unsigned)P;
    add(t, 0, 61);
    add(t, 61, 40);
    /* unequal lengths: drop different tokens from different heads */
    for (int h = 0; h < NKV; h++) {
        int idx[8], n = 0;
        for (int i = 0; i < 2 + 2 * h; i++) idx[n++] = 3 + 11 * i + h;
        CHECK(kvl_kv_drop(t, 0, h, idx, n, &err) == KVL_OK);
        CHECK(kvl_kv_seal(t, 0, &err) == KVL_OK);
    }
    CHECK(kvl_kv_table_len(t, 0, 0) != kvl_kv_table_len(t, 0, 2));
    if (seals) CHECK_MSG(kvl_kv_table_n_sealed(t, 1, 0) == 101 / P, "%s P=%d: %d sealed", spec, P, kvl_kv_table_n_sealed(t, 1, 0));
    /* sealed pages are smaller: 101 tokens cost less than 61 tokens' open pages would */
    if (seals) {
        const double per_tok_open = (double)kvl_kv_pool_class_bytes(p, 0) / P;
        CHECK_MSG((double)kvl_kv_table_layer_bytes(t, 1) < per_tok_open * 101 * NKV, "%s: pages did not shrink", spec);
    }
    float q[3 * NH * D], o[3 * NH * D];
    const int32_t qp[3] = {17, 70, 1000};
    for (int i = 0; i < 3 * NH * D; i++) q[i] = frand() * 2;
    static char scratch[1 << 20];
    /* float kernels: rounding only. KIVI's (and SQuat's) AVX2 kernels round
     * the per-page factors (q_j * s_j, p_i * s_i) to int16 to use vpmaddwd on
     * the codes (codec_kivi_avx2.c): relative error <= 2^-15 per factor,
     * which over 64 channels and the softmax stays below 1e-3 here. */
    const double tol = !scalar && (!strncmp(spec, "kivi", 4) || !strncmp(spec, "squat", 5)) ? 1e-3 : 2e-5;
    for (int l = 0; l < NL; l++) {
        kvl_kv_attend(t, l, 3, q, qp, NH, 0.125f, o, scratch, 0, 1);
        const double e = check_attention(t, l, 3, q, qp, o);
        CHECK_MSG(e < tol, "%s P=%d %s layer %d: fused attention differs from decode-then-attend by %.3g", spec, P,
                  scalar ? "scalar" : "simd", l, e);
    }
    kvl_kv_table_free(t);
    CHECK(kvl_kv_pool_used(p) == 0);
    kvl_kv_pool_free(p);
}

/* ---- per-sequence codec state (SQuat's kind): a test codec that counts the
 * queries it observes and stamps the count into each page it seals ---- */
typedef struct {
    int param, queries;
    float q00; /* first query's first value */
} sq_state;
static size_t sq_pool_bytes(int d) { return sizeof(int); }
static size_t sq_seq_bytes(int d) { return sizeof(sq_state); }
static kvl_status sq_init(const kvl_codec_params *prm, int layer, int head, int is_v, int d, void *st, kvl_err *err) {
    *(int *)st = 100 * layer + 10 * head + is_v;
    return KVL_OK;
}
static void sq_observe(void *st, const float *q, int n, int G, int d, size_t stride) {
    sq_state *s = st;
    if (!s->queries) s->q00 = q[0];
    s->queries += n * G;
}
static size_t sq_seg_bytes(int d, int P) { return (size_t)P * d * 4 + 2 * sizeof(int); }
static void sq_seal(const void *st, uint8_t *seg, const uint8_t *open, int d, int P) {
    const sq_state *s = st;
    memcpy(seg, open, (size_t)P * d * 4);
    memcpy(seg + (size_t)P * d * 4, &s->param, sizeof(int));
    memcpy(seg + (size_t)P * d * 4 + sizeof(int), &s->queries, sizeof(int));
}
/* row 0 shows the stamp in its last two values (this codec exists for the test) */
static void sq_decode(const uint8_t *seg, int d, int P, int i, float *x) {
    memcpy(x, seg + (size_t)i * d * 4, (size_t)d * 4);
    if (i == 0) {
        int a[2];
        memcpy(a, seg + (size_t)P * d * 4, sizeof a);
        x[d - 2] = (float)a[0];
        x[d - 1] = (float)a[1];
    }
}
extern const kvl_codec kvl_codec_f32;
static const kvl_codec codec_sq = {.name = "test-seqstate", .seg_bytes = sq_seg_bytes, .open = &kvl_codec_f32,
                                   .seal = sq_seal, .decode = sq_decode, .state_bytes = sq_pool_bytes,
                                   .state_init = sq_init, .seq_state_bytes = sq_seq_bytes, .observe = sq_observe};

static void test_seq_state(void) {
    kvl_kv_config cfg = {.n_layer = NL, .n_head_kv = NKV, .head_dim = D, .page_tokens = 8,
                         .budget_bytes = (size_t)16 << 20, .n_head = NH, .codec = &kvl_codec_f32, .codec_v = &codec_sq};
    kvl_kv_pool *p;
    kvl_kv_table *t, *f;
    kvl_err err;
    CHECK(kvl_kv_pool_create(&cfg, &p, &err) == KVL_OK && kvl_kv_table_create(p, &t, &err) == KVL_OK);
    float q[5 * NH * D];
    for (int i = 0; i < 5 * NH * D; i++) q[i] = (float)i;
    kvl_kv_observe(t, 1, 5, q, NH);
    add(t, 0, 9); /* layer 1 seals page 0 with 5 tokens x 3 heads observed */
    CHECK(kvl_kv_table_fork(t, &f, &err) == KVL_OK);
    kvl_kv_observe(f, 1, 2, q, NH);
    add(f, 9, 8);
    add(t, 9, 8);
    /* layer 1, kv-head 2: page 0 sealed before the fork (15 queries seen),
     * page 1 sealed by each table with its own count (the fork saw 6 more) */
    float k[D], v[D];
    const float param = 100 * 1 + 10 * 2 + 1;
    CHECK(kvl_kv_table_decode(t, 1, 2, 0, k, v) == KVL_OK && v[D - 2] == param && v[D - 1] == 15);
    CHECK(kvl_kv_table_decode(f, 1, 2, 0, k, v) == KVL_OK && v[D - 1] == 15);
    CHECK(kvl_kv_table_decode(t, 1, 2, 8, k, v) == KVL_OK && v[D - 2] == param && v[D - 1] == 15);
    CHECK(kvl_kv_table_decode(f, 1, 2, 8, k, v) == KVL_OK && v[D - 2] == param && v[D - 1] == 21);
    CHECK(kvl_kv_table_decode(t, 0, 1, 8, k, v) == KVL_OK && v[D - 2] == 11 && v[D - 1] == 0); /* layer 0 saw none */
    kvl_kv_table_free(f);
    kvl_kv_table_free(t);
    kvl_kv_pool_free(p);
}

int main(void) {
    test_seq_state();
    kvl_codec_info ci;
    int n = 0;
    for (int i = 0; kvl_codec_info_get(i, D, 32, &ci); i++) {
        const char *specs[2] = {ci.name, NULL};
        char rot[64];
        if (strcmp(ci.name, "f32")) {
            snprintf(rot, sizeof rot, "%s+rot", ci.name);
            specs[1] = rot;
        }
        for (int s = 0; s < 2 && specs[s]; s++)
            for (int P = 7; P <= 32; P = P == 7 ? 16 : P * 2)
                for (int scalar = 0; scalar < 2; scalar++) {
                    /* codecs that need a calibration file are covered by their own tests */
                    if (!strcmp(ci.name, "oaken")) continue;
                    case_codec(specs[s], P, scalar);
                    n++;
                }
    }
    printf("measured: %d codec x page size x kernel cases through the paged attention\n", n);
    KVL_TEST_END();
}
