/* AVX2 kernels of the oaken codec (layout in codec_oaken.c): per row, the 16
 * dense middle levels are computed with the scalar decode's arithmetic
 * (vectorised, same roundings; e5m3 scales through F16C) into two registers,
 * the codes are unpacked 16 bytes at a time (as int4) and
 * looked up with two vpermps and a blend on the side bit; the row's few
 * sparse entries (outer / inner, at most ceil(3D/32)) are then written over
 * their slots by the scalar decode's formulas, so the block buffer holds the
 * scalar decode's values bit for bit. The shared f32 kernels of
 * codec_q_avx2.h consume the buffer. D % 32 == 0 (else scalar). */
#include "kv/codec.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <string.h>

#include "kv/codec_oaken.h"
#include "kv/codec_q_avx2.h"
#include "util/fp16.h"

#define HDR 16

static inline size_t row_bytes(int D) { return (size_t)D / 2 + 3 + 1 + (size_t)kvl_oaken_capacity(D); }

/* 16 codes (bytes 0..15) -> lut[code] at out. */
static inline void look16(__m128i c, __m256 t0, __m256 t1, float *out) {
    const __m256i i0 = _mm256_cvtepu8_epi32(c), i1 = _mm256_cvtepu8_epi32(_mm_srli_si128(c, 8));
    const __m256 m0 = _mm256_castsi256_ps(_mm256_slli_epi32(i0, 28)), m1 = _mm256_castsi256_ps(_mm256_slli_epi32(i1, 28));
    _mm256_storeu_ps(out, _mm256_blendv_ps(_mm256_permutevar8x32_ps(t0, i0), _mm256_permutevar8x32_ps(t1, i0), m0));
    _mm256_storeu_ps(out + 8, _mm256_blendv_ps(_mm256_permutevar8x32_ps(t0, i1), _mm256_permutevar8x32_ps(t1, i1), m1));
}

static void oak_dec(const uint8_t *seg, int D, int P, int i0, int nr, float *buf) {
    kvl_oaken_thresholds t;
    memcpy(&t, seg, sizeof t);
    const int C = kvl_oaken_capacity(D);
    const __m128i lo = _mm_set1_epi8(15);
    const float step_in = (t.hi_in - t.lo_in) * 0.03125f;
    for (int k = 0; k < nr; k++) {
        const uint8_t *codes = seg + HDR + (size_t)(i0 + k) * row_bytes(D), *sc = codes + D / 2, *ent = sc + 4;
        /* the three e5m3 scales through F16C (exact), then the 16 middle
         * levels with the scalar decode's multiply-then-add / -subtract */
        const __m128 sv = _mm_cvtph_ps(_mm_setr_epi16((short)(sc[0] << 7), (short)(sc[1] << 7), (short)(sc[2] << 7), 0, 0, 0, 0, 0));
        float s3[4];
        _mm_storeu_ps(s3, sv);
        const float so = s3[2];
        const __m256 iota = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256 t0 = _mm256_sub_ps(_mm256_set1_ps(t.lo_in), _mm256_mul_ps(iota, _mm256_set1_ps(s3[1])));
        const __m256 t1 = _mm256_add_ps(_mm256_set1_ps(t.hi_in), _mm256_mul_ps(iota, _mm256_set1_ps(s3[0])));
        float *x = buf + (size_t)k * D;
        for (int b = 0; b < D; b += 32) {
            const __m128i v = _mm_loadu_si128((const __m128i *)(codes + b / 2));
            look16(_mm_and_si128(v, lo), t0, t1, x + b);
            look16(_mm_and_si128(_mm_srli_epi16(v, 4), lo), t0, t1, x + b + 16);
        }
        int n_out = sc[3] >> 4, n_in = sc[3] & 15;
        if (n_out > C) n_out = C;
        if (n_in > C - n_out) n_in = C - n_out;
        /* branch-free (the side bit and the group are data): the scalar
         * decode's values, lo_out - c*so written as lo_out + c*(-so) (exact) */
        const float obase[2] = {t.lo_out, t.hi_out}, oscale[2] = {-so, so};
        for (int e = 0; e < n_out + n_in; e++) {
            int j = ent[e] & 0x7f;
            const int ex = ent[e] >> 7;
            j = j < D ? j : D - 1;
            const int kk = j & 31;
            const int c = (codes[j / 32 * 16 + (kk & 15)] >> ((kk >> 4) << 2)) & 15;
            const float v[2] = {t.lo_in + ((float)(c | ex << 4) + 0.5f) * step_in, obase[ex] + (float)c * oscale[ex]};
            x[j] = v[e < n_out];
        }
    }
}

KVL_Q_AVX2_KERNELS(oak, oak_dec)

int kvl_codec_oaken_avx2(int D, kvl_codec_kernels *out) {
    /* narrow layout only (D <= 128: one count byte, u8 entries) */
    if (!kvl_cpu_has_avx2() || D % 32 != 0 || D > 128) return 0;
    *out = (kvl_codec_kernels){"avx2", oak_qk, oak_av, oak_qk_multi, oak_av_multi};
    return 1;
}

#else
int kvl_codec_oaken_avx2(int D, kvl_codec_kernels *out) {
    (void)D, (void)out;
    return 0;
}
#endif
