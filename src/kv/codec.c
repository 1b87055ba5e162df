/* Built-in KV codecs (f32, f16, int8 per-token symmetric) with their scalar
 * reference kernels, the codec registry, and run-time kernel selection. The
 * AVX2 kernels live in codec_avx2.c. */
#include "kv/codec.h"

#include <math.h>
#include <string.h>

#include "util/fp16.h"

/* ---- f32: rows of D floats ----------------------------------------------------- */

static size_t f32_seg_bytes(int D, int P) { return (size_t)P * (size_t)D * 4; }

static void f32_encode(uint8_t *seg, int D, int P, int i, const float *x) {
    memcpy(seg + (size_t)i * D * 4, x, (size_t)D * 4);
}

static void f32_decode(const uint8_t *seg, int D, int P, int i, float *x) {
    memcpy(x, seg + (size_t)i * D * 4, (size_t)D * 4);
}

static void f32_copy_row(uint8_t *dst, int di, const uint8_t *src, int si, int D, int P) {
    memmove(dst + (size_t)di * D * 4, src + (size_t)si * D * 4, (size_t)D * 4);
}

static void f32_qk_ref(const uint8_t *seg, int D, int P, int n, const float *q, float *scores) {
    const float *k = (const float *)seg;
    for (int i = 0; i < n; i++, k += D) {
        float s = 0;
        for (int j = 0; j < D; j++) s += q[j] * k[j];
        scores[i] = s;
    }
}

static void f32_av_ref(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {
    const float *v = (const float *)seg;
    for (int i = 0; i < n; i++, v += D) {
        const float pi = p[i];
        for (int j = 0; j < D; j++) acc[j] += pi * v[j];
    }
}

/* ---- f16: rows of D IEEE halves -------------------------------------------------- */

static size_t f16_seg_bytes(int D, int P) { return (size_t)P * (size_t)D * 2; }

static void f16_encode(uint8_t *seg, int D, int P, int i, const float *x) {
    uint16_t *r = (uint16_t *)(seg + (size_t)i * D * 2);
    for (int j = 0; j < D; j++) r[j] = kvl_fp32_to_fp16(x[j]);
}

static void f16_decode(const uint8_t *seg, int D, int P, int i, float *x) {
    const uint16_t *r = (const uint16_t *)(seg + (size_t)i * D * 2);
    for (int j = 0; j < D; j++) x[j] = kvl_fp16_to_fp32(r[j]);
}

static void f16_copy_row(uint8_t *dst, int di, const uint8_t *src, int si, int D, int P) {
    memmove(dst + (size_t)di * D * 2, src + (size_t)si * D * 2, (size_t)D * 2);
}

static void f16_qk_ref(const uint8_t *seg, int D, int P, int n, const float *q, float *scores) {
    const uint16_t *k = (const uint16_t *)seg;
    for (int i = 0; i < n; i++, k += D) {
        float s = 0;
        for (int j = 0; j < D; j++) s += q[j] * kvl_fp16_to_fp32(k[j]);
        scores[i] = s;
    }
}

static void f16_av_ref(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {
    const uint16_t *v = (const uint16_t *)seg;
    for (int i = 0; i < n; i++, v += D) {
        const float pi = p[i];
        for (int j = 0; j < D; j++) acc[j] += pi * kvl_fp16_to_fp32(v[j]);
    }
}

/* ---- int8: float scale[P], then int8 rows [P][D]; x ~= scale * q ------------------ */

static size_t i8_seg_bytes(int D, int P) { return (size_t)P * ((size_t)D + 4); }

static float *i8_scales(uint8_t *seg) { return (float *)seg; }
static int8_t *i8_row(uint8_t *seg, int D, int P, int i) {
    return (int8_t *)(seg + (size_t)P * 4 + (size_t)i * D);
}

static void i8_encode(uint8_t *seg, int D, int P, int i, const float *x) {
    float amax = 0;
    for (int j = 0; j < D; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float scale = amax / 127.0f;
    const float inv = scale > 0 ? 1.0f / scale : 0.0f;
    int8_t *r = i8_row(seg, D, P, i);
    for (int j = 0; j < D; j++) {
        float v = nearbyintf(x[j] * inv);
        v = v > 127 ? 127 : (v < -127 ? -127 : v);
        r[j] = (int8_t)v;
    }
    i8_scales(seg)[i] = scale;
}

static void i8_decode(const uint8_t *seg, int D, int P, int i, float *x) {
    const float scale = ((const float *)seg)[i];
    const int8_t *r = (const int8_t *)(seg + (size_t)P * 4 + (size_t)i * D);
    for (int j = 0; j < D; j++) x[j] = scale * (float)r[j];
}

static void i8_copy_row(uint8_t *dst, int di, const uint8_t *src, int si, int D, int P) {
    memmove(i8_row(dst, D, P, di), src + (size_t)P * 4 + (size_t)si * D, (size_t)D);
    float s;
    memcpy(&s, src + (size_t)si * 4, 4);
    i8_scales(dst)[di] = s;
}

static void i8_qk_ref(const uint8_t *seg, int D, int P, int n, const float *q, float *scores) {
    const float *sc = (const float *)seg;
    const int8_t *k = (const int8_t *)(seg + (size_t)P * 4);
    for (int i = 0; i < n; i++, k += D) {
        float s = 0;
        for (int j = 0; j < D; j++) s += q[j] * (float)k[j];
        scores[i] = sc[i] * s;
    }
}

static void i8_av_ref(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {
    const float *sc = (const float *)seg;
    const int8_t *v = (const int8_t *)(seg + (size_t)P * 4);
    for (int i = 0; i < n; i++, v += D) {
        const float w = p[i] * sc[i];
        for (int j = 0; j < D; j++) acc[j] += w * (float)v[j];
    }
}

/* ---- registry ---------------------------------------------------------------------- */

static const kvl_codec codec_f32 = {"f32", f32_seg_bytes, f32_encode, NULL, f32_decode, f32_copy_row,
                                    {"scalar", f32_qk_ref, f32_av_ref}};
static const kvl_codec codec_f16 = {"f16", f16_seg_bytes, f16_encode, NULL, f16_decode, f16_copy_row,
                                    {"scalar", f16_qk_ref, f16_av_ref}};
static const kvl_codec codec_i8 = {"int8", i8_seg_bytes, i8_encode, NULL, i8_decode, i8_copy_row,
                                   {"scalar", i8_qk_ref, i8_av_ref}};

static const kvl_codec *const codecs[] = {&codec_f32, &codec_f16, &codec_i8};

const kvl_codec *kvl_codec_find(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof codecs / sizeof codecs[0]; i++)
        if (strcmp(codecs[i]->name, name) == 0) return codecs[i];
    return NULL;
}

const char *kvl_codec_name(const kvl_codec *c) { return c ? c->name : "(none)"; }

const char *kvl_codec_list(void) { return "f32,f16,int8"; }

kvl_codec_kernels kvl_codec_kernels_get(const kvl_codec *c, int D, int scalar_only) {
    kvl_codec_kernels k = c->ref;
    if (!scalar_only && D % 8 == 0) {
        kvl_codec_kernels s;
        if (kvl_codec_avx2_kernels(c->name, &s)) k = s;
    }
    return k;
}

double kvl_codec_bytes_per_token(const kvl_codec *c, int D, int P) {
    return (double)c->seg_bytes(D, P) / (double)P;
}

float kvl_kv_expsum_ref(float *s, int n, float m) {
    float sum = 0;
    for (int i = 0; i < n; i++) {
        s[i] = expf(s[i] - m);
        sum += s[i];
    }
    return sum;
}
