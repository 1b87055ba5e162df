/* AVX2 kernels of the KIVI codecs (layouts: kv/codec_kivi.h), fused on the
 * codes with integer multiply-adds:
 *   qk (K, 32-bit lanes = 8 tokens): score_i = sc * sum_j Q_j c_ij + sum_j q_j z_j,
 *      Q_j = round(q_j s_j / sc), sc = max_j |q_j s_j| / 32767, per page and query;
 *   av (V, 32-bit lanes = 8 channels): acc_j += sc_g * sum_i W_i c_ij + sum_i p_i z_ig,
 *      W_i = round(p_i s_ig / sc_g), sc_g = max_i |p_i s_ig| / 32767, per page,
 *      query and channel group g.
 * The factors (q_j s_j, p_i s_ig) are quantized to int16 per page, like
 * llama.cpp quantizes activations to 8 bits for its quantized-KV dot products
 * but twice as many bits; the codes are exact small integers, so each
 * vpmaddwd does 16 exact multiply-adds and the int32 sums are exact (no
 * overflow: 32767 * 15 * 512 < 2^31). 3-bit codes (two planes) are widened
 * to int16 with one extra shift/and/or per field; the compact parameters
 * (e5m3 scale, int8 zero point) are converted to the same f32 (s, min) as the
 * scalar decoder, so the kernels are otherwise those of kivi2 / kivi4. Error against the exact fused sum:
 *   qk: |d score_i| <= sc/2 * sum_j c_ij (+ f32 rounding of the final fma),
 *   av: |d acc_j|   <= sc_g/2 * sum_i c_ij (+ f32 rounding),
 * i.e. at most 2^-16 * maxq * D (resp. * n) times the largest factor, far
 * below the quantization error of the codes themselves. Pages whose largest
 * factor is below 2^-96 contribute only their z terms (factor 0).
 * Integer sums are order-free, so the multi-query forms are bit-identical per
 * query to the single-query ones whatever the tiling; K scores of row i do
 * not depend on n (whole 8-token blocks are computed); V rows i >= n enter
 * with weight 0, exactly as rows with p[i] == 0 do (the per-page scale is
 * taken over the same values).
 * Compiled with -mavx2 -mfma -mf16c; used only when kvl_cpu_has_avx2(). */
#include "kv/codec_kivi.h"

#include <string.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#define AI static inline __attribute__((always_inline))


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

/* f [cnt] (cnt % 8 == 0) -> int16 round(f * inv) (|f * inv| <= 32767). */
static inline void to_i16(const float *f, int cnt, float inv, int16_t *o) {
    const __m256 iv = _mm256_set1_ps(inv);
    for (int i = 0; i < cnt; i += 8) {
        const __m256i x = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(f + i), iv));
        _mm_storeu_si128((__m128i *)(o + i), _mm_packs_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1)));
    }
}

/* Field f of each 16-bit slot of w, as int16 (m: the field mask in every slot). */
AI __m256i unpack(__m256i w, __m256i m, const int B, const int f) {
    if (f == 16 / B - 1) return _mm256_srli_epi16(w, 16 - B);
    if (f == 0) return _mm256_and_si256(w, m);
    return _mm256_and_si256(_mm256_srli_epi16(w, B * f), m);
}

/* One chunk (kv/codec_kivi.h) as registers: w the 16 slots (B = 3: the low
 * plane), h (B = 3 only) the high plane widened to one byte per 16-bit slot. */
typedef struct { __m256i w, h; } chunk_t;
AI chunk_t ld_chunk(const uint8_t *p, const int B) {
    chunk_t c;
    c.w = _mm256_loadu_si256((const __m256i *)p);
    c.h = B == 3 ? _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p + 32))) : _mm256_setzero_si256();
    return c;
}
/* Codes of field f of every slot, as int16 (m: the mask of a B-bit field; B = 3: of 2 bits). */
AI __m256i field(chunk_t c, __m256i m, const int B, const int f) {
    if (B != 3) return unpack(c.w, m, B, f);
    const __m256i hi = f <= 2 ? _mm256_slli_epi16(c.h, 2 - f) : _mm256_srli_epi16(c.h, f - 2);
    return _mm256_or_si256(unpack(c.w, m, 2, f), _mm256_and_si256(hi, _mm256_set1_epi16(4)));
}
/* 8 compact parameters (bytes s8[8], z8[8]) as the decoder's floats s, min = -z8 s (exact). */
AI void ld_zpar8(const uint8_t *s8, const uint8_t *z8, __m256 *s, __m256 *mn) {
    const __m128i sb = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)s8));
    *s = _mm256_cvtph_ps(_mm_slli_epi16(sb, 7));
    const __m256 z = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)z8)));
    *mn = _mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), z), *s);
}

