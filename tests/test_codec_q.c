/* Tests of the quantized per-token KV codecs int4, int4g64, int4z, fp8, oaken:
 * exact segment bytes, round-trip error within the bound each format
 * guarantees (stated at each check), fused qk/av against decode-then-compute
 * in double, AVX2 against the scalar reference, multi-query bit-identity,
 * batch invariance (score of row i independent of n, p[i] == 0 adds nothing),
 * copy_row; fp8's encoder against a brute-force nearest-even search; oaken's
 * planted outliers, capacity overflow and calibration-file loader. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kv/codec.h"
#include "kv/codec_oaken.h"
#include "kv/codec_spec.h"
#include "kv/kv.h"
#include "util/fp16.h"
#include "codec_util.h"
#include "test.h"

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static double urand(void) { /* [0,1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
static float frand(float a) { return (float)((2 * urand() - 1) * a); }
static double gauss(void) {
    double u = urand() + 1e-12, v = urand();
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

/* A row like real K/V: gaussian body with a per-row magnitude, an offset now
 * and then, and an outlier now and then. */
static void rand_row(float *x, int D) {
    const float mag = (float)(0.01 + 2 * urand()), off = urand() < 0.3 ? frand(1) : 0;
    for (int j = 0; j < D; j++) x[j] = off + mag * (float)gauss();
    if (urand() < 0.3) x[(int)(urand() * D)] = frand(20);
}

/* Oaken state for tests: thresholds of a unit gaussian (4% outer, 6% inner). */
static uint8_t oaken_st[4096];
static const void *state_for(const kvl_codec *c) {
    if (strcmp(c->name, "oaken") != 0) return NULL;
    kvl_oaken_thresholds th = {.lo_out = -2.054f, .hi_out = 2.054f, .lo_in = -0.0753f, .hi_in = 0.0753f};
    kvl_oaken_state_set(oaken_st, &th);
    return oaken_st;
}

/* ---- exact sizes ---------------------------------------------------------------- */

static void test_sizes(void) {
    const kvl_codec *i4 = kvl_codec_find("int4"), *i4g = kvl_codec_find("int4g64"), *f8 = kvl_codec_find("fp8");
    CHECK(i4 && i4g && f8 && kvl_codec_find("oaken"));
    if (!i4 || !i4g || !f8) return;
    /* int4 row: ceil(D/G) x (f16 scale + f16 min) + ceil(D/2) code bytes */
    CHECK(i4->seg_bytes(64, 32) == 32 * (2 * 4 + 32));
    CHECK(kvl_codec_bits_per_value(i4, 64, 32) == 5.0);
    CHECK(i4->seg_bytes(128, 16) == 16 * (4 * 4 + 64));
    CHECK(i4->seg_bytes(36, 7) == 7 * (2 * 4 + 18));
    CHECK(i4g->seg_bytes(64, 32) == 32 * (4 + 32));
    CHECK(kvl_codec_bits_per_value(i4g, 64, 32) == 4.5);
    CHECK(i4g->seg_bytes(128, 7) == 7 * (2 * 4 + 64));
    const kvl_codec *i4z = kvl_codec_find("int4z"); /* ceil(D/32) x (e5m3 scale, int8 zero) + ceil(D/2) */
    CHECK(i4z && i4z->seg_bytes(64, 32) == 32 * (2 * 2 + 32) && kvl_codec_bits_per_value(i4z, 64, 32) == 4.5);
    CHECK(i4z && i4z->seg_bytes(128, 16) == 16 * (4 * 2 + 64) && i4z->seg_bytes(36, 7) == 7 * (2 * 2 + 18));
    /* fp8: f32 scale + D bytes per row */
    CHECK(f8->seg_bytes(64, 32) == 32 * 68);
    CHECK(kvl_codec_bits_per_value(f8, 64, 32) == 8.5);
    CHECK(f8->seg_bytes(128, 7) == 7 * 132);
    const kvl_codec *oa = kvl_codec_find("oaken");
    if (oa) {
        /* header 16 + per row: D/2 codes, 3 bytes scales, 1 count byte, C entries (C = ceil(3D/32)) */
        CHECK(oa->seg_bytes(64, 32) == 16 + 32 * (32 + 3 + 1 + 6));
        CHECK(oa->seg_bytes(128, 16) == 16 + 16 * (64 + 3 + 1 + 12));
        CHECK(oa->seg_bytes(256, 7) == 16 + 7 * (128 + 3 + 2 + 24 * 2)); /* wide: 2 count bytes, u16 entries */
        CHECK(oa->state_bytes && oa->state_init && oa->state_bytes(64) > 0);
    }
    CHECK(strstr(kvl_codec_list(), "int4") && strstr(kvl_codec_list(), "fp8") && strstr(kvl_codec_list(), "oaken"));
}

