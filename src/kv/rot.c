/* Rotation for "+rot" codecs: a Hadamard transform with fixed random signs,
 * R = H diag(s) / sqrt(D), applied to K rows (and to queries, so q.k is
 * unchanged: (Rq).(Rk) = q.k) and to V rows (the attention output is rotated
 * back by R^T = diag(s) H / sqrt(D)). Spreads outlier channels over all
 * channels before quantization (QuaRot; llama.cpp's rotated KV, 2026). */
#include "kv/kv_internal.h"

#include <math.h>

/* In-place unnormalized fast Walsh-Hadamard transform, D a power of two. x: [D]. */
static void fwht(float *x, int D) {
    for (int h = 1; h < D; h <<= 1)
        for (int i = 0; i < D; i += h << 1)
            for (int j = i; j < i + h; j++) {
                const float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
}

void kvi_rot(const kvl_kv_pool *p, float *x) {
    const int D = p->D;
    const float sc = 1.0f / sqrtf((float)D);
    for (int j = 0; j < D; j++) x[j] *= p->rot_sign[j];
    fwht(x, D);
    for (int j = 0; j < D; j++) x[j] *= sc;
}

void kvi_unrot(const kvl_kv_pool *p, float *x) {
    const int D = p->D;
    const float sc = 1.0f / sqrtf((float)D);
    fwht(x, D);
    for (int j = 0; j < D; j++) x[j] *= sc * p->rot_sign[j];
}
