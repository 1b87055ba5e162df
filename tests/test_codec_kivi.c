/* KIVI codec tests (kivi2, kivi4, kivi2z, kivi3z, kivi4z for K; their V twins
 * kivi2v, kivi4v, kivi2zv, kivi3zv, kivi4zv): exact segment
 * bytes, round-trip error bounds derived from the format, constant channels
 * and zero pages, fused qk/av against decode-then-compute in double, scalar vs
 * AVX2, multi-query bit identity, batch invariance (row scores independent of
 * n, zero weights leave acc unchanged), deterministic seal.
 *
 * Round-trip bound (codec_kivi.c): against the f16-rounded open values x16,
 *   |x16 - xhat| <= s/2 + 2^-22 (|z| + maxq s),  s <= (max - min)/maxq (1 + 2^-10) + 2^-24,
 * (the 2^-22 term covers the f32 evaluation of s*c + z), min/max over the
 * quantization group (K: one channel over the page's P tokens; V: one token's
 * 32-channel group); against the f32 input add |x| 2^-11 + 2^-25 (f16 rounding
 * of the open row).
 * Compact variants (e5m3 scale s, int8 zero point; codec_kivi.c): the decode
 * s (c - z8) is exact; the smallest covering scale s_c gives |x16 - xhat| <=
 * s_c/2 and the seal keeps the least squared error of a few pairs at or
 * below s_c (clipping allowed), so per group of cnt values
 *   sum (x16 - xhat)^2 <= cnt (S/2)^2,  S = max((max - min)/(maxq - 1), max|x|/(127 - maxq)) (1 + 2^-3) + 2^-17,
 * every element within sqrt(cnt) S/2, and the stored s <= S (fit=cover,
 * the seal without state, also keeps every element within s/2; fit=mse and
 * auto are checked against the general bound).
 * Fused kernels: the scalar ones are float sums (checked against double to
 * 1e-5 of the magnitudes summed); the AVX2 ones quantize the per-page factors
 * q_j s_j / p_i s_ig to int16 and get the extra bound of simd_qk_bound /
 * simd_av_bound. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv/codec.h"
#include "kv/codec_kivi.h"
#include "kv/codec_spec.h"
#include "kv/kv.h"
#include "codec_util.h"
#include "test.h"
#include "util/fp16.h"

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static double urand(void) { /* [0,1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
static float frand(float a) { return (float)((2 * urand() - 1) * a); }

/* Rows [P][D] with per-channel offsets and magnitudes (keys have outlier
 * channels), a few outliers, and some constant channels / tokens. */
static void rand_page(float *x, int D, int P) {
    for (int j = 0; j < D; j++) {
        const float off = urand() < 0.2 ? frand(30) : frand(1), mag = (float)(0.01 + 3 * urand());
        const int constant = urand() < 0.08;
        for (int i = 0; i < P; i++) x[(size_t)i * D + j] = constant ? off : off + frand(mag);
    }
    for (int i = 0; i < P; i++)
        if (urand() < 0.2) x[(size_t)i * D + (int)(urand() * D)] = frand(60);
    if (P > 2) /* one token with a constant value over its first group */
        for (int j = 0; j < D && j < KIVI_VG; j++) x[(size_t)1 * D + j] = 0.75f;
}

static float f16r(float v) { return kvl_fp16_to_fp32(kvl_fp32_to_fp16(v)); }

static int is_v(const kvl_codec *c) { return c->hidden; }
static int bits_of(const kvl_codec *c) { return c->name[4] - '0'; }
static int is_z(const kvl_codec *c) { return c->name[5] == 'z'; }

/* Decoder scale of group idx (K: channel; V: g * P + token) read from the
 * segment's parameter arrays (kv/codec_kivi.h). */
static double seg_scale(const kvl_codec *c, const uint8_t *seg, int D, int P, size_t idx) {
    const int b = bits_of(c);
    const uint8_t *prm = seg + (is_v(c) ? kivi_v_code_bytes(b, D, P) : kivi_k_code_bytes(b, D, P));
    if (is_z(c)) return kivi_e5m3(prm[idx]);
    uint16_t h;
    memcpy(&h, prm + 2 * idx, 2);
    return kvl_fp16_to_fp32(h);
}