/* ---- round trips -------------------------------------------------------------- */

/* int4z: scale <= max((mx - mn) / 14, max|x| / 112) rounded up to e5m3
 * (<= 2^-3 relative, or the smallest step 2^-17), error <= scale / 2. */
static double i4z_tol(const float *x, int c0, int gs) {
    double mn = INFINITY, mx = -INFINITY;
    for (int k = 0; k < gs; k++) mn = fmin(mn, x[c0 + k]), mx = fmax(mx, x[c0 + k]);
    const double s = fmax((mx - mn) / 14, fmax(fabs(mn), fabs(mx)) / 112) * 1.125 + ldexp(1, -17);
    return s / 2 * (1 + 1e-5) + 4e-7 * (fabs(mn) + fabs(mx));
}

/* int4: per group, with mn/mx its extremes: stored min m16 >= mn - ulp16(mn),
 * scale s16 <= (mx - m16) / 15 rounded up to a half (<= 2^-10 relative, or a
 * subnormal step 2^-24), and |x - x'| <= s16 / 2 (+ float rounding). */
static double i4_tol(const float *x, int c0, int gs) {
    double mn = INFINITY, mx = -INFINITY;
    for (int k = 0; k < gs; k++) mn = fmin(mn, x[c0 + k]), mx = fmax(mx, x[c0 + k]);
    const double s = ((mx - mn) + fabs(mn) * ldexp(1, -10) + ldexp(1, -24)) / 15 * (1 + ldexp(1, -10)) + ldexp(1, -24);
    return s / 2 * (1 + 1e-5) + 4e-7 * (fabs(mn) + fabs(mx));
}

static void test_roundtrip(const kvl_codec *c, int D, int P) {
    const void *st = state_for(c);
    uint8_t *seg = calloc(1, c->seg_bytes(D, P));
    float *x = malloc(sizeof(float) * D * P), *y = malloc(sizeof(float) * D);
    for (int i = 0; i < P; i++) rand_row(x + i * D, D);
    CHECK(codec_fill(c, st, seg, D, P, P, x) == 0);
    const int G = strcmp(c->name, "int4g64") ? 32 : 64;
    int bad = 0;
    double worst = 0;
    for (int i = 0; i < P; i++) {
        c->decode(seg, D, P, i, y);
        const float *xi = x + i * D;
        float amax = 0;
        for (int j = 0; j < D; j++) amax = fmaxf(amax, fabsf(xi[j]));
        for (int j = 0; j < D; j++) {
            double e = fabs((double)xi[j] - y[j]), tol;
            if (!strcmp(c->name, "fp8")) /* e4m3: half ulp 2^-4 |x| in the normal range, 2^-10 scale below */
                tol = (ldexp(fabs(xi[j]), -4) + ldexp(amax / 448.0, -10)) * (1 + 1e-5);
            else if (!strcmp(c->name, "oaken"))
                tol = kvl_oaken_row_bound(seg, D, P, i, xi, j);
            else {
                const int c0 = j / G * G, gs = D - c0 < G ? D - c0 : G;
                tol = strcmp(c->name, "int4z") ? i4_tol(xi, c0, gs) : i4z_tol(xi, c0, gs);
            }
            worst = fmax(worst, e / (tol > 0 ? tol : 1));
            if (e > tol && bad++ < 3)
                fprintf(stderr, "%s D=%d row %d col %d: %g vs %g (tol %g)\n", c->name, D, i, j, xi[j], y[j], tol);
        }
    }
    CHECK_MSG(bad == 0, "%s round trip D=%d P=%d: %d elements out of bound", c->name, D, P, bad);
    /* a zero row decodes to zero (oaken: its levels are offsets from the
     * layer's thresholds, so 0 comes back within the inner-group bound) */
    memset(x, 0, sizeof(float) * D);
    c->encode(st, seg, D, P, 0, x);
    c->decode(seg, D, P, 0, y);
    int zbad = 0;
    for (int j = 0; j < D; j++)
        zbad += fabsf(y[j]) > (strcmp(c->name, "oaken") ? 0 : kvl_oaken_row_bound(seg, D, P, 0, x, j));
    CHECK_MSG(zbad == 0, "%s D=%d: zero row: %d values off", c->name, D, zbad);
    free(seg), free(x), free(y);
}

