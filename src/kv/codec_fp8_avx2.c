/* AVX2 kernels of the fp8 (e4m3) codec (layout in codec_fp8.c): 8 code bytes
 * widen to 16-bit lanes, the sign / exponent-mantissa bits move into IEEE
 * half position (value * 2^-8, exact), vcvtph2ps converts and one multiply by
 * scale * 256 gives the scalar decode's values bit for bit. No table, no
 * gather (see bench/bench_codec.c for the 256-entry gather LUT variant). */
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

static void f8_dec(const uint8_t *seg, int D, int P, int i0, int nr, float *buf) {
    for (int k = 0; k < nr; k++) {
        float scale;
        memcpy(&scale, seg + (size_t)(i0 + k) * 4, 4);
        const __m256 s = _mm256_set1_ps(scale * 256.0f);
        const uint8_t *r = seg + (size_t)P * 4 + (size_t)(i0 + k) * D;
        float *x = buf + (size_t)k * D;
        int j = 0;
        for (; j + 16 <= D; j += 16) {
            __m256 a, b;
            f8_to_f32x16(_mm_loadu_si128((const __m128i *)(r + j)), &a, &b);
            _mm256_storeu_ps(x + j, _mm256_mul_ps(a, s));
            _mm256_storeu_ps(x + j + 8, _mm256_mul_ps(b, s));
        }
        for (; j < D; j += 8) {
            __m256 a, b;
            f8_to_f32x16(_mm_loadl_epi64((const __m128i *)(r + j)), &a, &b);
            _mm256_storeu_ps(x + j, _mm256_mul_ps(a, s));
        }
    }
}

KVL_Q_AVX2_KERNELS(f8, f8_dec)

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
