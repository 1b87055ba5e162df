/* AVX2 kernels of the int4 / int4g64 / int4z codecs (layout in codec_int4.c), fused
 * on the codes: the minimum is never added per value. Per block of 8 rows the
 * codes are unpacked once (16 code bytes -> 16 consecutive channels from the
 * low nibbles, the 16 channels h further from the high nibbles) and scaled,
 * y = c * scale (one rounding), into a stack buffer shared by every query:
 *   qk: 8 FMA accumulators (one per row) of y * q over j, a transposing hsum
 *       (the same tree for every row), then per group, in order,
 *       score = fma(min_g, sum(q over group g), score)        (per lane);
 *   av: acc[j] += p * y per row in i order, then per block and group
 *       acc[j] += sum_k p_k * min_k (8 lanes, rows past n weigh 0, a fixed
 *       hsum tree);
 *       p[i] == 0 adds exact zeros.
 * The single-query kernels are the multi-query ones with m = 1: each query's
 * arithmetic does not depend on m (bit-identical), and no score depends on n
 * or on its row's position in a block. */
#include "kv/codec.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <string.h>

#include "kv/codec_q_avx2.h"

#define GMAX 8 /* groups per row: D <= 256, G >= 32 */

typedef struct {
    float c[8 * KVL_Q_AVX2_DMAX]; /* [8][D] c * scale */
    float s[GMAX * 8], m[GMAX * 8]; /* [group][row] scale, min (rows >= nr: 0) */
} blk;

static inline void put16(__m128i c, __m256 s, float *out) {
    _mm256_storeu_ps(out, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c)), s));
    _mm256_storeu_ps(out + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(c, 8))), s));
}

static inline __attribute__((always_inline)) void unpack(const uint8_t *seg, int D, int G, int Z, int i0, int nr, blk *b) {
    const int ng = D / G, h = G / 2, pb = Z ? 2 : 4;
    const size_t rb = (size_t)ng * pb + (size_t)D / 2;
    const __m128i lo = _mm_set1_epi8(15);
    for (int k = 0; k < nr; k++) {
        const uint8_t *row = seg + (size_t)(i0 + k) * rb, *codes = row + (size_t)ng * pb;
        float sv8[GMAX], mv8[GMAX]; /* group scales and minima, the scalar decode's floats */
        if (Z) { /* 16 bytes = (e5m3 scale, int8 zero) of up to 8 groups (the rest: code bytes, unused) */
            const __m128i v = _mm_loadu_si128((const __m128i *)row);
            const __m256 sc = _mm256_cvtph_ps(_mm_slli_epi16(_mm_and_si128(v, _mm_set1_epi16(0xff)), 7));
            const __m256 zf = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm_srai_epi16(v, 8)));
            /* -(float)z * s, as the scalar decode (negation exact) */
            _mm256_storeu_ps(sv8, sc);
            _mm256_storeu_ps(mv8, _mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), zf), sc));
        } else {
            float sm[2 * GMAX + 2];
            for (int g = 0; g < ng; g += 2) /* 8 bytes = (scale, min) of groups g, g+1; F16C is exact */
                _mm_storeu_ps(sm + 2 * g, _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(row + g * 4))));
            for (int g = 0; g < ng; g++) sv8[g] = sm[2 * g], mv8[g] = sm[2 * g + 1];
        }
        for (int g = 0; g < ng; g++) b->s[g * 8 + k] = sv8[g], b->m[g * 8 + k] = mv8[g];
        float *x = b->c + (size_t)k * D;
        for (int g = 0; g < ng; g++) {
            const __m256 sv = _mm256_set1_ps(sv8[g]);
            for (int o = 0; o < h; o += 16) {
                const __m128i v = _mm_loadu_si128((const __m128i *)(codes + g * h + o));
                put16(_mm_and_si128(v, lo), sv, x + g * G + o);
                put16(_mm_and_si128(_mm_srli_epi16(v, 4), lo), sv, x + g * G + h + o);
            }
        }
    }
    for (int k = nr; k < 8; k++) {
        for (int g = 0; g < ng; g++) b->s[g * 8 + k] = 0, b->m[g * 8 + k] = 0;
        memset(b->c + (size_t)k * D, 0, sizeof(float) * (size_t)D);
    }
}