/* fp8 encoder vs brute force: nearest of the 127 non-negative finite codes,
 * ties to the even code, saturating at 448. */
uint8_t kvl_fp8_e4m3_encode(float v);
static double e4m3_val(int c) {
    const int e = c >> 3, m = c & 7;
    return e ? ldexp(1 + m / 8.0, e - 7) : ldexp(m, -9);
}
static int e4m3_brute(double a) {
    int best = 0;
    for (int c = 1; c <= 0x7E; c++) {
        const double d = fabs(a - e4m3_val(c)), db = fabs(a - e4m3_val(best));
        if (d < db || (d == db && !(c & 1))) best = c;
    }
    return best;
}
static void test_fp8_encoder(void) {
    int bad = 0;
    for (int c = 0; c <= 0x7E; c++) { /* every code, its midpoints to the next and random points */
        const double v = e4m3_val(c), nx = c < 0x7E ? e4m3_val(c + 1) : 480;
        const double pts[4] = {v, (v + nx) / 2, v + (nx - v) * urand(), -(v + (nx - v) / 3)};
        for (int k = 0; k < 4; k++) {
            const float f = (float)pts[k];
            const int want = (f < 0 ? 0x80 : 0) | e4m3_brute(fabs((double)f));
            if (kvl_fp8_e4m3_encode(f) != want && bad++ < 3)
                fprintf(stderr, "e4m3(%.9g) = %#x, want %#x\n", f, kvl_fp8_e4m3_encode(f), want);
        }
    }
    CHECK_MSG(bad == 0, "fp8 encoder: %d values not nearest-even", bad);
    CHECK(kvl_fp8_e4m3_encode(1000.f) == 0x7E && kvl_fp8_e4m3_encode(-1e30f) == 0xFE);
    CHECK(kvl_fp8_e4m3_encode(464.f) == 0x7E && kvl_fp8_e4m3_encode(NAN) == 0);
}

/* ---- kernels ------------------------------------------------------------------- */