/* Group of element (i, j): K per channel over the page, V per token in KIVI_VG groups. */
static void group_range(const kvl_codec *c, const float *x16, int D, int P, int i, int j, double *mn, double *mx) {
    *mn = INFINITY, *mx = -INFINITY;
    if (!is_v(c))
        for (int t = 0; t < P; t++) {
            const double v = x16[(size_t)t * D + j];
            *mn = fmin(*mn, v), *mx = fmax(*mx, v);
        }
    else {
        const int j0 = j / KIVI_VG * KIVI_VG, j1 = j0 + KIVI_VG < D ? j0 + KIVI_VG : D;
        for (int k = j0; k < j1; k++) {
            const double v = x16[(size_t)i * D + k];
            *mn = fmin(*mn, v), *mx = fmax(*mx, v);
        }
    }
}

/* Error bound of the AVX2 kernels' int16 factors (codec_kivi_avx2.c): qk
 * |d score| <= sc/2 * maxq * D with sc = max_j |q_j s_j| / 32767; av
 * |d acc_j| <= sc_g/2 * maxq * n with sc_g = max_i |p_i s_ig| / 32767 over the
 * group of channel j. 0 for scalar kernels (exact float semantics). The
 * scales are read from the segment (layouts: kv/codec_kivi.h). */
static double simd_qk_bound(const kvl_codec *c, const kvl_codec_kernels *kn, const uint8_t *seg, int D, int P,
                            const float *q) {
    if (!strcmp(kn->isa, "scalar") || is_v(c)) return 0;
    double am = 0;
    for (int j = 0; j < D; j++) am = fmax(am, fabs((double)q[j] * seg_scale(c, seg, D, P, (size_t)j)));
    return am / 32767 / 2 * ((1 << bits_of(c)) - 1) * D * 1.001;
}
static double simd_av_bound(const kvl_codec *c, const kvl_codec_kernels *kn, const uint8_t *seg, int D, int P, int n,
                            const float *p, int j) {
    if (!strcmp(kn->isa, "scalar") || !is_v(c)) return 0;
    double am = 0;
    for (int i = 0; i < n; i++)
        am = fmax(am, fabs((double)p[i] * seg_scale(c, seg, D, P, (size_t)(j / KIVI_VG) * P + i)));
    return am / 32767 / 2 * ((1 << bits_of(c)) - 1) * n * 1.001;
}

