/* KIVI sealing codecs (Liu et al., "KIVI: A Tuning-Free Asymmetric 2bit
 * Quantization for KV Cache", arXiv 2402.02750): kivi2 / kivi4 for keys
 * (per channel over the page's P tokens) and their hidden V twins kivi2v /
 * kivi4v (per token, groups of KIVI_VG = 32 channels). Rows of an open page
 * are f16; seal() repacks a full page. Scalar reference kernels work on the
 * codes directly (no dequantized copy):
 *   K: score_i = sum_j (q_j s_j) c_ij + sum_j q_j z_j
 *   V: acc_j  += sum_i (p_i s_ig) c_ij + p_i z_ig
 * Layouts: kv/codec_kivi.h. AVX2 kernels: codec_kivi_avx2.c.
 *
 * Quantization (as KIVI's quant_and_pack_*: min/max asymmetric, round to
 * nearest even after clamping to [0, 2^b-1]), with the parameters made exactly
 * representable in f16 before the codes are computed, so that the stored
 * parameters are the ones the codes were rounded against:
 *   z = min (exact: the open rows are f16 already),
 *   s = (max - min) / (2^b - 1) rounded UP to f16 (so z + (2^b-1) s >= max),
 *   c = clamp(nearbyint((x - z) / s), 0, 2^b - 1)   (s == 0: c = 0).
 * Hence for every element of the open (f16) page |x - (s c + z)| <= s / 2 in
 * exact arithmetic, with s <= (max - min)/(2^b-1) * (1 + 2^-10) + 2^-24.
 * Non-finite open values (never produced by finite models) are clamped to
 * +-65504 (NaN to 0) so a sealed page never holds inf or NaN parameters.
 * The seal is scalar only (double math, deterministic, the same in every
 * build); f16 values are finite, so max - min <= 131008 and s never
 * overflows f16.
 *
 * Compact variants kivi2z / kivi3z / kivi4z (+ V twins kivi2zv / kivi3zv /
 * kivi4zv; 2.5 / 3.5 / 4.5 bits/value at D=64, P=32): the same groups and
 * codes, parameters as int4z's (e5m3 scale s, int8 zero point z8, min =
 * -z8 s; kv/codec_kivi.h). Chosen as int4z chooses them, generalised to
 * maxq = 2^b - 1: s = the smallest e5m3 >= max((max - min) / maxq,
 * max|x| / (127 - maxq)) whose z8 = ceil(-min / s) covers [min, max]
 * (-z8 s <= min, (maxq - z8) s >= max, checked exactly: the products have
 * <= 12 significant bits). Any s >= (max - min) / (maxq - 1) covers, so
 *   s <= max((max - min) / (maxq - 1), max|x| / (127 - maxq)) (1 + 2^-3) + 2^-17
 * and, the decode s (c - z8) being exact in f32, |x - xhat| <= s / 2 for every
 * open (f16) value; a constant group is exact only when it lies on the grid. */
#include "kv/codec_kivi.h"

#include <math.h>
#include <string.h>

#include "kv/codec_q.h"
#include "kv/codec_spec.h"
#include "util/fp16.h"

extern const kvl_codec kvl_codec_f16;

/* ---- helpers ------------------------------------------------------------------------ */

/* Open-page element as a finite float (inf -> +-65504, NaN -> 0). */
static inline float open_val(uint16_t h) {
    if ((h & 0x7c00u) == 0x7c00u) return (h & 0x3ffu) ? 0.0f : ((h & 0x8000u) ? -65504.0f : 65504.0f);
    return kvl_fp16_to_fp32(h);
}

/* Smallest f16 >= x, for 0 <= x <= 65504 (bits of a non-negative half). */
static uint16_t f16_up(double x) {
    if (!(x > 0)) return 0;
    uint16_t h = kvl_fp32_to_fp16((float)x);
    if (h > 0x7bffu) h = 0x7bffu;
    while (h > 0 && (double)kvl_fp16_to_fp32((uint16_t)(h - 1)) >= x) h--;
    while (h < 0x7bffu && (double)kvl_fp16_to_fp32(h) < x) h++;
    return h;
}

/* Smallest e5m3 byte whose scale is >= x (x >= 0; capped at 0xF7 = 61440). */
static uint8_t e5m3_up(double x) {
    if (!(x > 0)) return 0;
    if (x > 57344.0) return 0xF7;
    uint8_t b = (uint8_t)(f16_up(x) >> 7);
    while (b < 0xF7 && (double)kivi_e5m3(b) < x) b++;
    return b;
}

