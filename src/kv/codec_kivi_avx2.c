/* AVX2 kernels of the KIVI codecs (layouts: kv/codec_kivi.h), fused on the
 * codes with integer multiply-adds:
 *   qk (K, 32-bit lanes = 8 tokens): score_i = sc * sum_j Q_j c_ij + sum_j q_j z_j,
 *      Q_j = round(q_j s_j / sc), sc = max_j |q_j s_j| / 127, per page and query;
 *   av (V, 32-bit lanes = 8 channels): acc_j += sc_g * sum_i W_i c_ij + sum_i p_i z_ig,
 *      W_i = round(p_i s_ig / sc_g), sc_g = max_i |p_i s_ig| / 127, per page,
 *      query and channel group g.
 * The factors are quantized to int8 per page (llama.cpp likewise quantizes
 * activations to 8 bits, per 32-block, for its quantized-KV dot products).
 * Codes are u8 in byte slots: vpmaddubsw multiplies 32 codes by s8 factors
 * and adds pairs into int16 (|sum| <= 4 * 2 * 15 * 127, no saturation), one
 * vpmaddwd by 1 sums each 32-bit lane into int32, int32 sums add up exactly
 * over the chunks of the page, and one fma applies sc and the z term.
 * Error against the exact fused float sum:
 *   qk: |d score_i| <= sc/2 * sum_j c_ij (+ f32 rounding of the final fma),
 *   av: |d acc_j|   <= sc_g/2 * sum_i c_ij (+ f32 rounding).
 * Against the codes' own error (+-|factor_j|/2 per term, std |factor|/sqrt(12))
 * the factor rounding has std sc/sqrt(12) * rms(c): at the largest factor
 * 1.5% of it for 2-bit codes (rms c = 1.9) and 7% for 4-bit (rms c = 8.8),
 * i.e. +0.02% / +0.5% of error variance. Pages whose largest factor is below
 * 2^-96 contribute only their z terms (factor 0).
 * Integer sums are order-free, so the multi-query forms are bit-identical per
 * query to the single-query ones whatever the tiling; K scores of row i do
 * not depend on n (whole 8-token blocks are computed, the scale does not
 * depend on n); V rows i >= n enter with weight 0, exactly as rows with
 * p[i] == 0 do (the per-page scale is taken over the same values).
 * Compiled with -mavx2 -mfma -mf16c; used only when kvl_cpu_has_avx2(). */
#include "kv/codec_kivi.h"

#include <string.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#define AI static inline __attribute__((always_inline))

extern const kvl_codec kvl_codec_kivi2, kvl_codec_kivi2_v, kvl_codec_kivi4, kvl_codec_kivi4_v;

#define TINY 0x1p-96f /* largest factor below this: the page's factors are 0 */
#define QG_MAX 4      /* queries per tile */

