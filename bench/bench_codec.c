/* Micro-benchmark of the KV codec kernels: qk + av over one kv-head's 8K-token
 * list of pages at D = 64, G = 3 queries per kv-head (the default model: 9
 * query / 3 KV heads), through the multi-query kernels, as decode attention
 * does per (layer, kv-head). Prints ns per cached token (qk + av for all G
 * queries) for each codec, scalar and best SIMD, median of R repetitions of
 * about T seconds each. Also times the fp8 decode two ways (bit moves +
 * vcvtph2ps, as shipped, vs a 256-entry gather table).
 * Usage: bench_codec [seconds-per-point=0.3] [repetitions=3] [lists=1] [codec ...]
 * Build: make bench (-> build/bench_codec). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv/codec.h"
#include "kv/codec_oaken.h"

/* Thread CPU time, not wall time: on a shared machine the time this thread
 * is descheduled does not count (cache sharing with other load still does). */
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rs = 88172645463325252ull;
static double urand(void) {
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    return (double)(rs >> 11) / 9007199254740992.0;
}
static float gauss(void) { return (float)(sqrt(-2 * log(urand() + 1e-12)) * cos(6.283185307 * urand())); }

static int cmp_d(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

enum { D = 64, P = 32, NTOK = 8192, NPAGE = NTOK / P, G = 3 };
/* Lists (kv-heads x layers) cycled through: 1 = one list, cache-resident
 * (kernel compute cost); 90 = the default model's 30 layers x 3 kv-heads, so
 * each pass streams the whole cache from memory as decode does. */
static int n_lists = 1;
static int scalar = 1; /* time the scalar reference too (BENCH_NO_SCALAR=1: skip) */

/* One timed pass: for every page, qk of G queries then av of G queries. */
static void pass(const kvl_codec_kernels *k, uint8_t *const *kp, uint8_t *const *vp, const float *q, float *sc,
                 float *acc) {
    for (int pg = 0; pg < NPAGE * n_lists; pg++) {
        kvl_codec_qk_multi(k, kp[pg], D, P, P, q, G, sc);
        for (int i = 0; i < G * P; i++) sc[i] = sc[i] * 1e-3f; /* stand-in for softmax weights */
        kvl_codec_av_multi(k, vp[pg], D, P, P, sc, G, acc);
    }
}

static double time_codec(const kvl_codec *c, int scalar, double secs, int reps, double *best) {
    const size_t sb = c->seg_bytes(D, P);
    uint8_t **kp = malloc(sizeof *kp * NPAGE * n_lists), **vp = malloc(sizeof *vp * NPAGE * n_lists);
    uint8_t st[256];
    const void *stp = NULL;
    if (c->state_bytes && c->state_bytes(D)) {
        kvl_oaken_thresholds th = {-2.054f, -0.0753f, 0.0753f, 2.054f};
        kvl_oaken_state_set(st, &th);
        stp = st;
    }
    float x[D];
    for (int pg = 0; pg < NPAGE * n_lists; pg++) {
        kp[pg] = malloc(sb), vp[pg] = malloc(sb);
        for (int i = 0; i < P; i++) {
            for (int j = 0; j < D; j++) x[j] = gauss();
            if (c->encode) c->encode(stp, kp[pg], D, P, i, x);
            for (int j = 0; j < D; j++) x[j] = gauss();
            if (c->encode) c->encode(stp, vp[pg], D, P, i, x);
        }
    }
    const kvl_codec_kernels k = kvl_codec_kernels_get(c, D, scalar);
    float q[G * D], sc[G * P], acc[G * D];
    for (int i = 0; i < G * D; i++) q[i] = gauss(), acc[i] = 0;
    pass(&k, kp, vp, q, sc, acc); /* warm */
    double t0 = now();
    int n = 1;
    pass(&k, kp, vp, q, sc, acc);
    const double one = now() - t0;
    n = (int)(secs / (one > 1e-6 ? one : 1e-6));
    if (n < 1) n = 1;
    double med[16];
    for (int r = 0; r < reps && r < 16; r++) {
        t0 = now();
        for (int it = 0; it < n; it++) pass(&k, kp, vp, q, sc, acc);
        med[r] = (now() - t0) / n / ((double)NTOK * n_lists) * 1e9;
    }
    qsort(med, (size_t)(reps < 16 ? reps : 16), sizeof(double), cmp_d);
    volatile float sink = acc[0];
    (void)sink;
    for (int pg = 0; pg < NPAGE * n_lists; pg++) free(kp[pg]), free(vp[pg]);
    free(kp), free(vp);
    *best = med[0];
    return med[(reps < 16 ? reps : 16) / 2];
}

#if defined(__AVX2__) && defined(__F16C__)
#include <immintrin.h>
/* fp8 decode of NTOK*D bytes: shipped bit moves vs a gather table. */
static void fp8_decode_compare(double secs) {
    const size_t n = (size_t)NTOK * D;
    uint8_t *b = malloc(n);
    float *out = malloc(sizeof(float) * 16), lut[256];
    for (size_t i = 0; i < n; i++) b[i] = (uint8_t)(urand() * 256) & 0xFE;
    for (int c = 0; c < 256; c++) {
        const int e = (c >> 3) & 15, m = c & 7;
        const float v = e ? ldexpf(1 + m / 8.0f, e - 7) : ldexpf((float)m, -9);
        lut[c] = (c & 0x80) ? -v : v;
    }
    __m256 s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps();
    double tb = 1e30, tg = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        int it = 0;
        for (; now() - t0 < secs / 6; it++)
            for (size_t i = 0; i < n; i += 16) {
                const __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(b + i)));
                const __m256i h = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(w, _mm256_set1_epi16(0x80)), 8),
                                                  _mm256_slli_epi16(_mm256_and_si256(w, _mm256_set1_epi16(0x7f)), 7));
                s1 = _mm256_add_ps(s1, _mm256_cvtph_ps(_mm256_castsi256_si128(h)));
                s1 = _mm256_add_ps(s1, _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)));
            }
        const double a = (now() - t0) / it / (double)n * 1e9;
        t0 = now();
        it = 0;
        for (; now() - t0 < secs / 6; it++)
            for (size_t i = 0; i < n; i += 16) {
                const __m128i v = _mm_loadu_si128((const __m128i *)(b + i));
                s2 = _mm256_add_ps(s2, _mm256_i32gather_ps(lut, _mm256_cvtepu8_epi32(v), 4));
                s2 = _mm256_add_ps(s2, _mm256_i32gather_ps(lut, _mm256_cvtepu8_epi32(_mm_srli_si128(v, 8)), 4));
            }
        const double g = (now() - t0) / it / (double)n * 1e9;
        tb = a < tb ? a : tb, tg = g < tg ? g : tg;
    }
    _mm256_storeu_ps(out, _mm256_add_ps(s1, s2));
    volatile float keep = out[0] + out[7];
    (void)keep;
    printf("fp8 decode, ns/value (best of 3): bit moves + vcvtph2ps %.3f, 256-entry gather %.3f\n", tb, tg);
    free(b), free(out);
}
#endif

