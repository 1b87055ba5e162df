/* Micro-benchmark of kvl_cpu_matmul on the default model's shapes: scalar vs
 * AVX2 table vs AVX2 vec_dot-only path (no tiled micro-kernel), 1 and 2
 * threads, decode (n_tok = 1) and prefill (n_tok = 128). Prints GFLOP/s
 * (2*rows*cols*n_tok per call) and weight GB/s. Threads run their slices
 * independently for all repetitions (no per-call barrier), so multi-thread
 * numbers are an upper bound on what a thread pool achieves.
 * Usage: bench_matmul [seconds-per-point] [type]
 * Build: gcc -O2 -Iinclude -Isrc bench/bench_matmul.c src/cpu/quant.c
 *        src/cpu/types.c build/src/cpu/quant_avx2.o -lm -lpthread */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/quant.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    const kvl_cpu_kernels *k;
    kvl_type wt;
    const void *W;
    int64_t rows, cols;
    const void *X;
    int n_tok, reps, ith, nth;
    float *y;
} job;

static void *run_job(void *p) {
    job *j = p;
    for (int r = 0; r < j->reps; r++)
        kvl_cpu_matmul(j->k, j->wt, j->W, j->rows, j->cols, j->X, j->n_tok, j->y, j->ith, j->nth);
    return NULL;
}

static double bench(const kvl_cpu_kernels *k, kvl_type wt, const void *W, int64_t rows, int64_t cols, const void *X,
                    int n_tok, float *y, int nth, int reps) {
    job jobs[8];
    pthread_t th[8];
    for (int i = 0; i < nth; i++) jobs[i] = (job){k, wt, W, rows, cols, X, n_tok, reps, i, nth, y};
    jobs[0].reps = 1; /* warm-up */
    run_job(&jobs[0]);
    jobs[0].reps = reps;
    const double t0 = now();
    for (int i = 1; i < nth; i++) pthread_create(&th[i], NULL, run_job, &jobs[i]);
    run_job(&jobs[0]);
    for (int i = 1; i < nth; i++) pthread_join(th[i], NULL);
    return (now() - t0) / reps;
}

int main(int argc, char **argv) {
    const double min_time = argc > 1 ? atof(argv[1]) : 0.3; /* seconds per measurement (approx) */
    const char *only = argc > 2 ? argv[2] : NULL;              /* e.g. "q4_1" */
    const kvl_cpu_kernels *ref = kvl_cpu_kernels_get(0), *simd = kvl_cpu_kernels_get(1);
    kvl_cpu_kernels plain = *simd; /* same kernels, but a different table: generic vec_dot path */
    plain.name = "avx2-vecdot";
    const kvl_cpu_kernels *tabs[3] = {ref, simd, &plain};
    static const struct {
        kvl_type wt;
        int64_t rows, cols;
    } shapes[] = {
        {KVL_TYPE_Q4_1, 1536, 576}, {KVL_TYPE_Q8_0, 49152, 576}, {KVL_TYPE_Q4_0, 1536, 576},
        {KVL_TYPE_Q5_1, 1536, 576}, {KVL_TYPE_Q4_K, 1536, 1536}, {KVL_TYPE_Q6_K, 1536, 1536},
        {KVL_TYPE_F16, 1536, 576},
    };
    static const int toks[] = {1, 128};
    printf("%-6s %6s %5s %4s %3s %-12s %9s %9s %8s\n", "type", "rows", "cols", "ntok", "thr", "kernels", "us/call",
           "GFLOP/s", "GB/s");
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const kvl_type wt = shapes[si].wt;
        if (only && strcmp(only, kvl_type_name(wt)) != 0) continue;
        const int64_t rows = shapes[si].rows, cols = shapes[si].cols;
        const kvl_type vt = simd->vec_type(wt);
        const size_t wrb = kvl_type_row_bytes(wt, cols), xrb = kvl_type_row_bytes(vt, cols);
        float *f = malloc((size_t)cols * sizeof *f);
        unsigned char *W = malloc((size_t)rows * wrb), *X = malloc(128 * xrb);
        float *y = malloc((size_t)rows * 128 * sizeof *y);
        unsigned s = 12345;
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t c = 0; c < cols; c++) f[c] = (float)((s = s * 1103515245u + 12345u) >> 16 & 0x7fff) / 32768.0f - 0.5f;
            kvl_quant_row_ref(wt, f, W + r * wrb, cols);
        }
        for (int t = 0; t < 128; t++) {
            for (int64_t c = 0; c < cols; c++) f[c] = (float)((s = s * 1103515245u + 12345u) >> 16 & 0x7fff) / 32768.0f - 0.5f;
            simd->quant_vec(vt, f, X + t * xrb, cols);
        }
        for (int ti = 0; ti < 2; ti++)
            for (int k = 0; k < 3; k++)
                for (int nth = 1; nth <= 2; nth++) {
                    const int n_tok = toks[ti];
                    const double est = bench(tabs[k], wt, W, rows, cols, X, n_tok, y, nth, 1);
                    int reps = (int)(min_time / (est > 1e-7 ? est : 1e-7));
                    if (reps < 1) reps = 1;
                    const double t = bench(tabs[k], wt, W, rows, cols, X, n_tok, y, nth, reps);
                    printf("%-6s %6lld %5lld %4d %3d %-12s %9.1f %9.2f %8.2f\n", kvl_type_name(wt), (long long)rows,
                           (long long)cols, n_tok, nth, tabs[k]->name, t * 1e6, 2.0 * rows * cols * n_tok / t * 1e-9,
                           (double)rows * wrb / t * 1e-9);
                }
        free(f), free(W), free(X), free(y);
    }
    /* Activation quantization. */
    float *x = malloc(4096 * sizeof *x);
    unsigned char *q = malloc(8192);
    for (int i = 0; i < 4096; i++) x[i] = (float)(i % 97) * 0.01f - 0.4f;
    static const kvl_type vts[] = {KVL_TYPE_Q8_0, KVL_TYPE_Q8_1, KVL_TYPE_Q8_K};
    for (int v = 0; v < 3; v++)
        for (int k = 0; k < 2; k++) {
            const int reps = 20000;
            const double t0 = now();
            for (int r = 0; r < reps; r++) tabs[k]->quant_vec(vts[v], x, q, 4096);
            printf("quant_vec %s n=4096 %-6s: %.2f us\n", kvl_type_name(vts[v]), tabs[k]->name, (now() - t0) / reps * 1e6);
        }
    free(x), free(q);
    return 0;
}
