/* Device tests of the decode forward pass kernels (make test-cuda; needs a
 * GPU), each against its CPU reference on fresh random inputs, outputs
 * poisoned with NaN before every run:
 *  - matvec on Q8_0, Q4_0, Q4_1 and f16 weights (blocks made by the CPU
 *    quantizer, repacked as at upload), 1..11 columns, = and +=: against the
 *    dequantized rows (kvl_dequant_row_ref) dotted in double. Tolerance:
 *    the device sums 32-value blocks in f32 per lane, then across the warp;
 *    the error is bounded by ~cols * 2^-24 * sum|w x|, so the check is
 *    |gpu - ref| <= 1e-5 * sum|w x| + 1e-6 (a wrong block, scale or nibble
 *    moves a value by >= 1e-2 * sum|w x| here);
 *  - 8-bit activation blocks (kvl_cuda_quantize_q8 and the fused
 *    RMSNorm / SwiGLU producers): codes, scales and code sums equal to
 *    kvl_quant_row_ref(Q8_1) of the same floats, exactly (the same IEEE
 *    operations: one correctly rounded division, one product,
 *    round-to-nearest-even; the fused producers are compared against the
 *    CPU quantization of the f32 output they wrote);
 *  - the integer matvec (kvl_cuda_gemv_q8) on Q8_0, Q4_0, Q4_1, 1..11
 *    columns, = and +=, every kernel variant at one column (the persistent
 *    ones also with more rows than warps), launched right
 *    after the quantization kernel (with and without programmatic
 *    dependent launch; input poisoned before): against the
 *    CPU-quantized activation blocks dotted with the weight codes in exact
 *    integers, the block terms dx (dw isum + mw s) summed in double (what
 *    the CPU default vec_dot computes, in f32 there). The device sums
 *    integer half-blocks exactly and the block terms in f32, so the same
 *    bound as the f32 matvec holds: |gpu - ref| <= 1e-5 * sum |terms| + 1e-6
 *    (a wrong code, scale or nibble moves a value by >= 1e-2 of that);
 *  - embedding rows (dequantization: one rounding, 2^-22 relative), RMSNorm
 *    (the double sum of the CPU; 4 ulps), SwiGLU (expf on both sides; 1e-6),
 *    RoPE angles (double cos/sin on both sides; 1e-7 absolute), argmax
 *    (exact, ties to the lowest index, NaN skipped);
 *  - RoPE + quantize-on-append for f16, int8, fp8, int4z and the open f16
 *    pages of kivi2z (the seal: test_cuda_seal.c), head_dim 64 and 128,
 *    P 16 and 32, GQA 9/3 and 8/2, adjacent and NEOX pairs, entries of
 *    several slots and positions (two of them in one page): the roped q
 *    against kvl_cpu_rope (products and sums rounded separately on the
 *    device, so 1e-6 relative covers any difference), every written K and V
 *    row decoded by the CPU codec against the CPU codec's own encoding of
 *    the CPU-roped row (within one quantization step; and byte-identical
 *    rows counted, >= 95% required), position entries set, other rows
 *    untouched (their poison bytes kept);
 *  - gate|up with the SwiGLU epilogue (kvl_cuda_gemv_q8_swiglu, Q8_0)
 *    against the matvec + kvl_cuda_swiglu_q8 it replaces (1e-6 relative;
 *    bit identity counted) and h's 8-bit blocks exactly against the CPU
 *    quantization, twice per case (arrival counters back to zero); Q4
 *    formats refused;
 *  - sampling (kvl_cuda_sample) against the CPU sampler (sampler.c,
 *    compiled in): for fixed logits and parameters (temperature, top-k up
 *    to 1024, top-p, min-p; ties, NaN, +-inf, fewer candidates than top-k)
 *    20480 device draws and 20480 CPU draws all inside the candidate set of
 *    the CPU's pipeline (computed here in double), and both empirical
 *    distributions within a 6-sigma chi-square bound (df + 6 sqrt(2 df)) of
 *    its probabilities; temperature 0 equal to the CPU's greedy token;
 *    top-k 0 / > 1024 refused. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/ops.h"
#include "cpu/quant.h"
#include "cuda/kvl_cuda.h"
#include "cuda/lm_ops.h"
#include "kv/codec.h"
#include "test.h"
#include "cuda_test.h"
#include "util/fp16.h"
/* the CPU sampler, compiled in (this test links no src/engine object) */
#include "../../src/engine/sampler.c"

static uint64_t rng = 0x243f6a8885a308d3ull;
static double urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static float frand(float a) { return (float)((2 * urand() - 1) * a); }


/* ---- matvec ---- */