/* qk/av of kernels kn on n rows vs decoding the rows and computing in double. */
static void test_fused(const kvl_codec *c, kvl_codec_kernels kn, int D, int P, int n) {
    const void *st = state_for(c);
    uint8_t *seg = calloc(1, c->seg_bytes(D, P));
    float *q = malloc(sizeof(float) * D), *dec = malloc(sizeof(float) * D * P), *sc = malloc(sizeof(float) * P);
    float *pr = malloc(sizeof(float) * P), *acc = malloc(sizeof(float) * D), *rows = malloc(sizeof(float) * D * P);
    double *acc_ref = malloc(sizeof(double) * D);
    for (int i = 0; i < n; i++) rand_row(rows + i * D, D);
    CHECK(codec_fill(c, st, seg, D, P, n, rows) == 0);
    for (int i = 0; i < n; i++) c->decode(seg, D, P, i, dec + i * D);
    for (int j = 0; j < D; j++) q[j] = frand(1);
    kn.qk(seg, D, P, n, q, sc);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        double r = 0, mag = 0;
        for (int j = 0; j < D; j++) r += (double)q[j] * dec[i * D + j], mag += fabs((double)q[j] * dec[i * D + j]);
        if (fabs(r - sc[i]) > 1e-5 * mag + 1e-6) bad++;
    }
    CHECK_MSG(bad == 0, "%s/%s qk D=%d P=%d n=%d: %d scores off", c->name, kn.isa, D, P, n, bad);
    for (int i = 0; i < n; i++) pr[i] = (float)urand();
    for (int j = 0; j < D; j++) acc[j] = acc_ref[j] = j * 0.25;
    kn.av(seg, D, P, n, pr, acc);
    bad = 0;
    for (int j = 0; j < D; j++) {
        double mag = fabs(acc_ref[j]);
        for (int i = 0; i < n; i++) acc_ref[j] += (double)pr[i] * dec[i * D + j], mag += fabs((double)pr[i] * dec[i * D + j]);
        if (fabs(acc_ref[j] - acc[j]) > 1e-5 * mag + 1e-6) bad++;
    }
    CHECK_MSG(bad == 0, "%s/%s av D=%d P=%d n=%d: %d columns off", c->name, kn.isa, D, P, n, bad);
    free(seg), free(q), free(dec), free(sc), free(pr), free(acc), free(acc_ref), free(rows);
}

/* SIMD against the scalar reference (tolerance as test_codec.c), and batch
 * invariance of both: score of row i the same for every n > i (bit for bit);
 * av over n rows with p[n-1] == 0 bit-identical to av over n - 1 rows. */
static void test_simd_and_invariance(const kvl_codec *c, int D, int P) {
    kvl_codec_kernels ref = kvl_codec_kernels_get(c, D, 1), simd = kvl_codec_kernels_get(c, D, 0);
    const int have_simd = strcmp(simd.isa, "scalar") != 0;
    /* where AVX2 kernels must exist: int4 D % 32, int4g64 D % 64, fp8 D % 8, oaken D % 32 and D <= 128 */
    const int want = !strcmp(c->name, "int4") || !strcmp(c->name, "int4z") ? D % 32 == 0 : !strcmp(c->name, "int4g64") ? D % 64 == 0
                   : !strcmp(c->name, "fp8") ? D % 8 == 0 : D % 32 == 0 && D <= 128;
    if (!have_simd && want && kvl_cpu_has_avx2())
        CHECK_MSG(0, "%s D=%d: expected AVX2 kernels", c->name, D);
    const void *st = state_for(c);
    uint8_t *seg = calloc(1, c->seg_bytes(D, P));
    float *q = malloc(sizeof(float) * D), *s1 = malloc(sizeof(float) * P), *s2 = malloc(sizeof(float) * P);
    float *sfull = malloc(sizeof(float) * P), *pr = malloc(sizeof(float) * P);
    float *a1 = calloc(D, sizeof(float)), *a2 = calloc(D, sizeof(float)), *rows = malloc(sizeof(float) * D * P);
    for (int i = 0; i < P; i++) rand_row(rows + i * D, D), pr[i] = (float)urand();
    CHECK(codec_fill(c, st, seg, D, P, P, rows) == 0);
    for (int j = 0; j < D; j++) q[j] = frand(1);
    int bad = 0, var = 0;
    const kvl_codec_kernels *ks[2] = {&ref, &simd};
    for (int t = 0; t < 2; t++) {
        ks[t]->qk(seg, D, P, P, q, sfull);
        for (int n = 1; n <= P; n++) {
            ks[t]->qk(seg, D, P, n, q, s1);
            if (memcmp(s1, sfull, sizeof(float) * n)) var++;
            for (int j = 0; j < D; j++) a1[j] = a2[j] = (float)j;
            const float keep = pr[n - 1];
            pr[n - 1] = 0;
            ks[t]->av(seg, D, P, n, pr, a1);
            ks[t]->av(seg, D, P, n - 1, pr, a2);
            pr[n - 1] = keep;
            if (memcmp(a1, a2, sizeof(float) * D)) var++;
        }
    }
    CHECK_MSG(var == 0, "%s D=%d P=%d: %d batch-invariance violations", c->name, D, P, var);
    if (have_simd) {
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
    }
    free(seg), free(q), free(s1), free(s2), free(sfull), free(pr), free(a1), free(a2), free(rows);
}

