/* Shared internals of the quantized per-token codecs (int4, fp8, oaken):
 * f16 directed rounding for stored scales, and the scalar reference kernels
 * built on a codec's exact row decode. Included only by codec_<name>.c.
 *
 * Reference kernels (all these codecs): a row is decoded into a stack buffer
 * of D floats (exact decode values, the same as kvl_codec.decode), then
 *   qk: s = sum_j q[j] * x[j] in j order;   av: acc[j] += p[i] * x[j] in i order.
 * The multi-query forms decode each row once and run exactly that arithmetic
 * per query, so they are bit-identical per query to the single-query form.
 * No state, no allocation; D <= KVL_CODEC_Q_DMAX (larger D: kernels write
 * zeros / leave acc unchanged, and the codec's simd hook declines). */
#ifndef KVL_KV_CODEC_Q_H
#define KVL_KV_CODEC_Q_H

#include <stdint.h>
#include <string.h>

#include "kv/codec.h"
#include "util/fp16.h"

#define KVL_CODEC_Q_DMAX 1024

/* Largest half <= f (f finite, |f| <= 65504). */
static inline uint16_t kvl_q_f16_down(float f) {
    uint16_t h = kvl_fp32_to_fp16(f);
    if (kvl_fp16_to_fp32(h) > f) {
        if (h == 0x0000) h = 0x8001;      /* +0 -> -smallest subnormal */
        else if (h & 0x8000) h++;         /* negative: larger magnitude */
        else h--;
    }
    return h;
}
/* Smallest half >= f (f finite, |f| <= 65504). */
static inline uint16_t kvl_q_f16_up(float f) {
    uint16_t h = kvl_fp32_to_fp16(f);
    if (kvl_fp16_to_fp32(h) < f) {
        if (h == 0x8000) h = 0x0001;
        else if (h & 0x8000) h--;
        else h++;
    }
    return h;
}
static inline float kvl_q_clamp16(float f) { return f > 65504.f ? 65504.f : (f < -65504.f ? -65504.f : f); }

static inline uint16_t kvl_q_rd16(const uint8_t *p) { uint16_t h; memcpy(&h, p, 2); return h; }
static inline void kvl_q_wr16(uint8_t *p, uint16_t h) { memcpy(p, &h, 2); }

typedef void (*kvl_q_decode_fn)(const uint8_t *seg, int D, int P, int i, float *x);

/* qk for m queries: q [m][D], scores [m][P] (n used). */
static inline void kvl_q_qk_multi_ref(kvl_q_decode_fn dec, const uint8_t *seg, int D, int P, int n,
                                      const float *q, int m, float *scores) {
    float r[KVL_CODEC_Q_DMAX];
    for (int i = 0; i < n; i++) {
        if (D <= KVL_CODEC_Q_DMAX) dec(seg, D, P, i, r);
        for (int g = 0; g < m; g++) {
            const float *qg = q + (size_t)g * D;
            float s = 0;
            if (D <= KVL_CODEC_Q_DMAX)
                for (int j = 0; j < D; j++) s += qg[j] * r[j];
            scores[(size_t)g * P + i] = s;
        }
    }
}

/* av for m queries: p [m][P] (n used), acc [m][D]. */
static inline void kvl_q_av_multi_ref(kvl_q_decode_fn dec, const uint8_t *seg, int D, int P, int n,
                                      const float *p, int m, float *acc) {
    if (D > KVL_CODEC_Q_DMAX) return;
    float r[KVL_CODEC_Q_DMAX];
    for (int i = 0; i < n; i++) {
        dec(seg, D, P, i, r);
        for (int g = 0; g < m; g++) {
            const float w = p[(size_t)g * P + i];
            float *a = acc + (size_t)g * D;
            for (int j = 0; j < D; j++) a[j] += w * r[j];
        }
    }
}

#endif
