/* int4 KV codecs: per token, groups of G channels quantized asymmetrically to
 * 4-bit codes with an f16 scale and an f16 minimum per group; `int4` (G = 32,
 * 5.0 bits/value at D = 64) and `int4g64` (G = 64, 4.5 bits/value, the size
 * of llama.cpp's q4_0). G changes the layout, so each is its own codec type
 * sharing this code. Scalar reference kernels here, AVX2 in codec_int4_avx2.c.
 *
 * Segment: P rows of row_bytes(D, G) bytes, row i at i * row_bytes:
 *   [ng x (f16 scale, f16 min)] [codes: ceil(D/2) bytes]      ng = ceil(D / G)
 * Group g covers channels [g*G, g*G + gs), gs = min(G, D - g*G); its codes
 * take h = ceil(gs/2) bytes at codes + g*G/2: channel g*G + k is the low
 * nibble of byte k for k < h, the high nibble of byte k - h otherwise (so 16
 * consecutive bytes unpack to two runs of 16 consecutive channels).
 * Value: x' = min + c * scale (float multiply then add), c in 0..15.
 * Encode: min = largest half <= min(x), scale = smallest half >=
 * (max(x) - min) / 15, c = round((x - min) / scale) clamped to 0..15; so
 * |x - x'| <= scale / 2 (+ float rounding) for every x of the group. */
#include <math.h>
#include <stddef.h>

#include "kv/codec_q.h"

static inline int ngroups(int D, int G) { return (D + G - 1) / G; }
static inline size_t row_bytes(int D, int G) { return (size_t)ngroups(D, G) * 4 + (size_t)(D + 1) / 2; }

static size_t seg_bytes_g(int D, int P, int G) { return (size_t)P * row_bytes(D, G); }