/* Multi-query kernels: per query bit-identical to the single-query kernel. */
static void test_multi(const kvl_codec *c, kvl_codec_kernels kn, int D, int P) {
    enum { MM = 12 };
    const void *st = state_for(c);
    uint8_t *seg = calloc(1, c->seg_bytes(D, P));
    float *q = malloc(sizeof(float) * MM * D), *s1 = malloc(sizeof(float) * P), *sm = malloc(sizeof(float) * MM * P);
    float *pr = malloc(sizeof(float) * MM * P), *a1 = malloc(sizeof(float) * D), *am = malloc(sizeof(float) * MM * D);
    float *rows = malloc(sizeof(float) * D * P);
    for (int i = 0; i < P; i++) rand_row(rows + i * D, D);
    CHECK(codec_fill(c, st, seg, D, P, P, rows) == 0);
    for (int i = 0; i < MM * D; i++) q[i] = frand(1);
    for (int i = 0; i < MM * P; i++) pr[i] = (float)urand();
    int bad = 0;
    for (int m = 1; m <= MM; m += (m < 4 ? 1 : 4))
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
    free(seg), free(q), free(s1), free(sm), free(pr), free(a1), free(am), free(rows);
}

/* copy_row moves a row exactly (another slot, same segment and another one). */
static void test_copy_row(const kvl_codec *c, int D, int P) {
    const void *st = state_for(c);
    const size_t sb = c->seg_bytes(D, P);
    uint8_t *a = calloc(1, sb), *b = calloc(1, sb);
    float *rows = malloc(sizeof(float) * D * P), *y1 = malloc(sizeof(float) * D), *y2 = malloc(sizeof(float) * D);
    for (int i = 0; i < P; i++) rand_row(rows + i * D, D);
    codec_fill(c, st, a, D, P, P, rows);
    codec_fill(c, st, b, D, P, P, rows);
    c->copy_row(b, 0, a, P - 1, D, P);
    c->copy_row(a, 1, a, P - 1, D, P);
    c->decode(a, D, P, P - 1, y1);
    c->decode(b, D, P, 0, y2);
    CHECK(memcmp(y1, y2, sizeof(float) * D) == 0);
    c->decode(a, D, P, 1, y2);
    CHECK(memcmp(y1, y2, sizeof(float) * D) == 0);
    free(a), free(b), free(rows), free(y1), free(y2);
}

static void test_codec(const char *name) {
    const kvl_codec *c = kvl_codec_find(name);
    CHECK_MSG(c != NULL, "codec %s registered", name);
    if (!c) return;
    const int dims[] = {64, 128, 40, 36, 256}; /* 256: oaken's wide layout (u16 entries) */
    const int pages[] = {7, 16, 32};
    for (int d = 0; d < 5; d++)
        for (int pp = 0; pp < 3; pp++) {
            const int D = dims[d], P = pages[pp];
            test_roundtrip(c, D, P);
            const int ns[] = {1, 5, 8, 9, P};
            for (int k = 0; k < 5; k++) {
                if (ns[k] > P) continue;
                test_fused(c, kvl_codec_kernels_get(c, D, 1), D, P, ns[k]);
                test_fused(c, kvl_codec_kernels_get(c, D, 0), D, P, ns[k]);
            }
            test_multi(c, kvl_codec_kernels_get(c, D, 1), D, P);
            test_multi(c, kvl_codec_kernels_get(c, D, 0), D, P);
            test_simd_and_invariance(c, D, P);
            test_copy_row(c, D, P);
        }
    printf("note: %s kernels at D=64: %s\n", name, kvl_codec_kernels_get(c, 64, 0).isa);
}

