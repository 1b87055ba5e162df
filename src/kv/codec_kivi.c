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
 * overflows f16. */
#include "kv/codec_kivi.h"

#include <math.h>
#include <string.h>

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

static inline uint16_t rd16(const uint8_t *p) {
    uint16_t w;
    memcpy(&w, p, 2);
    return w;
}
static inline float ldh(const uint8_t *p) { return kvl_fp16_to_fp32(rd16(p)); }

/* Parameters of the values x[0..cnt) (stride xs halves): f16 bits of s and z. */
static void group_params(const uint16_t *x, size_t xs, int cnt, int bits, uint16_t *s16, uint16_t *z16) {
    float mn = open_val(x[0]), mx = mn;
    for (int i = 1; i < cnt; i++) {
        const float v = open_val(x[(size_t)i * xs]);
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    *s16 = f16_up(((double)mx - (double)mn) / ((1 << bits) - 1));
    *z16 = kvl_fp32_to_fp16(mn); /* exact: mn is an f16 value */
}

/* Code of open value h against parameters (s, z) of a group. */
static inline uint32_t code_of(uint16_t h, uint16_t s16, uint16_t z16, int bits) {
    const double s = kvl_fp16_to_fp32(s16), z = kvl_fp16_to_fp32(z16);
    const int maxq = (1 << bits) - 1;
    double q = s > 0 ? nearbyint(((double)open_val(h) - z) / s) : 0;
    q = q < 0 ? 0 : (q > maxq ? maxq : q);
    return (uint32_t)q;
}

/* ---- K: per channel ------------------------------------------------------------------- */

/* Byte offset within a chunk and bit shift of field f of slot e of lane k
 * (kv/codec_kivi.h; a field never straddles a byte since bits divides 8). */
static inline size_t slot_byte(int bits, int k, int e, int f) {
    return (size_t)k * 4 + (size_t)e * (kivi_slot_bits(bits) / 8) + (size_t)(bits * f) / 8;
}

/* K code (token i, channel j): chunk (i/8, j/F), lane i%8, slot (j%F) % spl,
 * field (j%F) / spl (spl = slots per lane). *sh: bit shift within the byte. */
static inline size_t k_byte(int bits, int D, int i, int j, int *sh) {
    const int F = kivi_fields(bits), njc = kivi_cdiv(D, F), spl = 32 / kivi_slot_bits(bits);
    const int jj = j % F, f = jj / spl;
    *sh = (bits * f) % 8;
    return ((size_t)(i / 8) * njc + j / F) * 32 + slot_byte(bits, i % 8, jj % spl, f);
}
static inline int k_code(const uint8_t *seg, int bits, int D, int i, int j) {
    int sh;
    const size_t o = k_byte(bits, D, i, j, &sh);
    return (seg[o] >> sh) & ((1 << bits) - 1);
}

static void k_seal(int bits, uint8_t *dst, const uint8_t *open_seg, int D, int P) {
    const size_t cb = kivi_k_code_bytes(bits, D, P);
    memset(dst, 0, cb);
    const uint16_t *x = (const uint16_t *)open_seg; /* [P][D] */
    uint8_t *s = dst + cb, *z = s + (size_t)D * 2;
    for (int j = 0; j < D; j++) {
        uint16_t sh, zh;
        group_params(x + j, (size_t)D, P, bits, &sh, &zh);
        memcpy(s + (size_t)j * 2, &sh, 2);
        memcpy(z + (size_t)j * 2, &zh, 2);
        for (int i = 0; i < P; i++) {
            int b;
            const size_t o = k_byte(bits, D, i, j, &b);
            dst[o] |= (uint8_t)(code_of(x[(size_t)i * D + j], sh, zh, bits) << b);
        }
    }
}

void kvl_kivi_k_put_channel(int bits, uint8_t *seg, int D, int P, int j, const uint8_t *c, uint16_t s16,
                            uint16_t z16) {
    uint8_t *s = seg + kivi_k_code_bytes(bits, D, P), *z = s + (size_t)D * 2;
    memcpy(s + (size_t)j * 2, &s16, 2);
    memcpy(z + (size_t)j * 2, &z16, 2);
    for (int i = 0; i < P; i++) {
        int b;
        const size_t o = k_byte(bits, D, i, j, &b);
        seg[o] = (uint8_t)((seg[o] & ~(((1 << bits) - 1) << b)) | (c[i] << b));
    }
}

static void k_decode(int bits, const uint8_t *seg, int D, int P, int i, float *x) {
    const uint8_t *s = seg + kivi_k_code_bytes(bits, D, P), *z = s + (size_t)D * 2;
    for (int j = 0; j < D; j++) x[j] = ldh(s + 2 * j) * (float)k_code(seg, bits, D, i, j) + ldh(z + 2 * j);
}

/* score_i = sum_j q_j z_j + sum_j (q_j s_j) c_ij, j in order. */
static void k_qk(int bits, const uint8_t *seg, int D, int P, int n, const float *q, float *scores) {
    const uint8_t *s = seg + kivi_k_code_bytes(bits, D, P), *z = s + (size_t)D * 2;
    float bias = 0;
    for (int j = 0; j < D; j++) bias += q[j] * ldh(z + 2 * j);
    for (int i = 0; i < n; i++) {
        float a = 0;
        for (int j = 0; j < D; j++) a += (q[j] * ldh(s + 2 * j)) * (float)k_code(seg, bits, D, i, j);
        scores[i] = bias + a;
    }
}

/* ---- V: per token, groups of KIVI_VG channels ----------------------------------------- */

/* V code (token i, channel j): chunk (j/8, i/F), lane j%8, slot (i%F) % spl,
 * field (i%F) / spl. */
static inline size_t v_byte(int bits, int P, int i, int j, int *sh) {
    const int F = kivi_fields(bits), ntc = kivi_cdiv(P, F), spl = 32 / kivi_slot_bits(bits);
    const int ii = i % F, f = ii / spl;
    *sh = (bits * f) % 8;
    return ((size_t)(j / 8) * ntc + i / F) * 32 + slot_byte(bits, j % 8, ii % spl, f);
}
static inline int v_code(const uint8_t *seg, int bits, int P, int i, int j) {
    int sh;
    const size_t o = v_byte(bits, P, i, j, &sh);
    return (seg[o] >> sh) & ((1 << bits) - 1);
}

static void v_seal(int bits, uint8_t *dst, const uint8_t *open_seg, int D, int P) {
    const size_t cb = kivi_v_code_bytes(bits, D, P);
    memset(dst, 0, cb);
    const uint16_t *x = (const uint16_t *)open_seg; /* [P][D] */
    const int NG = kivi_cdiv(D, KIVI_VG);
    uint8_t *s = dst + cb, *z = s + (size_t)NG * P * 2;
    for (int i = 0; i < P; i++)
        for (int g = 0; g < NG; g++) {
            const int j0 = g * KIVI_VG, cnt = D - j0 < KIVI_VG ? D - j0 : KIVI_VG;
            const uint16_t *xr = x + (size_t)i * D + j0;
            uint16_t sh, zh;
            group_params(xr, 1, cnt, bits, &sh, &zh);
            memcpy(s + ((size_t)g * P + i) * 2, &sh, 2);
            memcpy(z + ((size_t)g * P + i) * 2, &zh, 2);
            for (int k = 0; k < cnt; k++) {
                int b;
                const size_t o = v_byte(bits, P, i, j0 + k, &b);
                dst[o] |= (uint8_t)(code_of(xr[k], sh, zh, bits) << b);
            }
        }
}

static void v_decode(int bits, const uint8_t *seg, int D, int P, int i, float *x) {
    const int NG = kivi_cdiv(D, KIVI_VG);
    const uint8_t *s = seg + kivi_v_code_bytes(bits, D, P), *z = s + (size_t)NG * P * 2;
    for (int j = 0; j < D; j++) {
        const size_t o = ((size_t)(j / KIVI_VG) * P + i) * 2;
        x[j] = ldh(s + o) * (float)v_code(seg, bits, P, i, j) + ldh(z + o);
    }
}

/* acc_j += (p_i s_ig) c_ij + p_i z_ig, i in order. */
static void v_av(int bits, const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {
    const int NG = kivi_cdiv(D, KIVI_VG);
    const uint8_t *s = seg + kivi_v_code_bytes(bits, D, P), *z = s + (size_t)NG * P * 2;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < D; j++) {
            const size_t o = ((size_t)(j / KIVI_VG) * P + i) * 2;
            const float w = p[i] * ldh(s + o), pz = p[i] * ldh(z + o);
            acc[j] += w * (float)v_code(seg, bits, P, i, j) + pz;
        }
}

/* The other direction of each layout (scalar only; the engine uses K codecs
 * for qk and V codecs for av, these keep every table complete). */
static void k_av(int bits, const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {
    const uint8_t *s = seg + kivi_k_code_bytes(bits, D, P), *z = s + (size_t)D * 2;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < D; j++)
            acc[j] += (p[i] * ldh(s + 2 * j)) * (float)k_code(seg, bits, D, i, j) + p[i] * ldh(z + 2 * j);
}
static void v_qk(int bits, const uint8_t *seg, int D, int P, int n, const float *q, float *scores) {
    const int NG = kivi_cdiv(D, KIVI_VG);
    const uint8_t *s = seg + kivi_v_code_bytes(bits, D, P), *z = s + (size_t)NG * P * 2;
    for (int i = 0; i < n; i++) {
        float a = 0, b = 0;
        for (int j = 0; j < D; j++) {
            const size_t o = ((size_t)(j / KIVI_VG) * P + i) * 2;
            a += (q[j] * ldh(s + o)) * (float)v_code(seg, bits, P, i, j);
            b += q[j] * ldh(z + o);
        }
        scores[i] = b + a;
    }
}

/* ---- codec tables ------------------------------------------------------------------------ */

#define KIVI_DEFINE(B)                                                                                      \
    static size_t k##B##_seg_bytes(int D, int P) { return kivi_k_seg_bytes(B, D, P); }                      \
    static size_t v##B##_seg_bytes(int D, int P) { return kivi_v_seg_bytes(B, D, P); }                      \
    static void k##B##_seal(const void *st, uint8_t *dst, const uint8_t *o, int D, int P) {                 \
        k_seal(B, dst, o, D, P);                                                                            \
    }                                                                                                       \
    static void v##B##_seal(const void *st, uint8_t *dst, const uint8_t *o, int D, int P) {                 \
        v_seal(B, dst, o, D, P);                                                                            \
    }                                                                                                       \
    static void k##B##_decode(const uint8_t *seg, int D, int P, int i, float *x) { k_decode(B, seg, D, P, i, x); } \
    static void v##B##_decode(const uint8_t *seg, int D, int P, int i, float *x) { v_decode(B, seg, D, P, i, x); } \
    static void k##B##_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *sc) {             \
        k_qk(B, seg, D, P, n, q, sc);                                                                       \
    }                                                                                                       \
    static void v##B##_av(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {            \
        v_av(B, seg, D, P, n, p, acc);                                                                      \
    }                                                                                                       \
    static void k##B##_qk_multi(const uint8_t *seg, int D, int P, int n, const float *q, int m, float *sc) { \
        for (int g = 0; g < m; g++) k_qk(B, seg, D, P, n, q + (size_t)g * D, sc + (size_t)g * P);          \
    }                                                                                                       \
    static void v##B##_av_multi(const uint8_t *seg, int D, int P, int n, const float *p, int m, float *acc) { \
        for (int g = 0; g < m; g++) v_av(B, seg, D, P, n, p + (size_t)g * P, acc + (size_t)g * D);         \
    }                                                                                                       \
    static void k##B##_av(const uint8_t *seg, int D, int P, int n, const float *p, float *acc) {            \
        k_av(B, seg, D, P, n, p, acc);                                                                      \
    }                                                                                                       \
    static void v##B##_qk(const uint8_t *seg, int D, int P, int n, const float *q, float *sc) {             \
        v_qk(B, seg, D, P, n, q, sc);                                                                       \
    }                                                                                                       \
    static int k##B##_simd(int D, kvl_codec_kernels *out) { return kvl_kivi_avx2_kernels(B, 0, D, out); }   \
    static int v##B##_simd(int D, kvl_codec_kernels *out) { return kvl_kivi_avx2_kernels(B, 1, D, out); }