static void test_sizes(void) {
    const kvl_codec *k2 = kvl_codec_find("kivi2"), *k4 = kvl_codec_find("kivi4");
    CHECK(k2 && k4 && k2->as_v && k4->as_v);
    if (!k2 || !k4) return;
    const kvl_codec *v2 = k2->as_v, *v4 = k4->as_v;
    CHECK(!strcmp(v2->name, "kivi2v") && !strcmp(v4->name, "kivi4v") && v2->hidden && v4->hidden);
    CHECK(!k2->hidden && !k4->hidden && !k2->encode && k2->seal && k2->open == kvl_codec_find("f16"));
    CHECK(!v2->encode && v2->seal && v2->open == kvl_codec_find("f16"));
    /* D = 64, P = 32: 3.00 and 5.00 bits/value */
    CHECK(k2->seg_bytes(64, 32) == 768 && v2->seg_bytes(64, 32) == 768);
    CHECK(k4->seg_bytes(64, 32) == 1280 && v4->seg_bytes(64, 32) == 1280);
    CHECK(kvl_codec_bytes_per_token(k2, 64, 32) == 24 && kvl_codec_bytes_per_token(k4, 64, 32) == 40);
    CHECK(k2->seg_bytes(64, 32) * 8.0 / (64 * 32) == 3.0 && v4->seg_bytes(64, 32) * 8.0 / (64 * 32) == 5.0);
    /* other shapes (layout formulas of codec_kivi.h) */
    CHECK(k2->seg_bytes(128, 32) == 4 * 8 * 32 + 128 * 4);
    CHECK(v2->seg_bytes(128, 32) == 16 * 2 * 32 + 4 * 32 * 4);
    CHECK(k2->seg_bytes(64, 64) == 8 * 4 * 32 + 256 && v4->seg_bytes(64, 64) == 8 * 8 * 32 + 2 * 64 * 4);
    CHECK(k2->seg_bytes(40, 7) == 1 * 3 * 32 + 160 && v2->seg_bytes(40, 7) == 5 * 1 * 32 + 2 * 7 * 4);
    CHECK(k4->seg_bytes(36, 16) == 2 * 5 * 32 + 144 && v4->seg_bytes(36, 16) == 5 * 2 * 32 + 2 * 16 * 4);

    /* compact variants: 2 parameter bytes per group; 3-bit chunks of 48 bytes */
    const char *zn[3] = {"kivi2z", "kivi3z", "kivi4z"};
    const size_t zb[3] = {640, 896, 1152}; /* D = 64, P = 32: 2.50, 3.50, 4.50 bits/value */
    const double zbits[3] = {2.5, 3.5, 4.5};
    for (int t = 0; t < 3; t++) {
        const kvl_codec *k = kvl_codec_find(zn[t]);
        CHECK_MSG(k && k->as_v, "%s missing", zn[t]);
        if (!k || !k->as_v) continue;
        const kvl_codec *v = k->as_v;
        char vn[16];
        snprintf(vn, sizeof vn, "%sv", zn[t]);
        CHECK(!strcmp(v->name, vn) && v->hidden && !k->hidden && kvl_codec_find(vn) == v);
        CHECK(!k->encode && k->seal && k->open == kvl_codec_find("f16") && !v->encode && v->seal);
        CHECK(k->seg_bytes(64, 32) == zb[t] && v->seg_bytes(64, 32) == zb[t]);
        CHECK(k->seg_bytes(64, 32) * 8.0 / (64 * 32) == zbits[t] && v->seg_bytes(64, 32) * 8.0 / (64 * 32) == zbits[t]);
        CHECK(strstr(kvl_codec_list(), zn[t]) != NULL);
    }
    const kvl_codec *k3 = kvl_codec_find("kivi3z"), *k2z = kvl_codec_find("kivi2z"), *k4z = kvl_codec_find("kivi4z");
    if (k3 && k2z && k4z) {
        const kvl_codec *v3 = k3->as_v;
        /* K: ceil(P/8) x ceil(D/16) chunks of 48 B + 2 D; V: ceil(D/8) x ceil(P/16) chunks + 2 NG P */
        CHECK(k3->seg_bytes(128, 32) == 4 * 8 * 48 + 256 && v3->seg_bytes(128, 32) == 16 * 2 * 48 + 4 * 32 * 2);
        CHECK(k3->seg_bytes(40, 7) == 1 * 3 * 48 + 80 && v3->seg_bytes(40, 7) == 5 * 1 * 48 + 2 * 7 * 2);
        CHECK(k3->seg_bytes(64, 64) == 8 * 4 * 48 + 128 && v3->seg_bytes(64, 64) == 8 * 4 * 48 + 2 * 64 * 2);
        CHECK(k2z->seg_bytes(36, 16) == 2 * 3 * 32 + 72 && k2z->as_v->seg_bytes(36, 16) == 5 * 1 * 32 + 2 * 16 * 2);
        CHECK(k4z->seg_bytes(128, 64) == 8 * 16 * 32 + 256 && k4z->as_v->seg_bytes(128, 64) == 16 * 8 * 32 + 4 * 64 * 2);
    }
}

/* Seal a random page; check every element against the format's bound. st:
 * the codec's instance state (compact codecs: fit=...), or NULL. */