static inline uint16_t rd16(const uint8_t *p) {
    uint16_t w;
    memcpy(&w, p, 2);
    return w;
}
static inline float ldh(const uint8_t *p) { return kvl_fp16_to_fp32(rd16(p)); }

/* Decoder parameters (s, min) of group idx of N; prm: the segment's parameter
 * arrays (s[N] then z[N], f16 or bytes; kv/codec_kivi.h). */
static inline void par(const uint8_t *prm, int z, size_t N, size_t idx, float *s, float *mn) {
    if (z) kivi_zparams(prm[idx], prm[N + idx], s, mn);
    else {
        *s = ldh(prm + 2 * idx);
        *mn = ldh(prm + 2 * (N + idx));
    }
}

/* Compact parameters, spec parameter fit=auto|cover|mse (K and V sides each
 * get their own instance state): keep the smallest covering pair (cover:
 * error <= s/2 everywhere) or search a few pairs for the least squared error
 * (mse: clipping allowed; KIVI_Z_STEPS e5m3 steps below the covering scale).
 * auto (default): mse at 2 bits, cover at 3 and 4 bits, on either side.
 * Measured on SmolLM2-135M, wikitext-2 valid (bench/results/kiviz.md):
 * `kvlite eval kv-error` shows mse lowering V's attention-output error at
 * every width but raising K's at 3 and 4 bits (clipping a channel's outlier
 * tokens moves their scores); `kvlite eval kld` confirms mse only at 2 bits
 * (K kivi3z / V kivi2z KLD 0.106 -> 0.092 with V mse) and prefers cover at
 * 3 bits (kivi3z 0.052 cover vs 0.055 with V mse); at 4 bits the fits are
 * within noise (0.0147 / 0.0152 / 0.0157). Without state (tests, NULL st)
 * the seal covers. */
#define KIVI_Z_STEPS 3
typedef struct { int mse; } kivi_state;

/* Squared reconstruction error of x[0..cnt) (stride xs) against scale s and
 * zero point z (min = -z s), codes rounded and clamped as code_of does. */
static double group_sse(const uint16_t *x, size_t xs, int cnt, int maxq, float s, float z) {
    const double mn = -(double)z * s;
    double e = 0;
    for (int i = 0; i < cnt; i++) {
        const double v = open_val(x[(size_t)i * xs]);
        double q = s > 0 ? nearbyint((v - mn) / s) : 0;
        q = q < 0 ? 0 : (q > maxq ? maxq : q);
        const double d = v - (mn + q * s);
        e += d * d;
    }
    return e;
}

/* Choose and store the parameters of the values x[0..cnt) (stride xs halves)
 * as group idx of N; *s, *mn: the decoder's values (module comment). */