/* ---- oaken specifics --------------------------------------------------------------- */

static const kvl_oaken_thresholds TH = {-2.054f, -0.0753f, 0.0753f, 2.054f};

/* Planted outliers keep a 5-bit error: |x - x'| <= s_out / 2 with s_out <=
 * (largest excess / 15) (1 + 2^-3) (e5m3 rounding up), far below the 4-bit
 * middle step; every element within kvl_oaken_row_bound. */
static void test_oaken_outliers(void) {
    const kvl_codec *c = kvl_codec_find("oaken");
    const int D = 64, P = 16;
    uint8_t *seg = calloc(1, c->seg_bytes(D, P));
    float x[64], y[64];
    kvl_oaken_state_set(oaken_st, &TH);
    int bad = 0;
    for (int rep = 0; rep < 50; rep++) {
        for (int j = 0; j < D; j++) x[j] = fmaxf(-1.9f, fminf(1.9f, (float)gauss()));
        const int j1 = rep % D, j2 = (rep * 7 + 3) % D, j3 = (rep * 13 + 5) % D;
        if (j1 == j2 || j2 == j3 || j1 == j3) continue;
        x[j1] = 12.0f, x[j2] = -6.0f, x[j3] = 8.0f + (float)urand();
        c->encode(oaken_st, seg, D, P, rep % P, x);
        c->decode(seg, D, P, rep % P, y);
        const double so = (12.0 - TH.hi_out) / 15 * (1 + 0.125);
        const int js[3] = {j1, j2, j3};
        for (int k = 0; k < 3; k++)
            if (fabs(x[js[k]] - y[js[k]]) > so / 2 + 1e-5) bad++;
        for (int j = 0; j < D; j++)
            if (fabs(x[j] - y[j]) > kvl_oaken_row_bound(seg, D, P, rep % P, x, j)) bad++;
    }
    CHECK_MSG(bad == 0, "oaken planted outliers: %d values beyond the 5-bit bound", bad);
    free(seg);
}

/* Capacity overflow (C = 6 at D = 64): 20 outer values -> the 6 largest get
 * entries (5-bit), the other 14 are coded in the dense middle code, whose
 * scale grows to cover them (no clipping): every value within its bound. A
 * row of only inner values: 6 get 5-bit entries, the rest sit at the nearer
 * inner edge (error <= half the inner band). */