static void encode_g(uint8_t *seg, int D, int P, int i, const float *x, int G) {
    uint8_t *row = seg + (size_t)i * row_bytes(D, G);
    uint8_t *codes = row + (size_t)ngroups(D, G) * 4;
    for (int g = 0, c0 = 0; c0 < D; g++, c0 += G) {
        const int gs = D - c0 < G ? D - c0 : G, h = (gs + 1) / 2;
        float mn = INFINITY, mx = -INFINITY;
        for (int k = 0; k < gs; k++) {
            const float v = kvl_q_clamp16(x[c0 + k]);
            mn = fminf(mn, v), mx = fmaxf(mx, v);
        }
        if (!(mn <= mx)) mn = mx = 0; /* all NaN */
        const uint16_t mn16 = kvl_q_f16_down(mn);
        const float m = kvl_fp16_to_fp32(mn16);
        const uint16_t sc16 = kvl_q_f16_up(kvl_q_clamp16((mx - m) / 15.0f));
        const float s = kvl_fp16_to_fp32(sc16);
        kvl_q_wr16(row + g * 4, sc16);
        kvl_q_wr16(row + g * 4 + 2, mn16);
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

static void decode_g(const uint8_t *seg, int D, int P, int i, float *x, int G) {
    const uint8_t *row = seg + (size_t)i * row_bytes(D, G);
    const uint8_t *codes = row + (size_t)ngroups(D, G) * 4;
    for (int g = 0, c0 = 0; c0 < D; g++, c0 += G) {
        const int gs = D - c0 < G ? D - c0 : G, h = (gs + 1) / 2;
        const float s = kvl_fp16_to_fp32(kvl_q_rd16(row + g * 4)), m = kvl_fp16_to_fp32(kvl_q_rd16(row + g * 4 + 2));
        const uint8_t *b = codes + c0 / 2;
        for (int k = 0; k < gs; k++) {
            const int c = k < h ? (b[k] & 15) : (b[k - h] >> 4);
            x[c0 + k] = m + (float)c * s;
        }
    }
}

static void copy_row_g(uint8_t *dst, int di, const uint8_t *src, int si, int D, int P, int G) {
    const size_t rb = row_bytes(D, G);
    memmove(dst + (size_t)di * rb, src + (size_t)si * rb, rb);
}

/* ---- G = 32 ----------------------------------------------------------------- */

static size_t i4_seg_bytes(int D, int P) { return seg_bytes_g(D, P, 32); }
static void i4_encode(const void *st, uint8_t *seg, int D, int P, int i, const float *x) { encode_g(seg, D, P, i, x, 32); }
static void i4_decode(const uint8_t *seg, int D, int P, int i, float *x) { decode_g(seg, D, P, i, x, 32); }
static void i4_copy_row(uint8_t *dst, int di, const uint8_t *src, int si, int D, int P) {
    copy_row_g(dst, di, src, si, D, P, 32);
}
static void i4_qk_multi(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *scores) {
    kvl_q_qk_multi_ref(i4_decode, seg, D, P, n, q, m, scores);
}
static void i4_av_multi(const uint8_t *seg, int D, int P, int n, const float *p, int m, float *acc) {
    kvl_q_av_multi_ref(i4_decode, seg, D, P, n, p, m, acc);
}
static void i4_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *scores) {
    i4_qk_multi(seg, D, P, n, q, 1, scores);
}
static void i4_av(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {
    i4_av_multi(seg, D, P, n, p, 1, acc);
}

/* ---- G = 64 ----------------------------------------------------------------- */

static size_t i4g64_seg_bytes(int D, int P) { return seg_bytes_g(D, P, 64); }
static void i4g64_encode(const void *st, uint8_t *seg, int D, int P, int i, const float *x) { encode_g(seg, D, P, i, x, 64); }
static void i4g64_decode(const uint8_t *seg, int D, int P, int i, float *x) { decode_g(seg, D, P, i, x, 64); }
static void i4g64_copy_row(uint8_t *dst, int di, const uint8_t *src, int si, int D, int P) {
    copy_row_g(dst, di, src, si, D, P, 64);
}
static void i4g64_qk_multi(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *scores) {
    kvl_q_qk_multi_ref(i4g64_decode, seg, D, P, n, q, m, scores);
}
static void i4g64_av_multi(const uint8_t *seg, int D, int P, int n, const float *p, int m, float *acc) {
    kvl_q_av_multi_ref(i4g64_decode, seg, D, P, n, p, m, acc);
}
static void i4g64_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *scores) {
    i4g64_qk_multi(seg, D, P, n, q, 1, scores);
}
static void i4g64_av(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {
    i4g64_av_multi(seg, D, P, n, p, 1, acc);
}

/* AVX2 kernels (codec_int4_avx2.c): G = 32 or 64, D % G == 0. */
int kvl_codec_int4_avx2(int D, int G, kvl_codec_kernels *out);
static int i4_simd(int D, kvl_codec_kernels *out) { return kvl_codec_int4_avx2(D, 32, out); }
static int i4g64_simd(int D, kvl_codec_kernels *out) { return kvl_codec_int4_avx2(D, 64, out); }

const kvl_codec kvl_codec_int4 = {
    .name = "int4",
    .desc = "per token, groups of 32: f16 scale + f16 min, asymmetric 4-bit (5.0 bits/value at D=64)",
    .seg_bytes = i4_seg_bytes, .encode = i4_encode, .decode = i4_decode, .copy_row = i4_copy_row,
    .ref = {"scalar", i4_qk, i4_av, i4_qk_multi, i4_av_multi}, .simd = i4_simd};

const kvl_codec kvl_codec_int4g64 = {
    .name = "int4g64",
    .desc = "per token, groups of 64: f16 scale + f16 min, asymmetric 4-bit (4.5 bits/value at D=64)",
    .seg_bytes = i4g64_seg_bytes, .encode = i4g64_encode, .decode = i4g64_decode, .copy_row = i4g64_copy_row,
    .ref = {"scalar", i4g64_qk, i4g64_av, i4g64_qk_multi, i4g64_av_multi}, .simd = i4g64_simd};