static void test_roundtrip(const kvl_codec *c, const void *st, int D, int P) {
    const int maxq = (1 << bits_of(c)) - 1;
    const size_t sb = c->seg_bytes(D, P);
    uint8_t *seg = malloc(sb), *seg2 = malloc(sb);
    float *x = malloc(sizeof(float) * D * P), *x16 = malloc(sizeof(float) * D * P), *y = malloc(sizeof(float) * D);
    rand_page(x, D, P);
    for (int k = 0; k < D * P; k++) x16[k] = f16r(x[k]);
    memset(seg, 0xA5, sb), memset(seg2, 0x5A, sb);
    CHECK(codec_fill(c, st, seg, D, P, P, x) == 0);
    CHECK(codec_fill(c, st, seg2, D, P, P, x) == 0);
    CHECK_MSG(memcmp(seg, seg2, sb) == 0, "%s D=%d P=%d: seal not deterministic / leaves bytes unset", c->name, D, P);
    int bad = 0, bad32 = 0, nonfinite = 0, const_bad = 0, sbad = 0, gbad = 0, cbad = 0;
    const size_t ngr = is_v(c) ? (size_t)kivi_cdiv(D, KIVI_VG) * P : (size_t)D; /* quantization groups */
    double *gsse = calloc(ngr, sizeof(double)), *gcap = calloc(ngr, sizeof(double));
    for (int i = 0; i < P; i++) {
        c->decode(seg, D, P, i, y);
        for (int j = 0; j < D; j++) {
            if (!isfinite(y[j])) nonfinite++;
            double mn, mx;
            group_range(c, x16, D, P, i, j, &mn, &mx);
            double tol;
            if (!is_z(c)) {
                const double s = (mx - mn) / maxq * (1 + ldexp(1, -10)) + ldexp(1, -24);
                tol = s / 2 + ldexp(fabs(mn) + maxq * s, -22);
            } else { /* the scale's bound S; group squared error checked below */
                const size_t idx = is_v(c) ? (size_t)(j / KIVI_VG) * P + i : (size_t)j;
                const int cnt = is_v(c) ? (D - j / KIVI_VG * KIVI_VG < KIVI_VG ? D - j / KIVI_VG * KIVI_VG : KIVI_VG) : P;
                const double s = seg_scale(c, seg, D, P, idx);
                const double S = fmax((mx - mn) / (maxq - 1), fmax(fabs(mn), fabs(mx)) / (127 - maxq)) * 1.125 +
                                 ldexp(1, -17);
                if (s > S && sbad++ < 3) fprintf(stderr, "%s D=%d P=%d (%d,%d): scale %g > bound %g\n", c->name, D, P, i, j, s, S);
                const double e = (double)x16[(size_t)i * D + j] - y[j];
                gsse[idx] += e * e;
                if (!st && fabs(e) > s / 2 && cbad++ < 3) /* covering seal: within s/2 */
                    fprintf(stderr, "%s D=%d P=%d (%d,%d): cover error %g > s/2 = %g\n", c->name, D, P, i, j, e, s / 2);
                gcap[idx] = cnt * (S / 2) * (S / 2) * (1 + 1e-9);
                tol = sqrt((double)cnt) * S / 2;
            }
            const double e = fabs((double)x16[(size_t)i * D + j] - y[j]);
            if (e > tol && bad++ < 3)
                fprintf(stderr, "%s D=%d P=%d (%d,%d): %g vs %g (tol %g)\n", c->name, D, P, i, j,
                        x16[(size_t)i * D + j], y[j], tol);
            if (fabs((double)x[(size_t)i * D + j] - y[j]) > tol + ldexp(fabs(x[(size_t)i * D + j]), -11) + ldexp(1, -25))
                bad32++;
            /* f16 scale 0: exact; compact: a constant group is exact when it is 0 */
            if (mx == mn && (!is_z(c) || mn == 0) && y[j] != x16[(size_t)i * D + j]) const_bad++;
        }
    }
    CHECK_MSG(bad == 0 && bad32 == 0, "%s D=%d P=%d: %d (%d vs f32) elements out of bound", c->name, D, P, bad, bad32);
    CHECK_MSG(sbad == 0, "%s D=%d P=%d: %d scales above the format's bound", c->name, D, P, sbad);
    for (size_t g = 0; g < ngr; g++) gbad += gsse[g] > gcap[g];
    CHECK_MSG(gbad == 0, "%s D=%d P=%d: %d groups above the squared-error bound", c->name, D, P, gbad);
    CHECK_MSG(cbad == 0, "%s D=%d P=%d: %d elements of a covering seal beyond s/2", c->name, D, P, cbad);
    free(gsse), free(gcap);
    CHECK_MSG(nonfinite == 0 && const_bad == 0, "%s D=%d P=%d: %d non-finite, %d constant groups not exact", c->name,
              D, P, nonfinite, const_bad);
    free(seg), free(seg2), free(x), free(x16), free(y);
}