static void group_params(const uint16_t *x, size_t xs, int cnt, int bits, int z, int mse, uint8_t *prm,
                         size_t N, size_t idx, float *s, float *mn) {
    float lo = open_val(x[0]), hi = lo;
    for (int i = 1; i < cnt; i++) {
        const float v = open_val(x[(size_t)i * xs]);
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    const int maxq = (1 << bits) - 1;
    if (!z) {
        const uint16_t s16 = f16_up(((double)hi - (double)lo) / maxq);
        const uint16_t z16 = kvl_fp32_to_fp16(lo); /* exact: lo is an f16 value */
        memcpy(prm + 2 * idx, &s16, 2);
        memcpy(prm + 2 * (N + idx), &z16, 2);
    } else {
        const double amax = fmax(fabs((double)lo), fabs((double)hi));
        uint8_t sb = e5m3_up(fmax(((double)hi - (double)lo) / maxq, amax / (127 - maxq)));
        float zf = 0;
        for (;;) { /* at most a few steps: s >= (hi - lo) / (maxq - 1) always covers */
            const float sv = kivi_e5m3(sb);
            zf = sv > 0 ? ceilf(-lo / sv) : 0;
            zf = zf > 127 ? 127 : (zf < -128 ? -128 : zf);
            const float m = -zf * sv;
            if ((m <= lo && m + (float)maxq * sv >= hi) || sb >= 0xF7) break;
            sb++;
        }
        if (mse) {
        /* The covering (sb, zf) bounds every error by s/2, but the e5m3 grid
         * and the integer zero point leave up to 1/maxq of the code range
         * unused. Also try the KIVI_Z_STEPS scales below it with the zero
         * points around min / centred, keeping the smallest squared error
         * over the group (clipping allowed; the covering pair first, so its
         * error bounds the result's). */
        double best = group_sse(x, xs, cnt, maxq, kivi_e5m3(sb), zf);
        const uint8_t sb_cov = sb;
        for (int d = 0; d <= KIVI_Z_STEPS && best > 0; d++) {
            if (d > sb_cov) break;
            const uint8_t cb = (uint8_t)(sb_cov - d);
            const float sv = kivi_e5m3(cb);
            if (!(sv > 0)) break;
            const float zc[4] = {ceilf(-lo / sv), floorf(-lo / sv), nearbyintf(-lo / sv),
                                 nearbyintf(-(lo + hi) / (2 * sv) + maxq * 0.5f)};
            for (int k = 0; k < 4; k++) {
                const float zk = zc[k] > 127 ? 127 : (zc[k] < -128 ? -128 : zc[k]);
                const double e = group_sse(x, xs, cnt, maxq, sv, zk);
                if (e < best) best = e, sb = cb, zf = zk;
            }
        }
        }
        prm[idx] = sb;
        prm[N + idx] = (uint8_t)(int8_t)zf;
    }
    par(prm, z, N, idx, s, mn);
}

/* Code of open value h against a group's decoder parameters (s, mn). */
static inline uint32_t code_of(uint16_t h, float s, float mn, int bits) {
    const int maxq = (1 << bits) - 1;
    double q = s > 0 ? nearbyint(((double)open_val(h) - mn) / s) : 0;
    q = q < 0 ? 0 : (q > maxq ? maxq : q);
    return (uint32_t)q;
}

/* Code in field f of slot t of the chunk at ch (kv/codec_kivi.h). */
static inline int chunk_get(const uint8_t *ch, int bits, int t, int f) {
    if (bits == 3) return ((rd16(ch + 2 * t) >> (2 * f)) & 3) | (((ch[32 + t] >> f) & 1) << 2);
    return (rd16(ch + 2 * t) >> (bits * f)) & ((1 << bits) - 1);
}
/* OR code c into field f of slot t (the field holds 0). */
static inline void chunk_or(uint8_t *ch, int bits, int t, int f, uint32_t c) {
    const uint16_t w = (uint16_t)(rd16(ch + 2 * t) | ((bits == 3 ? (c & 3) << (2 * f) : c << (bits * f))));
    memcpy(ch + 2 * t, &w, 2);
    if (bits == 3) ch[32 + t] |= (uint8_t)((c >> 2) << f);
}

/* ---- K: per channel ------------------------------------------------------------------- */

/* K code (token i, channel j): chunk (i/8, j/F), slot 2 (i%8) + (j%F)%2, field (j%F)/2. */
static inline size_t k_chunk(int bits, int D, int i, int j) {
    const int F = kivi_fields(bits), njc = kivi_cdiv(D, F);
    return ((size_t)(i / 8) * njc + j / F) * (size_t)kivi_chunk_bytes(bits);
}
static inline int k_slot(int bits, int i, int j) { return 2 * (i % 8) + (j % kivi_fields(bits)) % 2; }
static inline int k_field(int bits, int j) { return (j % kivi_fields(bits)) / 2; }
static inline int k_code(const uint8_t *seg, int bits, int D, int i, int j) {
    return chunk_get(seg + k_chunk(bits, D, i, j), bits, k_slot(bits, i, j), k_field(bits, j));
}

static void k_seal(int bits, int z, int mse, uint8_t *dst, const uint8_t *open_seg, int D, int P) {
    const size_t cb = kivi_k_code_bytes(bits, D, P);
    memset(dst, 0, cb);
    const uint16_t *x = (const uint16_t *)open_seg; /* [P][D] */
    uint8_t *prm = dst + cb;
    for (int j = 0; j < D; j++) {
        float s, mn;
        group_params(x + j, (size_t)D, P, bits, z, mse, prm, (size_t)D, (size_t)j, &s, &mn);
        for (int i = 0; i < P; i++)
            chunk_or(dst + k_chunk(bits, D, i, j), bits, k_slot(bits, i, j), k_field(bits, j),
                     code_of(x[(size_t)i * D + j], s, mn, bits));
    }
}

void kvl_kivi_k_put_channel(int bits, uint8_t *seg, int D, int P, int j, const uint8_t *c, uint16_t s16,
                            uint16_t z16) {
    for (int i = 0; i < P; i++) {
        uint8_t *ch = seg + k_chunk(bits, D, i, j);
        const int t = k_slot(bits, i, j), f = k_field(bits, j);
        /* clear the field, then set it */
        uint16_t w = rd16(ch + 2 * t);
        w &= (uint16_t)~(bits == 3 ? 3u << (2 * f) : ((1u << bits) - 1) << (bits * f));
        memcpy(ch + 2 * t, &w, 2);
        if (bits == 3) ch[32 + t] &= (uint8_t)~(1u << f);
        chunk_or(ch, bits, t, f, c[i]);
    }
    uint8_t *prm = seg + kivi_k_code_bytes(bits, D, P);
    memcpy(prm + 2 * (size_t)j, &s16, 2);
    memcpy(prm + 2 * (size_t)D + 2 * (size_t)j, &z16, 2);
}

static void k_decode(int bits, int z, const uint8_t *seg, int D, int P, int i, float *x) {
    const uint8_t *prm = seg + kivi_k_code_bytes(bits, D, P);
    for (int j = 0; j < D; j++) {
        float s, mn;
        par(prm, z, (size_t)D, (size_t)j, &s, &mn);
        x[j] = s * (float)k_code(seg, bits, D, i, j) + mn;
    }
}

/* score_i = sum_j q_j z_j + sum_j (q_j s_j) c_ij, j in order (z_j: the min). */
static void k_qk(int bits, int z, const uint8_t *seg, int D, int P, int n, const float *q, float *scores) {
    const uint8_t *prm = seg + kivi_k_code_bytes(bits, D, P);
    float bias = 0;
    for (int j = 0; j < D; j++) {
        float s, mn;
        par(prm, z, (size_t)D, (size_t)j, &s, &mn);
        bias += q[j] * mn;
    }
    for (int i = 0; i < n; i++) {
        float a = 0;
        for (int j = 0; j < D; j++) {
            float s, mn;
            par(prm, z, (size_t)D, (size_t)j, &s, &mn);
            a += (q[j] * s) * (float)k_code(seg, bits, D, i, j);
        }
        scores[i] = bias + a;
    }
}

/* ---- V: per token, groups of KIVI_VG channels ----------------------------------------- */

/* V code (token i, channel j): chunk (j/8, i/F), slot 2 (j%8) + (i%F)%2, field (i%F)/2. */
static inline size_t v_chunk(int bits, int P, int i, int j) {
    const int F = kivi_fields(bits), ntc = kivi_cdiv(P, F);
    return ((size_t)(j / 8) * ntc + i / F) * (size_t)kivi_chunk_bytes(bits);
}
static inline int v_slot(int bits, int i, int j) { return 2 * (j % 8) + (i % kivi_fields(bits)) % 2; }
static inline int v_field(int bits, int i) { return (i % kivi_fields(bits)) / 2; }
static inline int v_code(const uint8_t *seg, int bits, int P, int i, int j) {
    return chunk_get(seg + v_chunk(bits, P, i, j), bits, v_slot(bits, i, j), v_field(bits, i));
}
/* Parameters of (token i, group of channel j). */
static inline void v_par(const uint8_t *prm, int z, int D, int P, int i, int j, float *s, float *mn) {
    par(prm, z, (size_t)kivi_cdiv(D, KIVI_VG) * P, (size_t)(j / KIVI_VG) * P + i, s, mn);
}

static void v_seal(int bits, int z, int mse, uint8_t *dst, const uint8_t *open_seg, int D, int P) {
    const size_t cb = kivi_v_code_bytes(bits, D, P);
    memset(dst, 0, cb);
    const uint16_t *x = (const uint16_t *)open_seg; /* [P][D] */
    const int NG = kivi_cdiv(D, KIVI_VG);
    uint8_t *prm = dst + cb;
    for (int i = 0; i < P; i++)
        for (int g = 0; g < NG; g++) {
            const int j0 = g * KIVI_VG, cnt = D - j0 < KIVI_VG ? D - j0 : KIVI_VG;
            const uint16_t *xr = x + (size_t)i * D + j0;
            float s, mn;
            group_params(xr, 1, cnt, bits, z, mse, prm, (size_t)NG * P, (size_t)g * P + i, &s, &mn);
            for (int k = 0; k < cnt; k++)
                chunk_or(dst + v_chunk(bits, P, i, j0 + k), bits, v_slot(bits, i, j0 + k), v_field(bits, i),
                         code_of(xr[k], s, mn, bits));
        }
}

static void v_decode(int bits, int z, const uint8_t *seg, int D, int P, int i, float *x) {
    const uint8_t *prm = seg + kivi_v_code_bytes(bits, D, P);
    for (int j = 0; j < D; j++) {
        float s, mn;
        v_par(prm, z, D, P, i, j, &s, &mn);
        x[j] = s * (float)v_code(seg, bits, P, i, j) + mn;
    }
}

/* acc_j += (p_i s_ig) c_ij + p_i z_ig, i in order. */
static void v_av(int bits, int z, const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {
    const uint8_t *prm = seg + kivi_v_code_bytes(bits, D, P);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < D; j++) {
            float s, mn;
            v_par(prm, z, D, P, i, j, &s, &mn);
            const float w = p[i] * s, pz = p[i] * mn;
            acc[j] += w * (float)v_code(seg, bits, P, i, j) + pz;
        }
}

/* The other direction of each layout (scalar only; the engine uses K codecs
 * for qk and V codecs for av, these keep every table complete). */
static void k_av(int bits, int z, const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {
    const uint8_t *prm = seg + kivi_k_code_bytes(bits, D, P);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < D; j++) {
            float s, mn;
            par(prm, z, (size_t)D, (size_t)j, &s, &mn);
            acc[j] += (p[i] * s) * (float)k_code(seg, bits, D, i, j) + p[i] * mn;
        }
}
static void v_qk(int bits, int z, const uint8_t *seg, int D, int P, int n, const float *q, float *scores) {
    const uint8_t *prm = seg + kivi_v_code_bytes(bits, D, P);
    for (int i = 0; i < n; i++) {
        float a = 0, b = 0;
        for (int j = 0; j < D; j++) {
            float s, mn;
            v_par(prm, z, D, P, i, j, &s, &mn);
            a += (q[j] * s) * (float)v_code(seg, bits, P, i, j);
            b += q[j] * mn;
        }
        scores[i] = b + a;
    }
}

/* ---- codec tables ------------------------------------------------------------------------ */

/* Loaded sealed segments: every parameter finite (f16 scale and min, or an
 * e5m3 scale byte <= 0xF7 with any int8 zero point); K: per channel, V: per
 * (group, token) of the first n_rows tokens. */
int kvl_kivi_validate(int bits, int z, int is_v, const uint8_t *seg, int D, int P, int n_rows) {
    const size_t pb = (size_t)kivi_pbytes(z);
    const uint8_t *s, *zp;
    size_t n, stride = 0, rows = 1;
    if (!is_v) {
        s = seg + kivi_k_code_bytes(bits, D, P);
        n = (size_t)D;
        zp = s + n * pb;
    } else {
        s = seg + kivi_v_code_bytes(bits, D, P);
        rows = (size_t)kivi_cdiv(D, KIVI_VG);
        stride = (size_t)P;
        n = (size_t)(n_rows < P ? n_rows : P);
        zp = s + rows * stride * pb;
    }
    for (size_t g = 0; g < rows; g++)
        for (size_t i = 0; i < n; i++) {
            const size_t o = (g * stride + i) * pb;
            if (z ? !kvl_codec_e5m3_ok(s[o]) : !kvl_codec_f16_ok(s + o) || !kvl_codec_f16_ok(zp + o)) return -1;
        }
    return 0;
}

#define KIVI_DEFINE(N, B, Z)                                                                                \
    static int k##N##_validate(const uint8_t *seg, int D, int P, int n) { return kvl_kivi_validate(B, Z, 0, seg, D, P, n); } \
    static int v##N##_validate(const uint8_t *seg, int D, int P, int n) { return kvl_kivi_validate(B, Z, 1, seg, D, P, n); } \
    static size_t k##N##_seg_bytes(int D, int P) { return kivi_k_seg_bytes_z(B, Z, D, P); }                 \
    static size_t v##N##_seg_bytes(int D, int P) { return kivi_v_seg_bytes_z(B, Z, D, P); }                 \
    static void k##N##_seal(const void *st, uint8_t *dst, const uint8_t *o, int D, int P) {                 \
        k_seal(B, Z, st ? ((const kivi_state *)st)->mse : 0, dst, o, D, P);                                                                         \
    }                                                                                                       \
    static void v##N##_seal(const void *st, uint8_t *dst, const uint8_t *o, int D, int P) {                 \
        v_seal(B, Z, st ? ((const kivi_state *)st)->mse : 0, dst, o, D, P);                                                                         \
    }                                                                                                       \
    static void k##N##_decode(const uint8_t *seg, int D, int P, int i, float *x) { k_decode(B, Z, seg, D, P, i, x); } \
    static void v##N##_decode(const uint8_t *seg, int D, int P, int i, float *x) { v_decode(B, Z, seg, D, P, i, x); } \
    static void k##N##_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *sc) {             \
        k_qk(B, Z, seg, D, P, n, q, sc);                                                                    \
    }                                                                                                       \
    static void v##N##_av(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {            \
        v_av(B, Z, seg, D, P, n, p, acc);                                                                   \
    }                                                                                                       \
    static void k##N##_qk_multi(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *sc) { \
        for (int g = 0; g < m; g++) k_qk(B, Z, seg, D, P, n, q + (size_t)g * D, sc + (size_t)g * P);       \
    }                                                                                                       \
    static void v##N##_av_multi(const uint8_t *seg, int D, int P, int n, const float *p, int m, float *acc) { \
        for (int g = 0; g < m; g++) v_av(B, Z, seg, D, P, n, p + (size_t)g * P, acc + (size_t)g * D);      \
    }                                                                                                       \
    static void k##N##_av(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {            \
        k_av(B, Z, seg, D, P, n, p, acc);                                                                   \
    }                                                                                                       \
    static void v##N##_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *sc) {             \
        v_qk(B, Z, seg, D, P, n, q, sc);                                                                    \
    }                                                                                                       \
    static int k##N##_simd(int D, kvl_codec_kernels *out) { return kvl_kivi_avx2_kernels(B, Z, 0, D, out); } \
    static int v##N##_simd(int D, kvl_codec_kernels *out) { return kvl_kivi_avx2_kernels(B, Z, 1, D, out); }

