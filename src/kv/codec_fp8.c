/* fp8 KV codec: OCP FP8 E4M3 ("e4m3fn": bias 7, no infinities, max 448,
 * subnormal step 2^-9), as vLLM's default fp8 KV cache, with a per-token f32
 * scale = amax / 448. Encode rounds x / scale to nearest, ties to even, and
 * saturates to +-448 (never produces the NaN code S.1111.111). Scalar
 * reference here, AVX2 in codec_fp8_avx2.c.
 *
 * Segment: f32 scale[P], then P rows of D bytes (s eeee mmm).
 * Decode without a table: the byte's bits moved into an IEEE half
 * (h = (b & 0x80) << 8 | (b & 0x7f) << 7) are the e4m3 value times 2^-8
 * exactly, subnormals included, so x' = half(h) * (scale * 256) -- one
 * rounding, the same in the scalar and F16C (vcvtph2ps) decodes.
 * Round-trip bound: |x - x'| <= 2^-4 |x| (half an ulp of a 3-bit mantissa)
 * for |x| >= 2^-6 * scale, and <= 2^-10 * scale below (subnormal half step),
 * plus float rounding. */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "kv/codec_q.h"

static size_t f8_seg_bytes(int D, int P) { return (size_t)P * ((size_t)D + 4); }

/* |v| <= 448 after saturation; v finite or NaN (-> 0). */
uint8_t kvl_fp8_e4m3_encode(float v) {
    const uint8_t sign = signbit(v) ? 0x80 : 0;
    float a = fabsf(v);
    if (!(a == a)) return 0;
    if (a >= 448.0f) return sign | 0x7E;
    if (a < 0.015625f) /* below 2^-6: subnormal steps of 2^-9; 8 rounds up into 0x08 = 2^-6 */
        return sign | (uint8_t)nearbyintf(a * 512.0f);
    int e;
    const float f = frexpf(a, &e); /* a = f * 2^e, f in [0.5, 1) */
    int mq = (int)nearbyintf((f * 2.0f - 1.0f) * 8.0f); /* exact: f*2-1 has <= 23 bits */
    e -= 1;                                            /* a = (1 + m/8) * 2^e */
    if (mq == 8) mq = 0, e++;
    const int code = (e + 7) << 3 | mq;
    return sign | (uint8_t)(code > 0x7E ? 0x7E : code);
}

/* e4m3 value * 2^-8 as IEEE half bits. */
static inline uint16_t f8_half(uint8_t b) { return (uint16_t)(((b & 0x80) << 8) | ((b & 0x7f) << 7)); }

static void f8_encode(const void *st, uint8_t *seg, int D, int P, int i, const float *x) {
    float amax = 0;
    for (int j = 0; j < D; j++) amax = fmaxf(amax, fabsf(x[j]));
    if (!(amax <= 3.0e38f)) amax = 3.0e38f;
    const float scale = amax / 448.0f;
    uint8_t *r = seg + (size_t)P * 4 + (size_t)i * D;
    for (int j = 0; j < D; j++) r[j] = scale > 0 ? kvl_fp8_e4m3_encode(x[j] / scale) : 0;
    memcpy(seg + (size_t)i * 4, &scale, 4);
}

static void f8_decode(const uint8_t *seg, int D, int P, int i, float *x) {
    float scale;
    memcpy(&scale, seg + (size_t)i * 4, 4);
    const float s256 = scale * 256.0f;
    const uint8_t *r = seg + (size_t)P * 4 + (size_t)i * D;
    for (int j = 0; j < D; j++) x[j] = kvl_fp16_to_fp32(f8_half(r[j])) * s256;
}

static void f8_copy_row(uint8_t *dst, int di, const uint8_t *src, int si, int D, int P) {
    memmove(dst + (size_t)P * 4 + (size_t)di * D, src + (size_t)P * 4 + (size_t)si * D, (size_t)D);
    memmove(dst + (size_t)di * 4, src + (size_t)si * 4, 4);
}

static void f8_qk_multi(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *scores) {
    kvl_q_qk_multi_ref(f8_decode, seg, D, P, n, q, m, scores);
}
static void f8_av_multi(const uint8_t *seg, int D, int P, int n, const float *p, int m, float *acc) {
    kvl_q_av_multi_ref(f8_decode, seg, D, P, n, p, m, acc);
}
static void f8_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *scores) {
    f8_qk_multi(seg, D, P, n, q, 1, scores);
}
static void f8_av(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {
    f8_av_multi(seg, D, P, n, p, 1, acc);
}

int kvl_codec_fp8_avx2(int D, kvl_codec_kernels *out); /* codec_fp8_avx2.c */

/* Loaded segments: per-token scales finite and at most FLT_MAX / 448 in
 * magnitude (encode writes amax / 448), so every code byte decodes finite. */
static int f8_validate(const uint8_t *seg, int D, int P, int n_rows) {
    for (int i = 0; i < n_rows; i++) {
        float sc;
        memcpy(&sc, seg + (size_t)i * 4, 4);
        if (!(fabsf(sc) <= 3.4028234e38f / 448.0f)) return -1;
    }
    return 0;
}

const kvl_codec kvl_codec_fp8 = {
    .name = "fp8",
    .desc = "per token: f32 scale (amax/448), OCP e4m3 (8.5 bits/value at D=64)",
    .seg_bytes = f8_seg_bytes, .encode = f8_encode, .decode = f8_decode, .copy_row = f8_copy_row, .validate = f8_validate,
    .ref = {"scalar", f8_qk, f8_av, f8_qk_multi, f8_av_multi}, .simd = kvl_codec_fp8_avx2};