/* Zero page: decodes to zeros, scores 0, av leaves acc unchanged; non-finite
 * open values stay finite. */
static void test_zero_and_inf(const kvl_codec *c, int D, int P) {
    const size_t sb = c->seg_bytes(D, P);
    uint8_t *seg = malloc(sb);
    float *x = calloc((size_t)D * P, sizeof(float)), *y = malloc(sizeof(float) * D), *q = malloc(sizeof(float) * D);
    float *sc = malloc(sizeof(float) * P), *p = malloc(sizeof(float) * P), *acc = malloc(sizeof(float) * D);
    CHECK(codec_fill(c, NULL, seg, D, P, P, x) == 0);
    int bad = 0;
    for (int i = 0; i < P; i++) {
        c->decode(seg, D, P, i, y);
        for (int j = 0; j < D; j++) bad += y[j] != 0;
    }
    for (int j = 0; j < D; j++) q[j] = frand(2), acc[j] = 1 + j;
    for (int i = 0; i < P; i++) p[i] = (float)urand();
    for (int simd = 0; simd < 2; simd++) {
        kvl_codec_kernels kn = kvl_codec_kernels_get(c, D, !simd);
        if (!is_v(c)) {
            kn.qk(seg, D, P, P, q, sc);
            for (int i = 0; i < P; i++) bad += sc[i] != 0;
        } else {
            kn.av(seg, D, P, P, p, acc);
            for (int j = 0; j < D; j++) bad += acc[j] != 1 + j;
        }
    }
    CHECK_MSG(bad == 0, "%s D=%d P=%d: zero page gives %d non-zero values", c->name, D, P, bad);
    x[0] = INFINITY, x[1] = -INFINITY, x[(size_t)D * (P - 1)] = NAN, x[2] = 70000;
    CHECK(codec_fill(c, NULL, seg, D, P, P, x) == 0);
    int nf = 0;
    for (int i = 0; i < P; i++) {
        c->decode(seg, D, P, i, y);
        for (int j = 0; j < D; j++) nf += !isfinite(y[j]);
    }
    CHECK_MSG(nf == 0, "%s D=%d P=%d: %d non-finite values after inf/NaN input", c->name, D, P, nf);
    free(seg), free(x), free(y), free(q), free(sc), free(p), free(acc);
}

/* Fused kernels of kn vs decoding the rows and computing in double. The
 * tolerance is relative to sum |q_j| (|xhat_ij| + 2 max_i |xhat_ij|), which
 * bounds the magnitudes the fused form adds (s c and z terms separately). */