KIVI_DEFINE(2, 2, 0)
KIVI_DEFINE(4, 4, 0)
KIVI_DEFINE(2z, 2, 1)
KIVI_DEFINE(3z, 3, 1)
KIVI_DEFINE(4z, 4, 1)

/* Instance state of the compact codecs: the fit=cover|mse parameter. */
static size_t z_state_bytes(int D) { return sizeof(kivi_state); }
static kvl_status z_state_init(int bits, const kvl_codec_params *prm, int is_v, void *st, kvl_err *err) {
    const char *f = prm ? kvl_codec_param(prm, "fit") : NULL;
    kivi_state *ks = st;
    if (!f || !strcmp(f, "auto")) ks->mse = bits == 2;
    else if (!strcmp(f, "cover")) ks->mse = 0;
    else if (!strcmp(f, "mse")) ks->mse = 1;
    else return kvl_err_set(err, KVL_ERR_ARG, "kivi%dz: fit=%s: expected auto, cover or mse", bits, f);
    return KVL_OK;
}

#define KIVI_ZINIT(B)                                                                                       \
    static kvl_status z##B##_state_init(const kvl_codec_params *prm, int layer, int head, int is_v, int D,    \
                                        void *st, kvl_err *err) {                                           \
        return z_state_init(B, prm, is_v, st, err);                                                         \
    }