static inline float hsum1(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline float hmax1(__m256 a) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline __m256 ld_h8(const uint8_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
static inline __m256 vabs(__m256 x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }

/* The 4 bytes at p in every 32-bit lane (a broadcast load; p need not be aligned). */
static inline __m256i bcast4(const void *p) { return _mm256_castps_si256(_mm256_broadcast_ss((const float *)p)); }

/* ---- int8 factors (vpmaddubsw), 2- and 4-bit codes in byte slots ------------------------ */

/* 16 floats -> 16 int8 round(f * inv) (|f * inv| <= 127). */
static inline __m128i to_i8_16(__m256 a, __m256 b, float inv) {
    const __m256 iv = _mm256_set1_ps(inv);
    const __m256i x = _mm256_cvtps_epi32(_mm256_mul_ps(a, iv)), y = _mm256_cvtps_epi32(_mm256_mul_ps(b, iv));
    const __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(x, y), 0xD8);
    return _mm_packs_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
}

/* Factors f [16 nc] -> int8 at o with one scale, returned: max |f| / 127 (0,
 * with zero codes, when max < TINY). */
AI float factors_i8(const float *f, int nc, int8_t *o) {
    __m256 mx = _mm256_setzero_ps();
    for (int c = 0; c < 2 * nc; c++) mx = _mm256_max_ps(mx, vabs(_mm256_loadu_ps(f + 8 * c)));
    const float am = hmax1(mx);
    if (!(am >= TINY)) {
        memset(o, 0, (size_t)nc * 16);
        return 0;
    }
    const float inv = 127.0f / am;
    for (int c = 0; c < nc; c++)
        _mm_storeu_si128((__m128i *)(o + 16 * c), to_i8_16(_mm256_loadu_ps(f + 16 * c), _mm256_loadu_ps(f + 16 * c + 8), inv));
    return am * (1.0f / 127.0f);
}

/* The 8/B fields of the byte slots of w as u8 codes (2-bit: 4 fields, 4-bit: 2). */
AI void unpack8(__m256i w, const int B, __m256i x[4]) {
    const __m256i m = _mm256_set1_epi8((char)((1 << B) - 1));
    x[0] = _mm256_and_si256(w, m);
    if (B == 2) {
        x[1] = _mm256_and_si256(_mm256_srli_epi16(w, 2), m);
        x[2] = _mm256_and_si256(_mm256_srli_epi16(w, 4), m);
        x[3] = _mm256_and_si256(_mm256_srli_epi16(w, 6), m);
    } else
        x[1] = _mm256_and_si256(_mm256_srli_epi16(w, 4), m);
}

/* int32 per lane of sum_f codes_f . factors_f (8/B fields; field f's 4 s8
 * factors, one per byte slot, at fq + 4f). */
AI __m256i dot8(const __m256i x[4], const int B, const int8_t *fq, __m256i ones) {
    __m256i s = _mm256_maddubs_epi16(x[0], bcast4(fq));
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(x[1], bcast4(fq + 4)));
    if (B == 2) {
        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(x[2], bcast4(fq + 8)));
        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(x[3], bcast4(fq + 12)));
    }
    return _mm256_madd_epi16(s, ones);
}

#define QS_MAX (KIVI_DMAX + 16)
#define WV_MAX (KIVI_PMAX + 32)

/* One query: Q8 [D rounded up to 16] (0 for j >= D), scale *qsc; returns
 * sum_j q_j z_j. sh, zh: the page's f16 s[D], z[D]. */
AI float k8_prep(const uint8_t *sh, const uint8_t *zh, int D, const float *q, int8_t *Q8, float *qsc) {
    const int njc = kivi_cdiv(D, 16); /* int8 conversions of 16 */
    __m256 b = _mm256_setzero_ps();
    if (D <= 64) { /* factors kept in registers */
        __m256 tv[8], mx = _mm256_setzero_ps();
#pragma GCC unroll 8
        for (int v = 0; v < 8; v++) {
            if (v < D / 8) {
                const __m256 qv = _mm256_loadu_ps(q + 8 * v);
                b = _mm256_fmadd_ps(qv, ld_h8(zh + 16 * v), b);
                tv[v] = _mm256_mul_ps(qv, ld_h8(sh + 16 * v));
                mx = _mm256_max_ps(mx, vabs(tv[v]));
            } else
                tv[v] = _mm256_setzero_ps();
        }
        const float am = hmax1(mx);
        if (!(am >= TINY)) {
            memset(Q8, 0, (size_t)njc * 16);
            *qsc = 0;
        } else {
            const float inv = 127.0f / am;
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++)
                if (c < njc) _mm_storeu_si128((__m128i *)(Q8 + 16 * c), to_i8_16(tv[2 * c], tv[2 * c + 1], inv));
            *qsc = am * (1.0f / 127.0f);
        }
        return hsum1(b);
    }
    float qs[KIVI_DMAX + 16];
    for (int j = 0; j < D; j += 8) {
        const __m256 qv = _mm256_loadu_ps(q + j);
        b = _mm256_fmadd_ps(qv, ld_h8(zh + 2 * j), b);
        _mm256_storeu_ps(qs + j, _mm256_mul_ps(qv, ld_h8(sh + 2 * j)));
    }
    if (D % 16) _mm256_storeu_ps(qs + D, _mm256_setzero_ps());
    *qsc = factors_i8(qs, njc, Q8);
    return hsum1(b);
}

