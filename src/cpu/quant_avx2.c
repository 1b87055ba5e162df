/* AVX2/FMA/F16C kernels for quantized tensors: activation quantization
 * (Q8_0, Q8_1, Q8_K), vec_dot of every supported weight type with its
 * activation format (integer maddubs/madd dot products per block, scaled and
 * accumulated in float), and tiled 4-row x up-to-4-token micro-kernels for the
 * 32-element formats used by the matmul driver: each weight block is unpacked
 * once into registers and dotted against the same block of several tokens.
 * Compiled with -mavx2 -mfma -mf16c; only reached after a CPUID check. */
#include "cpu/quant.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <string.h>

#include "util/fp16.h"

#define KVL_INLINE static inline __attribute__((always_inline))

KVL_INLINE float h2f(uint16_t h) { return _cvtsh_ss(h); }

KVL_INLINE float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 16 packed nibble bytes -> 32 bytes: low nibbles (elements 0..15) in the low
 * lane, high nibbles (16..31) in the high lane. */
KVL_INLINE __m256i unpack_nib(const uint8_t *qs /* [16] */) {
    const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    const __m256i sh = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
    return _mm256_and_si256(_mm256_srlv_epi32(v, sh), _mm256_set1_epi8(0x0F));
}

/* Q5 high bits: 32-bit mask -> 32 bytes of 0x10 where the bit is set. */
KVL_INLINE __m256i q5_high(const uint8_t *qh4 /* [4] */) {
    uint32_t m;
    memcpy(&m, qh4, 4);
    const __m256i v = _mm256_set1_epi32((int)m);
    const __m256i idx = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3,
                                         3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL);
    const __m256i b = _mm256_and_si256(_mm256_shuffle_epi8(v, idx), bit);
    return _mm256_and_si256(_mm256_cmpeq_epi8(b, bit), _mm256_set1_epi8(0x10));
}

/* Unsigned quants (0..15 or 0..31) of block b of a 32-element weight row, and
 * its scale d and offset m (x = d*q + m). */
KVL_INLINE __m256i load_w32(kvl_type wt, const void *row, int64_t b, float *d, float *m) {
    switch (wt) {
    case KVL_TYPE_Q4_0: {
        const kvl_block_q4_0 *p = (const kvl_block_q4_0 *)row + b;
        *d = h2f(p->d), *m = -8 * *d;
        return unpack_nib(p->qs);
    }
    case KVL_TYPE_Q4_1: {
        const kvl_block_q4_1 *p = (const kvl_block_q4_1 *)row + b;
        *d = h2f(p->d), *m = h2f(p->m);
        return unpack_nib(p->qs);
    }
    case KVL_TYPE_Q5_0: {
        const kvl_block_q5_0 *p = (const kvl_block_q5_0 *)row + b;
        *d = h2f(p->d), *m = -16 * *d;
        return _mm256_or_si256(unpack_nib(p->qs), q5_high(p->qh));
    }
    default: {
        const kvl_block_q5_1 *p = (const kvl_block_q5_1 *)row + b;
        *d = h2f(p->d), *m = h2f(p->m);
        return _mm256_or_si256(unpack_nib(p->qs), q5_high(p->qh));
    }
    }
}

/* ------------------------------------------------------------- quant_vec */

KVL_INLINE __m256 absmax8(__m256 a, const float *x) {
    const __m256 mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    return _mm256_max_ps(a, _mm256_and_ps(_mm256_loadu_ps(x), mask));
}

/* Quantizes 32 floats with inverse scale id into q (round half to even, as
 * nearbyintf in the scalar reference); returns the 8 partial int32 sums. */
KVL_INLINE __m256i q8_32(const float *x, __m256 id, int8_t *q) {
    __m256i i[4];
    for (int k = 0; k < 4; k++)
        i[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), id),
                                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    const __m256i s = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
    /* packs work per 128-bit lane: fix the order with a final permute. */
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)q, p);
    return s;
}

KVL_INLINE int hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

