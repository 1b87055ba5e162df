/* KV codec tests: round-trip error bounds per codec, fused qk/av against
 * decode-then-compute in double, SIMD kernels against the scalar reference,
 * the vectorised softmax exp, registry and exact bytes per token. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv/codec.h"
#include "kv/kv.h"
#include "codec_util.h"
#include "test.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double urand(void) { /* [0,1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
static float frand(float a) { return (float)((2 * urand() - 1) * a); }

/* Fill a row with a mix of magnitudes (and an outlier now and then). */
static void rand_row(float *x, int D) {
    const float mag = (float)(0.01 + 4 * urand());
    for (int j = 0; j < D; j++) x[j] = frand(mag);
    if (urand() < 0.3) x[(int)(urand() * D)] = frand(20);
}

static void test_registry(void) {
    CHECK(kvl_codec_find("f32") && kvl_codec_find("f16") && kvl_codec_find("int8"));
    CHECK(kvl_codec_find("int3") == NULL && kvl_codec_find(NULL) == NULL);
    CHECK(strcmp(kvl_codec_name(kvl_codec_find("int8")), "int8") == 0);
    CHECK(strstr(kvl_codec_list(), "f16") != NULL);
    CHECK(kvl_codec_bytes_per_token(kvl_codec_find("f32"), 64, 32) == 256);
    CHECK(kvl_codec_bytes_per_token(kvl_codec_find("f16"), 64, 32) == 128);
    CHECK(kvl_codec_bytes_per_token(kvl_codec_find("int8"), 64, 32) == 68);
    CHECK(kvl_codec_bytes_per_token(kvl_codec_find("int8"), 128, 7) == 132);
}

/* Round trip of every row of a full segment. */
static void test_roundtrip(const kvl_codec *c, int D, int P) {
    uint8_t *seg = malloc(c->seg_bytes(D, P));
    float *x = malloc(sizeof(float) * D * P), *y = malloc(sizeof(float) * D);
    for (int i = 0; i < P; i++) rand_row(x + i * D, D);
    CHECK(codec_fill(c, NULL, seg, D, P, P, x) == 0);
    int bad = 0;
    for (int i = 0; i < P; i++) {
        c->decode(seg, D, P, i, y);
        const float *xi = x + i * D;
        float amax = 0;
        for (int j = 0; j < D; j++) amax = fmaxf(amax, fabsf(xi[j]));
        for (int j = 0; j < D; j++) {
            double e = fabs((double)xi[j] - y[j]), tol;
            if (!strcmp(c->name, "f32")) tol = 0;
            else if (!strcmp(c->name, "f16")) tol = ldexp(fabs(xi[j]), -11) + ldexp(1, -25);
            else tol = (amax / 127.0) / 2 * (1 + 1e-6) + 1e-12;
            if (e > tol) {
                if (bad++ < 3) fprintf(stderr, "%s D=%d row %d col %d: %g vs %g (tol %g)\n", c->name, D, i, j, xi[j], y[j], tol);
            }
        }
    }
    CHECK_MSG(bad == 0, "%s round trip D=%d P=%d: %d elements out of bound", c->name, D, P, bad);
    /* a zero row stays zero (int8: scale 0, no division by zero) */
    memset(x, 0, sizeof(float) * D);
    c->encode(NULL, seg, D, P, 0, x);
    c->decode(seg, D, P, 0, y);
    float s = 0;
    for (int j = 0; j < D; j++) s += fabsf(y[j]);
    CHECK(s == 0);
    free(seg), free(x), free(y);
}