static inline __m256i pair(const int16_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* ---- K ------------------------------------------------------------------------------- */

#define QS_MAX (KIVI_DMAX + 16)

/* s, min [D] of the page as the decoder's floats (D % 8 == 0). */
static inline void k_params(const uint8_t *seg, int B, int Z, int D, int P, float *sf, float *zf) {
    const uint8_t *s = seg + kivi_k_code_bytes(B, D, P), *z = s + (size_t)D * kivi_pbytes(Z);
    for (int j = 0; j < D; j += 8) {
        if (Z) {
            __m256 sv, mv;
            ld_zpar8(s + j, z + j, &sv, &mv);
            _mm256_storeu_ps(sf + j, sv);
            _mm256_storeu_ps(zf + j, mv);
        } else {
            _mm256_storeu_ps(sf + j, ld_h8(s + 2 * j));
            _mm256_storeu_ps(zf + j, ld_h8(z + 2 * j));
        }
    }
}

/* One query: Q [njc*F] int16 (0 for j >= D), *sc; returns sum_j q_j z_j (8 lanes
 * in j order, then hsum). q, sf, zf: [D]. */
AI float k_prep(const float *sf, const float *zf, const int B, int D, const float *q, int16_t *Q, float *sc) {
    const int nj = kivi_cdiv(D, kivi_fields(B)) * kivi_fields(B);
    float qs[KIVI_DMAX];
    __m256 b = _mm256_setzero_ps(), mx = _mm256_setzero_ps();
    for (int j = 0; j < D; j += 8) {
        const __m256 qv = _mm256_loadu_ps(q + j), t = _mm256_mul_ps(qv, _mm256_loadu_ps(sf + j));
        b = _mm256_fmadd_ps(qv, _mm256_loadu_ps(zf + j), b);
        mx = _mm256_max_ps(mx, vabs(t));
        _mm256_storeu_ps(qs + j, t);
    }
    const float am = hmax1(mx);
    if (am >= TINY) {
        to_i16(qs, D, 32767.0f / am, Q);
        *sc = am / 32767.0f;
    } else {
        memset(Q, 0, sizeof(int16_t) * (size_t)D);
        *sc = 0;
    }
    for (int j = D; j < nj; j++) Q[j] = 0;
    return hsum1(b);
}

/* QG queries x TB token blocks of 8: out[g][t*8 + l] = score of token 8t + l.
 * codes: chunk (first block, 0); Q: [QG][QS_MAX]. */
AI void k_tile(const uint8_t *codes, int njc, const int B, const int QG, const int TB, const int16_t *Q,
               const float *sc, const float *bias, float *out) {
    const int F = kivi_fields(B), CBY = kivi_chunk_bytes(B);
    const __m256i m = _mm256_set1_epi16((short)((1 << (B == 3 ? 2 : B)) - 1));
    __m256i a[QG_MAX][2]; /* [QG][TB], fixed sizes (no VLA) so that it lives in registers */
#pragma GCC unroll 4
    for (int g = 0; g < QG; g++)
#pragma GCC unroll 2
        for (int t = 0; t < TB; t++) a[g][t] = _mm256_setzero_si256();
    for (int jc = 0; jc < njc; jc++) {
        chunk_t w[2];
#pragma GCC unroll 2
        for (int t = 0; t < TB; t++) w[t] = ld_chunk(codes + ((size_t)t * njc + jc) * CBY, B);
        const int16_t *qj = Q + (size_t)jc * F;
#pragma GCC unroll 8
        for (int f = 0; f < F / 2; f++) {
            __m256i x[2];
#pragma GCC unroll 2
            for (int t = 0; t < TB; t++) x[t] = field(w[t], m, B, f);
#pragma GCC unroll 4
            for (int g = 0; g < QG; g++) {
                const __m256i pr = pair(qj + (size_t)g * QS_MAX + 2 * f);
#pragma GCC unroll 2
                for (int t = 0; t < TB; t++) a[g][t] = _mm256_add_epi32(a[g][t], _mm256_madd_epi16(x[t], pr));
            }
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < QG; g++)
#pragma GCC unroll 2
        for (int t = 0; t < TB; t++)
            _mm256_storeu_ps(out + ((size_t)g * TB + t) * 8,
                             _mm256_fmadd_ps(_mm256_cvtepi32_ps(a[g][t]), _mm256_set1_ps(sc[g]), _mm256_set1_ps(bias[g])));
}

AI void k_qk_multi(const uint8_t *seg, const int B, const int Z, int D, int P, int n, const float *q, int m,
                   float *scores) {
    const kvl_codec *c = kvl_kivi_codec(B, Z, 0);
    if (P > KIVI_PMAX || D > KIVI_DMAX || D % 8) {
        for (int g = 0; g < m; g++) c->ref.qk(seg, D, P, n, q + (size_t)g * D, scores + (size_t)g * P);
        return;
    }
    const int njc = kivi_cdiv(D, kivi_fields(B)), ntb = kivi_cdiv(n, 8);
    const size_t blk = (size_t)njc * kivi_chunk_bytes(B); /* bytes of one token block's codes */
    int16_t Q[QG_MAX][QS_MAX];
    float sc[QG_MAX] = {0}, bias[QG_MAX] = {0}, out[QG_MAX * 16], sf[KIVI_DMAX], zf[KIVI_DMAX];
    k_params(seg, B, Z, D, P, sf, zf);
    for (int g0 = 0; g0 < m; g0 += QG_MAX) {
        const int QG = m - g0 < QG_MAX ? m - g0 : QG_MAX;
        for (int g = 0; g < QG; g++) bias[g] = k_prep(sf, zf, B, D, q + (size_t)(g0 + g) * D, Q[g], &sc[g]);
        for (int tb = 0; tb < ntb;) {
            const uint8_t *codes = seg + (size_t)tb * blk;
            const int TB = 1;
            if (TB == 2) {
                if (QG == 1) k_tile(codes, njc, B, 1, 2, Q[0], sc, bias, out);
                else if (QG == 2) k_tile(codes, njc, B, 2, 2, Q[0], sc, bias, out);
                else if (QG == 3) k_tile(codes, njc, B, 3, 2, Q[0], sc, bias, out);
                else k_tile(codes, njc, B, 4, 2, Q[0], sc, bias, out);
            } else {
                if (QG == 1) k_tile(codes, njc, B, 1, 1, Q[0], sc, bias, out);
                else if (QG == 2) k_tile(codes, njc, B, 2, 1, Q[0], sc, bias, out);
                else if (QG == 3) k_tile(codes, njc, B, 3, 1, Q[0], sc, bias, out);
                else k_tile(codes, njc, B, 4, 1, Q[0], sc, bias, out);
            }
            const int i0 = tb * 8, cnt = n - i0 < TB * 8 ? n - i0 : TB * 8;
            for (int g = 0; g < QG; g++)
                memcpy(scores + (size_t)(g0 + g) * P + i0, out + (size_t)g * TB * 8, sizeof(float) * cnt);
            tb += TB;
        }
    }
}

/* ---- V ------------------------------------------------------------------------------- */

#define WV_MAX (KIVI_PMAX + 32)

/* s, min of group G for tokens [0, n8) as the decoder's floats, rows i >= n as 0. */
static inline void v_params(const uint8_t *seg, int B, int Z, int D, int P, int n, int G, float *sf, float *zf) {
    const int NG = kivi_cdiv(D, KIVI_VG), pb = kivi_pbytes(Z);
    const uint8_t *s = seg + kivi_v_code_bytes(B, D, P) + (size_t)G * P * pb, *z = s + (size_t)NG * P * pb;
    for (int i = 0; i < n; i += 8) {
        uint8_t st[16] = {0}, zt[16] = {0}; /* 8 parameters, zero beyond n */
        const int cnt = n - i < 8 ? n - i : 8;
        memcpy(st, s + (size_t)i * pb, (size_t)cnt * pb);
        memcpy(zt, z + (size_t)i * pb, (size_t)cnt * pb);
        __m256 sv, mv;
        if (Z) ld_zpar8(st, zt, &sv, &mv);
        else sv = ld_h8(st), mv = ld_h8(zt);
        _mm256_storeu_ps(sf + i, sv);
        _mm256_storeu_ps(zf + i, mv);
    }
}

/* One query, one group: W [ntn*F] int16 (0 for i >= n), *sc; returns
 * sum_i p_i z_i over 8-token blocks, rows i >= n as zeros (so that they equal
 * rows with p[i] == 0). p: [n]; sf, zf: [n8] from v_params. */
AI float v_prep(const float *sf, const float *zf, const int B, int n, const float *p, int16_t *W, float *sc) {
    const int F = kivi_fields(B), ni = kivi_cdiv(n, F) * F, n8 = kivi_cdiv(n, 8) * 8;
    float wf[WV_MAX];
    __m256 b = _mm256_setzero_ps(), mx = _mm256_setzero_ps();
    for (int i = 0; i < n8; i += 8) {
        __m256 pv;
        if (i + 8 <= n) pv = _mm256_loadu_ps(p + i);
        else {
            float pt[8] = {0};
            memcpy(pt, p + i, sizeof(float) * (size_t)(n - i));
            pv = _mm256_loadu_ps(pt);
        }
        const __m256 t = _mm256_mul_ps(pv, _mm256_loadu_ps(sf + i));
        b = _mm256_fmadd_ps(pv, _mm256_loadu_ps(zf + i), b);
        mx = _mm256_max_ps(mx, vabs(t));
        _mm256_storeu_ps(wf + i, t);
    }
    const float am = hmax1(mx);
    if (am >= TINY) {
        to_i16(wf, n8, 32767.0f / am, W);
        *sc = am / 32767.0f;
    } else {
        memset(W, 0, sizeof(int16_t) * (size_t)n8);
        *sc = 0;
    }
    for (int i = n8; i < ni; i++) W[i] = 0;
    return hsum1(b);
}

/* QG queries x CB channel blocks of 8 over token chunks [0, ntn). codes: chunk
 * (first block, 0), blocks ntc chunks apart; W: [QG][WV_MAX]; acc: query 0's
 * first column of the tile, queries D apart. */
AI void v_tile(const uint8_t *codes, int ntc, int ntn, const int B, const int QG, const int CB, const int16_t *W,
               const float *sc, const float *bias, float *acc, int D) {
    const int F = kivi_fields(B), CBY = kivi_chunk_bytes(B);
    const __m256i m = _mm256_set1_epi16((short)((1 << (B == 3 ? 2 : B)) - 1));
    __m256i a[QG_MAX][2]; /* [QG][CB] */
#pragma GCC unroll 4
    for (int g = 0; g < QG; g++)
#pragma GCC unroll 2
        for (int c = 0; c < CB; c++) a[g][c] = _mm256_setzero_si256();
    for (int tc = 0; tc < ntn; tc++) {
        chunk_t w[2];
#pragma GCC unroll 2
        for (int c = 0; c < CB; c++) w[c] = ld_chunk(codes + ((size_t)c * ntc + tc) * CBY, B);
        const int16_t *wt = W + (size_t)tc * F;
#pragma GCC unroll 8
        for (int f = 0; f < F / 2; f++) {
            __m256i x[2];
#pragma GCC unroll 2
            for (int c = 0; c < CB; c++) x[c] = field(w[c], m, B, f);
#pragma GCC unroll 4
            for (int g = 0; g < QG; g++) {
                const __m256i pr = pair(wt + (size_t)g * WV_MAX + 2 * f);
#pragma GCC unroll 2
                for (int c = 0; c < CB; c++) a[g][c] = _mm256_add_epi32(a[g][c], _mm256_madd_epi16(x[c], pr));
            }
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < QG; g++)
#pragma GCC unroll 2
        for (int c = 0; c < CB; c++) {
            float *o = acc + (size_t)g * D + c * 8;
            const __m256 t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a[g][c]), _mm256_set1_ps(sc[g]), _mm256_set1_ps(bias[g]));
            _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), t));
        }
}