/* QG queries, one token block: out[g*os + l] = score of token l of the block. */
AI void k8_tile(const uint8_t *codes, int njc, const int B, const int QG, const int8_t *Q8, const float *qsc,
                const float *bias, float *out, int os) {
    const int F = 32 / B;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i a[QG_MAX];
#pragma GCC unroll 4
    for (int g = 0; g < QG; g++) a[g] = _mm256_setzero_si256();
    for (int jc = 0; jc < njc; jc++) {
        __m256i x[4];
        unpack8(_mm256_loadu_si256((const __m256i *)(codes + (size_t)jc * 32)), B, x);
#pragma GCC unroll 4
        for (int g = 0; g < QG; g++) a[g] = _mm256_add_epi32(a[g], dot8(x, B, Q8 + (size_t)g * QS_MAX + F * jc, ones));
    }
#pragma GCC unroll 4
    for (int g = 0; g < QG; g++)
        _mm256_storeu_ps(out + (size_t)g * os,
                         _mm256_fmadd_ps(_mm256_cvtepi32_ps(a[g]), _mm256_set1_ps(qsc[g]), _mm256_set1_ps(bias[g])));
}

AI void k8_qk_impl(const uint8_t *seg, const int B, const int D, int P, int n, const float *q, int m, float *scores) {
    if (P > KIVI_PMAX || D > KIVI_DMAX || D % 8) {
        const kvl_codec *c = B == 2 ? &kvl_codec_kivi2 : &kvl_codec_kivi4;
        for (int g = 0; g < m; g++) c->ref.qk(seg, D, P, n, q + (size_t)g * D, scores + (size_t)g * P);
        return;
    }
    const int njc = kivi_cdiv(D, 32 / B), ntb = kivi_cdiv(n, 8);
    const size_t blk = (size_t)njc * 32;
    int8_t Q8[QG_MAX][QS_MAX];
    float qsc[QG_MAX], bias[QG_MAX] = {0}, out[QG_MAX * 8];
    const uint8_t *sh = seg + kivi_k_code_bytes(B, D, P), *zh = sh + (size_t)D * 2;
    for (int g0 = 0; g0 < m; g0 += QG_MAX) {
        const int QG = m - g0 < QG_MAX ? m - g0 : QG_MAX;
        for (int g = 0; g < QG; g++) bias[g] = k8_prep(sh, zh, D, q + (size_t)(g0 + g) * D, Q8[g], &qsc[g]);
        for (int tb = 0; tb < ntb; tb++) {
            const uint8_t *codes = seg + (size_t)tb * blk;
            const int i0 = tb * 8, cnt = n - i0 < 8 ? n - i0 : 8;
            const int full = cnt == 8;
            float *o = full ? scores + (size_t)g0 * P + i0 : out;
            const int os = full ? P : 8;
            if (QG == 1) k8_tile(codes, njc, B, 1, Q8[0], qsc, bias, o, os);
            else if (QG == 2) k8_tile(codes, njc, B, 2, Q8[0], qsc, bias, o, os);
            else if (QG == 3) k8_tile(codes, njc, B, 3, Q8[0], qsc, bias, o, os);
            else k8_tile(codes, njc, B, 4, Q8[0], qsc, bias, o, os);
            if (!full)
                for (int g = 0; g < QG; g++)
                    for (int k = 0; k < cnt; k++) scores[(size_t)(g0 + g) * P + i0 + k] = out[g * 8 + k];
        }
    }
}

/* One query, one group: W8 [n rounded up to 16] (0 for i >= n), scale *wsc;
 * returns sum_i p_i z_i (rows i >= n as zeros). sh, zh: the group's f16
 * s[P], z[P]. */
