/* AVX2/FMA/F16C kernels of the KIVI codecs (layouts: kv/codec_kivi.h), fused
 * on the codes:
 *   qk (K, lanes = 8 tokens): score = sum_j qs_j c_ij + sum_j q_j z_j with
 *      qs_j = q_j s_j precomputed per page and query;
 *   av (V, lanes = 8 channels): acc_j += sum_i w_i c_ij + sum_i p_i z_ig with
 *      w_i = p_i s_ig precomputed per page, query and channel group.
 * Unpacking a field costs one AND (or one shift for the top field) and one
 * int->float conversion: field f is converted in place, as c * 2^(b f), and
 * the precomputed factor carries 2^-(b f) instead. Scaling by a power of two is
 * exact, so fma(qs 2^-bf, c 2^bf, a) == fma(qs, c, a) bit for bit (barring
 * f32 underflow of qs 2^-bf, i.e. |q s| < 2^-96).
 *
 * Per-query arithmetic is fixed (K: 4 partial sums over channel fields f % 4,
 * combined ((a0+a1)+(a2+a3)) + bias; V: 2 partial sums over token parity,
 * (a0 + a1) + bias), whatever the query count or the register tiling (token
 * blocks for K, channel blocks for V), so the multi-query forms are
 * bit-identical per query to the single-query ones; K scores of row i do not
 * depend on n (whole 8-token blocks are always computed); V rows i >= n enter
 * with weight 0, as rows with p[i] == 0 do.
 * Compiled with -mavx2 -mfma -mf16c; used only when kvl_cpu_has_avx2(). */
#include "kv/codec_kivi.h"

#include <string.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#define AI static inline __attribute__((always_inline))

extern const kvl_codec kvl_codec_kivi2, kvl_codec_kivi2_v, kvl_codec_kivi4, kvl_codec_kivi4_v;

/* 2^-(b f) for field f < F-1, 1 for the top field (extracted by a shift). */
static const float pw2[16] = {1.0f,       0x1p-2f,  0x1p-4f,  0x1p-6f,  0x1p-8f,  0x1p-10f,
                              0x1p-12f,   0x1p-14f, 0x1p-16f, 0x1p-18f, 0x1p-20f, 0x1p-22f,
                              0x1p-24f,   0x1p-26f, 0x1p-28f, 1.0f};
static const float pw4[8] = {1.0f, 0x1p-4f, 0x1p-8f, 0x1p-12f, 0x1p-16f, 0x1p-20f, 0x1p-24f, 1.0f};

