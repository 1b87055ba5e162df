/* int4 KV codecs: per token, groups of G channels quantized asymmetrically to
 * 4-bit codes c in 0..15, x' = min + c * scale (float multiply, then add).
 * Three registered types share this code (the layout depends on them, so
 * they are types, not parameters):
 *   int4     G = 32, f16 scale + f16 min per group          5.0 bits/value
 *   int4g64  G = 64, f16 scale + f16 min per group          4.5 bits/value
 *   int4z    G = 32, 8-bit scale + 8-bit zero point          4.5 bits/value
 *            (scale: unsigned e5m3 byte = the upper byte of an IEEE half
 *            less its sign; zero point z: int8; min = -z * scale, so 0 is
 *            exact). At 4.5 bits it keeps 32-channel groups, which measured
 *            better than 64-channel groups with f16 parameters (int4g64)
 *            and than symmetric f16-scale groups of 32 (q4_0-like): relative
 *            K/V reconstruction error on wikitext-2 valid, SmolLM2-135M, see
 *            the report of `kvlite calibrate`.
 * Scalar reference kernels here, AVX2 in codec_int4_avx2.c.
 *
 * Segment: P rows of row_bytes bytes, row i at i * row_bytes:
 *   [ng x params (4 bytes f16 scale, f16 min | 2 bytes e5m3 scale, int8 z)]
 *   [codes: ceil(D/2) bytes]                                   ng = ceil(D / G)
 * Group g covers channels [g*G, g*G + gs), gs = min(G, D - g*G); its codes
 * take h = ceil(gs/2) bytes at codes + g*G/2: channel g*G + k is the low
 * nibble of byte k for k < h, the high nibble of byte k - h otherwise (so 16
 * consecutive bytes unpack to two runs of 16 consecutive channels).
 * Encode, f16 parameters: min = largest half <= min(x), scale = smallest half
 * >= (max(x) - min) / 15. Zero-point form: the smallest e5m3 scale >=
 * max((max - min) / 15, max|x| / 112) with z = ceil(-min / scale) such that
 * -z * scale <= min and (15 - z) * scale >= max (in the decoder's floats;
 * (max - min) / 14 always qualifies, so scale <= that rounded up). Then c = round((x - min) /
 * scale) clamped: |x - x'| <= scale / 2 (+ float rounding) for every x. */
#include <math.h>
#include <stddef.h>

#include "kv/codec_q.h"

typedef struct { int G, z; } fmt; /* z: zero-point parameters (2 bytes/group) */

static inline int ngroups(int D, int G) { return (D + G - 1) / G; }
static inline int pbytes(fmt f) { return f.z ? 2 : 4; }
static inline size_t row_bytes(int D, fmt f) { return (size_t)ngroups(D, f.G) * pbytes(f) + (size_t)(D + 1) / 2; }
static size_t seg_bytes_f(int D, int P, fmt f) { return (size_t)P * row_bytes(D, f); }

/* e5m3 bytes (shared with oaken's format): half bits b << 7. */
static inline float e5m3(uint8_t b) { return kvl_fp16_to_fp32((uint16_t)(b << 7)); }
static inline uint8_t e5m3_up(float s) {
    if (!(s > 0)) return 0;
    if (s > 57344.f) return 0xF7;
    const uint16_t h = kvl_q_f16_up(s);
    const uint32_t b = (uint32_t)(h >> 7) + ((h & 0x7f) != 0);
    return (uint8_t)(b > 0xF7 ? 0xF7 : b);
}

/* Group parameters as floats (the decoder's values). */
static inline void params(const uint8_t *p, fmt f, float *s, float *m) {
    if (f.z) {
        *s = e5m3(p[0]);
        *m = -(float)(int8_t)p[1] * *s;
    } else {
        *s = kvl_fp16_to_fp32(kvl_q_rd16(p));
        *m = kvl_fp16_to_fp32(kvl_q_rd16(p + 2));
    }
}

