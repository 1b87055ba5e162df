/* Float kernels of the forward pass (scalar; the compiler vectorizes the
 * simple loops, and they are <2% of decode time next to matmul/attention). */
#include "cpu/ops.h"

#include <math.h>

void kvl_cpu_rmsnorm(const float *x, const float *w, float *y, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    const float s = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) y[i] = x[i] * s * w[i];
}

void kvl_cpu_rope_cs(float *cs, int head_dim, int32_t pos, const float *freq) {
    for (int i = 0; i < head_dim / 2; i++) {
        const double a = (double)pos * freq[i];
        cs[2 * i] = (float)cos(a);
        cs[2 * i + 1] = (float)sin(a);
    }
}

void kvl_cpu_rope(float *x, int n_heads, int head_dim, const float *cs, int neox) {
    const int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (int64_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            const float c = cs[2 * i], s = cs[2 * i + 1];
            const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
            const float x0 = v[a], x1 = v[b];
            v[a] = x0 * c - x1 * s;
            v[b] = x0 * s + x1 * c;
        }
    }
}

void kvl_cpu_swiglu(float *g, const float *u, int n) {
    for (int i = 0; i < n; i++) {
        const float x = g[i];
        g[i] = x / (1.0f + expf(-x)) * u[i];
    }
}

void kvl_cpu_add(float *y, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += x[i];
}