static int gemv_case(int t, int64_t rows, int64_t cols, int n, int acc) {
    kvl_err err = {0};
    const size_t rb = kvl_type_row_bytes(t, cols);
    uint8_t *wq = malloc(rb * rows);
    float *wf = malloc(sizeof(float) * rows * cols), *x = malloc(sizeof(float) * n * cols);
    float *y0 = malloc(sizeof(float) * n * rows), *y = malloc(sizeof(float) * n * rows);
    for (int64_t r = 0; r < rows; r++) {
        float tmp[4096];
        const float amp = 0.05f + (float)urand();
        for (int64_t j = 0; j < cols; j++) tmp[j] = frand(amp) + (j % 7 == 0 ? 0.3f * amp : 0);
        kvl_quant_row_ref((kvl_type)t, tmp, wq + r * rb, cols);
        kvl_dequant_row_ref((kvl_type)t, wq + r * rb, wf + r * cols, cols);
    }
    for (int64_t i = 0; i < n * cols; i++) x[i] = frand(2.0f);
    for (int64_t i = 0; i < n * rows; i++) y0[i] = frand(1.0f);
    kvl_cuda_wfmt f = t == KVL_TYPE_F16 ? KVL_CUDA_WF_F16 : t == KVL_TYPE_Q8_0 ? KVL_CUDA_WF_Q8_0
                      : t == KVL_TYPE_Q4_0 ? KVL_CUDA_WF_Q4_0 : KVL_CUDA_WF_Q4_1;
    const size_t qb = kvl_cuda_wmat_qbytes(f, rows, cols), sb = kvl_cuda_wmat_sbytes(f, rows, cols);
    void *hq = malloc(qb), *hs = malloc(sb ? sb : 1);
    CHECK(kvl_cuda_wmat_repack(t, wq, rows, cols, 0, rows, hq, hs));
    kvl_cuda_wmat w = {f, rows, cols, dev_alloc(qb), sb ? dev_alloc(sb) : NULL};
    up(w.q, hq, qb);
    if (sb) up(w.s, hs, sb);
    float *dx = dev_alloc(sizeof(float) * n * cols), *dy = dev_alloc(sizeof(float) * n * rows);
    up(dx, x, sizeof(float) * n * cols);
    if (acc) up(dy, y0, sizeof(float) * n * rows);
    else poison(dy, sizeof(float) * n * rows);
    CHECK(kvl_cuda_gemv(&w, dx, n, dy, acc, NULL, &err) == KVL_OK);
    CHECK(kvl_cuda_sync(&err) == KVL_OK);
    down(y, dy, sizeof(float) * n * rows);
    double worst = 0;
    int bad = 0;
    for (int c = 0; c < n; c++)
        for (int64_t r = 0; r < rows; r++) {
            double ref = acc ? y0[c * rows + r] : 0, mag = 0;
            double dot = 0;
            for (int64_t j = 0; j < cols; j++) {
                dot += (double)wf[r * cols + j] * x[c * cols + j];
                mag += fabs((double)wf[r * cols + j] * x[c * cols + j]);
            }
            ref = acc ? (double)(float)((float)ref + (float)dot) : dot;
            const double d = fabs(y[c * rows + r] - ref), tol = 1e-5 * mag + 1e-6;
            if (!(d <= tol)) bad++;
            if (d / (mag + 1e-30) > worst) worst = d / (mag + 1e-30);
        }
    CHECK_MSG(bad == 0, "gemv %s %lldx%lld n=%d acc=%d: %d bad, worst %.3g", kvl_type_name(t), (long long)rows,
              (long long)cols, n, acc, bad, worst);
    kvl_cuda_free(w.q), kvl_cuda_free(w.s), kvl_cuda_free(dx), kvl_cuda_free(dy);
    free(wq), free(wf), free(x), free(y0), free(y), free(hq), free(hs);
    return bad == 0;
}

/* ---- integer matvec on 8-bit activations ---- */

/* weight codes of block b of a GGUF row of type t, and its (d, m): w = d c + m */
static void wcodes(int t, const uint8_t *row, int64_t b, int *c, double *d, double *m) {
    if (t == KVL_TYPE_Q8_0) {
        const kvl_block_q8_0 *k = (const kvl_block_q8_0 *)row + b;
        for (int j = 0; j < 32; j++) c[j] = k->qs[j];
        *d = kvl_fp16_to_fp32(k->d), *m = 0;
    } else if (t == KVL_TYPE_Q4_0) {
        const kvl_block_q4_0 *k = (const kvl_block_q4_0 *)row + b;
        for (int j = 0; j < 16; j++) c[j] = k->qs[j] & 15, c[j + 16] = k->qs[j] >> 4;
        *d = kvl_fp16_to_fp32(k->d), *m = -8.0 * (float)kvl_fp16_to_fp32(k->d);
    } else {
        const kvl_block_q4_1 *k = (const kvl_block_q4_1 *)row + b;
        for (int j = 0; j < 16; j++) c[j] = k->qs[j] & 15, c[j + 16] = k->qs[j] >> 4;
        *d = kvl_fp16_to_fp32(k->d), *m = kvl_fp16_to_fp32(k->m);
    }
}

/* the device's activation blocks (codes, (d, s)) against the CPU's Q8_1 of the same floats: mismatches */
static int q8_mismatches(const float *x, const int8_t *q, const float *ds, int64_t n_blocks) {
    int bad = 0;
    for (int64_t b = 0; b < n_blocks; b++) {
        kvl_block_q8_1 r;
        kvl_quant_row_ref(KVL_TYPE_Q8_1, x + 32 * b, &r, 32);
        if (ds[2 * b] != kvl_fp16_to_fp32(r.d) || ds[2 * b + 1] != (float)r.s || memcmp(q + 32 * b, r.qs, 32)) bad++;
    }
    return bad;
}