KVL_INLINE float hmax_ps(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static void quant_vec_avx2(kvl_type vt, const float *x /* [n] */, void *dst, int64_t n) {
    switch (vt) {
    case KVL_TYPE_Q8_0:
    case KVL_TYPE_Q8_1:
        for (int64_t i = 0; i < n / 32; i++, x += 32) {
            __m256 a = _mm256_setzero_ps();
            for (int k = 0; k < 4; k++) a = absmax8(a, x + 8 * k);
            const float d = hmax_ps(a) / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
            if (vt == KVL_TYPE_Q8_0) {
                kvl_block_q8_0 *b = (kvl_block_q8_0 *)dst + i;
                b->d = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
                q8_32(x, _mm256_set1_ps(id), b->qs);
            } else {
                kvl_block_q8_1 *b = (kvl_block_q8_1 *)dst + i;
                b->d = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
                b->s = (int16_t)hsum_epi32(q8_32(x, _mm256_set1_ps(id), b->qs));
            }
        }
        return;
    case KVL_TYPE_Q8_K:
        for (int64_t i = 0; i < n / 256; i++, x += 256) {
            kvl_block_q8_k *b = (kvl_block_q8_k *)dst + i;
            __m256 a = _mm256_setzero_ps();
            for (int k = 0; k < 32; k++) a = absmax8(a, x + 8 * k);
            const float d = hmax_ps(a) / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
            b->d = d;
            const __m256 idv = _mm256_set1_ps(id);
            for (int k = 0; k < 8; k++) q8_32(x + 32 * k, idv, b->qs + 32 * k);
            /* bsums: sums of 16 int8 via maddubs with ones, then madd. */
            const __m256i one8 = _mm256_set1_epi8(1), one16 = _mm256_set1_epi16(1);
            __m256i s[8];
            for (int k = 0; k < 8; k++) {
                const __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * k));
                s[k] = _mm256_madd_epi16(_mm256_maddubs_epi16(one8, q), one16); /* 8 x sum of 4 */
            }
            for (int k = 0; k < 8; k += 2) {
                /* hadd twice: lane0 -> [k lo16, k+1 lo16...], lane1 -> hi halves. */
                __m256i h = _mm256_hadd_epi32(s[k], s[k + 1]);
                h = _mm256_hadd_epi32(h, h);
                /* h lane0: [k.g0, k+1.g0, k.g0, k+1.g0]; lane1: [k.g1, k+1.g1, ...] */
                const int a0 = _mm256_extract_epi32(h, 0), a1 = _mm256_extract_epi32(h, 1);
                const int b0 = _mm256_extract_epi32(h, 4), b1 = _mm256_extract_epi32(h, 5);
                b->bsums[2 * k] = (int16_t)a0, b->bsums[2 * k + 1] = (int16_t)b0;
                b->bsums[2 * k + 2] = (int16_t)a1, b->bsums[2 * k + 3] = (int16_t)b1;
            }
        }
        return;
    default: kvl_quant_row_ref(vt, x, dst, n); return;
    }
}

/* ---------------------------------------------------------------- vec_dot */

KVL_INLINE __m256 load_f16x8(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
KVL_INLINE __m256 load_bf16x8(const uint16_t *p) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

static float dot_float(kvl_type wt, int64_t n, const void *w, const float *x) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++) {
            __m256 a;
            if (wt == KVL_TYPE_F32) a = _mm256_loadu_ps((const float *)w + i + 8 * k);
            else if (wt == KVL_TYPE_F16) a = load_f16x8((const uint16_t *)w + i + 8 * k);
            else a = load_bf16x8((const uint16_t *)w + i + 8 * k);
            acc[k] = _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i + 8 * k), acc[k]);
        }
    float s = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (; i < n; i++) {
        float a;
        if (wt == KVL_TYPE_F32) a = ((const float *)w)[i];
        else if (wt == KVL_TYPE_F16) a = kvl_fp16_to_fp32(((const uint16_t *)w)[i]);
        else a = kvl_bf16_to_fp32(((const uint16_t *)w)[i]);
        s += a * x[i];
    }
    return s;
}

/* Signed int8 dot of 32 bytes: 8 int32 partial sums. */
KVL_INLINE __m256i dot_i8(__m256i a, __m256i b) {
    const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}
/* Unsigned (<= 31) x signed int8 dot of 32 bytes: 8 int32 partial sums. */
KVL_INLINE __m256i dot_u8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* Same arithmetic as the tiled mk_q8_0 (per block: the two 128-bit halves
 * summed as integers, converted, scaled by d_w*d_x into two float lanes; the
 * lanes added at the end), so a row's result does not depend on whether it
 * was computed here or in the micro-kernel: batch invariance. */