KIVI_DEFINE(2)
KIVI_DEFINE(4)

/* Exact sizes at D = 64, P = 32 (bits/value = seg_bytes * 8 / (D * P)):
 *  kivi2:  codes 64*32*2/8 = 512 B + s,z f16 per channel 64*4 = 256 B -> 768 B: 3.00 bits/value
 *  kivi2v: codes 512 B + s,z f16 per (token, 32-channel group) 32*2*4 = 256 B -> 768 B: 3.00
 *  kivi4:  codes 1024 B + 256 B = 1280 B: 5.00;  kivi4v: 1024 B + 256 B: 5.00
 * f16 parameters follow the reference (scale and min kept in the model dtype);
 * f32 would add 1 bit/value at this P for no accuracy the f16-exact rounding
 * above does not already give. */
const kvl_codec kvl_codec_kivi2_v = {
    .name = "kivi2v",
    .desc = "KIVI 2-bit V: per token, groups of 32 channels, asymmetric, f16 scale+min per group; "
            "3.00 bits/value at D=64, P=32",
    .seg_bytes = v2_seg_bytes, .open = &kvl_codec_f16, .seal = v2_seal, .decode = v2_decode,
    .ref = {"scalar", v2_qk, v2_av, NULL, v2_av_multi}, .simd = v2_simd, .hidden = 1};