int main(int argc, char **argv) {
    const double secs = argc > 1 ? atof(argv[1]) : 0.3;
    const int reps = argc > 2 ? atoi(argv[2]) : 3;
    const char *def[] = {"f16", "int8", "int4", "int4g64", "int4z", "fp8", "oaken"};
    n_lists = argc > 3 ? atoi(argv[3]) : 1;
    scalar = getenv("BENCH_NO_SCALAR") == NULL;
    if (n_lists < 1) n_lists = 1;
    const char **names = argc > 4 ? (const char **)argv + 4 : def;
    const int nn = argc > 4 ? argc - 4 : 7;
    printf("qk+av, %d tokens (%d pages of %d) x %d lists, D=%d, G=%d queries/kv-head, median of %d: ns per token per list\n",
           NTOK, NPAGE, P, n_lists, D, G, reps);
    printf("%-8s %8s %8s %8s %10s\n", "codec", "scalar", "simd", "simd-min", "bits/val");
    for (int i = 0; i < nn; i++) {
        const kvl_codec *c = kvl_codec_find(names[i]);
        if (!c || !c->encode) {
            printf("%-8s (not a per-token codec here)\n", names[i]);
            continue;
        }
        double bs, bv;
        const double ts = scalar ? time_codec(c, 1, secs, reps, &bs) : NAN, tv = time_codec(c, 0, secs, reps, &bv);
        printf("%-8s %8.2f %8.2f %8.2f %10.4f  (%s)\n", c->name, ts, tv, bv, 8.0 * (double)c->seg_bytes(D, P) / (D * P),
               kvl_codec_kernels_get(c, D, 0).isa);
    }
#if defined(__AVX2__) && defined(__F16C__)
    if (kvl_cpu_has_avx2()) fp8_decode_compare(secs);
#endif
    return 0;
}