static void test_fused(const kvl_codec *c, kvl_codec_kernels kn, int D, int P, int n) {
    uint8_t *seg = malloc(c->seg_bytes(D, P));
    float *x = malloc(sizeof(float) * D * P), *dec = malloc(sizeof(float) * D * P), *q = malloc(sizeof(float) * D);
    float *sc = malloc(sizeof(float) * P), *pr = malloc(sizeof(float) * P), *acc = malloc(sizeof(float) * D);
    double *acc_ref = malloc(sizeof(double) * D), *M = calloc((size_t)D * P, sizeof(double));
    rand_page(x, D, P);
    CHECK(codec_fill(c, NULL, seg, D, P, P, x) == 0);
    for (int i = 0; i < P; i++) c->decode(seg, D, P, i, dec + (size_t)i * D);
    for (int i = 0; i < P; i++) /* M[i][j]: max |xhat| over the quantization group of (i, j) */
        for (int j = 0; j < D; j++) {
            double mn, mx;
            group_range(c, dec, D, P, i, j, &mn, &mx);
            M[(size_t)i * D + j] = fmax(fabs(mn), fabs(mx));
        }
    for (int j = 0; j < D; j++) q[j] = frand(1);
    kn.qk(seg, D, P, n, q, sc);
    int bad = 0;
    const double bq = simd_qk_bound(c, &kn, seg, D, P, q);
    for (int i = 0; i < n; i++) {
        double r = 0, mag = 0;
        for (int j = 0; j < D; j++) {
            const double v = dec[(size_t)i * D + j];
            r += (double)q[j] * v;
            mag += fabs(q[j]) * (fabs(v) + 2 * M[(size_t)i * D + j]);
        }
        if (!(fabs(r - sc[i]) <= 1e-5 * mag + 1e-6 + bq)) bad++;
    }
    CHECK_MSG(bad == 0, "%s/%s qk D=%d P=%d n=%d: %d scores off", c->name, kn.isa, D, P, n, bad);
    for (int i = 0; i < n; i++) pr[i] = (float)urand();
    if (n > 2) pr[n / 2] = 0;
    for (int j = 0; j < D; j++) acc[j] = (float)(acc_ref[j] = j * 0.25);
    kn.av(seg, D, P, n, pr, acc);
    bad = 0;
    for (int j = 0; j < D; j++) {
        double mag = fabs(acc_ref[j]);
        for (int i = 0; i < n; i++) {
            const double v = dec[(size_t)i * D + j];
            acc_ref[j] += (double)pr[i] * v;
            mag += pr[i] * (fabs(v) + 2 * M[(size_t)i * D + j]);
        }
        if (!(fabs(acc_ref[j] - acc[j]) <= 1e-5 * mag + 1e-6 + simd_av_bound(c, &kn, seg, D, P, n, pr, j))) bad++;
    }
    CHECK_MSG(bad == 0, "%s/%s av D=%d P=%d n=%d: %d columns off", c->name, kn.isa, D, P, n, bad);
    free(seg), free(x), free(dec), free(q), free(sc), free(pr), free(acc), free(acc_ref), free(M);
}

/* SIMD vs scalar reference on the same segment (the codec's own direction). */
static void test_simd_vs_ref(const kvl_codec *c, int D, int P) {
    kvl_codec_kernels ref = kvl_codec_kernels_get(c, D, 1), simd = kvl_codec_kernels_get(c, D, 0);
    if (!strcmp(simd.isa, "scalar")) {
        if (D % 8) return; /* scalar only by design */
        printf("  (%s D=%d: no SIMD kernels on this CPU/build, skipped)\n", c->name, D);
        return;
    }
    uint8_t *seg = malloc(c->seg_bytes(D, P));
    float *x = malloc(sizeof(float) * D * P), *q = malloc(sizeof(float) * D);
    float *s1 = malloc(sizeof(float) * P), *s2 = malloc(sizeof(float) * P), *pr = malloc(sizeof(float) * P);
    float *a1 = malloc(sizeof(float) * D), *a2 = malloc(sizeof(float) * D);
    rand_page(x, D, P);
    CHECK(codec_fill(c, NULL, seg, D, P, P, x) == 0);
    for (int j = 0; j < D; j++) q[j] = frand(1);
    for (int i = 0; i < P; i++) pr[i] = (float)urand();
    int bad = 0;
    for (int n = 1; n <= P; n += (n < 10 ? 1 : 7)) {
        if (!is_v(c)) {
            ref.qk(seg, D, P, n, q, s1);
            simd.qk(seg, D, P, n, q, s2);
            double mag = 0;
            for (int j = 0; j < D; j++) mag += fabs(q[j]) * 200;
            const double bq = simd_qk_bound(c, &simd, seg, D, P, q);
            for (int i = 0; i < n; i++)
                if (fabsf(s1[i] - s2[i]) > 1e-6 * mag + bq) bad++;
        } else {
            for (int j = 0; j < D; j++) a1[j] = a2[j] = (float)j;
            ref.av(seg, D, P, n, pr, a1);
            simd.av(seg, D, P, n, pr, a2);
            for (int j = 0; j < D; j++)
                if (fabsf(a1[j] - a2[j]) > 1e-6f * (D + 200.0f * n) + simd_av_bound(c, &simd, seg, D, P, n, pr, j)) bad++;
        }
    }
    CHECK_MSG(bad == 0, "%s D=%d P=%d: simd vs scalar %d mismatches", c->name, D, P, bad);
    free(seg), free(x), free(q), free(s1), free(s2), free(pr), free(a1), free(a2);
}