static int gemv_q8_case(int t, int64_t rows, int64_t cols, int n, int acc) {
    kvl_err err = {0};
    const size_t rb = kvl_type_row_bytes(t, cols), nb = (size_t)cols / 32;
    uint8_t *wq = malloc(rb * rows);
    float *x = malloc(sizeof(float) * n * cols), *y0 = malloc(sizeof(float) * n * rows), *y = malloc(sizeof(float) * n * rows);
    float *tmp = malloc(sizeof(float) * cols);
    for (int64_t r = 0; r < rows; r++) {
        const float amp = 0.05f + (float)urand();
        for (int64_t j = 0; j < cols; j++) tmp[j] = frand(amp) + (j % 7 == 0 ? 0.3f * amp : 0);
        kvl_quant_row_ref((kvl_type)t, tmp, wq + r * rb, cols);
    }
    for (int64_t i = 0; i < n * cols; i++) x[i] = frand(2.0f) * (i % 97 == 0 ? 5.0f : 1.0f);
    for (int64_t i = 0; i < n * rows; i++) y0[i] = frand(1.0f);
    const kvl_cuda_wfmt f = t == KVL_TYPE_Q8_0 ? KVL_CUDA_WF_Q8_0 : t == KVL_TYPE_Q4_0 ? KVL_CUDA_WF_Q4_0 : KVL_CUDA_WF_Q4_1;
    const size_t qb = kvl_cuda_wmat_qbytes(f, rows, cols), sb = kvl_cuda_wmat_sbytes(f, rows, cols);
    void *hq = malloc(qb), *hs = malloc(sb);
    CHECK(kvl_cuda_wmat_repack(t, wq, rows, cols, 0, rows, hq, hs));
    kvl_cuda_wmat w = {f, rows, cols, dev_alloc(qb), dev_alloc(sb)};
    up(w.q, hq, qb), up(w.s, hs, sb);
    float *dx = dev_alloc(sizeof(float) * n * cols), *dy = dev_alloc(sizeof(float) * n * rows);
    int8_t *dq = dev_alloc((size_t)n * cols);
    float *dds = dev_alloc(sizeof(float) * 2 * n * nb);
    up(dx, x, sizeof(float) * n * cols);
    poison(dq, (size_t)n * cols), poison(dds, sizeof(float) * 2 * n * nb);
    CHECK(kvl_cuda_quantize_q8(dx, n, (int)cols, dq, dds, NULL, &err) == KVL_OK);
    /* the blocks the device made, against the CPU's */
    int8_t *q = malloc((size_t)n * cols);
    float *ds = malloc(sizeof(float) * 2 * n * nb);
    CHECK(kvl_cuda_sync(&err) == KVL_OK);
    down(q, dq, (size_t)n * cols), down(ds, dds, sizeof(float) * 2 * n * nb);
    const int qbad = q8_mismatches(x, q, ds, (int64_t)n * nb);
    CHECK_MSG(qbad == 0, "quantize q8 %d cols: %d of %zu blocks differ from the CPU's", (int)cols, qbad, n * nb);
    int bad = 0;
    double worst = 0;
    const int n_var = kvl_cuda_gemv_q8_n_variants();
    for (int v = -3; v < (n == 1 ? n_var : 0); v++) {
        /* -1: the default; -2: the default without PDL; -3: without the trigger at the kernel's start */
        kvl_cuda_gemv_opts o = kvl_cuda_gemv_opts_default();
        o.variant = v < 0 ? -1 : v, o.pdl = v != -2, o.trigger = v != -3;
        if (acc) up(dy, y0, sizeof(float) * n * rows);
        else poison(dy, sizeof(float) * n * rows);
        /* quantized again right before the matvec, over poison: a matvec that
         * read its input before the quantization finished (programmatic
         * dependent launch) would see NaN codes' garbage */
        poison(dq, (size_t)n * cols), poison(dds, sizeof(float) * 2 * n * nb);
        CHECK(kvl_cuda_quantize_q8(dx, n, (int)cols, dq, dds, NULL, &err) == KVL_OK);
        CHECK(kvl_cuda_gemv_q8_ex(&w, dq, dds, n, dy, acc, &o, NULL, &err) == KVL_OK);
        CHECK(kvl_cuda_sync(&err) == KVL_OK);
        down(y, dy, sizeof(float) * n * rows);
        for (int c = 0; c < n; c++)
            for (int64_t r = 0; r < rows; r++) {
                double dot = 0, mag = 0;
                for (size_t b = 0; b < nb; b++) {
                    int wc[32];
                    double d, m;
                    wcodes(t, wq + r * rb, (int64_t)b, wc, &d, &m);
                    const int8_t *xc = q + (size_t)c * cols + 32 * b;
                    long isum = 0;
                    for (int j = 0; j < 32; j++) isum += (long)wc[j] * xc[j];
                    const double dx_ = ds[2 * (c * nb + b)], sx = ds[2 * (c * nb + b) + 1];
                    const double term = dx_ * (d * (double)isum + m * sx);
                    dot += term, mag += fabs(dx_ * d * (double)isum) + fabs(dx_ * m * sx);
                }
                const double ref = acc ? (double)(float)(y0[c * rows + r] + (float)dot) : dot;
                const double e = fabs(y[c * rows + r] - ref), tol = 1e-5 * mag + 1e-6;
                if (!(e <= tol)) bad++;
                if (e / (mag + 1e-30) > worst) worst = e / (mag + 1e-30);
            }
    }
    CHECK_MSG(bad == 0, "gemv q8 %s %lldx%lld n=%d acc=%d: %d bad, worst %.3g", kvl_type_name(t), (long long)rows,
              (long long)cols, n, acc, bad, worst);
    kvl_cuda_free(w.q), kvl_cuda_free(w.s), kvl_cuda_free(dx), kvl_cuda_free(dy), kvl_cuda_free(dq), kvl_cuda_free(dds);
    free(wq), free(x), free(y0), free(y), free(tmp), free(hq), free(hs), free(q), free(ds);
    return bad == 0;
}

