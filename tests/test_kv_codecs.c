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
    for (int l = 0; l < NL; l++) {
        kvl_kv_attend(t, l, 3, q, qp, NH, 0.125f, o, scratch, 0, 1);
        const double e = check_attention(t, l, 3, q, qp, o);
        CHECK_MSG(e < 2e-5, "%s P=%d %s layer %d: fused attention differs from decode-then-attend by %.3g", spec, P,
                  scalar ? "scalar" : "simd", l, e);
    }
    kvl_kv_table_free(t);
    CHECK(kvl_kv_pool_used(p) == 0);
    kvl_kv_pool_free(p);
}

int main(void) {
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