static void test_oaken_capacity(void) {
    const kvl_codec *c = kvl_codec_find("oaken");
    const int D = 64, P = 7, C = kvl_oaken_capacity(D);
    CHECK(C == 6 && kvl_oaken_capacity(128) == 12);
    uint8_t *seg = calloc(1, c->seg_bytes(D, P));
    float x[64], y[64];
    kvl_oaken_state_set(oaken_st, &TH);
    for (int j = 0; j < D; j++) x[j] = j < 20 ? 3.0f + 0.25f * (float)j : 0.5f * (float)gauss() + 1.0f;
    c->encode(oaken_st, seg, D, P, 3, x);
    c->decode(seg, D, P, 3, y);
    int bad = 0, kept = 0;
    for (int j = 0; j < D; j++) {
        if (fabs(x[j] - y[j]) > kvl_oaken_row_bound(seg, D, P, 3, x, j)) bad++;
        if (j < 20 && fabs(x[j] - y[j]) <= (x[19] - TH.hi_out) / 15 * 1.125 / 2 + 1e-5) kept++;
    }
    CHECK_MSG(bad == 0, "oaken overflow row: %d values beyond bound", bad);
    CHECK_MSG(fabs(x[19] - y[19]) <= (x[19] - TH.hi_out) / 15 * 1.125 / 2 + 1e-5, "largest outlier kept 5-bit");
    CHECK_MSG(kept >= C, "oaken overflow: %d outer values at 5-bit precision, want >= %d", kept, C);
    double mx = 0;
    for (int j = 0; j < D; j++) mx = fmax(mx, fabs(x[j] - y[j]));
    CHECK_MSG(mx <= (x[19] - TH.hi_in) / 7 * 1.125 / 2 + 1e-5, "oaken overflow: no clipping (max err %g)", mx);
    for (int j = 0; j < D; j++) x[j] = 0.07f * (float)(2 * urand() - 1);
    c->encode(oaken_st, seg, D, P, 0, x);
    c->decode(seg, D, P, 0, y);
    bad = 0;
    for (int j = 0; j < D; j++)
        if (fabs(x[j] - y[j]) > (TH.hi_in - TH.lo_in) / 2 + 1e-6) bad++;
    CHECK_MSG(bad == 0, "oaken all-inner row: %d values beyond half the inner band", bad);
    /* no state: uncalibrated sign + 3-bit coding, still within bounds */
    for (int j = 0; j < D; j++) x[j] = (float)gauss();
    c->encode(NULL, seg, D, P, 1, x);
    c->decode(seg, D, P, 1, y);
    bad = 0;
    for (int j = 0; j < D; j++)
        if (fabs(x[j] - y[j]) > kvl_oaken_row_bound(seg, D, P, 1, x, j)) bad++;
    CHECK_MSG(bad == 0, "oaken without state: %d values beyond bound", bad);
    free(seg);
}

static uint32_t fnv(const uint8_t *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); } /* tests run little-endian */

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *b = malloc(1 << 16);
    *n = fread(b, 1, 1 << 16, f);
    fclose(f);
    return b;
}
static void spit(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
}

/* Calibration file: round trip, state_init through calib= and the default
 * path next to the model, and rejection of every truncation, every single
 * byte flip, non-finite / unordered thresholds (with a valid checksum), a
 * missing file, a head_dim or layer-count mismatch. */
