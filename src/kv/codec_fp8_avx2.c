/* AVX2 kernels of the fp8 (e4m3) codec (layout in codec_fp8.c): code bytes
 * widen to 16-bit lanes, the sign / exponent-mantissa bits move into IEEE
 * half position (value * 2^-8, exact) and vcvtph2ps converts, once per block
 * of 8 rows for all queries; the row's scale * 256 is applied per row (to
 * the score in qk, to the weight in av), as the int8 kernels do. No table,
 * no gather: bench/bench_codec.c measures the 256-entry gather LUT variant
 * (about 3-4x slower per value on this CPU). Per-query results do not depend
 * on m, and no score depends on n or its row's block position. */
#include "kv/codec.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <string.h>

#include "kv/codec_q_avx2.h"

/* 16 e4m3 bytes -> 16 floats (value * 2^-8). */
static inline void f8_to_f32x16(__m128i b, __m256 *lo, __m256 *hi) {
    const __m256i w = _mm256_cvtepu8_epi16(b);
    const __m256i h = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(w, _mm256_set1_epi16(0x80)), 8),
                                      _mm256_slli_epi16(_mm256_and_si256(w, _mm256_set1_epi16(0x7f)), 7));
    *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
    *hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}

/* Rows i0..i0+nr-1 as e4m3 values * 2^-8 into c [8][D] (rows >= nr: 0), and
 * their scale * 256 into s [8] (rows >= nr: 0). */
static inline void f8_unpack(const uint8_t *seg, int D, int P, int i0, int nr, float *c, float *s) {
    for (int k = 0; k < nr; k++) {
        float scale;
        memcpy(&scale, seg + (size_t)(i0 + k) * 4, 4);
        s[k] = scale * 256.0f;
        const uint8_t *r = seg + (size_t)P * 4 + (size_t)(i0 + k) * D;
        float *x = c + (size_t)k * D;
        int j = 0;
        for (; j + 16 <= D; j += 16) {
            __m256 a, b;
            f8_to_f32x16(_mm_loadu_si128((const __m128i *)(r + j)), &a, &b);
            _mm256_storeu_ps(x + j, a);
            _mm256_storeu_ps(x + j + 8, b);
        }
        for (; j < D; j += 8) {
            __m256 a, b;
            f8_to_f32x16(_mm_loadl_epi64((const __m128i *)(r + j)), &a, &b);
            _mm256_storeu_ps(x + j, a);
        }
    }
    for (int k = nr; k < 8; k++) s[k] = 0, memset(c + (size_t)k * D, 0, sizeof(float) * (size_t)D);
}

/* qk: score = (scale * 256) * dot(q, v) per lane, after the shared 8-row
 * transposing dot; av: weights p * scale * 256 into the shared av block. */
static void f8_qk_multi(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *scores) {
    float c[8 * KVL_Q_AVX2_DMAX], s[8], t[8];
    for (int i0 = 0; i0 < n; i0 += 8) {
        const int nr = n - i0 < 8 ? n - i0 : 8;
        f8_unpack(seg, D, P, i0, nr, c, s);
        const __m256 sv = _mm256_loadu_ps(s);
        for (int g = 0; g < m; g++) {
            kvl_q_qk_block(c, D, 8, q + (size_t)g * D, t);
            _mm256_storeu_ps(t, _mm256_mul_ps(_mm256_loadu_ps(t), sv));
            memcpy(scores + (size_t)g * P + i0, t, sizeof(float) * (size_t)nr);
        }
    }
}
static void f8_av_multi(const uint8_t *seg, int D, int P, int n, const float *p, int m, float *acc) {
    float c[8 * KVL_Q_AVX2_DMAX], s[8], w[8];
    for (int i0 = 0; i0 < n; i0 += 8) {
        const int nr = n - i0 < 8 ? n - i0 : 8;
        f8_unpack(seg, D, P, i0, nr, c, s);
        for (int g = 0; g < m; g++) {
            const float *pg = p + (size_t)g * P + i0;
            for (int k = 0; k < nr; k++) w[k] = pg[k] * s[k];
            kvl_q_av_block(c, D, nr, w, acc + (size_t)g * D);
        }
    }
}
static void f8_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *scores) {
    f8_qk_multi(seg, D, P, n, q, 1, scores);
}
static void f8_av(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {
    f8_av_multi(seg, D, P, n, p, 1, acc);
}

int kvl_codec_fp8_avx2(int D, kvl_codec_kernels *out) {
    if (!kvl_cpu_has_avx2() || D % 8 != 0 || D > KVL_Q_AVX2_DMAX) return 0;
    *out = (kvl_codec_kernels){"avx2", f8_qk, f8_av, f8_qk_multi, f8_av_multi};
    return 1;
}

#else
int kvl_codec_fp8_avx2(int D, kvl_codec_kernels *out) {
    (void)D, (void)out;
    return 0;
}
#endif