/* the fused producers: RMSNorm and SwiGLU that also write 8-bit blocks of their output */
static void q8_producers(void) {
    kvl_err err = {0};
    const int n = 3, E = 4096, F = 14336;
    float *x = malloc(sizeof(float) * n * F * 2), *w = malloc(sizeof(float) * E), *y = malloc(sizeof(float) * n * F);
    int8_t *q = malloc((size_t)n * F);
    float *ds = malloc(sizeof(float) * 2 * n * F / 32);
    for (int i = 0; i < n * F * 2; i++) x[i] = frand(3.0f);
    for (int i = 0; i < E; i++) w[i] = frand(1.5f);
    float *dx = dev_alloc(sizeof(float) * n * F * 2), *dw = dev_alloc(sizeof(float) * E),
          *dy = dev_alloc(sizeof(float) * n * F), *dds = dev_alloc(sizeof(float) * 2 * n * F / 32);
    int8_t *dq = dev_alloc((size_t)n * F);
    up(dx, x, sizeof(float) * n * F * 2), up(dw, w, sizeof(float) * E);
    float *ref = malloc(sizeof(float) * 16384), *sy = dev_alloc(sizeof(float) * 32), *sds = dev_alloc(sizeof(float) * 2);
    int8_t *sq = dev_alloc(32);
    int bad = 0;
    /* both RMSNorm kernels (regs 0: one block re-reading; 1: the row in registers, with and without
     * PDL, right after the SwiGLU kernel), widths with partial warps and the register kernel's limit */
    const int widths[5] = {4096, 576, 96, 16384, 14336};
    for (int wi = 0; wi < 5; wi++)
        for (int mode = 0; mode < 3; mode++) {
            const int C = widths[wi], regs = mode > 0, pdl = mode == 2, nr = C * n <= n * F ? n : 1;
            const float *dwc = C <= E ? dw : dx + (size_t)n * F; /* a second row range of x as the weight vector */
            const float *hw = C <= E ? w : x + (size_t)n * F;
            poison(dy, sizeof(float) * nr * C), poison(dq, (size_t)nr * C), poison(dds, sizeof(float) * 2 * nr * C / 32);
            CHECK(kvl_cuda_swiglu_q8(dx, sy, sq, sds, 1, 32, NULL, &err) == KVL_OK); /* a kernel right before */
            CHECK(kvl_cuda_rmsnorm_q8_ex(dx, dwc, dy, dq, dds, nr, C, 1e-5f, regs, pdl, NULL, &err) == KVL_OK &&
                  kvl_cuda_sync(&err) == KVL_OK);
            down(y, dy, sizeof(float) * nr * C), down(q, dq, (size_t)nr * C), down(ds, dds, sizeof(float) * 2 * nr * C / 32);
            int off = 0;
            for (int t = 0; t < nr; t++) {
                kvl_cpu_rmsnorm(x + (size_t)t * C, hw, ref, C, 1e-5f);
                for (int j = 0; j < C; j++)
                    if (!(fabsf(y[t * C + j] - ref[j]) <= 4.8e-7f * fabsf(ref[j]))) off++;
            }
            CHECK_MSG(off == 0, "rmsnorm q8 (cols %d, regs %d, pdl %d): %d values off", C, regs, pdl, off);
            const int qb = q8_mismatches(y, q, ds, (int64_t)nr * C / 32);
            CHECK_MSG(qb == 0, "rmsnorm q8 (cols %d, regs %d, pdl %d): %d blocks differ from the CPU quantization of its "
                      "output", C, regs, pdl, qb);
        }
    poison(dy, sizeof(float) * n * F), poison(dq, (size_t)n * F), poison(dds, sizeof(float) * 2 * n * F / 32);
    CHECK(kvl_cuda_swiglu_q8(dx, dy, dq, dds, n, F, NULL, &err) == KVL_OK && kvl_cuda_sync(&err) == KVL_OK);
    down(y, dy, sizeof(float) * n * F), down(q, dq, (size_t)n * F), down(ds, dds, sizeof(float) * 2 * n * F / 32);
    float *g = malloc(sizeof(float) * F);
    bad = 0;
    CHECK(kvl_cuda_swiglu_q8_ex(dx, dy, dq, dds, n, F, 1, NULL, &err) == KVL_OK); /* once more as a PDL launch */
    for (int t = 0; t < n; t++) {
        memcpy(g, x + (size_t)t * 2 * F, sizeof(float) * F);
        kvl_cpu_swiglu(g, x + (size_t)t * 2 * F + F, F);
        for (int j = 0; j < F; j++)
            if (!(fabsf(y[t * F + j] - g[j]) <= 1e-6f * fabsf(g[j]) + 1e-30f)) bad++;
    }
    CHECK_MSG(bad == 0, "swiglu q8: %d values off", bad);
    bad = q8_mismatches(y, q, ds, (int64_t)n * F / 32);
    CHECK_MSG(bad == 0, "swiglu q8: %d blocks differ from the CPU quantization of its output", bad);
    /* f16 weights have no integer matvec */
    kvl_cuda_wmat wf = {KVL_CUDA_WF_F16, 32, 32, dx, NULL};
    CHECK(kvl_cuda_gemv_q8(&wf, dq, dds, 1, dy, 0, NULL, &err) == KVL_ERR_ARG);
    kvl_cuda_free(dx), kvl_cuda_free(dw), kvl_cuda_free(dy), kvl_cuda_free(dq), kvl_cuda_free(dds);
    kvl_cuda_free(sy), kvl_cuda_free(sq), kvl_cuda_free(sds);
    free(x), free(w), free(y), free(q), free(ds), free(ref), free(g);
}

/* ---- small kernels ---- */