AI void v_av_multi(const uint8_t *seg, const int B, const int Z, int D, int P, int n, const float *p, int m,
                   float *acc) {
    const kvl_codec *cd = kvl_kivi_codec(B, Z, 1);
    if (P > KIVI_PMAX || D > KIVI_DMAX || D % 8) {
        for (int g = 0; g < m; g++) cd->ref.av(seg, D, P, n, p + (size_t)g * P, acc + (size_t)g * D);
        return;
    }
    if (n <= 0) return;
    const int F = kivi_fields(B), NB = D / 8, NG = kivi_cdiv(D, KIVI_VG), ntc = kivi_cdiv(P, F), ntn = kivi_cdiv(n, F);
    int16_t W[QG_MAX][WV_MAX];
    float sc[QG_MAX] = {0}, bias[QG_MAX] = {0}, sf[KIVI_PMAX + 8], zf[KIVI_PMAX + 8];
    for (int G = 0; G < NG; G++) {
        v_params(seg, B, Z, D, P, n, G, sf, zf);
        for (int g0 = 0; g0 < m; g0 += QG_MAX) {
            const int QG = m - g0 < QG_MAX ? m - g0 : QG_MAX;
            for (int g = 0; g < QG; g++) bias[g] = v_prep(sf, zf, B, n, p + (size_t)(g0 + g) * P, W[g], &sc[g]);
            const int kb1 = (G + 1) * (KIVI_VG / 8) < NB ? (G + 1) * (KIVI_VG / 8) : NB;
            for (int kb = G * (KIVI_VG / 8); kb < kb1;) {
                const uint8_t *codes = seg + (size_t)kb * ntc * kivi_chunk_bytes(B);
                float *a = acc + (size_t)g0 * D + (size_t)kb * 8;
                const int CB = 1;
                if (CB == 2) {
                    if (QG == 1) v_tile(codes, ntc, ntn, B, 1, 2, W[0], sc, bias, a, D);
                    else if (QG == 2) v_tile(codes, ntc, ntn, B, 2, 2, W[0], sc, bias, a, D);
                    else if (QG == 3) v_tile(codes, ntc, ntn, B, 3, 2, W[0], sc, bias, a, D);
                    else v_tile(codes, ntc, ntn, B, 4, 2, W[0], sc, bias, a, D);
                } else {
                    if (QG == 1) v_tile(codes, ntc, ntn, B, 1, 1, W[0], sc, bias, a, D);
                    else if (QG == 2) v_tile(codes, ntc, ntn, B, 2, 1, W[0], sc, bias, a, D);
                    else if (QG == 3) v_tile(codes, ntc, ntn, B, 3, 1, W[0], sc, bias, a, D);
                    else v_tile(codes, ntc, ntn, B, 4, 1, W[0], sc, bias, a, D);
                }
                kb += CB;
            }
        }
    }
}

