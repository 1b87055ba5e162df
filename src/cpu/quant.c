/* Scalar reference kernels for quantized tensors: row dequantization and
 * round-to-nearest quantization for every supported ggml block format, the
 * activation formats (Q8_0, Q8_1, Q8_K) that weight rows are dotted against,
 * scalar vec_dot for each weight type, the kernel-table selection, and the
 * thread-sliced, cache-tiled matmul driver. The AVX2 table lives in
 * quant_avx2.c; this file is compiled without SIMD flags. */
#include "cpu/quant.h"

#include <math.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "util/fp16.h"

_Static_assert(sizeof(kvl_block_q8_0) == 34, "q8_0 layout");
_Static_assert(sizeof(kvl_block_q4_0) == 18, "q4_0 layout");
_Static_assert(sizeof(kvl_block_q4_1) == 20, "q4_1 layout");
_Static_assert(sizeof(kvl_block_q5_0) == 22, "q5_0 layout");
_Static_assert(sizeof(kvl_block_q5_1) == 24, "q5_1 layout");
_Static_assert(sizeof(kvl_block_q8_1) == 36, "q8_1 layout");
_Static_assert(sizeof(kvl_block_q4_k) == 144, "q4_k layout");
_Static_assert(sizeof(kvl_block_q6_k) == 210, "q6_k layout");
_Static_assert(sizeof(kvl_block_q8_k) == 292, "q8_k layout");

#define H2F(h) kvl_fp16_to_fp32(h)
#define F2H(f) kvl_fp32_to_fp16(f)

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }
static int rnd(float v) { return (int)nearbyintf(v); }