static void small_kernels(void) {
    kvl_err err = {0};
    /* embedding: Q8_0 and Q4_1 rows */
    const int types[2] = {KVL_TYPE_Q8_0, KVL_TYPE_Q4_1};
    for (int ti = 0; ti < 2; ti++) {
        const int t = types[ti], V = 300, E = 576;
        const size_t rb = kvl_type_row_bytes(t, E);
        uint8_t *wq = malloc(rb * V);
        float row[576], ref[576], got[576 * 3];
        for (int r = 0; r < V; r++) {
            for (int j = 0; j < E; j++) row[j] = frand(0.5f);
            kvl_quant_row_ref((kvl_type)t, row, wq + r * rb, E);
        }
        kvl_cuda_wfmt f = t == KVL_TYPE_Q8_0 ? KVL_CUDA_WF_Q8_0 : KVL_CUDA_WF_Q4_1;
        const size_t qb = kvl_cuda_wmat_qbytes(f, V, E), sb = kvl_cuda_wmat_sbytes(f, V, E);
        void *hq = malloc(qb), *hs = malloc(sb);
        kvl_cuda_wmat_repack(t, wq, V, E, 0, V, hq, hs);
        kvl_cuda_wmat w = {f, V, E, dev_alloc(qb), dev_alloc(sb)};
        up(w.q, hq, qb), up(w.s, hs, sb);
        const int32_t tok[3] = {0, 299, 137};
        int32_t *dt = dev_alloc(sizeof tok);
        float *dx = dev_alloc(sizeof got);
        up(dt, tok, sizeof tok);
        poison(dx, sizeof got);
        CHECK(kvl_cuda_embed(&w, dt, 3, dx, NULL, &err) == KVL_OK && kvl_cuda_sync(&err) == KVL_OK);
        down(got, dx, sizeof got);
        int bad = 0;
        for (int i = 0; i < 3; i++) {
            kvl_dequant_row_ref((kvl_type)t, wq + tok[i] * rb, ref, E);
            for (int j = 0; j < E; j++)
                if (!(fabsf(got[i * E + j] - ref[j]) <= 2.4e-7f * fabsf(ref[j]) + 1e-12f)) bad++;
        }
        CHECK_MSG(bad == 0, "embed %s: %d values off", kvl_type_name(t), bad);
        kvl_cuda_free(w.q), kvl_cuda_free(w.s), kvl_cuda_free(dt), kvl_cuda_free(dx);
        free(wq), free(hq), free(hs);
    }
    /* rmsnorm and swiglu */
    {
        const int n = 5, E = 4096, F = 1536;
        float *x = malloc(sizeof(float) * n * E), *w = malloc(sizeof(float) * E), *y = malloc(sizeof(float) * n * E);
        float *ref = malloc(sizeof(float) * E);
        for (int i = 0; i < n * E; i++) x[i] = frand(3.0f);
        for (int i = 0; i < E; i++) w[i] = frand(1.5f);
        float *dx = dev_alloc(sizeof(float) * n * E), *dw = dev_alloc(sizeof(float) * E),
              *dy = dev_alloc(sizeof(float) * n * E);
        up(dx, x, sizeof(float) * n * E), up(dw, w, sizeof(float) * E);
        poison(dy, sizeof(float) * n * E);
        CHECK(kvl_cuda_rmsnorm(dx, dw, dy, n, E, 1e-5f, NULL, &err) == KVL_OK && kvl_cuda_sync(&err) == KVL_OK);
        down(y, dy, sizeof(float) * n * E);
        int bad = 0;
        for (int t = 0; t < n; t++) {
            kvl_cpu_rmsnorm(x + t * E, w, ref, E, 1e-5f);
            for (int j = 0; j < E; j++)
                if (!(fabsf(y[t * E + j] - ref[j]) <= 4.8e-7f * fabsf(ref[j]))) bad++;
        }
        CHECK_MSG(bad == 0, "rmsnorm: %d values off", bad);
        float *gu = malloc(sizeof(float) * n * 2 * F), *h = malloc(sizeof(float) * n * F), g[1536];
        for (int i = 0; i < n * 2 * F; i++) gu[i] = frand(8.0f);
        float *dgu = dev_alloc(sizeof(float) * n * 2 * F), *dh = dev_alloc(sizeof(float) * n * F);
        up(dgu, gu, sizeof(float) * n * 2 * F);
        poison(dh, sizeof(float) * n * F);
        CHECK(kvl_cuda_swiglu(dgu, dh, n, F, NULL, &err) == KVL_OK && kvl_cuda_sync(&err) == KVL_OK);
        down(h, dh, sizeof(float) * n * F);
        bad = 0;
        for (int t = 0; t < n; t++) {
            memcpy(g, gu + t * 2 * F, sizeof(float) * F);
            kvl_cpu_swiglu(g, gu + t * 2 * F + F, F);
            for (int j = 0; j < F; j++)
                if (!(fabsf(h[t * F + j] - g[j]) <= 1e-6f * fabsf(g[j]) + 1e-30f)) bad++;
        }
        CHECK_MSG(bad == 0, "swiglu: %d values off", bad);
        kvl_cuda_free(dx), kvl_cuda_free(dw), kvl_cuda_free(dy), kvl_cuda_free(dgu), kvl_cuda_free(dh);
        free(x), free(w), free(y), free(ref), free(gu), free(h);
    }
    /* rope angles */
    {
        const int n = 4, hd = 128;
        const int32_t pos[4] = {0, 1, 4095, 131071};
        float freq[64], cs[4 * 128], ref[128];
        for (int i = 0; i < hd / 2; i++) freq[i] = powf(500000.0f, -2.0f * i / hd);
        int32_t *dp = dev_alloc(sizeof pos);
        float *df = dev_alloc(sizeof freq), *dcs = dev_alloc(sizeof cs);
        up(dp, pos, sizeof pos), up(df, freq, sizeof freq);
        poison(dcs, sizeof cs);
        CHECK(kvl_cuda_rope_cs(dp, df, n, hd, dcs, NULL, &err) == KVL_OK && kvl_cuda_sync(&err) == KVL_OK);
        down(cs, dcs, sizeof cs);
        int bad = 0;
        for (int t = 0; t < n; t++) {
            kvl_cpu_rope_cs(ref, hd, pos[t], freq);
            for (int j = 0; j < hd; j++)
                if (!(fabsf(cs[t * hd + j] - ref[j]) <= 1e-7f)) bad++;
        }
        CHECK_MSG(bad == 0, "rope angles: %d values off", bad);
        kvl_cuda_free(dp), kvl_cuda_free(df), kvl_cuda_free(dcs);
    }
    /* argmax: ties (lowest index wins), NaN skipped, all-NaN row -> 0 */
    {
        const int n = 4, V = 49157;
        float *x = malloc(sizeof(float) * n * V);
        for (int i = 0; i < n * V; i++) x[i] = frand(10.0f);
        x[0 * V + 777] = 50, x[0 * V + 40000] = 50;           /* tie */
        x[1 * V + 5] = NAN, x[1 * V + 9] = 60, x[1 * V + 8] = NAN; /* NaN around the max */
        for (int j = 0; j < V; j++) x[2 * V + j] = NAN;
        x[3 * V + V - 1] = 99;
        const int32_t want[4] = {777, 9, 0, V - 1};
        float *dx = dev_alloc(sizeof(float) * n * V);
        int32_t *dout = dev_alloc(sizeof(int32_t) * n), got[4];
        up(dx, x, sizeof(float) * n * V);
        poison(dout, sizeof got);
        CHECK(kvl_cuda_argmax(dx, n, V, dout, NULL, &err) == KVL_OK && kvl_cuda_sync(&err) == KVL_OK);
        down(got, dout, sizeof got);
        for (int i = 0; i < n; i++) CHECK_MSG(got[i] == want[i], "argmax row %d: %d, want %d", i, got[i], want[i]);
        kvl_cuda_free(dx), kvl_cuda_free(dout);
        free(x);
    }
}