static float dot_q8_0(int64_t nb, const kvl_block_q8_0 *w, const kvl_block_q8_0 *x) {
    __m128 acc = _mm_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const __m256i p = dot_i8(_mm256_loadu_si256((const __m256i *)w[i].qs),
                                 _mm256_loadu_si256((const __m256i *)x[i].qs));
        __m128i s = _mm_hadd_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
        s = _mm_hadd_epi32(s, s); /* [lo, hi, lo, hi] */
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(s), _mm_set1_ps(h2f(w[i].d) * h2f(x[i].d)), acc);
    }
    return _mm_cvtss_f32(acc) + _mm_cvtss_f32(_mm_shuffle_ps(acc, acc, 1));
}

/* Q4_0/Q4_1/Q5_0/Q5_1 x Q8_1: block sum = dx*(d*dot(q, qx) + m*sum(qx)). */
KVL_INLINE float dot_q_x8_1(kvl_type wt, int64_t nb, const void *w, const kvl_block_q8_1 *x) {
    /* two independent accumulator chains (even/odd blocks) */
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    float macc[2] = {0, 0};
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
#pragma GCC unroll 2
        for (int k = 0; k < 2; k++) {
            float d, m;
            const __m256i q = load_w32(wt, w, i + k, &d, &m);
            const __m256i p = dot_u8(q, _mm256_loadu_si256((const __m256i *)x[i + k].qs));
            const float dx = h2f(x[i + k].d);
            acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * dx), acc[k]);
            macc[k] += m * dx * (float)x[i + k].s;
        }
    }
    for (; i < nb; i++) {
        float d, m;
        const __m256i q = load_w32(wt, w, i, &d, &m);
        const __m256i p = dot_u8(q, _mm256_loadu_si256((const __m256i *)x[i].qs));
        const float dx = h2f(x[i].d);
        acc[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * dx), acc[0]);
        macc[0] += m * dx * (float)x[i].s;
    }
    return hsum_ps(_mm256_add_ps(acc[0], acc[1])) + (macc[0] + macc[1]);
}

static float dot_q4_k(int64_t nb, const kvl_block_q4_k *w, const kvl_block_q8_k *x) {
    __m256 acc = _mm256_setzero_ps();
    float macc = 0;
    for (int64_t i = 0; i < nb; i++) {
        int sc[8], mn[8];
        for (int j = 0; j < 8; j++) kvl_q4k_scale_min(j, w[i].scales, &sc[j], &mn[j]);
        /* mins: sum_j m_j * (bsums[2j] + bsums[2j+1]). */
        const __m256i bs = _mm256_loadu_si256((const __m256i *)x[i].bsums);
        const __m256i m16 = _mm256_setr_epi16((short)mn[0], (short)mn[0], (short)mn[1], (short)mn[1], (short)mn[2],
                                              (short)mn[2], (short)mn[3], (short)mn[3], (short)mn[4], (short)mn[4],
                                              (short)mn[5], (short)mn[5], (short)mn[6], (short)mn[6], (short)mn[7],
                                              (short)mn[7]);
        const int msum = hsum_epi32(_mm256_madd_epi16(bs, m16));
        __m256i isum = _mm256_setzero_si256();
        const __m256i lowm = _mm256_set1_epi8(0x0F);
        for (int c = 0; c < 4; c++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(w[i].qs + 32 * c));
            const __m256i ql = _mm256_and_si256(q, lowm);
            const __m256i qh = _mm256_and_si256(_mm256_srli_epi16(q, 4), lowm);
            const __m256i x0 = _mm256_loadu_si256((const __m256i *)(x[i].qs + 64 * c));
            const __m256i x1 = _mm256_loadu_si256((const __m256i *)(x[i].qs + 64 * c + 32));
            const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(ql, x0), _mm256_set1_epi16((short)sc[2 * c]));
            const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(qh, x1), _mm256_set1_epi16((short)sc[2 * c + 1]));
            isum = _mm256_add_epi32(isum, _mm256_add_epi32(p0, p1));
        }
        const float dx = x[i].d;
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(h2f(w[i].d) * dx), acc);
        macc += h2f(w[i].dmin) * dx * (float)msum;
    }
    return hsum_ps(acc) - macc;
}