/* qk/av of kernels kn on n rows vs decoding the rows and computing in double. */
static void test_fused(const kvl_codec *c, kvl_codec_kernels kn, int D, int P, int n) {
    uint8_t *seg = malloc(c->seg_bytes(D, P));
    float *x = malloc(sizeof(float) * D), *q = malloc(sizeof(float) * D);
    float *dec = malloc(sizeof(float) * D * P), *sc = malloc(sizeof(float) * P), *pr = malloc(sizeof(float) * P);
    float *acc = malloc(sizeof(float) * D);
    double *acc_ref = malloc(sizeof(double) * D);
    float *rows = malloc(sizeof(float) * D * P);
    for (int i = 0; i < n; i++) rand_row(rows + i * D, D);
    CHECK(codec_fill(c, NULL, seg, D, P, n, rows) == 0);
    free(rows);
    for (int i = 0; i < n; i++) c->decode(seg, D, P, i, dec + i * D);
    for (int j = 0; j < D; j++) q[j] = frand(1);
    kn.qk(seg, D, P, n, q, sc);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        double r = 0, mag = 0;
        for (int j = 0; j < D; j++) {
            r += (double)q[j] * dec[i * D + j];
            mag += fabs((double)q[j] * dec[i * D + j]);
        }
        if (fabs(r - sc[i]) > 1e-5 * mag + 1e-6) bad++;
    }
    CHECK_MSG(bad == 0, "%s/%s qk D=%d n=%d: %d scores off", c->name, kn.isa, D, n, bad);
    for (int i = 0; i < n; i++) pr[i] = (float)urand();
    for (int j = 0; j < D; j++) acc[j] = acc_ref[j] = j * 0.25;
    kn.av(seg, D, P, n, pr, acc);
    bad = 0;
    for (int j = 0; j < D; j++) {
        double mag = fabs(acc_ref[j]);
        for (int i = 0; i < n; i++) {
            acc_ref[j] += (double)pr[i] * dec[i * D + j];
            mag += fabs((double)pr[i] * dec[i * D + j]);
        }
        if (fabs(acc_ref[j] - acc[j]) > 1e-5 * mag + 1e-6) bad++;
    }
    CHECK_MSG(bad == 0, "%s/%s av D=%d n=%d: %d columns off", c->name, kn.isa, D, n, bad);
    free(seg), free(x), free(q), free(dec), free(sc), free(pr), free(acc), free(acc_ref);
}

/* SIMD kernels against the scalar reference on the same segment. */
static void test_simd_vs_ref(const kvl_codec *c, int D, int P) {
    kvl_codec_kernels ref = kvl_codec_kernels_get(c, D, 1), simd = kvl_codec_kernels_get(c, D, 0);
    if (strcmp(simd.isa, "scalar") == 0) {
        printf("  (%s D=%d: no SIMD kernels on this CPU/build, skipped)\n", c->name, D);
        return;
    }
    uint8_t *seg = malloc(c->seg_bytes(D, P));
    float *x = malloc(sizeof(float) * D), *q = malloc(sizeof(float) * D);
    float *s1 = malloc(sizeof(float) * P), *s2 = malloc(sizeof(float) * P), *pr = malloc(sizeof(float) * P);
    float *a1 = calloc(D, sizeof(float)), *a2 = calloc(D, sizeof(float));
    float *rows = malloc(sizeof(float) * D * P);
    for (int i = 0; i < P; i++) {
        rand_row(rows + i * D, D);
        pr[i] = (float)urand();
    }
    CHECK(codec_fill(c, NULL, seg, D, P, P, rows) == 0);
    free(rows);
    for (int j = 0; j < D; j++) q[j] = frand(1);
    int bad = 0;
    for (int n = 1; n <= P; n += (n < 10 ? 1 : 7)) {
        ref.qk(seg, D, P, n, q, s1);
        simd.qk(seg, D, P, n, q, s2);
        for (int i = 0; i < n; i++)
            if (fabsf(s1[i] - s2[i]) > 1e-5f * (1 + fabsf(s1[i]))) bad++;
        memset(a1, 0, sizeof(float) * D), memset(a2, 0, sizeof(float) * D);
        ref.av(seg, D, P, n, pr, a1);
        simd.av(seg, D, P, n, pr, a2);
        for (int j = 0; j < D; j++)
            if (fabsf(a1[j] - a2[j]) > 1e-5f * (1 + fabsf(a1[j]))) bad++;
    }
    CHECK_MSG(bad == 0, "%s D=%d P=%d: simd vs scalar %d mismatches", c->name, D, P, bad);
    free(seg), free(x), free(q), free(s1), free(s2), free(pr), free(a1), free(a2);
}

/* Multi-query kernels: per query bit-identical to the single-query kernel,
 * for m = 1..12 and any n. */