/* ---- RoPE + quantize-on-append ---- */

static int n_rows_same, n_rows;

static void append_case(const char *codec, int D, int P, int nh, int nkv, int neox) {
    kvl_err err = {0};
    const int L = 3, slots = 2, ctx = 4 * P, ppl = (ctx + P - 1) / P, layer = 1;
    const int n = 5;
    const int32_t pos[5] = {0, 1, P + 3, 3 * P - 1, 2};
    const int32_t slot[5] = {0, 0, 1, 1, 1};
    const int64_t n_pages = (int64_t)slots * L * nkv * ppl;
    kvl_cuda_pool_config pc = {codec, NULL, D, P, n_pages, 0};
    kvl_cuda_pool *pool = NULL;
    CHECK(kvl_cuda_pool_create(&pc, &pool, &err) == KVL_OK);
    if (!pool) return;
    const size_t pb = kvl_cuda_pool_page_bytes(pool);
    size_t koff, voff;
    kvl_cuda_pool_seg_offsets(pool, 0, &koff, &voff);
    uint8_t *pages = malloc(pb * n_pages);
    memset(pages, 0xA5, pb * n_pages);
    CHECK(kvl_cuda_pool_upload(pool, 0, pages, n_pages, &err) == KVL_OK);
    const int W = (nh + 2 * nkv) * D;
    float *qkv = malloc(sizeof(float) * n * W), *cs = malloc(sizeof(float) * n * D);
    float freq[64];
    for (int i = 0; i < D / 2; i++) freq[i] = powf(10000.0f, -2.0f * i / D);
    for (int i = 0; i < n * W; i++) qkv[i] = frand(4.0f) * (i % 11 == 0 ? 5.0f : 1.0f);
    for (int e = 0; e < n; e++) kvl_cpu_rope_cs(cs + e * D, D, pos[e], freq);
    float *dqkv = dev_alloc(sizeof(float) * n * W), *dcs = dev_alloc(sizeof(float) * n * D);
    float *dq = dev_alloc(sizeof(float) * n * nh * D);
    int32_t *dpos = dev_alloc(sizeof pos), *dslot = dev_alloc(sizeof slot);
    up(dqkv, qkv, sizeof(float) * n * W), up(dcs, cs, sizeof(float) * n * D);
    up(dpos, pos, sizeof pos), up(dslot, slot, sizeof slot);
    poison(dq, sizeof(float) * n * nh * D);
    kvl_cuda_append_args a = {n, nh, nkv, D, neox, layer, L, ppl, dqkv, dcs, dpos, dslot, dq, layer & 1 /* PDL */, NULL};
    CHECK(kvl_cuda_kv_append(pool, &a, NULL, &err) == KVL_OK);
    CHECK(kvl_cuda_sync(&err) == KVL_OK);
    float *q = malloc(sizeof(float) * n * nh * D);
    down(q, dq, sizeof(float) * n * nh * D);
    CHECK(kvl_cuda_pool_download(pool, 0, pages, n_pages, &err) == KVL_OK);
    const kvl_codec *cc = kvl_codec_find(codec);
    if (cc->seal) cc = cc->open; /* sealing codecs append rows in their open format */
    const size_t sb = cc->seg_bytes(D, P);
    uint8_t *seg = malloc(sb);
    float ref[128], dec_dev[128], dec_cpu[128];
    int qbad = 0, rbad = 0, posbad = 0;
    unsigned char *written = calloc((size_t)n_pages * P, 1);
    for (int e = 0; e < n; e++) {
        const float *src = qkv + e * W;
        float tmp[16 * 128];
        memcpy(tmp, src, sizeof(float) * (nh + nkv) * D);
        kvl_cpu_rope(tmp, nh + nkv, D, cs + e * D, neox);
        for (int i = 0; i < nh * D; i++)
            if (!(fabsf(q[e * nh * D + i] - tmp[i]) <= 1e-6f * fabsf(tmp[i]) + 1e-30f)) qbad++;
        for (int h = 0; h < nkv; h++) {
            const int64_t id = (((int64_t)slot[e] * L + layer) * nkv + h) * ppl + pos[e] / P;
            const uint8_t *pg = pages + id * pb;
            const int r = pos[e] % P;
            written[id * P + r] = 1;
            int32_t pe;
            memcpy(&pe, pg + 4 * r, 4);
            if (pe != pos[e]) posbad++;
            for (int kv = 0; kv < 2; kv++) {
                const float *row = kv ? src + (nh + nkv + h) * D : tmp + (nh + h) * D;
                const uint8_t *dseg = pg + (kv ? voff : koff);
                memcpy(seg, dseg, sb);
                cc->decode(seg, D, P, r, dec_dev);
                memcpy(ref, row, sizeof(float) * D);
                cc->encode(NULL, seg, D, P, r, ref);
                cc->decode(seg, D, P, r, dec_cpu);
                /* a quantization step of the row: its largest |value| / 7 covers int4z's and int8's */
                float amax = 0;
                for (int j = 0; j < D; j++) amax = fmaxf(amax, fabsf(row[j]));
                const float step = cc == kvl_codec_find("f16") ? 0 : amax / 7.0f;
                int off = 0;
                for (int j = 0; j < D; j++)
                    if (!(fabsf(dec_dev[j] - dec_cpu[j]) <= step + 1e-3f * fabsf(dec_cpu[j]))) off++;
                if (off) rbad++;
                n_rows++;
                n_rows_same += memcmp(seg, dseg, sb) == 0;
            }
        }
    }
    /* rows no entry wrote keep the poison bytes in their position entries */
    int untouched_bad = 0;
    for (int64_t id = 0; id < n_pages; id++)
        for (int r = 0; r < P; r++) {
            uint32_t pe;
            memcpy(&pe, pages + id * pb + 4 * r, 4);
            if (!written[id * P + r] && pe != 0xA5A5A5A5u) untouched_bad++;
        }
    CHECK_MSG(qbad == 0 && rbad == 0 && posbad == 0 && untouched_bad == 0,
              "append %s D=%d P=%d %d/%d neox=%d: q %d, rows %d, positions %d, untouched %d", codec, D, P, nh, nkv,
              neox, qbad, rbad, posbad, untouched_bad);
    kvl_cuda_free(dqkv), kvl_cuda_free(dcs), kvl_cuda_free(dq), kvl_cuda_free(dpos), kvl_cuda_free(dslot);
    kvl_cuda_pool_free(pool);
    free(pages), free(qkv), free(cs), free(q), free(seg), free(written);
}