AI float v8_prep(const uint8_t *sh, const uint8_t *zh, int n, const float *p, int8_t *W8, float *wsc) {
    const int ntn = kivi_cdiv(n, 16), n8 = kivi_cdiv(n, 8) * 8; /* int8 conversions of 16 */
    __m256 b = _mm256_setzero_ps();
    if (n == 32) { /* the default page, weights kept in registers */
        __m256 tv[4], mx = _mm256_setzero_ps();
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) {
            const __m256 pv = _mm256_loadu_ps(p + 8 * v);
            b = _mm256_fmadd_ps(pv, ld_h8(zh + 16 * v), b);
            tv[v] = _mm256_mul_ps(pv, ld_h8(sh + 16 * v));
            mx = _mm256_max_ps(mx, vabs(tv[v]));
        }
        const float am = hmax1(mx);
        if (!(am >= TINY)) {
            memset(W8, 0, 32);
            *wsc = 0;
        } else {
            const float inv = 127.0f / am;
            _mm_storeu_si128((__m128i *)W8, to_i8_16(tv[0], tv[1], inv));
            _mm_storeu_si128((__m128i *)(W8 + 16), to_i8_16(tv[2], tv[3], inv));
            *wsc = am * (1.0f / 127.0f);
        }
        return hsum1(b);
    }
    float wf[WV_MAX];
    for (int i = 0; i < n8; i += 8) {
        __m256 pv, sv, zv;
        if (i + 8 <= n) pv = _mm256_loadu_ps(p + i), sv = ld_h8(sh + 2 * i), zv = ld_h8(zh + 2 * i);
        else { /* tail: rows >= n as zeros (p, s and z) */
            float pt[8] = {0};
            uint16_t st[8] = {0}, zt[8] = {0};
            memcpy(pt, p + i, sizeof(float) * (size_t)(n - i));
            memcpy(st, sh + 2 * i, (size_t)(n - i) * 2);
            memcpy(zt, zh + 2 * i, (size_t)(n - i) * 2);
            pv = _mm256_loadu_ps(pt), sv = ld_h8((const uint8_t *)st), zv = ld_h8((const uint8_t *)zt);
        }
        b = _mm256_fmadd_ps(pv, zv, b);
        _mm256_storeu_ps(wf + i, _mm256_mul_ps(pv, sv));
    }
    if (n8 % 16) _mm256_storeu_ps(wf + n8, _mm256_setzero_ps());
    *wsc = factors_i8(wf, ntn, W8);
    return hsum1(b);
}

/* QG queries, one channel block: acc[g][0..8) += sum over token chunks. */
AI void v8_tile(const uint8_t *codes, int ntn, const int B, const int QG, const int8_t *W8, const float *wsc,
                const float *bias, float *acc, int D) {
    const int F = 32 / B;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i a[QG_MAX];
#pragma GCC unroll 4
    for (int g = 0; g < QG; g++) a[g] = _mm256_setzero_si256();
    for (int tc = 0; tc < ntn; tc++) {
        __m256i x[4];
        unpack8(_mm256_loadu_si256((const __m256i *)(codes + (size_t)tc * 32)), B, x);
#pragma GCC unroll 4
        for (int g = 0; g < QG; g++) a[g] = _mm256_add_epi32(a[g], dot8(x, B, W8 + (size_t)g * WV_MAX + F * tc, ones));
    }
#pragma GCC unroll 4
    for (int g = 0; g < QG; g++) {
        float *o = acc + (size_t)g * D;
        const __m256 t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a[g]), _mm256_set1_ps(wsc[g]), _mm256_set1_ps(bias[g]));
        _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), t));
    }
}

AI void v8_av_impl(const uint8_t *seg, const int B, const int D, int P, int n, const float *p, int m, float *acc) {
    if (P > KIVI_PMAX || D > KIVI_DMAX || D % 8) {
        const kvl_codec *c = B == 2 ? &kvl_codec_kivi2_v : &kvl_codec_kivi4_v;
        for (int g = 0; g < m; g++) c->ref.av(seg, D, P, n, p + (size_t)g * P, acc + (size_t)g * D);
        return;
    }
    if (n <= 0) return;
    const int F = 32 / B, NB = D / 8, NG = kivi_cdiv(D, KIVI_VG), ntc = kivi_cdiv(P, F), ntn = kivi_cdiv(n, F);
    int8_t W8[QG_MAX][WV_MAX];
    float wsc[QG_MAX], bias[QG_MAX] = {0};
    for (int G = 0; G < NG; G++) {
        const uint8_t *sh = seg + kivi_v_code_bytes(B, D, P) + (size_t)G * P * 2, *zh = sh + (size_t)NG * P * 2;
        for (int g0 = 0; g0 < m; g0 += QG_MAX) {
            const int QG = m - g0 < QG_MAX ? m - g0 : QG_MAX;
            for (int g = 0; g < QG; g++)
                bias[g] = v8_prep(sh, zh, n, p + (size_t)(g0 + g) * P, W8[g], &wsc[g]);
            const int kb1 = (G + 1) * (KIVI_VG / 8) < NB ? (G + 1) * (KIVI_VG / 8) : NB;
            for (int kb = G * (KIVI_VG / 8); kb < kb1; kb++) {
                const uint8_t *codes = seg + (size_t)kb * ntc * 32;
                float *a = acc + (size_t)g0 * D + (size_t)kb * 8;
                if (QG == 1) v8_tile(codes, ntn, B, 1, W8[0], wsc, bias, a, D);
                else if (QG == 2) v8_tile(codes, ntn, B, 2, W8[0], wsc, bias, a, D);
                else if (QG == 3) v8_tile(codes, ntn, B, 3, W8[0], wsc, bias, a, D);
                else v8_tile(codes, ntn, B, 4, W8[0], wsc, bias, a, D);
            }
        }
    }
}