static float dot_q6_k(int64_t nb, const kvl_block_q6_k *w, const kvl_block_q8_k *x) {
    __m256 acc = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x30);
    for (int64_t i = 0; i < nb; i++) {
        const __m128i sc8 = _mm_loadu_si128((const __m128i *)w[i].scales);
        const __m256i sc16 = _mm256_cvtepi8_epi16(sc8); /* 16 scales as int16 */
        /* 32 * sum_g sc[g] * bsums[g] (q6 stored +32). */
        const __m256i bs = _mm256_loadu_si256((const __m256i *)x[i].bsums);
        const int off = 32 * hsum_epi32(_mm256_madd_epi16(bs, sc16));
        __m256i isum = _mm256_setzero_si256();
        for (int n = 0; n < 2; n++) {
            const uint8_t *ql = w[i].ql + 64 * n, *qhp = w[i].qh + 32 * n;
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
            const __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            const __m256i h = _mm256_loadu_si256((const __m256i *)qhp);
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m2));
            q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m2));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(h, m2));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                   _mm256_and_si256(_mm256_srli_epi16(h, 2), m2));
            for (int k = 0; k < 4; k++) {
                const int g = 8 * n + 2 * k; /* scale groups g (low lane), g+1 (high lane) */
                const __m256i xv = _mm256_loadu_si256((const __m256i *)(x[i].qs + 128 * n + 32 * k));
                const __m256i s = _mm256_setr_m128i(_mm_set1_epi16(w[i].scales[g]), _mm_set1_epi16(w[i].scales[g + 1]));
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(q[k], xv), s));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(isum, _mm256_setr_epi32(off, 0, 0, 0, 0, 0, 0, 0))),
                              _mm256_set1_ps(h2f(w[i].d) * x[i].d), acc);
    }
    return hsum_ps(acc);
}

static float vec_dot_avx2(kvl_type wt, int64_t n, const void *w /* [n] of wt */, const void *x) {
    switch (wt) {
    case KVL_TYPE_F32:
    case KVL_TYPE_F16:
    case KVL_TYPE_BF16: return dot_float(wt, n, w, x);
    case KVL_TYPE_Q8_0: return dot_q8_0(n / 32, w, x);
    case KVL_TYPE_Q4_0: return dot_q_x8_1(KVL_TYPE_Q4_0, n / 32, w, x);
    case KVL_TYPE_Q4_1: return dot_q_x8_1(KVL_TYPE_Q4_1, n / 32, w, x);
    case KVL_TYPE_Q5_0: return dot_q_x8_1(KVL_TYPE_Q5_0, n / 32, w, x);
    case KVL_TYPE_Q5_1: return dot_q_x8_1(KVL_TYPE_Q5_1, n / 32, w, x);
    case KVL_TYPE_Q4_K: return dot_q4_k(n / 256, w, x);
    case KVL_TYPE_Q6_K: return dot_q6_k(n / 256, w, x);
    default: return 0;
    }
}

static kvl_type vec_type_avx2(kvl_type wt) {
    switch (wt) {
    case KVL_TYPE_Q8_0: return KVL_TYPE_Q8_0;
    case KVL_TYPE_Q4_0:
    case KVL_TYPE_Q4_1:
    case KVL_TYPE_Q5_0:
    case KVL_TYPE_Q5_1: return KVL_TYPE_Q8_1;
    case KVL_TYPE_Q4_K:
    case KVL_TYPE_Q6_K: return KVL_TYPE_Q8_K;
    default: return KVL_TYPE_F32;
    }
}

static void dequant_row_avx2(kvl_type t, const void *src, float *dst /* [n] */, int64_t n) {
    if (t == KVL_TYPE_F16) {
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_f16x8((const uint16_t *)src + i));
        for (; i < n; i++) dst[i] = kvl_fp16_to_fp32(((const uint16_t *)src)[i]);
        return;
    }
    if (t == KVL_TYPE_Q8_0) {
        const kvl_block_q8_0 *b = src;
        for (int64_t i = 0; i < n / 32; i++) {
            const __m256 d = _mm256_set1_ps(h2f(b[i].d));
            for (int k = 0; k < 4; k++) {
                const __m128i q = _mm_loadl_epi64((const __m128i *)(b[i].qs + 8 * k));
                _mm256_storeu_ps(dst + 32 * i + 8 * k, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
            }
        }
        return;
    }
    kvl_dequant_row_ref(t, src, dst, n);
}

const kvl_cpu_kernels kvl_cpu_kernels_avx2 = {
    .name = "avx2",
    .vec_type = vec_type_avx2,
    .quant_vec = quant_vec_avx2,
    .vec_dot = vec_dot_avx2,
    .dequant_row = dequant_row_avx2,
};

/* ---------------------------------------------------------- micro-kernels */