static void encode_f(uint8_t *seg, int D, int P, int i, const float *x, fmt f) {
    const int G = f.G, pb = pbytes(f);
    uint8_t *row = seg + (size_t)i * row_bytes(D, f);
    uint8_t *codes = row + (size_t)ngroups(D, G) * pb;
    for (int g = 0, c0 = 0; c0 < D; g++, c0 += G) {
        const int gs = D - c0 < G ? D - c0 : G, h = (gs + 1) / 2;
        float mn = INFINITY, mx = -INFINITY;
        for (int k = 0; k < gs; k++) {
            const float v = kvl_q_clamp16(x[c0 + k]);
            mn = fminf(mn, v), mx = fmaxf(mx, v);
        }
        if (!(mn <= mx)) mn = mx = 0; /* all NaN */
        uint8_t *pp = row + g * pb;
        if (f.z) {
            /* smallest e5m3 scale from (max - min) / 15 up whose zero point
             * covers [min, max] (at most a few steps; the cap keeps |z| <= 112) */
            uint8_t sb = e5m3_up(fmaxf((mx - mn) / 15.0f, fmaxf(fabsf(mn), fabsf(mx)) / 112.0f));
            float z = 0;
            for (int it = 0; it < 64; it++) {
                const float s = e5m3(sb);
                z = s > 0 ? ceilf(-mn / s) : 0;
                z = z > 127 ? 127 : (z < -128 ? -128 : z);
                const float m = -z * s;
                if ((m <= mn && m + 15.0f * s >= mx) || sb >= 0xF7) break;
                sb++;
            }
            pp[0] = sb, pp[1] = (uint8_t)(int8_t)z;
        } else {
            const uint16_t mn16 = kvl_q_f16_down(mn);
            const uint16_t sc16 = kvl_q_f16_up(kvl_q_clamp16((mx - kvl_fp16_to_fp32(mn16)) / 15.0f));
            kvl_q_wr16(pp, sc16);
            kvl_q_wr16(pp + 2, mn16);
        }
        float s, m;
        params(pp, f, &s, &m);
        uint8_t *b = codes + c0 / 2;
        for (int k = 0; k < h; k++) b[k] = 0;
        for (int k = 0; k < gs; k++) {
            float c = s > 0 ? nearbyintf((kvl_q_clamp16(x[c0 + k]) - m) / s) : 0;
            c = c > 0 ? (c > 15 ? 15 : c) : 0; /* NaN -> 0 */
            const int ci = (int)c;
            if (k < h) b[k] |= (uint8_t)ci;
            else b[k - h] |= (uint8_t)(ci << 4);
        }
    }
}

static void decode_f(const uint8_t *seg, int D, int P, int i, float *x, fmt f) {
    const int G = f.G, pb = pbytes(f);
    const uint8_t *row = seg + (size_t)i * row_bytes(D, f);
    const uint8_t *codes = row + (size_t)ngroups(D, G) * pb;
    for (int g = 0, c0 = 0; c0 < D; g++, c0 += G) {
        const int gs = D - c0 < G ? D - c0 : G, h = (gs + 1) / 2;
        float s, m;
        params(row + g * pb, f, &s, &m);
        const uint8_t *b = codes + c0 / 2;
        for (int k = 0; k < gs; k++) {
            const int c = k < h ? (b[k] & 15) : (b[k - h] >> 4);
            x[c0 + k] = m + (float)c * s;
        }
    }
}

static void copy_row_f(uint8_t *dst, int di, const uint8_t *src, int si, int D, int P, fmt f) {
    const size_t rb = row_bytes(D, f);
    memmove(dst + (size_t)di * rb, src + (size_t)si * rb, rb);
}

/* Loaded segments: every group's parameters of rows [0, n_rows) finite
 * (f16 scale and min, or an e5m3 scale byte <= 0xF7; any int8 zero point). */
static int validate_f(const uint8_t *seg, int D, int P, int n_rows, fmt f) {
    const int ng = ngroups(D, f.G), pb = pbytes(f);
    for (int i = 0; i < n_rows; i++) {
        const uint8_t *row = seg + (size_t)i * row_bytes(D, f);
        for (int g = 0; g < ng; g++) {
            const uint8_t *pp = row + g * pb;
            if (f.z ? !kvl_codec_e5m3_ok(pp[0]) : !kvl_codec_f16_ok(pp) || !kvl_codec_f16_ok(pp + 2)) return -1;
        }
    }
    return 0;
}