/* ---- tables ------------------------------------------------------------------------------ */

#define KIVI_AVX2(N, B, Z)                                                                                   \
    static void k##N##_qk_multi(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *sc) { \
        k_qk_multi(seg, B, Z, D, P, n, q, m, sc);                                                            \
    }                                                                                                        \
    static void k##N##_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *sc) {              \
        k_qk_multi(seg, B, Z, D, P, n, q, 1, sc);                                                            \
    }                                                                                                        \
    static void v##N##_av_multi(const uint8_t *seg, int D, int P, int n, const float *p, int m, float *acc) { \
        v_av_multi(seg, B, Z, D, P, n, p, m, acc);                                                           \
    }                                                                                                        \
    static void v##N##_av(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {             \
        v_av_multi(seg, B, Z, D, P, n, p, 1, acc);                                                           \
    }

KIVI_AVX2(2, 2, 0)
KIVI_AVX2(4, 4, 0)
KIVI_AVX2(2z, 2, 1)
KIVI_AVX2(3z, 3, 1)
KIVI_AVX2(4z, 4, 1)

int kvl_kivi_avx2_kernels(int bits, int z, int is_v, int D, kvl_codec_kernels *out) {
    const kvl_codec *c = kvl_kivi_codec(bits, z, is_v);
    if (!c || !kvl_cpu_has_avx2() || D % 8 != 0 || D > KIVI_DMAX) return 0;
    static const struct {
        int bits, z;
        kvl_codec_qk_fn qk;
        kvl_codec_qk_multi_fn qk_multi;
        kvl_codec_av_fn av;
        kvl_codec_av_multi_fn av_multi;
    } t[] = {{2, 0, k2_qk, k2_qk_multi, v2_av, v2_av_multi},     {4, 0, k4_qk, k4_qk_multi, v4_av, v4_av_multi},
             {2, 1, k2z_qk, k2z_qk_multi, v2z_av, v2z_av_multi}, {3, 1, k3z_qk, k3z_qk_multi, v3z_av, v3z_av_multi},
             {4, 1, k4z_qk, k4z_qk_multi, v4z_av, v4z_av_multi}};
    for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
        if (t[k].bits != bits || t[k].z != !!z) continue;
        *out = c->ref;
        out->isa = "avx2";
        if (is_v) {
            out->av = t[k].av;
            out->av_multi = t[k].av_multi;
        } else {
            out->qk = t[k].qk;
            out->qk_multi = t[k].qk_multi;
        }
        return 1;
    }
    return 0;
}

#else /* no AVX2 in this build */

int kvl_kivi_avx2_kernels(int bits, int z, int is_v, int D, kvl_codec_kernels *out) {
    (void)bits, (void)z, (void)is_v, (void)D, (void)out;
    return 0;
}

#endif