/* Multi-query forms bit-identical per query to the single-query kernel (m =
 * 1..12, any n); K: row scores independent of n; V: rows with p == 0, or
 * beyond n, leave acc bit-identical. */
static void test_multi_and_invariance(const kvl_codec *c, kvl_codec_kernels kn, int D, int P) {
    enum { MM = 12 };
    uint8_t *seg = malloc(c->seg_bytes(D, P));
    float *x = malloc(sizeof(float) * D * P), *q = malloc(sizeof(float) * MM * D);
    float *s1 = malloc(sizeof(float) * P), *sP = malloc(sizeof(float) * P), *sm = malloc(sizeof(float) * MM * P);
    float *pr = malloc(sizeof(float) * MM * P), *pz = malloc(sizeof(float) * P);
    float *a1 = malloc(sizeof(float) * D), *a2 = malloc(sizeof(float) * D), *am = malloc(sizeof(float) * MM * D);
    rand_page(x, D, P);
    CHECK(codec_fill(c, NULL, seg, D, P, P, x) == 0);
    for (int i = 0; i < MM * D; i++) q[i] = frand(1);
    for (int i = 0; i < MM * P; i++) pr[i] = (float)urand();
    int bad = 0, inv = 0;
    if (!is_v(c)) kn.qk(seg, D, P, P, q, sP);
    for (int m = 1; m <= MM; m++)
        for (int n = 1; n <= P; n += (n < 10 ? 1 : 5)) {
            if (!is_v(c)) {
                kvl_codec_qk_multi(&kn, seg, D, P, n, q, m, sm);
                for (int g = 0; g < m; g++) {
                    kn.qk(seg, D, P, n, q + g * D, s1);
                    if (memcmp(s1, sm + g * P, sizeof(float) * n)) bad++;
                }
                if (m == 1 && memcmp(s1, sP, sizeof(float) * n)) inv++;
            } else {
                for (int i = 0; i < MM * D; i++) am[i] = (float)(i % 7) * 0.125f;
                kvl_codec_av_multi(&kn, seg, D, P, n, pr, m, am);
                for (int g = 0; g < m; g++) {
                    for (int j = 0; j < D; j++) a1[j] = (float)((g * D + j) % 7) * 0.125f;
                    kn.av(seg, D, P, n, pr + g * P, a1);
                    if (memcmp(a1, am + g * D, sizeof(float) * D)) bad++;
                }
                if (m == 1) { /* n rows == P rows with p = 0 beyond n */
                    memcpy(pz, pr, sizeof(float) * P);
                    for (int i = n; i < P; i++) pz[i] = 0;
                    for (int j = 0; j < D; j++) a1[j] = a2[j] = 0.5f + j;
                    kn.av(seg, D, P, n, pr, a1);
                    kn.av(seg, D, P, P, pz, a2);
                    if (memcmp(a1, a2, sizeof(float) * D)) inv++;
                    for (int i = 0; i < P; i++) pz[i] = 0;
                    for (int j = 0; j < D; j++) a1[j] = 0.5f + j;
                    kn.av(seg, D, P, n, pz, a1);
                    for (int j = 0; j < D; j++) inv += a1[j] != 0.5f + j;
                }
            }
        }
    CHECK_MSG(bad == 0, "%s/%s D=%d P=%d: multi-query vs single %d mismatches", c->name, kn.isa, D, P, bad);
    CHECK_MSG(inv == 0, "%s/%s D=%d P=%d: %d batch-invariance violations", c->name, kn.isa, D, P, inv);
    free(seg), free(x), free(q), free(s1), free(sP), free(sm), free(pr), free(pz), free(a1), free(a2), free(am);
}