/* AVX2 kernels (codec_int4_avx2.c): G = 32 or 64, D % G == 0. */
int kvl_codec_int4_avx2(int D, int G, int z, kvl_codec_kernels *out);

#define INT4_TYPE(PFX, G_, Z_)                                                                                  \
    static const fmt PFX##_f = {G_, Z_};                                                                        \
    static size_t PFX##_seg_bytes(int D, int P) { return seg_bytes_f(D, P, PFX##_f); }                          \
    static void PFX##_encode(const void *st, uint8_t *seg, int D, int P, int i, const float *x) {               \
        encode_f(seg, D, P, i, x, PFX##_f);                                                                     \
    }                                                                                                           \
    static void PFX##_decode(const uint8_t *seg, int D, int P, int i, float *x) { decode_f(seg, D, P, i, x, PFX##_f); } \
    static void PFX##_copy_row(uint8_t *dst, int di, const uint8_t *src, int si, int D, int P) {                \
        copy_row_f(dst, di, src, si, D, P, PFX##_f);                                                            \
    }                                                                                                           \
    static void PFX##_qk_multi(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *scores) { \
        kvl_q_qk_multi_ref(PFX##_decode, seg, D, P, n, q, m, scores);                                           \
    }                                                                                                           \
    static void PFX##_av_multi(const uint8_t *seg, int D, int P, int n, const float *p, int m, float *acc) {    \
        kvl_q_av_multi_ref(PFX##_decode, seg, D, P, n, p, m, acc);                                              \
    }                                                                                                           \
    static void PFX##_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *scores) {              \
        PFX##_qk_multi(seg, D, P, n, q, 1, scores);                                                             \
    }                                                                                                           \
    static void PFX##_av(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {                 \
        PFX##_av_multi(seg, D, P, n, p, 1, acc);                                                                \
    }                                                                                                           \
    static int PFX##_simd(int D, kvl_codec_kernels *out) { return kvl_codec_int4_avx2(D, G_, Z_, out); }      \
    static int PFX##_validate(const uint8_t *seg, int D, int P, int n) { return validate_f(seg, D, P, n, PFX##_f); }

INT4_TYPE(i4, 32, 0)
INT4_TYPE(i4g64, 64, 0)
INT4_TYPE(i4z, 32, 1)

const kvl_codec kvl_codec_int4 = {
    .name = "int4",
    .desc = "per token, groups of 32: f16 scale + f16 min, asymmetric 4-bit (5.0 bits/value at D=64)",
    .seg_bytes = i4_seg_bytes, .encode = i4_encode, .decode = i4_decode, .copy_row = i4_copy_row, .validate = i4_validate,
    .ref = {"scalar", i4_qk, i4_av, i4_qk_multi, i4_av_multi}, .simd = i4_simd};

const kvl_codec kvl_codec_int4g64 = {
    .name = "int4g64",
    .desc = "per token, groups of 64: f16 scale + f16 min, asymmetric 4-bit (4.5 bits/value at D=64)",
    .seg_bytes = i4g64_seg_bytes, .encode = i4g64_encode, .decode = i4g64_decode, .copy_row = i4g64_copy_row, .validate = i4g64_validate,
    .ref = {"scalar", i4g64_qk, i4g64_av, i4g64_qk_multi, i4g64_av_multi}, .simd = i4g64_simd};

const kvl_codec kvl_codec_int4z = {
    .name = "int4z",
    .desc = "per token, groups of 32: e5m3 scale + int8 zero point, asymmetric 4-bit (4.5 bits/value at D=64)",
    .seg_bytes = i4z_seg_bytes, .encode = i4z_encode, .decode = i4z_decode, .copy_row = i4z_copy_row, .validate = i4z_validate,
    .ref = {"scalar", i4z_qk, i4z_av, i4z_qk_multi, i4z_av_multi}, .simd = i4z_simd};