/* gate|up with the SwiGLU epilogue (kvl_cuda_gemv_q8_swiglu) against the
 * two kernels it replaces (kvl_cuda_gemv_q8 into gu, kvl_cuda_swiglu_q8),
 * which are tested against the CPU above: h equal (the same per-row sums
 * and formula; bit-identical expected, 1e-6 relative allowed for a
 * different FMA contraction), h's 8-bit blocks equal to the CPU
 * quantization of the fused h, twice in a row (the arrival counters must
 * come back to zero), outputs poisoned before each run. */
static int n_swiglu_diff; /* cases whose fused h was not bit-identical */
static void gemv_q8_swiglu_case(int t, int F, int cols, int n) {
    kvl_err err = {0};
    const int64_t rows = 2 * (int64_t)F;
    const size_t rb = kvl_type_row_bytes(t, cols);
    uint8_t *wq = malloc(rb * rows);
    float tmp[4096], *x = malloc(sizeof(float) * n * cols);
    for (int64_t r = 0; r < rows; r++) {
        const float amp = 0.05f + (float)urand();
        for (int64_t j = 0; j < cols; j++) tmp[j] = frand(amp);
        kvl_quant_row_ref((kvl_type)t, tmp, wq + r * rb, cols);
    }
    for (int64_t i = 0; i < n * cols; i++) x[i] = frand(2.0f);
    const kvl_cuda_wfmt f = t == KVL_TYPE_Q8_0 ? KVL_CUDA_WF_Q8_0 : t == KVL_TYPE_Q4_0 ? KVL_CUDA_WF_Q4_0 : KVL_CUDA_WF_Q4_1;
    const size_t qb = kvl_cuda_wmat_qbytes(f, rows, cols), sb = kvl_cuda_wmat_sbytes(f, rows, cols);
    void *hqw = malloc(qb), *hsw = malloc(sb);
    CHECK(kvl_cuda_wmat_repack(t, wq, rows, cols, 0, rows, hqw, hsw));
    kvl_cuda_wmat w = {f, rows, cols, dev_alloc(qb), dev_alloc(sb)};
    up(w.q, hqw, qb), up(w.s, hsw, sb);
    float *dx = dev_alloc(sizeof(float) * n * cols), *dxds = dev_alloc(sizeof(float) * 2 * n * cols / 32);
    int8_t *dxq = dev_alloc((size_t)n * cols);
    float *dgu = dev_alloc(sizeof(float) * n * rows), *dh0 = dev_alloc(sizeof(float) * n * F);
    float *dh = dev_alloc(sizeof(float) * n * F), *dds0 = dev_alloc(sizeof(float) * 2 * n * F / 32);
    float *dds = dev_alloc(sizeof(float) * 2 * n * F / 32);
    int8_t *dq0 = dev_alloc((size_t)n * F), *dq = dev_alloc((size_t)n * F);
    unsigned *dcnt = dev_alloc(sizeof(unsigned) * F / 32);
    CHECK(kvl_cuda_memset(dcnt, 0, sizeof(unsigned) * F / 32, &err) == KVL_OK);
    up(dx, x, sizeof(float) * n * cols);
    CHECK(kvl_cuda_quantize_q8(dx, n, cols, dxq, dxds, NULL, &err) == KVL_OK);
    CHECK(kvl_cuda_gemv_q8(&w, dxq, dxds, n, dgu, 0, NULL, &err) == KVL_OK);
    CHECK(kvl_cuda_swiglu_q8(dgu, dh0, dq0, dds0, n, F, NULL, &err) == KVL_OK && kvl_cuda_sync(&err) == KVL_OK);
    float *h0 = malloc(sizeof(float) * n * F), *h = malloc(sizeof(float) * n * F), *ds = malloc(sizeof(float) * 2 * n * F / 32);
    int8_t *q = malloc((size_t)n * F);
    down(h0, dh0, sizeof(float) * n * F);
    for (int rep = 0; rep < 2; rep++) {
        poison(dh, sizeof(float) * n * F), poison(dq, (size_t)n * F), poison(dds, sizeof(float) * 2 * n * F / 32);
        CHECK(kvl_cuda_gemv_q8_swiglu(&w, dxq, dxds, n, dh, dq, dds, dcnt, NULL, &err) == KVL_OK &&
              kvl_cuda_sync(&err) == KVL_OK);
        down(h, dh, sizeof(float) * n * F), down(q, dq, (size_t)n * F), down(ds, dds, sizeof(float) * 2 * n * F / 32);
        int bad = 0, same = 0;
        for (int64_t i = 0; i < (int64_t)n * F; i++) {
            same += memcmp(&h[i], &h0[i], 4) == 0;
            if (!(fabsf(h[i] - h0[i]) <= 1e-6f * fabsf(h0[i]) + 1e-30f)) bad++;
        }
        CHECK_MSG(bad == 0, "swiglu epilogue %s F %d n %d: %d values off", kvl_type_name(t), F, n, bad);
        bad = q8_mismatches(h, q, ds, (int64_t)n * F / 32);
        CHECK_MSG(bad == 0, "swiglu epilogue %s F %d n %d: %d blocks differ from the CPU quantization", kvl_type_name(t),
                  F, n, bad);
        if (rep == 0 && F >= 14336)
            printf("note: gate|up + SwiGLU epilogue %s %d x %d, n %d: %d of %lld h values bit-identical to the two "
                   "kernels\n", kvl_type_name(t), (int)rows, cols, n, same, (long long)n * F);
        if (same != n * F) n_swiglu_diff++;
    }
    unsigned cnt[512];
    down(cnt, dcnt, sizeof(unsigned) * (F / 32 < 512 ? F / 32 : 512));
    int nz = 0;
    for (int i = 0; i < F / 32 && i < 512; i++) nz += cnt[i] != 0;
    CHECK_MSG(nz == 0, "swiglu epilogue: %d counters left non-zero", nz);
    kvl_cuda_free(w.q), kvl_cuda_free(w.s), kvl_cuda_free(dx), kvl_cuda_free(dxds), kvl_cuda_free(dxq);
    kvl_cuda_free(dgu), kvl_cuda_free(dh0), kvl_cuda_free(dh), kvl_cuda_free(dds0), kvl_cuda_free(dds);
    kvl_cuda_free(dq0), kvl_cuda_free(dq), kvl_cuda_free(dcnt);
    free(wq), free(x), free(hqw), free(hsw), free(h0), free(h), free(ds), free(q);
}