/* 4 rows x T tokens, 32-element weight formats x Q8_1. Per block, the four
 * rows' maddubs results are folded with two rounds of 16-bit horizontal adds
 * (|sum of 8 products| <= 8*31*127 < 32768, so no overflow) and one madd, giving
 * [r0 r1 r2 r3 | r0 r1 r2 r3] partial sums in one vector per token. */
KVL_INLINE void mk_x8_1(kvl_type wt, const uint8_t *W /* [4][wrb] */, size_t wrb, const uint8_t *X /* [T][xrb] */,
                        size_t xrb, int64_t nb, int T, float *y /* [T][ldy] */, int64_t ldy) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const __m256i one16 = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < nb; b++) {
        float d0, d1, d2, d3, m0, m1, m2, m3;
        const __m256i q0 = load_w32(wt, W, b, &d0, &m0), q1 = load_w32(wt, W + wrb, b, &d1, &m1);
        const __m256i q2 = load_w32(wt, W + 2 * wrb, b, &d2, &m2), q3 = load_w32(wt, W + 3 * wrb, b, &d3, &m3);
        const __m256 dv = _mm256_setr_ps(d0, d1, d2, d3, d0, d1, d2, d3);
        const __m256 mv = _mm256_setr_ps(m0, m1, m2, m3, 0, 0, 0, 0);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const kvl_block_q8_1 *xb = (const kvl_block_q8_1 *)(X + t * xrb) + b;
            const __m256i xv = _mm256_loadu_si256((const __m256i *)xb->qs);
            const __m256i h01 = _mm256_hadd_epi16(_mm256_maddubs_epi16(q0, xv), _mm256_maddubs_epi16(q1, xv));
            const __m256i h23 = _mm256_hadd_epi16(_mm256_maddubs_epi16(q2, xv), _mm256_maddubs_epi16(q3, xv));
            const __m256i s = _mm256_madd_epi16(_mm256_hadd_epi16(h01, h23), one16);
            const float dx = h2f(xb->d);
            /* one add on the accumulator chain per block */
            const __m256 v = _mm256_fmadd_ps(mv, _mm256_set1_ps(dx * (float)xb->s),
                                             _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dv, _mm256_set1_ps(dx))));
            acc[t] = _mm256_add_ps(acc[t], v);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        const __m128 r = _mm_add_ps(_mm256_castps256_ps128(acc[t]), _mm256_extractf128_ps(acc[t], 1));
        _mm_storeu_ps(y + t * ldy, r);
    }
}

/* 4 rows x T tokens, Q8_0 x Q8_0: |w| (u8) times sign(w)*x per pair, then
 * 32-bit horizontal adds. Activations never hold -128 (amax/127 scaling). */
KVL_INLINE void mk_q8_0(const uint8_t *W /* [4][wrb] */, size_t wrb, const uint8_t *X /* [T][xrb] */, size_t xrb,
                        int64_t nb, int T, float *y /* [T][ldy] */, int64_t ldy) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const __m256i one16 = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < nb; b++) {
        __m256i q[4], aq[4];
        float d[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            const kvl_block_q8_0 *wb = (const kvl_block_q8_0 *)(W + r * wrb) + b;
            q[r] = _mm256_loadu_si256((const __m256i *)wb->qs);
            aq[r] = _mm256_sign_epi8(q[r], q[r]); /* |q| as u8 (-128 -> 128) */
            d[r] = h2f(wb->d);
        }
        const __m256 dv = _mm256_setr_ps(d[0], d[1], d[2], d[3], d[0], d[1], d[2], d[3]);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const kvl_block_q8_0 *xb = (const kvl_block_q8_0 *)(X + t * xrb) + b;
            const __m256i xv = _mm256_loadu_si256((const __m256i *)xb->qs);
            __m256i p[4];
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++)
                p[r] = _mm256_madd_epi16(_mm256_maddubs_epi16(aq[r], _mm256_sign_epi8(xv, q[r])), one16);
            const __m256i s = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dv, _mm256_set1_ps(h2f(xb->d))), acc[t]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        const __m128 r = _mm_add_ps(_mm256_castps256_ps128(acc[t]), _mm256_extractf128_ps(acc[t], 1));
        _mm_storeu_ps(y + t * ldy, r);
    }
}

/* Dispatch with compile-time constant T and weight type so each variant is
 * fully unrolled. */