static void test_oaken_file(void) {
    const kvl_codec *c = kvl_codec_find("oaken");
    char dir[] = "/tmp/kvl_oaken_XXXXXX";
    if (!mkdtemp(dir)) { CHECK(0); return; }
    char path[256], model[256], mpath[300];
    snprintf(path, sizeof path, "%s/cal.oaken", dir);
    snprintf(model, sizeof model, "%s/m.gguf", dir);
    snprintf(mpath, sizeof mpath, "%s.oaken", model);
    enum { NL = 3 };
    kvl_oaken_thresholds th[NL * 2];
    for (int l = 0; l < NL * 2; l++) th[l] = (kvl_oaken_thresholds){-2.0f - l, -0.1f, 0.05f * l, 2.5f + l};
    const float frac[3] = {0.04f, 0.90f, 0.06f};
    kvl_err err = {0};
    CHECK(kvl_oaken_calib_write(path, NL, 64, 1000, frac, th, &err) == KVL_OK);
    size_t n = 0;
    uint8_t *b = slurp(path, &n);
    CHECK(b && n == KVL_OAKEN_HDR + NL * 32 + 4);
    if (!b) return;
    kvl_oaken_calib cal;
    CHECK(kvl_oaken_calib_parse(b, n, &cal, &err) == KVL_OK && cal.n_layer == NL && cal.head_dim == 64);
    kvl_oaken_thresholds got;
    kvl_oaken_calib_get(&cal, 2, 1, &got);
    CHECK(memcmp(&got, &th[5], sizeof got) == 0);
    /* state_init via calib= and via the model path */
    kvl_codec_spec sp;
    char spec[400];
    snprintf(spec, sizeof spec, "oaken:calib=%s", path);
    CHECK(kvl_codec_spec_parse(spec, 0, &sp, &err) == KVL_OK && sp.c == c);
    CHECK(kvl_codec_spec_parse("oaken:bogus=1", 0, &sp, &err) == KVL_ERR_ARG);
    kvl_codec_spec_parse(spec, 0, &sp, &err);
    uint8_t st[256], st2[256];
    CHECK(c->state_bytes(64) <= sizeof st);
    CHECK(c->state_init(&sp.prm, 1, 0, 0, 64, st, &err) == KVL_OK);
    kvl_oaken_state_set(st2, &th[2]);
    CHECK(memcmp(st, st2, c->state_bytes(64)) == 0);
    CHECK(c->state_init(&sp.prm, NL, 0, 0, 64, st, &err) == KVL_ERR_FORMAT && strstr(err.msg, "layers"));
    CHECK(c->state_init(&sp.prm, 0, 0, 0, 128, st, &err) == KVL_ERR_FORMAT && strstr(err.msg, "head_dim"));
    kvl_codec_params prm = {0};
    prm.model_path = model;
    err.msg[0] = 0;
    CHECK(c->state_init(&prm, 0, 0, 1, 64, st, &err) == KVL_ERR_IO && strstr(err.msg, mpath) && !strchr(err.msg, '\n'));
    spit(mpath, b, n);
    CHECK(c->state_init(&prm, 0, 0, 1, 64, st, &err) == KVL_OK);
    kvl_oaken_state_set(st2, &th[1]);
    CHECK(memcmp(st, st2, c->state_bytes(64)) == 0);
    /* truncations and byte flips */
    int acc = 0;
    for (size_t k = 0; k < n; k++) acc += kvl_oaken_calib_parse(b, k, &cal, &err) == KVL_OK;
    CHECK_MSG(acc == 0, "%d truncations accepted", acc);
    acc = 0;
    for (size_t k = 0; k < n; k++) {
        b[k] ^= 0x10;
        acc += kvl_oaken_calib_parse(b, n, &cal, &err) == KVL_OK;
        b[k] ^= 0x10;
    }
    CHECK_MSG(acc == 0, "%d byte flips accepted", acc);
    uint8_t *big = malloc(n + 1);
    memcpy(big, b, n), big[n] = 0;
    CHECK(kvl_oaken_calib_parse(big, n + 1, &cal, &err) == KVL_ERR_FORMAT);
    free(big);
    /* a NaN and an unordered pair, with valid checksums */
    const float bads[2] = {NAN, 5.0f};
    for (int k = 0; k < 2; k++) {
        uint8_t *m = malloc(n);
        memcpy(m, b, n);
        memcpy(m + KVL_OAKEN_HDR + 16 + 4, &bads[k], 4); /* layer 0 V lo_in */
        put32(m + n - 4, fnv(m, n - 4));
        CHECK(kvl_oaken_calib_parse(m, n, &cal, &err) == KVL_ERR_FORMAT && strstr(err.msg, "thresholds"));
        spit(mpath, m, n);
        CHECK(c->state_init(&prm, 0, 0, 1, 64, st, &err) == KVL_ERR_FORMAT && strstr(err.msg, mpath));
        free(m);
    }
    spit(mpath, b, 10);
    CHECK(c->state_init(&prm, 0, 0, 1, 64, st, &err) == KVL_ERR_FORMAT && strstr(err.msg, "truncated"));
    remove(mpath), remove(path), rmdir(dir);
    free(b);
}

static void test_oaken(void) {
    test_oaken_outliers();
    test_oaken_capacity();
    test_oaken_file();
}

int main(void) {
    test_sizes();
    test_fp8_encoder();
    test_codec("int4");
    test_codec("int4g64");
    test_codec("int4z");
    test_codec("fp8");
    test_codec("oaken");
    test_oaken();
    KVL_TEST_END();
}
