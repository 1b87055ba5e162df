/* Float ops and thread pool: RMSNorm against a double-precision formula,
 * RoPE (both orderings) against the rotation definition, SwiGLU, and the
 * pool running every thread index exactly once per job. */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "cpu/ops.h"
#include "test.h"
#include "util/fp16.h"
#include "util/threadpool.h"

static float frand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return ((*s >> 8) / 16777216.0f) * 2.0f - 1.0f;
}

typedef struct {
    atomic_int hits[16];
    atomic_int calls;
    atomic_int bad_tid;
    int n_threads;
} pool_arg;

static void pool_fn(void *a, int ith, int nth, int tid) {
    pool_arg *p = a;
    if (tid < 0 || tid >= p->n_threads) atomic_fetch_add(&p->bad_tid, 1);
    atomic_fetch_add(&p->hits[ith], 1);
    atomic_fetch_add(&p->calls, nth);
}

int main(void) {
    unsigned s = 1;
    float x[576], w[576], y[576];
    for (int i = 0; i < 576; i++) x[i] = frand(&s) * 3, w[i] = frand(&s);
    kvl_cpu_rmsnorm(x, w, y, 576, 1e-5f);
    double ss = 0;
    for (int i = 0; i < 576; i++) ss += (double)x[i] * x[i];
    double r = 1.0 / sqrt(ss / 576 + 1e-5);
    double maxe = 0;
    for (int i = 0; i < 576; i++) maxe = fmax(maxe, fabs(y[i] - x[i] * r * w[i]));
    CHECK(maxe < 1e-5);

    /* RoPE: norm-preserving; matches the rotation formula for both layouts */
    const int hd = 64;
    float freq[32], cs[64], v[2 * 64], v0[2 * 64];
    for (int i = 0; i < 32; i++) freq[i] = (float)pow(100000.0, -2.0 * i / hd);
    kvl_cpu_rope_cs(cs, hd, 1234, freq);
    for (int neox = 0; neox < 2; neox++) {
        for (int i = 0; i < 2 * hd; i++) v[i] = v0[i] = frand(&s);
        kvl_cpu_rope(v, 2, hd, cs, neox);
        double e = 0;
        for (int h = 0; h < 2; h++)
            for (int i = 0; i < hd / 2; i++) {
                int a = neox ? i : 2 * i, b = neox ? i + hd / 2 : 2 * i + 1;
                double ang = 1234.0 * freq[i];
                double ra = v0[h * hd + a] * cos(ang) - v0[h * hd + b] * sin(ang);
                double rb = v0[h * hd + a] * sin(ang) + v0[h * hd + b] * cos(ang);
                e = fmax(e, fabs(ra - v[h * hd + a]) + fabs(rb - v[h * hd + b]));
            }
        CHECK_MSG(e < 1e-4, "rope neox=%d err %g", neox, e);
    }
    /* position 0 is the identity */
    kvl_cpu_rope_cs(cs, hd, 0, freq);
    for (int i = 0; i < hd; i++) v[i] = v0[i];
    kvl_cpu_rope(v, 1, hd, cs, 0);
    CHECK(memcmp(v, v0, sizeof(float) * hd) == 0);

    float g[5] = {-2, -0.5f, 0, 1, 3}, u[5] = {1, 2, 3, 4, 5};
    kvl_cpu_swiglu(g, u, 5);
    CHECK_NEAR(g[0], -2.0 / (1 + exp(2.0)) * 1, 1e-6);
    CHECK_NEAR(g[4], 3.0 / (1 + exp(-3.0)) * 5, 1e-5);
    CHECK_NEAR(g[2], 0, 0);

    /* fp16 / bf16 conversions */
    CHECK(kvl_fp16_to_fp32(kvl_fp32_to_fp16(1.5f)) == 1.5f);
    CHECK(kvl_fp16_to_fp32(kvl_fp32_to_fp16(65504.0f)) == 65504.0f);
    CHECK(isinf(kvl_fp16_to_fp32(kvl_fp32_to_fp16(1e6f))));
    CHECK(kvl_fp16_to_fp32(0x0001) == ldexpf(1.0f, -24)); /* smallest subnormal */
    CHECK(kvl_bf16_to_fp32(kvl_fp32_to_bf16(-2.5f)) == -2.5f);
    for (int i = 0; i < 1000; i++) {
        float f = frand(&s) * 100;
        CHECK(fabsf(kvl_fp16_to_fp32(kvl_fp32_to_fp16(f)) - f) <= fabsf(f) * 0x1p-11f);
    }

    /* thread pool: every index once per job, many jobs */
    for (int n = 1; n <= 4; n++) {
        kvl_threadpool *tp = kvl_threadpool_create(n);
        CHECK(tp && kvl_threadpool_n(tp) == n);
        pool_arg pa;
        memset(&pa, 0, sizeof pa);
        pa.n_threads = n;
        for (int j = 0; j < 2000; j++) kvl_threadpool_run(tp, pool_fn, &pa, 0);
        int ok = 1;
        for (int i = 0; i < n; i++) ok &= atomic_load(&pa.hits[i]) == 2000;
        CHECK(ok);
        CHECK(atomic_load(&pa.calls) == 2000 * n * n);
        /* more chunks than threads: every chunk exactly once per job */
        memset(&pa, 0, sizeof pa);
        pa.n_threads = n;
        for (int j = 0; j < 3000; j++) kvl_threadpool_run(tp, pool_fn, &pa, 13);
        ok = 1;
        for (int i = 0; i < 13; i++) ok &= atomic_load(&pa.hits[i]) == 3000;
        CHECK(ok);
        CHECK(atomic_load(&pa.calls) == 3000 * 13 * 13);
        CHECK(atomic_load(&pa.bad_tid) == 0);
        kvl_threadpool_free(tp);
    }
    long lo, hi, tot = 0;
    for (int i = 0; i < 3; i++) {
        kvl_split(10, i, 3, &lo, &hi);
        tot += hi - lo;
    }
    CHECK(tot == 10);
    kvl_threadpool_free(NULL);
    KVL_TEST_END();
}