static inline float hsum1(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* sum(q over group g), a fixed tree (the same value whenever computed). */
static inline float qsum_group(const float *q, int j0, int G) {
    __m256 s = _mm256_setzero_ps();
    for (int j = j0; j < j0 + G; j += 8) s = _mm256_add_ps(s, _mm256_loadu_ps(q + j));
    return hsum1(s);
}

#define QS_MAXQ 16 /* queries whose group sums are computed once per call */

static inline __attribute__((always_inline)) void qk_multi(const uint8_t *seg, int D, int G, int Z, int P, int n,
                                                           const float *q, int m, float *scores) {
    const int ng = D / G;
    float qs_all[QS_MAXQ * GMAX];
    if (m <= QS_MAXQ)
        for (int qi = 0; qi < m; qi++)
            for (int g = 0; g < ng; g++) qs_all[qi * GMAX + g] = qsum_group(q + (size_t)qi * D, g * G, G);
    blk b;
    for (int i0 = 0; i0 < n; i0 += 8) {
        const int nr = n - i0 < 8 ? n - i0 : 8;
        unpack(seg, D, G, Z, i0, nr, &b);
        __m256 mv[GMAX]; /* loaded once per block (scalar stores -> vector load) */
        for (int g = 0; g < ng; g++) mv[g] = _mm256_loadu_ps(b.m + g * 8);
        for (int qi = 0; qi < m; qi++) {
            const float *qg = q + (size_t)qi * D;
            __m256 res = kvl_q_dot8(b.c, D, qg);
            for (int g = 0; g < ng; g++) {
                const float qsg = m <= QS_MAXQ ? qs_all[qi * GMAX + g] : qsum_group(qg, g * G, G);
                res = _mm256_fmadd_ps(mv[g], _mm256_set1_ps(qsg), res);
            }
            if (nr == 8) _mm256_storeu_ps(scores + (size_t)qi * P + i0, res);
            else {
                float out[8];
                _mm256_storeu_ps(out, res);
                memcpy(scores + (size_t)qi * P + i0, out, sizeof(float) * (size_t)nr);
            }
        }
    }
}

static inline __attribute__((always_inline)) void av_multi(const uint8_t *seg, int D, int G, int Z, int P, int n, const float *p, int m, float *acc) {
    const int ng = D / G;
    blk b;
    for (int i0 = 0; i0 < n; i0 += 8) {
        const int nr = n - i0 < 8 ? n - i0 : 8;
        unpack(seg, D, G, Z, i0, nr, &b);
        __m256 mv[GMAX];
        for (int g = 0; g < ng; g++) mv[g] = _mm256_loadu_ps(b.m + g * 8);
        const __m256i lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (int qi = 0; qi < m; qi++) {
            const float *pg = p + (size_t)qi * P + i0;
            float *ag = acc + (size_t)qi * D;
            kvl_q_av_block(b.c, D, nr, pg, ag);
            /* rows >= nr weigh 0 (masked load: never read past p) */
            const __m256 pv = nr == 8 ? _mm256_loadu_ps(pg) : _mm256_maskload_ps(pg, lanes);
            for (int g = 0; g < ng; g++) {
                /* sum_k p_k min_k over the block: a fixed 8-lane tree */
                const __m256 bv = _mm256_set1_ps(hsum1(_mm256_mul_ps(pv, mv[g])));
                for (int j = g * G; j < (g + 1) * G; j += 8)
                    _mm256_storeu_ps(ag + j, _mm256_add_ps(_mm256_loadu_ps(ag + j), bv));
            }
        }
    }
}

#define WRAP(PFX, G, Z)                                                                                        \
    static void PFX##_qk_multi(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *s) {     \
        qk_multi(seg, D, G, Z, P, n, q, m, s);                                                                 \
    }                                                                                                          \
    static void PFX##_av_multi(const uint8_t *seg, int D, int P, int n, const float *p, int m, float *a) {     \
        av_multi(seg, D, G, Z, P, n, p, m, a);                                                                 \
    }                                                                                                          \
    static void PFX##_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *s) {                  \
        qk_multi(seg, D, G, Z, P, n, q, 1, s);                                                                 \
    }                                                                                                          \
    static void PFX##_av(const uint8_t *seg, int D, int P, int n, const float *p, float *a) {                  \
        av_multi(seg, D, G, Z, P, n, p, 1, a);                                                                 \
    }
WRAP(i4, 32, 0)
WRAP(i4g64, 64, 0)
WRAP(i4z, 32, 1)

int kvl_codec_int4_avx2(int D, int G, int z, kvl_codec_kernels *out) {
    if (!kvl_cpu_has_avx2() || D % G != 0 || D > KVL_Q_AVX2_DMAX) return 0;
    if (G == 32 && !z) *out = (kvl_codec_kernels){"avx2", i4_qk, i4_av, i4_qk_multi, i4_av_multi};
    else if (G == 64 && !z) *out = (kvl_codec_kernels){"avx2", i4g64_qk, i4g64_av, i4g64_qk_multi, i4g64_av_multi};
    else if (G == 32 && z) *out = (kvl_codec_kernels){"avx2", i4z_qk, i4z_av, i4z_qk_multi, i4z_av_multi};
    else return 0;
    return 1;
}

#else
int kvl_codec_int4_avx2(int D, int G, int z, kvl_codec_kernels *out) {
    (void)D, (void)G, (void)z, (void)out;
    return 0;
}
#endif