#include "lm_sample_cases.h" /* sampling() */

int main(void) {
    if (cuda_test_device()) return 1;
    kvl_err err = {0};
    const int types[4] = {KVL_TYPE_Q8_0, KVL_TYPE_Q4_0, KVL_TYPE_Q4_1, KVL_TYPE_F16};
    const int ns[4] = {1, 3, 8, 11};
    for (int ti = 0; ti < 4; ti++)
        for (int ni = 0; ni < 4; ni++) {
            gemv_case(types[ti], 203, 576, ns[ni], ni & 1);
            gemv_case(types[ti], 77, 1536, ns[ni], !(ni & 1));
        }
    gemv_case(KVL_TYPE_Q8_0, 4096, 4096, 1, 0);
    for (int ti = 0; ti < 3; ti++) {
        for (int ni = 0; ni < 4; ni++) {
            gemv_q8_case(types[ti], 203, 576, ns[ni], ni & 1);
            gemv_q8_case(types[ti], 77, 1536, ns[ni], !(ni & 1));
        }
        gemv_q8_case(types[ti], 1031, 4096, 1, 0);
        gemv_q8_case(types[ti], 67, 14336, 1, 1);
        /* more rows than a wave of the persistent variants holds warps (132 SMs x <= 8 blocks x 8
         * warps): several rows per warp, the prefetch crossing row ends; partial last chunks */
        gemv_q8_case(types[ti], 20011, 2080, 1, ti & 1);
    }
    q8_producers();

    for (int ni = 0; ni < 4; ni++) gemv_q8_swiglu_case(KVL_TYPE_Q8_0, 1024, 576, ns[ni]);
    gemv_q8_swiglu_case(KVL_TYPE_Q8_0, 14336, 4096, 1);
    printf("note: gate|up + SwiGLU epilogue: %d of %d runs not bit-identical to the two kernels\n", n_swiglu_diff, 2 * 5);
    { /* Q8_0 only (the Q4 formats' sums differed beyond 1e-6 relative on the H200, 2026-12-02) */
        kvl_cuda_wmat w4 = {KVL_CUDA_WF_Q4_0, 128, 64, NULL, NULL};
        CHECK(kvl_cuda_gemv_q8_swiglu(&w4, (int8_t *)1, (float *)1, 1, (float *)1, (int8_t *)1, (float *)1,
                                      (unsigned *)1, NULL, &err) == KVL_ERR_ARG);
    }
    small_kernels();
    sampling();
    const char *codecs[5] = {"f16", "int8", "fp8", "int4z", "kivi2z"};
    for (int ci = 0; ci < 5; ci++)
        for (int D = 64; D <= 128; D *= 2)
            for (int P = 16; P <= 32; P *= 2) {
                append_case(codecs[ci], D, P, 9, 3, 0);
                append_case(codecs[ci], D, P, 8, 2, 1);
            }
    printf("note: %d of %d appended rows byte-identical to the CPU codec's encoding\n", n_rows_same, n_rows);
    CHECK(n_rows_same * 100 >= n_rows * 95);
    /* every codec of the device pool has an append kernel; others are refused by name */
    CHECK(kvl_cuda_kv_append_supported("kivi2z") && kvl_cuda_kv_append_supported("kivi4z") &&
          kvl_cuda_kv_append_supported("fp8") && kvl_cuda_kv_append_supported("int4z") &&
          !kvl_cuda_kv_append_supported("int4") && !kvl_cuda_kv_append_supported("kivi2"));
    KVL_TEST_END();
}