/* Unpacks the 5-bit quants of a Q5 block: q[32] in 0..31. */
static void q5_unpack(const uint8_t qh4[4], const uint8_t qs[16], int q[32]) {
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    for (int j = 0; j < 16; j++) {
        q[j] = (qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
        q[j + 16] = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
    }
}

/* Unpacks Q6_K quants of one super-block: q[256] in 0..63 (subtract 32). */
static void q6k_unpack(const kvl_block_q6_k *b, int q[256]) {
    for (int n = 0; n < 2; n++) {
        const uint8_t *ql = b->ql + 64 * n, *qh = b->qh + 32 * n;
        int *o = q + 128 * n;
        for (int l = 0; l < 32; l++) {
            o[l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
            o[l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
            o[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            o[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
}

/* ---------------------------------------------------------------- dequant */

void kvl_dequant_row_ref(kvl_type t, const void *src, float *dst /* [n] */, int64_t n) {
    switch (t) {
    case KVL_TYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); return;
    case KVL_TYPE_F16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = H2F(s[i]);
        return;
    }
    case KVL_TYPE_BF16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = kvl_bf16_to_fp32(s[i]);
        return;
    }
    case KVL_TYPE_Q8_0: {
        const kvl_block_q8_0 *b = src;
        for (int64_t i = 0; i < n / 32; i++, dst += 32) {
            const float d = H2F(b[i].d);
            for (int j = 0; j < 32; j++) dst[j] = d * b[i].qs[j];
        }
        return;
    }
    case KVL_TYPE_Q8_1: {
        const kvl_block_q8_1 *b = src;
        for (int64_t i = 0; i < n / 32; i++, dst += 32) {
            const float d = H2F(b[i].d);
            for (int j = 0; j < 32; j++) dst[j] = d * b[i].qs[j];
        }
        return;
    }
    case KVL_TYPE_Q4_0: {
        const kvl_block_q4_0 *b = src;
        for (int64_t i = 0; i < n / 32; i++, dst += 32) {
            const float d = H2F(b[i].d);
            for (int j = 0; j < 16; j++) {
                dst[j] = d * ((b[i].qs[j] & 0xF) - 8);
                dst[j + 16] = d * ((b[i].qs[j] >> 4) - 8);
            }
        }
        return;
    }
    case KVL_TYPE_Q4_1: {
        const kvl_block_q4_1 *b = src;
        for (int64_t i = 0; i < n / 32; i++, dst += 32) {
            const float d = H2F(b[i].d), m = H2F(b[i].m);
            for (int j = 0; j < 16; j++) {
                dst[j] = d * (b[i].qs[j] & 0xF) + m;
                dst[j + 16] = d * (b[i].qs[j] >> 4) + m;
            }
        }
        return;
    }
    case KVL_TYPE_Q5_0: {
        const kvl_block_q5_0 *b = src;
        int q[32];
        for (int64_t i = 0; i < n / 32; i++, dst += 32) {
            const float d = H2F(b[i].d);
            q5_unpack(b[i].qh, b[i].qs, q);
            for (int j = 0; j < 32; j++) dst[j] = d * (q[j] - 16);
        }
        return;
    }
    case KVL_TYPE_Q5_1: {
        const kvl_block_q5_1 *b = src;
        int q[32];
        for (int64_t i = 0; i < n / 32; i++, dst += 32) {
            const float d = H2F(b[i].d), m = H2F(b[i].m);
            q5_unpack(b[i].qh, b[i].qs, q);
            for (int j = 0; j < 32; j++) dst[j] = d * q[j] + m;
        }
        return;
    }
    case KVL_TYPE_Q4_K: {
        const kvl_block_q4_k *b = src;
        for (int64_t i = 0; i < n / 256; i++) {
            const float d = H2F(b[i].d), dmin = H2F(b[i].dmin);
            for (int c = 0; c < 4; c++) {
                int sc0, m0, sc1, m1;
                kvl_q4k_scale_min(2 * c, b[i].scales, &sc0, &m0);
                kvl_q4k_scale_min(2 * c + 1, b[i].scales, &sc1, &m1);
                const float d0 = d * sc0, mm0 = dmin * m0, d1 = d * sc1, mm1 = dmin * m1;
                const uint8_t *q = b[i].qs + 32 * c;
                for (int l = 0; l < 32; l++) dst[l] = d0 * (q[l] & 0xF) - mm0;
                for (int l = 0; l < 32; l++) dst[l + 32] = d1 * (q[l] >> 4) - mm1;
                dst += 64;
            }
        }
        return;
    }
    case KVL_TYPE_Q6_K: {
        const kvl_block_q6_k *b = src;
        int q[256];
        for (int64_t i = 0; i < n / 256; i++, dst += 256) {
            const float d = H2F(b[i].d);
            q6k_unpack(&b[i], q);
            for (int j = 0; j < 256; j++) dst[j] = d * b[i].scales[j / 16] * (q[j] - 32);
        }
        return;
    }
    case KVL_TYPE_Q8_K: {
        const kvl_block_q8_k *b = src;
        for (int64_t i = 0; i < n / 256; i++, dst += 256)
            for (int j = 0; j < 256; j++) dst[j] = b[i].d * b[i].qs[j];
        return;
    }
    default: memset(dst, 0, (size_t)n * sizeof(float)); return;
    }
}

/* ------------------------------------------------------------------ quant */

/* Symmetric 8-bit quantization of 32 floats: returns d, fills q, *sum. The
 * AVX2 quant_vec mirrors this arithmetic exactly (same d, id and rounding). */
static float q8_block(const float *x /* [nq] */, int nq, int8_t *q, int *sum) {
    float amax = 0;
    for (int j = 0; j < nq; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
    int s = 0;
    for (int j = 0; j < nq; j++) {
        q[j] = (int8_t)rnd(x[j] * id);
        s += q[j];
    }
    if (sum) *sum = s;
    return d;
}

/* Value with the largest magnitude (sign kept). */
static float signed_amax(const float *x, int n) {
    float amax = 0, mx = 0;
    for (int j = 0; j < n; j++)
        if (fabsf(x[j]) > amax) amax = fabsf(x[j]), mx = x[j];
    return mx;
}

void kvl_quant_row_ref(kvl_type t, const float *src /* [n] */, void *dst, int64_t n) {
    switch (t) {
    case KVL_TYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); return;
    case KVL_TYPE_F16: {
        uint16_t *o = dst;
        for (int64_t i = 0; i < n; i++) o[i] = F2H(src[i]);
        return;
    }
    case KVL_TYPE_BF16: {
        uint16_t *o = dst;
        for (int64_t i = 0; i < n; i++) o[i] = kvl_fp32_to_bf16(src[i]);
        return;
    }
    case KVL_TYPE_Q8_0: {
        kvl_block_q8_0 *b = dst;
        for (int64_t i = 0; i < n / 32; i++, src += 32) b[i].d = F2H(q8_block(src, 32, b[i].qs, NULL));
        return;
    }
    case KVL_TYPE_Q8_1: {
        kvl_block_q8_1 *b = dst;
        for (int64_t i = 0; i < n / 32; i++, src += 32) {
            int s;
            b[i].d = F2H(q8_block(src, 32, b[i].qs, &s));
            b[i].s = (int16_t)s;
        }
        return;
    }
    case KVL_TYPE_Q8_K: {
        kvl_block_q8_k *b = dst;
        for (int64_t i = 0; i < n / 256; i++, src += 256) {
            b[i].d = q8_block(src, 256, b[i].qs, NULL);
            for (int g = 0; g < 16; g++) {
                int s = 0;
                for (int j = 0; j < 16; j++) s += b[i].qs[16 * g + j];
                b[i].bsums[g] = (int16_t)s;
            }
        }
        return;
    }
    case KVL_TYPE_Q4_0:
    case KVL_TYPE_Q5_0: {
        const int nl = t == KVL_TYPE_Q4_0 ? 8 : 16; /* q in 0..2*nl-1, zero at nl */
        for (int64_t i = 0; i < n / 32; i++, src += 32) {
            const float d = signed_amax(src, 32) / -nl;
            const float id = d != 0 ? 1.0f / d : 0.0f;
            const uint16_t dh = F2H(d);
            int q[32];
            for (int j = 0; j < 32; j++) q[j] = clampi(rnd(src[j] * id) + nl, 0, 2 * nl - 1);
            uint8_t qs[16];
            uint32_t qh = 0;
            for (int j = 0; j < 16; j++) {
                qs[j] = (uint8_t)((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
                qh |= (uint32_t)(q[j] >> 4) << j;
                qh |= (uint32_t)(q[j + 16] >> 4) << (j + 16);
            }
            if (t == KVL_TYPE_Q4_0) {
                kvl_block_q4_0 *b = (kvl_block_q4_0 *)dst + i;
                b->d = dh;
                memcpy(b->qs, qs, 16);
            } else {
                kvl_block_q5_0 *b = (kvl_block_q5_0 *)dst + i;
                b->d = dh;
                memcpy(b->qh, &qh, 4);
                memcpy(b->qs, qs, 16);
            }
        }
        return;
    }
    case KVL_TYPE_Q4_1:
    case KVL_TYPE_Q5_1: {
        const int qmax = t == KVL_TYPE_Q4_1 ? 15 : 31;
        for (int64_t i = 0; i < n / 32; i++, src += 32) {
            float mn = src[0], mx = src[0];
            for (int j = 1; j < 32; j++) mn = fminf(mn, src[j]), mx = fmaxf(mx, src[j]);
            const float d = (mx - mn) / qmax, id = d != 0 ? 1.0f / d : 0.0f;
            int q[32];
            for (int j = 0; j < 32; j++) q[j] = clampi(rnd((src[j] - mn) * id), 0, qmax);
            uint8_t qs[16];
            uint32_t qh = 0;
            for (int j = 0; j < 16; j++) {
                qs[j] = (uint8_t)((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
                qh |= (uint32_t)(q[j] >> 4) << j;
                qh |= (uint32_t)(q[j + 16] >> 4) << (j + 16);
            }
            if (t == KVL_TYPE_Q4_1) {
                kvl_block_q4_1 *b = (kvl_block_q4_1 *)dst + i;
                b->d = F2H(d);
                b->m = F2H(mn);
                memcpy(b->qs, qs, 16);
            } else {
                kvl_block_q5_1 *b = (kvl_block_q5_1 *)dst + i;
                b->d = F2H(d);
                b->m = F2H(mn);
                memcpy(b->qh, &qh, 4);
                memcpy(b->qs, qs, 16);
            }
        }
        return;
    }
    case KVL_TYPE_Q4_K: {
        kvl_block_q4_k *b = dst;
        for (int64_t i = 0; i < n / 256; i++, src += 256) {
            float scale[8], mins[8], maxs = 0, maxm = 0;
            for (int j = 0; j < 8; j++) {
                const float *x = src + 32 * j;
                float mn = 0, mx = x[0];
                for (int l = 0; l < 32; l++) mn = fminf(mn, x[l]), mx = fmaxf(mx, x[l]);
                scale[j] = (mx - mn) / 15;
                mins[j] = -mn;
                maxs = fmaxf(maxs, scale[j]);
                maxm = fmaxf(maxm, mins[j]);
            }
            const float d = maxs / 63, dmin = maxm / 63;
            b[i].d = F2H(d);
            b[i].dmin = F2H(dmin);
            const float dq = H2F(b[i].d), dminq = H2F(b[i].dmin);
            int sc[8], m[8];
            for (int j = 0; j < 8; j++) {
                sc[j] = dq > 0 ? clampi(rnd(scale[j] / dq), 0, 63) : 0;
                m[j] = dminq > 0 ? clampi(rnd(mins[j] / dminq), 0, 63) : 0;
            }
            uint8_t *s = b[i].scales;
            for (int j = 0; j < 4; j++) {
                s[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
                s[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
                s[j + 8] = (uint8_t)((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
            }
            for (int c = 0; c < 4; c++) {
                int q[2][32];
                for (int h = 0; h < 2; h++) {
                    const int j = 2 * c + h;
                    const float de = dq * sc[j], me = dminq * m[j];
                    const float ide = de != 0 ? 1.0f / de : 0.0f;
                    for (int l = 0; l < 32; l++) q[h][l] = clampi(rnd((src[32 * j + l] + me) * ide), 0, 15);
                }
                for (int l = 0; l < 32; l++) b[i].qs[32 * c + l] = (uint8_t)(q[0][l] | (q[1][l] << 4));
            }
        }
        return;
    }
    case KVL_TYPE_Q6_K: {
        kvl_block_q6_k *b = dst;
        for (int64_t i = 0; i < n / 256; i++, src += 256) {
            float scale[16], maxs = 0;
            for (int g = 0; g < 16; g++) {
                float amax = 0;
                for (int l = 0; l < 16; l++) amax = fmaxf(amax, fabsf(src[16 * g + l]));
                scale[g] = amax / 31;
                maxs = fmaxf(maxs, scale[g]);
            }
            const float d = maxs / 127;
            b[i].d = F2H(d);
            const float dq = H2F(b[i].d);
            int q[256];
            for (int g = 0; g < 16; g++) {
                const int sc = dq > 0 ? clampi(rnd(scale[g] / dq), 0, 127) : 0;
                b[i].scales[g] = (int8_t)sc;
                const float de = dq * sc, ide = de != 0 ? 1.0f / de : 0.0f;
                for (int l = 0; l < 16; l++) q[16 * g + l] = clampi(rnd(src[16 * g + l] * ide), -32, 31) + 32;
            }
            memset(b[i].qh, 0, sizeof b[i].qh);
            for (int e = 0; e < 256; e++) {
                const int nn = e / 128, w = (e % 128) / 32, l = e % 32;
                uint8_t *ql = b[i].ql + 64 * nn + l + (w & 1) * 32;
                const int lo = q[e] & 0xF, hi = q[e] >> 4;
                if (w < 2) *ql = (uint8_t)((*ql & 0xF0) | lo);
                else *ql = (uint8_t)((*ql & 0x0F) | (lo << 4));
                b[i].qh[32 * nn + l] |= (uint8_t)(hi << (2 * w));
            }
        }
        return;
    }
    default: return;
    }
}

/* ---------------------------------------------------------- scalar table */

static kvl_type vec_type_ref(kvl_type wt) {
    switch (wt) {
    case KVL_TYPE_Q8_0: return KVL_TYPE_Q8_0;
    case KVL_TYPE_Q4_0:
    case KVL_TYPE_Q4_1:
    case KVL_TYPE_Q5_0:
    case KVL_TYPE_Q5_1: return KVL_TYPE_Q8_1;
    case KVL_TYPE_Q4_K:
    case KVL_TYPE_Q6_K: return KVL_TYPE_Q8_K;
    default: return KVL_TYPE_F32;
    }
}

static void quant_vec_ref(kvl_type vt, const float *x /* [n] */, void *dst, int64_t n) {
    kvl_quant_row_ref(vt, x, dst, n);
}

/* Integer dot of 32 weight quants (0..31, or signed) with 32 int8. */
static int idot32(const int *q, const int8_t *x) {
    int s = 0;
    for (int j = 0; j < 32; j++) s += q[j] * x[j];
    return s;
}

static float vec_dot_ref(kvl_type wt, int64_t n, const void *w /* [n] of wt */, const void *xv) {
    float sum = 0;
    switch (wt) {
    case KVL_TYPE_F32: {
        const float *a = w, *x = xv;
        for (int64_t i = 0; i < n; i++) sum += a[i] * x[i];
        return sum;
    }
    case KVL_TYPE_F16: {
        const uint16_t *a = w;
        const float *x = xv;
        for (int64_t i = 0; i < n; i++) sum += H2F(a[i]) * x[i];
        return sum;
    }
    case KVL_TYPE_BF16: {
        const uint16_t *a = w;
        const float *x = xv;
        for (int64_t i = 0; i < n; i++) sum += kvl_bf16_to_fp32(a[i]) * x[i];
        return sum;
    }
    case KVL_TYPE_Q8_0: {
        const kvl_block_q8_0 *a = w, *x = xv;
        for (int64_t i = 0; i < n / 32; i++) {
            int s = 0;
            for (int j = 0; j < 32; j++) s += a[i].qs[j] * x[i].qs[j];
            sum += H2F(a[i].d) * H2F(x[i].d) * (float)s;
        }
        return sum;
    }
    case KVL_TYPE_Q4_0:
    case KVL_TYPE_Q4_1:
    case KVL_TYPE_Q5_0:
    case KVL_TYPE_Q5_1: {
        const kvl_block_q8_1 *x = xv;
        int q[32];
        for (int64_t i = 0; i < n / 32; i++) {
            float d, m;
            if (wt == KVL_TYPE_Q4_0 || wt == KVL_TYPE_Q4_1) {
                const uint8_t *qs;
                if (wt == KVL_TYPE_Q4_0) {
                    const kvl_block_q4_0 *a = (const kvl_block_q4_0 *)w + i;
                    d = H2F(a->d), m = -8 * d, qs = a->qs;
                } else {
                    const kvl_block_q4_1 *a = (const kvl_block_q4_1 *)w + i;
                    d = H2F(a->d), m = H2F(a->m), qs = a->qs;
                }
                for (int j = 0; j < 16; j++) q[j] = qs[j] & 0xF, q[j + 16] = qs[j] >> 4;
            } else if (wt == KVL_TYPE_Q5_0) {
                const kvl_block_q5_0 *a = (const kvl_block_q5_0 *)w + i;
                d = H2F(a->d), m = -16 * d;
                q5_unpack(a->qh, a->qs, q);
            } else {
                const kvl_block_q5_1 *a = (const kvl_block_q5_1 *)w + i;
                d = H2F(a->d), m = H2F(a->m);
                q5_unpack(a->qh, a->qs, q);
            }
            const float dx = H2F(x[i].d);
            sum += dx * (d * (float)idot32(q, x[i].qs) + m * (float)x[i].s);
        }
        return sum;
    }
    case KVL_TYPE_Q4_K: {
        const kvl_block_q4_k *a = w;
        const kvl_block_q8_k *x = xv;
        for (int64_t i = 0; i < n / 256; i++) {
            int isum = 0, msum = 0;
            for (int j = 0; j < 8; j++) {
                int sc, m;
                kvl_q4k_scale_min(j, a[i].scales, &sc, &m);
                const uint8_t *qs = a[i].qs + 32 * (j / 2);
                const int8_t *xq = x[i].qs + 32 * j;
                int s = 0;
                for (int l = 0; l < 32; l++) s += ((j & 1) ? qs[l] >> 4 : qs[l] & 0xF) * xq[l];
                isum += sc * s;
                msum += m * (x[i].bsums[2 * j] + x[i].bsums[2 * j + 1]);
            }
            sum += x[i].d * (H2F(a[i].d) * (float)isum - H2F(a[i].dmin) * (float)msum);
        }
        return sum;
    }
    case KVL_TYPE_Q6_K: {
        const kvl_block_q6_k *a = w;
        const kvl_block_q8_k *x = xv;
        int q[256];
        for (int64_t i = 0; i < n / 256; i++) {
            q6k_unpack(&a[i], q);
            int isum = 0;
            for (int g = 0; g < 16; g++) {
                int s = 0;
                for (int l = 0; l < 16; l++) s += (q[16 * g + l] - 32) * x[i].qs[16 * g + l];
                isum += a[i].scales[g] * s;
            }
            sum += x[i].d * H2F(a[i].d) * (float)isum;
        }
        return sum;
    }
    default: return 0;
    }
}

static const kvl_cpu_kernels kernels_ref = {
    .name = "scalar",
    .vec_type = vec_type_ref,
    .quant_vec = quant_vec_ref,
    .vec_dot = vec_dot_ref,
    .dequant_row = kvl_dequant_row_ref,
};

static kvl_type vec_type_exact(kvl_type wt) {
    (void)wt;
    return KVL_TYPE_F32;
}

/* dot(w_row [n] of wt, x [n] f32): dequantize one block at a time. */
static float vec_dot_exact(kvl_type wt, int64_t n, const void *w, const void *xv) {
    const float *x = xv;
    const int64_t be = kvl_type_block_elems(wt);
    const size_t bb = kvl_type_block_bytes(wt);
    float tmp[256];
    double sum = 0;
    const int64_t step = be == 1 ? 256 : be;
    for (int64_t i = 0; i < n; i += step) {
        const int64_t m = n - i < step ? n - i : step;
        kvl_dequant_row_ref(wt, (const uint8_t *)w + (size_t)(i / be) * bb, tmp, m);
        for (int64_t j = 0; j < m; j++) sum += (double)tmp[j] * x[i + j];
    }
    return (float)sum;
}

static void quant_vec_exact(kvl_type vt, const float *x, void *dst, int64_t n) {
    (void)vt;
    memcpy(dst, x, sizeof(float) * (size_t)n);
}

static const kvl_cpu_kernels kernels_exact = {
    .name = "exact",
    .vec_type = vec_type_exact,
    .quant_vec = quant_vec_exact,
    .vec_dot = vec_dot_exact,
    .dequant_row = kvl_dequant_row_ref,
};

const kvl_cpu_kernels *kvl_cpu_kernels_exact(void) { return &kernels_exact; }

const kvl_cpu_kernels *kvl_cpu_kernels_get(int simd) {
#if defined(__x86_64__) || defined(__i386__)
    /* F16C via CPUID leaf 1 (clang's __builtin_cpu_supports lacks "f16c"). */
    unsigned a, b, c, d;
    const int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    if (simd && f16c && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &kvl_cpu_kernels_avx2;
#endif
    return &kernels_ref;
}

/* ----------------------------------------------------------------- matmul */

void kvl_cpu_matmul(const kvl_cpu_kernels *k, kvl_type wt, const void *W /* [rows][cols] */, int64_t rows,
                    int64_t cols, const void *xq /* [n_tok][cols] of vec_type */, int n_tok,
                    float *y /* [n_tok][rows] */, int ith, int nth) {
    /* Slice rows in units of 4 so micro-kernel tiles never straddle threads. */
    const int64_t units = (rows + 3) / 4;
    int64_t r0 = 4 * (units * ith / nth), r1 = 4 * (units * (ith + 1) / nth);
    if (r0 > rows) r0 = rows;
    if (r1 > rows) r1 = rows;
    if (r0 >= r1 || n_tok <= 0) return;
#if defined(__x86_64__) || defined(__i386__)
    if (k == &kvl_cpu_kernels_avx2 && kvl_cpu_matmul_rows_avx2(wt, W, cols, r0, r1, xq, n_tok, y, rows)) return;
#endif
    const size_t wrb = kvl_type_row_bytes(wt, cols);
    const size_t xrb = kvl_type_row_bytes(k->vec_type(wt), cols);
    /* Rows per chunk: ~16 KB of weights, reused from L1/L2 for every token. */
    int64_t rc = (int64_t)(16384 / (wrb ? wrb : 1));
    if (rc < 1) rc = 1;
    const uint8_t *Wb = W, *Xb = xq;
    for (int64_t c0 = r0; c0 < r1; c0 += rc) {
        const int64_t c1 = c0 + rc < r1 ? c0 + rc : r1;
        for (int t = 0; t < n_tok; t++)
            for (int64_t r = c0; r < c1; r++)
                y[(int64_t)t * rows + r] = k->vec_dot(wt, cols, Wb + (size_t)r * wrb, Xb + (size_t)t * xrb);
    }
}