static void test_multi(const kvl_codec *c, kvl_codec_kernels kn, int D, int P) {
    enum { MM = 12 };
    uint8_t *seg = malloc(c->seg_bytes(D, P));
    float *x = malloc(sizeof(float) * D), *q = malloc(sizeof(float) * MM * D);
    float *s1 = malloc(sizeof(float) * P), *sm = malloc(sizeof(float) * MM * P), *pr = malloc(sizeof(float) * MM * P);
    float *a1 = malloc(sizeof(float) * D), *am = malloc(sizeof(float) * MM * D);
    float *rows = malloc(sizeof(float) * D * P);
    for (int i = 0; i < P; i++) rand_row(rows + i * D, D);
    CHECK(codec_fill(c, NULL, seg, D, P, P, rows) == 0);
    free(rows);
    for (int i = 0; i < MM * D; i++) q[i] = frand(1);
    for (int i = 0; i < MM * P; i++) pr[i] = (float)urand();
    int bad = 0;
    for (int m = 1; m <= MM; m++)
        for (int n = 1; n <= P; n += (n < 10 ? 1 : 5)) {
            for (int i = 0; i < MM * D; i++) am[i] = (float)(i % 7) * 0.125f;
            kvl_codec_qk_multi(&kn, seg, D, P, n, q, m, sm);
            kvl_codec_av_multi(&kn, seg, D, P, n, pr, m, am);
            for (int g = 0; g < m; g++) {
                kn.qk(seg, D, P, n, q + g * D, s1);
                if (memcmp(s1, sm + g * P, sizeof(float) * n)) bad++;
                for (int j = 0; j < D; j++) a1[j] = (float)((g * D + j) % 7) * 0.125f;
                kn.av(seg, D, P, n, pr + g * P, a1);
                if (memcmp(a1, am + g * D, sizeof(float) * D)) bad++;
            }
        }
    CHECK_MSG(bad == 0, "%s/%s D=%d P=%d: multi-query vs single %d mismatches", c->name, kn.isa, D, P, bad);
    free(seg), free(x), free(q), free(s1), free(sm), free(pr), free(a1), free(am);
}

static void test_expsum(void) {
    kvl_kv_expsum_fn fx = kvl_kv_expsum_avx2();
    if (!fx) {
        printf("  (no AVX2 expsum, skipped)\n");
        return;
    }
    float a[37], b[37];
    for (int n = 1; n <= 37; n += 3) {
        for (int i = 0; i < n; i++) a[i] = b[i] = frand(30);
        if (n > 1) a[n / 2] = b[n / 2] = -INFINITY; /* n == 1 keeps a finite max */
        if (n > 2) a[1] = b[1] = -100; /* underflows to 0 */
        float m = -INFINITY;
        for (int i = 0; i < n; i++) m = fmaxf(m, a[i]);
        float sr = kvl_kv_expsum_ref(a, n, m), sv = fx(b, n, m);
        int bad = 0;
        for (int i = 0; i < n; i++)
            if (fabsf(a[i] - b[i]) > 2e-7f * (a[i] + 1e-30f) + 1e-37f) bad++;
        CHECK_MSG(bad == 0, "expsum n=%d: %d values off", n, bad);
        if (n > 1) CHECK(b[n / 2] == 0);
        CHECK_NEAR(sr, sv, 1e-6 * sr);
    }
}

int main(void) {
    test_registry();
    const char *names[] = {"f32", "f16", "int8"};
    const int dims[] = {64, 128, 40, 36, 8};
    for (int c = 0; c < 3; c++) {
        const kvl_codec *codec = kvl_codec_find(names[c]);
        for (int d = 0; d < 5; d++) {
            const int D = dims[d];
            test_roundtrip(codec, D, 32);
            test_roundtrip(codec, D, 7);
            const int ns[] = {1, 5, 8, 9, 16, 31, 32};
            for (int k = 0; k < 7; k++) {
                test_fused(codec, kvl_codec_kernels_get(codec, D, 1), D, 32, ns[k]);
                test_fused(codec, kvl_codec_kernels_get(codec, D, 0), D, 32, ns[k]);
            }
            test_fused(codec, kvl_codec_kernels_get(codec, D, 0), D, 1, 1);
            test_fused(codec, kvl_codec_kernels_get(codec, D, 0), D, 7, 7);
            test_multi(codec, kvl_codec_kernels_get(codec, D, 1), D, 32);
            test_multi(codec, kvl_codec_kernels_get(codec, D, 0), D, 32);
            test_multi(codec, kvl_codec_kernels_get(codec, D, 0), D, 7);
            test_multi(codec, kvl_codec_kernels_get(codec, D, 0), D, 100);
            test_simd_vs_ref(codec, D, 32);
            test_simd_vs_ref(codec, D, 7);
        }
    }
    test_expsum();
    KVL_TEST_END();
}