KIVI_ZINIT(2)
KIVI_ZINIT(3)
KIVI_ZINIT(4)
#define KIVI_ZSTATE(B) .state_bytes = z_state_bytes, .state_init = z##B##_state_init, .params = "fit"
#define KIVI_NOSTATE .state_bytes = NULL

#define KIVI_TABLES(N, VAR, NAME, ST, KDESC, VDESC)                                                             \
    const kvl_codec VAR##_v = {.name = NAME "v", .desc = VDESC, .seg_bytes = v##N##_seg_bytes,              \
                               .open = &kvl_codec_f16, .seal = v##N##_seal, .decode = v##N##_decode,        \
                               .validate = v##N##_validate,                                                 \
                               .ref = {"scalar", v##N##_qk, v##N##_av, NULL, v##N##_av_multi},              \
                               .simd = v##N##_simd, .hidden = 1, ST};                                           \
    const kvl_codec VAR = {.name = NAME, .desc = KDESC, .seg_bytes = k##N##_seg_bytes, .open = &kvl_codec_f16, \
                           .seal = k##N##_seal, .decode = k##N##_decode, .validate = k##N##_validate,       \
                           .ref = {"scalar", k##N##_qk, k##N##_av, k##N##_qk_multi, NULL},                  \
                           .simd = k##N##_simd, .as_v = &VAR##_v, ST};

/* Exact sizes at D = 64, P = 32 (bits/value = seg_bytes * 8 / (D * P)):
 *  kivi2:  codes 64*32*2/8 = 512 B + s,z f16 per channel 64*4 = 256 B -> 768 B: 3.00 bits/value
 *  kivi2v: codes 512 B + s,z f16 per (token, 32-channel group) 32*2*4 = 256 B -> 768 B: 3.00
 *  kivi4:  codes 1024 B + 256 B = 1280 B: 5.00;  kivi4v: 1024 B + 256 B: 5.00
 *  kivi2z / kivi2zv: 512 B + 128 B (2 bytes per group) = 640 B: 2.50
 *  kivi3z / kivi3zv: 768 B + 128 B = 896 B: 3.50
 *  kivi4z / kivi4zv: 1024 B + 128 B = 1152 B: 4.50
 * f16 parameters follow the reference (scale and min kept in the model dtype);
 * f32 would add 1 bit/value at this P for no accuracy the f16-exact rounding
 * above does not already give. */
KIVI_TABLES(2, kvl_codec_kivi2, "kivi2", KIVI_NOSTATE,
            "KIVI 2-bit: K per channel over the page (f16 scale+min per channel per page), "
            "V per token in 32-channel groups (kivi2v); 3.00 bits/value at D=64, P=32 (K and V)",
            "KIVI 2-bit V: per token, groups of 32 channels, asymmetric, f16 scale+min per group; "
            "3.00 bits/value at D=64, P=32")
KIVI_TABLES(4, kvl_codec_kivi4, "kivi4", KIVI_NOSTATE,
            "KIVI 4-bit: K per channel over the page (f16 scale+min per channel per page), "
            "V per token in 32-channel groups (kivi4v); 5.00 bits/value at D=64, P=32 (K and V)",
            "KIVI 4-bit V: per token, groups of 32 channels, asymmetric, f16 scale+min per group; "
            "5.00 bits/value at D=64, P=32")
KIVI_TABLES(2z, kvl_codec_kivi2z, "kivi2z", KIVI_ZSTATE(2),
            "KIVI 2-bit, compact parameters: K per channel over the page, V per token in 32-channel "
            "groups (kivi2zv), e5m3 scale + int8 zero point per group; 2.50 bits/value at D=64, P=32",
            "KIVI 2-bit V, compact: per token, 32-channel groups, e5m3 scale + int8 zero point; "
            "2.50 bits/value at D=64, P=32")
KIVI_TABLES(3z, kvl_codec_kivi3z, "kivi3z", KIVI_ZSTATE(3),
            "KIVI 3-bit (2+1 bit planes), compact parameters: K per channel over the page, V per token "
            "in 32-channel groups (kivi3zv), e5m3 scale + int8 zero point; 3.50 bits/value at D=64, P=32",
            "KIVI 3-bit V, compact: per token, 32-channel groups, e5m3 scale + int8 zero point; "
            "3.50 bits/value at D=64, P=32")
KIVI_TABLES(4z, kvl_codec_kivi4z, "kivi4z", KIVI_ZSTATE(4),
            "KIVI 4-bit, compact parameters: K per channel over the page, V per token in 32-channel "
            "groups (kivi4zv), e5m3 scale + int8 zero point per group; 4.50 bits/value at D=64, P=32",
            "KIVI 4-bit V, compact: per token, 32-channel groups, e5m3 scale + int8 zero point; "
            "4.50 bits/value at D=64, P=32")

const kvl_codec *kvl_kivi_codec(int bits, int z, int is_v) {
    const kvl_codec *k = NULL;
    if (!z) k = bits == 2 ? &kvl_codec_kivi2 : bits == 4 ? &kvl_codec_kivi4 : NULL;
    else k = bits == 2 ? &kvl_codec_kivi2z : bits == 3 ? &kvl_codec_kivi3z : bits == 4 ? &kvl_codec_kivi4z : NULL;
    return k && is_v ? k->as_v : k;
}
