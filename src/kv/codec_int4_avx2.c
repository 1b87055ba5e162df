/* AVX2 kernels of the int4 / int4g64 codecs (layout in codec_int4.c): rows are
 * unpacked 16 code bytes at a time (low nibbles -> 16 consecutive channels,
 * high nibbles -> the 16 channels h further), converted and scaled with the
 * same float multiply-then-add as the scalar decode, into a block buffer that
 * the shared f32 kernels of codec_q_avx2.h consume. */
#include "kv/codec.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include "kv/codec_q_avx2.h"
#include "util/fp16.h"

/* 16 codes (bytes, 0..15) -> 16 floats m + c * s at out. */
static inline void put16(__m128i c, __m256 s, __m256 m, float *out) {
    const __m256 c0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c));
    const __m256 c1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(c, 8)));
    _mm256_storeu_ps(out, _mm256_add_ps(m, _mm256_mul_ps(c0, s)));
    _mm256_storeu_ps(out + 8, _mm256_add_ps(m, _mm256_mul_ps(c1, s)));
}

static inline void dec_rows(const uint8_t *seg, int D, int G, int i0, int nr, float *buf) {
    const int ng = D / G, h = G / 2;
    const size_t rb = (size_t)ng * 4 + (size_t)D / 2;
    const __m128i lo = _mm_set1_epi8(15);
    for (int k = 0; k < nr; k++) {
        const uint8_t *row = seg + (size_t)(i0 + k) * rb, *codes = row + (size_t)ng * 4;
        float *x = buf + (size_t)k * D;
        for (int g = 0; g < ng; g++) {
            uint16_t sh, mh;
            memcpy(&sh, row + g * 4, 2);
            memcpy(&mh, row + g * 4 + 2, 2);
            const __m256 s = _mm256_set1_ps(kvl_fp16_to_fp32(sh)), m = _mm256_set1_ps(kvl_fp16_to_fp32(mh));
            const uint8_t *b = codes + g * h;
            float *xg = x + g * G;
            for (int o = 0; o < h; o += 16) {
                const __m128i v = _mm_loadu_si128((const __m128i *)(b + o));
                put16(_mm_and_si128(v, lo), s, m, xg + o);
                put16(_mm_and_si128(_mm_srli_epi16(v, 4), lo), s, m, xg + h + o);
            }
        }
    }
}

static void dec32(const uint8_t *seg, int D, int P, int i0, int nr, float *buf) { dec_rows(seg, D, 32, i0, nr, buf); }
static void dec64(const uint8_t *seg, int D, int P, int i0, int nr, float *buf) { dec_rows(seg, D, 64, i0, nr, buf); }

KVL_Q_AVX2_KERNELS(i4, dec32)
KVL_Q_AVX2_KERNELS(i4g64, dec64)

int kvl_codec_int4_avx2(int D, int G, kvl_codec_kernels *out) {
    if (!kvl_cpu_has_avx2() || D % G != 0 || D > KVL_Q_AVX2_DMAX) return 0;
    if (G == 32) *out = (kvl_codec_kernels){"avx2", i4_qk, i4_av, i4_qk_multi, i4_av_multi};
    else if (G == 64) *out = (kvl_codec_kernels){"avx2", i4g64_qk, i4g64_av, i4g64_qk_multi, i4g64_av_multi};
    else return 0;
    return 1;
}

#else
int kvl_codec_int4_avx2(int D, int G, kvl_codec_kernels *out) {
    (void)D, (void)G, (void)out;
    return 0;
}
#endif