/* D = 64 (the default model) and 32-token pages get their own instances with
 * the loops over channels / tokens unrolled at compile time. */
AI void k8_qk_multi(const uint8_t *seg, const int B, int D, int P, int n, const float *q, int m, float *scores) {
    if (D == 64) k8_qk_impl(seg, B, 64, P, n, q, m, scores);
    else k8_qk_impl(seg, B, D, P, n, q, m, scores);
}
AI void v8_av_multi(const uint8_t *seg, const int B, int D, int P, int n, const float *p, int m, float *acc) {
    if (D == 64 && n == 32) v8_av_impl(seg, B, 64, P, 32, p, m, acc);
    else if (D == 64) v8_av_impl(seg, B, 64, P, n, p, m, acc);
    else v8_av_impl(seg, B, D, P, n, p, m, acc);
}

/* ---- tables ------------------------------------------------------------------------------ */

static void k2_qk_multi(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *sc) {
    k8_qk_multi(seg, 2, D, P, n, q, m, sc);
}
static void k4_qk_multi(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *sc) {
    k8_qk_multi(seg, 4, D, P, n, q, m, sc);
}
static void k2_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *sc) {
    k8_qk_multi(seg, 2, D, P, n, q, 1, sc);
}
static void k4_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *sc) {
    k8_qk_multi(seg, 4, D, P, n, q, 1, sc);
}
static void v2_av_multi(const uint8_t *seg, int D, int P, int n, const float *p, int m, float *acc) {
    v8_av_multi(seg, 2, D, P, n, p, m, acc);
}
static void v4_av_multi(const uint8_t *seg, int D, int P, int n, const float *p, int m, float *acc) {
    v8_av_multi(seg, 4, D, P, n, p, m, acc);
}
static void v2_av(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {
    v8_av_multi(seg, 2, D, P, n, p, 1, acc);
}
static void v4_av(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {
    v8_av_multi(seg, 4, D, P, n, p, 1, acc);
}

int kvl_kivi_avx2_kernels(int bits, int is_v, int D, kvl_codec_kernels *out) {
    if (!kvl_cpu_has_avx2() || D % 8 != 0 || D > KIVI_DMAX || (bits != 2 && bits != 4)) return 0;
    const kvl_codec *c = is_v ? (bits == 2 ? &kvl_codec_kivi2_v : &kvl_codec_kivi4_v)
                              : (bits == 2 ? &kvl_codec_kivi2 : &kvl_codec_kivi4);
    *out = c->ref;
    out->isa = "avx2";
    if (is_v) {
        out->av = bits == 2 ? v2_av : v4_av;
        out->av_multi = bits == 2 ? v2_av_multi : v4_av_multi;
    } else {
        out->qk = bits == 2 ? k2_qk : k4_qk;
        out->qk_multi = bits == 2 ? k2_qk_multi : k4_qk_multi;
    }
    return 1;
}

#else /* no AVX2 in this build */

int kvl_kivi_avx2_kernels(int bits, int is_v, int D, kvl_codec_kernels *out) {
    (void)bits, (void)is_v, (void)D, (void)out;
    return 0;
}

#endif
