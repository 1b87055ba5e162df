/* Shared AVX2 kernels of the quantized per-token codecs (int4, fp8, oaken),
 * included only by codec_<name>_avx2.c (compiled with -mavx2 -mfma -mf16c).
 *
 * The codec supplies DEC(seg, D, P, i0, nr, buf): decode rows i0..i0+nr-1
 * (nr <= 8) into buf [nr][D] with the exact values of its scalar decode.
 * Rows are decoded once per block of 8 into that L1 stack buffer (8*D floats,
 * D <= KVL_Q_AVX2_DMAX; no copy of the cache beyond one block) and every query
 * then runs the f32 arithmetic below on it:
 *   qk: per row an 8-lane FMA accumulator over j, summed by a transposing
 *       hsum whose tree is the same for every row (score of row i does not
 *       depend on n or on its position in the block);
 *   av: acc columns in registers, rows FMA'd in i order (p[i] == 0 adds 0).
 * Single-query kernels are the multi-query ones with m = 1, so each query's
 * result is bit-identical whatever m is. */
#ifndef KVL_KV_CODEC_Q_AVX2_H
#define KVL_KV_CODEC_Q_AVX2_H

#include <immintrin.h>
#include <stdint.h>

#define KVL_Q_AVX2_DMAX 256

static inline __m256 kvl_q_hsum8(const __m256 a[8]) {
    const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* [dot(q, buf_0), ..., dot(q, buf_7)]: buf [8][D] (D % 8 == 0), q [D]. The
 * eight accumulators are scalars: an array would live in memory. */
static inline __m256 kvl_q_dot8(const float *buf, int D, const float *q) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int j = 0; j < D; j += 8) {
        const __m256 qv = _mm256_loadu_ps(q + j);
        const float *c = buf + j;
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(c), qv, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(c + D), qv, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(c + 2 * D), qv, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(c + 3 * D), qv, a3);
        a4 = _mm256_fmadd_ps(_mm256_loadu_ps(c + 4 * D), qv, a4);
        a5 = _mm256_fmadd_ps(_mm256_loadu_ps(c + 5 * D), qv, a5);
        a6 = _mm256_fmadd_ps(_mm256_loadu_ps(c + 6 * D), qv, a6);
        a7 = _mm256_fmadd_ps(_mm256_loadu_ps(c + 7 * D), qv, a7);
    }
    const __m256 a[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
    return kvl_q_hsum8(a);
}

/* scores[k] = dot(q, buf_k) for k < nr.  buf: [nr][D] (D % 8 == 0); q: [D]. */
static inline void kvl_q_qk_block(const float *buf, int D, int nr, const float *q, float *scores) {
    if (nr == 8) {
        _mm256_storeu_ps(scores, kvl_q_dot8(buf, D, q));
        return;
    }
    /* tail rows: the same per-row FMA sequence */
    __m256 a[8];
    for (int k = 0; k < 8; k++) a[k] = _mm256_setzero_ps();
    for (int k = 0; k < nr; k++)
        for (int j = 0; j < D; j += 8)
            a[k] = _mm256_fmadd_ps(_mm256_loadu_ps(buf + k * D + j), _mm256_loadu_ps(q + j), a[k]);
    float t[8];
    _mm256_storeu_ps(t, kvl_q_hsum8(a));
    for (int k = 0; k < nr; k++) scores[k] = t[k];
}

/* acc[j] += sum_{k<nr} w[k] * buf_k[j].  buf: [nr][D]; w: [nr]; acc: [D]. */
static inline void kvl_q_av_block(const float *buf, int D, int nr, const float *w, float *acc) {
    int j = 0;
    for (; j + 64 <= D; j += 64) {
        __m256 a[8];
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) a[k] = _mm256_loadu_ps(acc + j + 8 * k);
        for (int i = 0; i < nr; i++) {
            const __m256 wv = _mm256_set1_ps(w[i]);
            const float *r = buf + (size_t)i * D + j;
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) a[k] = _mm256_fmadd_ps(_mm256_loadu_ps(r + 8 * k), wv, a[k]);
        }
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) _mm256_storeu_ps(acc + j + 8 * k, a[k]);
    }
    for (; j < D; j += 8) {
        __m256 a = _mm256_loadu_ps(acc + j);
        for (int i = 0; i < nr; i++)
            a = _mm256_fmadd_ps(_mm256_loadu_ps(buf + (size_t)i * D + j), _mm256_set1_ps(w[i]), a);
        _mm256_storeu_ps(acc + j, a);
    }
}

/* Define NAME_qk_multi / NAME_av_multi / NAME_qk / NAME_av from DEC. */
#define KVL_Q_AVX2_KERNELS(NAME, DEC)                                                                  \
    static void NAME##_qk_multi(const uint8_t *seg, int D, int P, int n, const float *q, int m,        \
                                float *scores) {                                                     \
        float buf[8 * KVL_Q_AVX2_DMAX];                                                              \
        for (int i0 = 0; i0 < n; i0 += 8) {                                                          \
            const int nr = n - i0 < 8 ? n - i0 : 8;                                                  \
            DEC(seg, D, P, i0, nr, buf);                                                             \
            for (int g = 0; g < m; g++)                                                              \
                kvl_q_qk_block(buf, D, nr, q + (size_t)g * D, scores + (size_t)g * P + i0);          \
        }                                                                                            \
    }                                                                                                \
    static void NAME##_av_multi(const uint8_t *seg, int D, int P, int n, const float *p, int m,        \
                                float *acc) {                                                        \
        float buf[8 * KVL_Q_AVX2_DMAX];                                                              \
        for (int i0 = 0; i0 < n; i0 += 8) {                                                          \
            const int nr = n - i0 < 8 ? n - i0 : 8;                                                  \
            DEC(seg, D, P, i0, nr, buf);                                                             \
            for (int g = 0; g < m; g++)                                                              \
                kvl_q_av_block(buf, D, nr, p + (size_t)g * P + i0, acc + (size_t)g * D);             \
        }                                                                                            \
    }                                                                                                \
    static void NAME##_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *scores) {   \
        NAME##_qk_multi(seg, D, P, n, q, 1, scores);                                                 \
    }                                                                                                \
    static void NAME##_av(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {      \
        NAME##_av_multi(seg, D, P, n, p, 1, acc);                                                    \
    }

#endif
