/* Built-in KV codecs (f32, f16, int8 per-token symmetric) with their scalar
 * reference kernels, the codec registry, and run-time kernel selection. The
 * AVX2 kernels live in codec_avx2.c. */
#include "kv/codec.h"

#include <math.h>
#include <string.h>

#include "util/fp16.h"

/* ---- f32: rows of D floats ----------------------------------------------------- */

static size_t f32_seg_bytes(int D, int P) { return (size_t)P * (size_t)D * 4; }

static void f32_encode(const void *st, uint8_t *seg, int D, int P, int i, const float *x) {
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

static void f16_encode(const void *st, uint8_t *seg, int D, int P, int i, const float *x) {
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

static void i8_encode(const void *st, uint8_t *seg, int D, int P, int i, const float *x) {
    float amax = 0;
    for (int j = 0; j < D; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float scale = amax / 127.0f;
    const float inv = scale > 0 ? 1.0f / scale : 0.0f;
    int8_t *r = i8_row(seg, D, P, i);
    for (int j = 0; j < D; j++) {
        float v = nearbyintf(x[j] * inv);
        v = v > 127 ? 127 : (v < -127 ? -127 : v == v ? v : 0); /* NaN (from a NaN row) -> 0 */
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

/* ---- multi-query scalar references ---------------------------------------------------
 * Row-outer: each row is converted to floats once (into r[], exact) and then
 * used by every query, with the per-query arithmetic of the single-query
 * reference (s += q*x in j order; acc += w*x in i order). D > RMAX: loop. */

#define RMAX 512

static void f32_qk_multi_ref(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *scores) {
    const float *k = (const float *)seg;
    for (int i = 0; i < n; i++, k += D)
        for (int g = 0; g < m; g++) {
            const float *qg = q + (size_t)g * D;
            float s = 0;
            for (int j = 0; j < D; j++) s += qg[j] * k[j];
            scores[(size_t)g * P + i] = s;
        }
}

static void f32_av_multi_ref(const uint8_t *seg, int D, int P, int n, const float *p, int m, float *acc) {
    const float *v = (const float *)seg;
    for (int i = 0; i < n; i++, v += D)
        for (int g = 0; g < m; g++) {
            const float pi = p[(size_t)g * P + i];
            float *a = acc + (size_t)g * D;
            for (int j = 0; j < D; j++) a[j] += pi * v[j];
        }
}

static void f16_qk_multi_ref(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *scores) {
    if (D > RMAX) {
        for (int g = 0; g < m; g++) f16_qk_ref(seg, D, P, n, q + (size_t)g * D, scores + (size_t)g * P);
        return;
    }
    float r[RMAX];
    for (int i = 0; i < n; i++) {
        f16_decode(seg, D, P, i, r);
        f32_qk_multi_ref((const uint8_t *)r, D, P, 1, q, m, scores + i);
    }
}

static void f16_av_multi_ref(const uint8_t *seg, int D, int P, int n, const float *p, int m, float *acc) {
    if (D > RMAX) {
        for (int g = 0; g < m; g++) f16_av_ref(seg, D, P, n, p + (size_t)g * P, acc + (size_t)g * D);
        return;
    }
    float r[RMAX];
    for (int i = 0; i < n; i++) {
        f16_decode(seg, D, P, i, r);
        f32_av_multi_ref((const uint8_t *)r, D, P, 1, p + i, m, acc);
    }
}

static void i8_qk_multi_ref(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *scores) {
    if (D > RMAX) {
        for (int g = 0; g < m; g++) i8_qk_ref(seg, D, P, n, q + (size_t)g * D, scores + (size_t)g * P);
        return;
    }
    const float *sc = (const float *)seg;
    const int8_t *k = (const int8_t *)(seg + (size_t)P * 4);
    float r[RMAX];
    for (int i = 0; i < n; i++, k += D) {
        for (int j = 0; j < D; j++) r[j] = (float)k[j];
        for (int g = 0; g < m; g++) {
            const float *qg = q + (size_t)g * D;
            float s = 0;
            for (int j = 0; j < D; j++) s += qg[j] * r[j];
            scores[(size_t)g * P + i] = sc[i] * s;
        }
    }
}

static void i8_av_multi_ref(const uint8_t *seg, int D, int P, int n, const float *p, int m, float *acc) {
    if (D > RMAX) {
        for (int g = 0; g < m; g++) i8_av_ref(seg, D, P, n, p + (size_t)g * P, acc + (size_t)g * D);
        return;
    }
    const float *sc = (const float *)seg;
    const int8_t *v = (const int8_t *)(seg + (size_t)P * 4);
    float r[RMAX];
    for (int i = 0; i < n; i++, v += D) {
        for (int j = 0; j < D; j++) r[j] = (float)v[j];
        for (int g = 0; g < m; g++) {
            const float w = p[(size_t)g * P + i] * sc[i];
            float *a = acc + (size_t)g * D;
            for (int j = 0; j < D; j++) a[j] += w * r[j];
        }
    }
}

void kvl_codec_qk_multi(const kvl_codec_kernels *k, const uint8_t *seg, int D, int P, int n, const float *q,
                        int m, float *scores) {
    if (k->qk_multi) k->qk_multi(seg, D, P, n, q, m, scores);
    else
        for (int g = 0; g < m; g++) k->qk(seg, D, P, n, q + (size_t)g * D, scores + (size_t)g * P);
}

void kvl_codec_av_multi(const kvl_codec_kernels *k, const uint8_t *seg, int D, int P, int n, const float *p,
                        int m, float *acc) {
    if (k->av_multi) k->av_multi(seg, D, P, n, p, m, acc);
    else
        for (int g = 0; g < m; g++) k->av(seg, D, P, n, p + (size_t)g * P, acc + (size_t)g * D);
}

/* ---- validation of loaded segments ---------------------------------------------------- */

static int raw_validate(const uint8_t *seg, int D, int P, int n_rows) { return 0; } /* f32, f16 */

/* int8: the per-token f32 scales of rows [0, n_rows) finite and at most
 * FLT_MAX / 127 in magnitude (what encode writes), so every decoded value is finite. */
static int i8_validate(const uint8_t *seg, int D, int P, int n_rows) {
    for (int i = 0; i < n_rows; i++) {
        float sc;
        memcpy(&sc, seg + (size_t)i * 4, 4);
        if (!(fabsf(sc) <= 3.4028234e38f / 127.0f)) return -1;
    }
    return 0;
}

/* ---- registry ---------------------------------------------------------------------- */

static int f32_simd(int D, kvl_codec_kernels *out) { return kvl_codec_avx2_kernels("f32", out); }
static int f16_simd(int D, kvl_codec_kernels *out) { return kvl_codec_avx2_kernels("f16", out); }
static int i8_simd(int D, kvl_codec_kernels *out) { return kvl_codec_avx2_kernels("int8", out); }

const kvl_codec kvl_codec_f32 = {
    .name = "f32", .desc = "IEEE float rows (reference)", .seg_bytes = f32_seg_bytes, .encode = f32_encode,
    .decode = f32_decode, .copy_row = f32_copy_row, .validate = raw_validate,
    .ref = {"scalar", f32_qk_ref, f32_av_ref, f32_qk_multi_ref, f32_av_multi_ref}, .simd = f32_simd};
const kvl_codec kvl_codec_f16 = {
    .name = "f16", .desc = "IEEE half rows", .seg_bytes = f16_seg_bytes, .encode = f16_encode,
    .decode = f16_decode, .copy_row = f16_copy_row, .validate = raw_validate,
    .ref = {"scalar", f16_qk_ref, f16_av_ref, f16_qk_multi_ref, f16_av_multi_ref}, .simd = f16_simd};
static const kvl_codec codec_i8 = {
    .name = "int8", .desc = "per token: f32 scale, symmetric int8 (amax/127)", .seg_bytes = i8_seg_bytes,
    .encode = i8_encode, .decode = i8_decode, .copy_row = i8_copy_row, .validate = i8_validate,
    .ref = {"scalar", i8_qk_ref, i8_av_ref, i8_qk_multi_ref, i8_av_multi_ref}, .simd = i8_simd};

/* Codec types defined in their own files (codec_<name>.c). */
#define KVL_CODEC_EXTERN(x) extern const kvl_codec x;
KVL_CODEC_EXTERN(kvl_codec_int4)
KVL_CODEC_EXTERN(kvl_codec_fp8)
KVL_CODEC_EXTERN(kvl_codec_int4g64)
KVL_CODEC_EXTERN(kvl_codec_int4z)
KVL_CODEC_EXTERN(kvl_codec_oaken)
KVL_CODEC_EXTERN(kvl_codec_kivi2)
KVL_CODEC_EXTERN(kvl_codec_kivi2_v)
KVL_CODEC_EXTERN(kvl_codec_kivi4)
KVL_CODEC_EXTERN(kvl_codec_kivi4_v)
KVL_CODEC_EXTERN(kvl_codec_squat)
KVL_CODEC_EXTERN(kvl_codec_kivi2z)
KVL_CODEC_EXTERN(kvl_codec_kivi2z_v)
KVL_CODEC_EXTERN(kvl_codec_kivi3z)
KVL_CODEC_EXTERN(kvl_codec_kivi3z_v)
KVL_CODEC_EXTERN(kvl_codec_kivi4z)
KVL_CODEC_EXTERN(kvl_codec_kivi4z_v)

static const kvl_codec *const codecs[] = {&kvl_codec_f32,   &kvl_codec_f16,   &codec_i8,          &kvl_codec_int4,
                                          &kvl_codec_int4g64, &kvl_codec_int4z, &kvl_codec_fp8,     &kvl_codec_oaken,
                                          &kvl_codec_kivi2, &kvl_codec_kivi2_v, &kvl_codec_kivi4, &kvl_codec_kivi4_v,
                                          &kvl_codec_kivi2z, &kvl_codec_kivi2z_v, &kvl_codec_kivi3z, &kvl_codec_kivi3z_v,
                                          &kvl_codec_kivi4z, &kvl_codec_kivi4z_v, &kvl_codec_squat, NULL};

const kvl_codec *const *kvl_codec_all(void) { return codecs; }

const kvl_codec *kvl_codec_find(const char *name) {
    if (!name) return NULL;
    for (const kvl_codec *const *c = codecs; *c; c++)
        if (strcmp((*c)->name, name) == 0) return *c;
    return NULL;
}

const char *kvl_codec_name(const kvl_codec *c) { return c ? c->name : "(none)"; }

const char *kvl_codec_list(void) {
    static const char list[] = "f32, f16, int8, int4, int4g64, int4z, fp8, oaken, kivi2, kivi4, kivi2z, kivi3z, kivi4z, squat";
    return list;
}

kvl_codec_kernels kvl_codec_kernels_get(const kvl_codec *c, int D, int scalar_only) {
    kvl_codec_kernels k = c->ref;
    if (!scalar_only && D % 8 == 0 && c->simd) {
        kvl_codec_kernels s;
        if (c->simd(D, &s)) k = s;
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