const kvl_codec kvl_codec_kivi2 = {
    .name = "kivi2",
    .desc = "KIVI 2-bit: K per channel over the page (f16 scale+min per channel per page), "
            "V per token in 32-channel groups (kivi2v); 3.00 bits/value at D=64, P=32 (K and V)",
    .seg_bytes = k2_seg_bytes, .open = &kvl_codec_f16, .seal = k2_seal, .decode = k2_decode,
    .ref = {"scalar", k2_qk, k2_av, k2_qk_multi, NULL}, .simd = k2_simd, .as_v = &kvl_codec_kivi2_v};
const kvl_codec kvl_codec_kivi4_v = {
    .name = "kivi4v",
    .desc = "KIVI 4-bit V: per token, groups of 32 channels, asymmetric, f16 scale+min per group; "
            "5.00 bits/value at D=64, P=32",
    .seg_bytes = v4_seg_bytes, .open = &kvl_codec_f16, .seal = v4_seal, .decode = v4_decode,
    .ref = {"scalar", v4_qk, v4_av, NULL, v4_av_multi}, .simd = v4_simd, .hidden = 1};
const kvl_codec kvl_codec_kivi4 = {
    .name = "kivi4",
    .desc = "KIVI 4-bit: K per channel over the page (f16 scale+min per channel per page), "
            "V per token in 32-channel groups (kivi4v); 5.00 bits/value at D=64, P=32 (K and V)",
    .seg_bytes = k4_seg_bytes, .open = &kvl_codec_f16, .seal = k4_seal, .decode = k4_decode,
    .ref = {"scalar", k4_qk, k4_av, k4_qk_multi, NULL}, .simd = k4_simd, .as_v = &kvl_codec_kivi4_v};