/* The other direction (K codec's av, V codec's qk): scalar, against decode. */
static void test_cross(const kvl_codec *c, int D, int P) {
    kvl_codec_kernels r = c->ref;
    CHECK(r.qk && r.av);
    test_fused(c, r, D, P, P);
}

/* Compact codecs' fit= parameter: state for fit=v (NULL value: no parameter). */
static int fit_state(const kvl_codec *c, const char *v, int is_v_side, void *st) {
    kvl_codec_params prm;
    memset(&prm, 0, sizeof prm);
    if (v) {
        prm.n = 1;
        strcpy(prm.key[0], "fit");
        strcpy(prm.val[0], v);
    }
    kvl_err err = {0};
    return c->state_init(&prm, 0, 0, is_v_side, 64, st, &err) == KVL_OK;
}

static void test_fit_param(void) {
    const char *zn[3] = {"kivi2z", "kivi3z", "kivi4z"};
    for (int t = 0; t < 3; t++) {
        const kvl_codec *k = kvl_codec_find(zn[t]);
        if (!k) continue;
        CHECK(k->params && !strcmp(k->params, "fit") && k->state_init && k->as_v->state_init);
        CHECK(k->state_bytes(64) <= 64 && k->as_v->state_bytes(64) <= 64);
        uint64_t st[8];
        CHECK(fit_state(k, "cover", 0, st) && fit_state(k, "mse", 0, st) && fit_state(k, "auto", 0, st));
        CHECK(fit_state(k, NULL, 0, st) && fit_state(k->as_v, NULL, 1, st));
        CHECK(!fit_state(k, "bogus", 0, st));
        /* every fit gives a page within the format's bounds */
        const char *fits[3] = {"cover", "mse", "auto"};
        for (int f = 0; f < 3; f++)
            for (int side = 0; side < 2; side++) {
                const kvl_codec *c = side ? k->as_v : k;
                CHECK(fit_state(c, fits[f], side, st));
                test_roundtrip(c, st, 64, 32);
                test_roundtrip(c, st, 40, 7);
                test_roundtrip(c, st, 128, 64);
            }
    }
}

int main(void) {
    test_sizes();
    test_fit_param();
    const char *names[] = {"kivi2", "kivi4", "kivi2z", "kivi3z", "kivi4z"};
    const int dims[] = {64, 128, 40, 36};
    const int pages[] = {7, 16, 32, 64};
    for (int cn = 0; cn < 5; cn++) {
        const kvl_codec *k = kvl_codec_find(names[cn]);
        if (!k) continue;
        const kvl_codec *cs[2] = {k, k->as_v};
        for (int side = 0; side < 2; side++) {
            const kvl_codec *c = cs[side];
            for (int d = 0; d < 4; d++)
                for (int pp = 0; pp < 4; pp++) {
                    const int D = dims[d], P = pages[pp];
                    test_roundtrip(c, NULL, D, P);
                    test_zero_and_inf(c, D, P);
                    const int ns[] = {1, 5, 8, 9, 16, 31, 32, 64};
                    for (int t = 0; t < 8; t++) {
                        if (ns[t] > P) continue;
                        test_fused(c, kvl_codec_kernels_get(c, D, 1), D, P, ns[t]);
                        test_fused(c, kvl_codec_kernels_get(c, D, 0), D, P, ns[t]);
                    }
                    test_fused(c, kvl_codec_kernels_get(c, D, 0), D, P, P);
                    test_cross(c, D, P);
                    test_multi_and_invariance(c, kvl_codec_kernels_get(c, D, 1), D, P);
                    test_multi_and_invariance(c, kvl_codec_kernels_get(c, D, 0), D, P);
                    test_simd_vs_ref(c, D, P);
                }
        }
    }
    KVL_TEST_END();
}