#define KVL_MK_T(CALL)            \
    switch (T) {                  \
    case 4: CALL(4); break;       \
    case 3: CALL(3); break;       \
    case 2: CALL(2); break;       \
    default: CALL(1); break;      \
    }

static void mk_q4_0(const uint8_t *W, size_t wrb, const uint8_t *X, size_t xrb, int64_t nb, int T, float *y, int64_t ldy) {
#define C(TT) mk_x8_1(KVL_TYPE_Q4_0, W, wrb, X, xrb, nb, TT, y, ldy)
    KVL_MK_T(C)
#undef C
}
static void mk_q4_1(const uint8_t *W, size_t wrb, const uint8_t *X, size_t xrb, int64_t nb, int T, float *y, int64_t ldy) {
#define C(TT) mk_x8_1(KVL_TYPE_Q4_1, W, wrb, X, xrb, nb, TT, y, ldy)
    KVL_MK_T(C)
#undef C
}
static void mk_q5_0(const uint8_t *W, size_t wrb, const uint8_t *X, size_t xrb, int64_t nb, int T, float *y, int64_t ldy) {
#define C(TT) mk_x8_1(KVL_TYPE_Q5_0, W, wrb, X, xrb, nb, TT, y, ldy)
    KVL_MK_T(C)
#undef C
}
static void mk_q5_1(const uint8_t *W, size_t wrb, const uint8_t *X, size_t xrb, int64_t nb, int T, float *y, int64_t ldy) {
#define C(TT) mk_x8_1(KVL_TYPE_Q5_1, W, wrb, X, xrb, nb, TT, y, ldy)
    KVL_MK_T(C)
#undef C
}
static void mk_q8_0_t(const uint8_t *W, size_t wrb, const uint8_t *X, size_t xrb, int64_t nb, int T, float *y,
                      int64_t ldy) {
#define C(TT) mk_q8_0(W, wrb, X, xrb, nb, TT, y, ldy)
    KVL_MK_T(C)
#undef C
}

typedef void (*kvl_mk_fn)(const uint8_t *W, size_t wrb, const uint8_t *X, size_t xrb, int64_t nb, int T, float *y,
                          int64_t ldy);

int kvl_cpu_matmul_rows_avx2(kvl_type wt, const void *W /* [rows][cols] */, int64_t cols, int64_t r0, int64_t r1,
                             const void *xq /* [n_tok][cols] */, int n_tok, float *y /* [n_tok][ldy] */,
                             int64_t ldy) {
    kvl_mk_fn mk;
    switch (wt) {
    case KVL_TYPE_Q4_0: mk = mk_q4_0; break;
    case KVL_TYPE_Q4_1: mk = mk_q4_1; break;
    case KVL_TYPE_Q5_0: mk = mk_q5_0; break;
    case KVL_TYPE_Q5_1: mk = mk_q5_1; break;
    case KVL_TYPE_Q8_0:
        /* for a few tokens the plain vec_dot streams faster (measured 2.7x at n_tok 1) */
        if (n_tok < 4) return 0;
        mk = mk_q8_0_t;
        break;
    default: return 0;
    }
    const kvl_type vt = vec_type_avx2(wt);
    const size_t wrb = kvl_type_row_bytes(wt, cols), xrb = kvl_type_row_bytes(vt, cols);
    const int64_t nb = cols / 32;
    /* Row chunk: ~16 KB of weights stays in L1 while all token tiles pass. */
    int64_t rc = (int64_t)(16384 / wrb) & ~(int64_t)3;
    if (rc < 4) rc = 4;
    const uint8_t *Wb = W, *Xb = xq;
    for (int64_t c0 = r0; c0 < r1; c0 += rc) {
        const int64_t c1 = c0 + rc < r1 ? c0 + rc : r1;
        for (int t0 = 0; t0 < n_tok; t0 += 4) {
            const int T = n_tok - t0 < 4 ? n_tok - t0 : 4;
            int64_t r = c0;
            for (; r + 4 <= c1; r += 4)
                mk(Wb + (size_t)r * wrb, wrb, Xb + (size_t)t0 * xrb, xrb, nb, T, y + (int64_t)t0 * ldy + r, ldy);
            for (; r < c1; r++)
                for (int t = t0; t < t0 + T; t++)
                    y[(int64_t)t * ldy + r] = vec_dot_avx2(wt, cols, Wb + (size_t)r * wrb, Xb + (size_t)t * xrb);
        }
    }
    return 1;
}

#endif