static inline float hsum1(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline __m256 ld_h8(const uint8_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

/* Field f of each lane of w as float c * 2^(B f) (top field: c). */
AI __m256 unpack(__m256i w, const int B, const int f) {
    if (f == 32 / B - 1) return _mm256_cvtepi32_ps(_mm256_srli_epi32(w, 32 - B));
    return _mm256_cvtepi32_ps(_mm256_and_si256(w, _mm256_set1_epi32(((1 << B) - 1) << (B * f))));
}

/* ---- K ------------------------------------------------------------------------------- */

/* qs [njc*F] = (q_j s_j) * 2^-(B (j % F)) (top field: 1), 0 for j >= D;
 * returns sum_j q_j z_j (8 lanes in j order, then hsum). q: [D]. */
AI float k_prep(const uint8_t *seg, const int B, int D, int P, const float *q, float *qs) {
    const int F = 32 / B, nj = kivi_cdiv(D, F) * F;
    const float *pw = B == 2 ? pw2 : pw4;
    const uint8_t *s = seg + kivi_k_code_bytes(B, D, P), *z = s + (size_t)D * 2;
    __m256 b = _mm256_setzero_ps();
    for (int j = 0; j < D; j += 8) {
        const __m256 qv = _mm256_loadu_ps(q + j);
        b = _mm256_fmadd_ps(qv, ld_h8(z + 2 * j), b);
        _mm256_storeu_ps(qs + j, _mm256_mul_ps(_mm256_mul_ps(qv, ld_h8(s + 2 * j)), _mm256_loadu_ps(pw + j % F)));
    }
    for (int j = D; j < nj; j++) qs[j] = 0;
    return hsum1(b);
}

/* QG queries x TB token blocks of 8: out[g][t*8 + l] = score of token 8t + l.
 * codes: chunk (first block, 0); qs: [QG][QS]; bias: [QG]. */
AI void k_tile(const uint8_t *codes, int njc, const int B, const int QG, const int TB, const float *qs, int QS,
               const float *bias, float *out) {
    const int F = 32 / B;
    __m256 a[QG][TB][4];
    for (int g = 0; g < QG; g++)
        for (int t = 0; t < TB; t++)
            for (int h = 0; h < 4; h++) a[g][t][h] = _mm256_setzero_ps();
    for (int jc = 0; jc < njc; jc++) {
        __m256i w[TB];
        for (int t = 0; t < TB; t++)
            w[t] = _mm256_loadu_si256((const __m256i *)(codes + ((size_t)t * njc + jc) * 32));
        const float *qj = qs + (size_t)jc * F;
#pragma GCC unroll 16
        for (int f = 0; f < F; f++)
            for (int t = 0; t < TB; t++) {
                const __m256 x = unpack(w[t], B, f);
                for (int g = 0; g < QG; g++)
                    a[g][t][f & 3] = _mm256_fmadd_ps(_mm256_broadcast_ss(qj + (size_t)g * QS + f), x, a[g][t][f & 3]);
            }
    }
    for (int g = 0; g < QG; g++)
        for (int t = 0; t < TB; t++) {
            const __m256 r = _mm256_add_ps(_mm256_add_ps(a[g][t][0], a[g][t][1]), _mm256_add_ps(a[g][t][2], a[g][t][3]));
            _mm256_storeu_ps(out + ((size_t)g * TB + t) * 8, _mm256_add_ps(r, _mm256_set1_ps(bias[g])));
        }
}

#define QS_MAX (KIVI_DMAX + 16)

AI void k_qk_multi(const uint8_t *seg, const int B, int D, int P, int n, const float *q, int m, float *scores) {
    const kvl_codec *c = B == 2 ? &kvl_codec_kivi2 : &kvl_codec_kivi4;
    if (P > KIVI_PMAX || D > KIVI_DMAX || D % 8) {
        for (int g = 0; g < m; g++) c->ref.qk(seg, D, P, n, q + (size_t)g * D, scores + (size_t)g * P);
        return;
    }
    const int njc = kivi_cdiv(D, 32 / B), ntb = kivi_cdiv(n, 8);
    const size_t blk = (size_t)njc * 32; /* bytes of one token block's codes */
    float qs[3][QS_MAX], bias[3], out[3 * 16];
    for (int g0 = 0; g0 < m; g0 += 3) {
        const int QG = m - g0 < 3 ? m - g0 : 3;
        for (int g = 0; g < QG; g++) bias[g] = k_prep(seg, B, D, P, q + (size_t)(g0 + g) * D, qs[g]);
        for (int tb = 0; tb < ntb;) {
            const uint8_t *codes = seg + (size_t)tb * blk;
            int TB = 1;
            if (QG == 1 && tb + 2 <= ntb) k_tile(codes, njc, B, 1, 2, qs[0], QS_MAX, bias, out), TB = 2;
            else if (QG == 1) k_tile(codes, njc, B, 1, 1, qs[0], QS_MAX, bias, out);
            else if (QG == 2) k_tile(codes, njc, B, 2, 1, qs[0], QS_MAX, bias, out);
            else k_tile(codes, njc, B, 3, 1, qs[0], QS_MAX, bias, out);
            const int i0 = tb * 8, cnt = n - i0 < TB * 8 ? n - i0 : TB * 8;
            for (int g = 0; g < QG; g++)
                memcpy(scores + (size_t)(g0 + g) * P + i0, out + (size_t)g * TB * 8, sizeof(float) * cnt);
            tb += TB;
        }
    }
}

/* ---- V ------------------------------------------------------------------------------- */

#define WV_MAX (KIVI_PMAX + 16)

/* Weights of group G for one query: wv [ntc*F] = (p_i s_iG) * 2^-(B (i % F))
 * (top field: 1), 0 for i >= n; returns sum_i p_i z_iG over 8-token blocks
 * with rows i >= n as zeros (so they equal rows with p[i] == 0). */
AI float v_prep(const uint8_t *seg, const int B, int D, int P, int n, int G, const float *p, float *wv) {
    const int F = 32 / B, NG = kivi_cdiv(D, KIVI_VG), ni = kivi_cdiv(n, F) * F;
    const float *pw = B == 2 ? pw2 : pw4;
    const uint8_t *s = seg + kivi_v_code_bytes(B, D, P) + (size_t)G * P * 2, *z = s + (size_t)NG * P * 2;
    __m256 b = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 pv = _mm256_loadu_ps(p + i);
        b = _mm256_fmadd_ps(pv, ld_h8(z + 2 * i), b);
        _mm256_storeu_ps(wv + i, _mm256_mul_ps(_mm256_mul_ps(pv, ld_h8(s + 2 * i)), _mm256_loadu_ps(pw + i % F)));
    }
    if (i < n) {
        uint16_t st[8] = {0}, zt[8] = {0};
        float pt[8] = {0};
        memcpy(st, s + 2 * i, (size_t)(n - i) * 2);
        memcpy(zt, z + 2 * i, (size_t)(n - i) * 2);
        memcpy(pt, p + i, sizeof(float) * (size_t)(n - i));
        const __m256 pv = _mm256_loadu_ps(pt);
        b = _mm256_fmadd_ps(pv, ld_h8((const uint8_t *)zt), b);
        _mm256_storeu_ps(wv + i, _mm256_mul_ps(_mm256_mul_ps(pv, ld_h8((const uint8_t *)st)), _mm256_loadu_ps(pw + i % F)));
        i += 8;
    }
    for (; i < ni; i++) wv[i] = 0;
    return hsum1(b);
}

/* QG queries x CB channel blocks of 8 over token chunks [0, ntn). codes: chunk
 * (first block, 0), blocks ntc chunks apart; wv: [QG][WV_MAX]; bias: [QG];
 * acc: query 0's first column of the tile, queries D apart. */
AI void v_tile(const uint8_t *codes, int ntc, int ntn, const int B, const int QG, const int CB, const float *wv,
               const float *bias, float *acc, int D) {
    const int F = 32 / B;
    __m256 a[QG][CB][2];
    for (int g = 0; g < QG; g++)
        for (int c = 0; c < CB; c++) {
            a[g][c][0] = _mm256_loadu_ps(acc + (size_t)g * D + c * 8);
            a[g][c][1] = _mm256_setzero_ps();
        }
    for (int tc = 0; tc < ntn; tc++) {
        __m256i w[CB];
        for (int c = 0; c < CB; c++)
            w[c] = _mm256_loadu_si256((const __m256i *)(codes + ((size_t)c * ntc + tc) * 32));
        const float *wt = wv + (size_t)tc * F;
#pragma GCC unroll 16
        for (int f = 0; f < F; f++)
            for (int c = 0; c < CB; c++) {
                const __m256 x = unpack(w[c], B, f);
                for (int g = 0; g < QG; g++)
                    a[g][c][f & 1] = _mm256_fmadd_ps(_mm256_broadcast_ss(wt + (size_t)g * WV_MAX + f), x, a[g][c][f & 1]);
            }
    }
    for (int g = 0; g < QG; g++)
        for (int c = 0; c < CB; c++)
            _mm256_storeu_ps(acc + (size_t)g * D + c * 8,
                             _mm256_add_ps(_mm256_add_ps(a[g][c][0], a[g][c][1]), _mm256_set1_ps(bias[g])));
}

AI void v_av_multi(const uint8_t *seg, const int B, int D, int P, int n, const float *p, int m, float *acc) {
    const kvl_codec *cd = B == 2 ? &kvl_codec_kivi2_v : &kvl_codec_kivi4_v;
    if (P > KIVI_PMAX || D > KIVI_DMAX || D % 8) {
        for (int g = 0; g < m; g++) cd->ref.av(seg, D, P, n, p + (size_t)g * P, acc + (size_t)g * D);
        return;
    }
    if (n <= 0) return;
    const int F = 32 / B, NB = D / 8, NG = kivi_cdiv(D, KIVI_VG), ntc = kivi_cdiv(P, F), ntn = kivi_cdiv(n, F);
    float wv[4][WV_MAX], bias[4];
    for (int g0 = 0; g0 < m; g0 += 4) {
        const int QG = m - g0 < 4 ? m - g0 : 4;
        for (int G = 0; G < NG; G++) {
            for (int g = 0; g < QG; g++) bias[g] = v_prep(seg, B, D, P, n, G, p + (size_t)(g0 + g) * P, wv[g]);
            const int kb1 = (G + 1) * (KIVI_VG / 8) < NB ? (G + 1) * (KIVI_VG / 8) : NB;
            for (int kb = G * (KIVI_VG / 8); kb < kb1;) {
                const uint8_t *codes = seg + (size_t)kb * ntc * 32;
                float *a = acc + (size_t)g0 * D + (size_t)kb * 8;
                const int left = kb1 - kb;
                int CB;
                if (QG == 1 && left >= 4) v_tile(codes, ntc, ntn, B, 1, 4, wv[0], bias, a, D), CB = 4;
                else if (QG <= 2 && left >= 2) {
                    if (QG == 1) v_tile(codes, ntc, ntn, B, 1, 2, wv[0], bias, a, D);
                    else v_tile(codes, ntc, ntn, B, 2, 2, wv[0], bias, a, D);
                    CB = 2;
                } else {
                    if (QG == 1) v_tile(codes, ntc, ntn, B, 1, 1, wv[0], bias, a, D);
                    else if (QG == 2) v_tile(codes, ntc, ntn, B, 2, 1, wv[0], bias, a, D);
                    else if (QG == 3) v_tile(codes, ntc, ntn, B, 3, 1, wv[0], bias, a, D);
                    else v_tile(codes, ntc, ntn, B, 4, 1, wv[0], bias, a, D);
                    CB = 1;
                }
                kb += CB;
            }
        }
    }
}

/* ---- tables ------------------------------------------------------------------------------ */

static void k2_qk_multi(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *sc) {
    k_qk_multi(seg, 2, D, P, n, q, m, sc);
}
static void k4_qk_multi(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *sc) {
    k_qk_multi(seg, 4, D, P, n, q, m, sc);
}
static void k2_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *sc) {
    k_qk_multi(seg, 2, D, P, n, q, 1, sc);
}
static void k4_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *sc) {
    k_qk_multi(seg, 4, D, P, n, q, 1, sc);
}
static void v2_av_multi(const uint8_t *seg, int D, int P, int n, const float *p, int m, float *acc) {
    v_av_multi(seg, 2, D, P, n, p, m, acc);
}
static void v4_av_multi(const uint8_t *seg, int D, int P, int n, const float *p, int m, float *acc) {
    v_av_multi(seg, 4, D, P, n, p, m, acc);
}
static void v2_av(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {
    v_av_multi(seg, 2, D, P, n, p, 1, acc);
}
static void v4_av(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {
    v_av_multi(seg, 4, D, P, n, p, 1, acc);
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
