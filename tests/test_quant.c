/* Tests for the quantized-tensor kernels (src/cpu/quant*.c): bit layouts of
 * hand-built Q4_1 / Q4_K / Q6_K blocks, quant->dequant round-trip error
 * bounds, scalar vec_dot against float dots of dequantized rows, AVX2 against
 * scalar (vec_dot, quant_vec bytes, dequant), the threaded/tiled matmul against
 * a naive loop for odd shapes, and real model rows against the gguf Python
 * package (tests/data/dequant_ref.txt, written by scripts/ref_dequant.py). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/quant.h"
#include "test.h"
#include "util/fp16.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rng_u32(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}
static float rng_unif(void) { return (float)(rng_u32() & 0xFFFFFF) / 16777216.0f; }
/* Roughly normal (sum of 4 uniforms), with occasional 8x outliers. */
static float rng_val(void) {
    float v = (rng_unif() + rng_unif() + rng_unif() + rng_unif() - 2.0f) * 1.7f;
    if ((rng_u32() & 63) == 0) v *= 8;
    return v;
}
static void fill(float *x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) x[i] = rng_val() * scale;
}

static const kvl_type weight_types[] = {KVL_TYPE_F32,  KVL_TYPE_F16,  KVL_TYPE_BF16, KVL_TYPE_Q8_0, KVL_TYPE_Q4_0,
                                        KVL_TYPE_Q4_1, KVL_TYPE_Q5_0, KVL_TYPE_Q5_1, KVL_TYPE_Q4_K, KVL_TYPE_Q6_K};
#define N_WT ((int)(sizeof weight_types / sizeof weight_types[0]))

static float amax_of(const float *x, int64_t n) {
    float a = 0;
    for (int64_t i = 0; i < n; i++) a = fmaxf(a, fabsf(x[i]));
    return a;
}

/* ---------------------------------------------------------- bit layouts */

static void test_layout_q4_1(void) {
    kvl_block_q4_1 b;
    b.d = kvl_fp32_to_fp16(0.5f);
    b.m = kvl_fp32_to_fp16(-1.0f);
    for (int j = 0; j < 16; j++) b.qs[j] = (uint8_t)(j | ((15 - j) << 4));
    float y[32];
    kvl_dequant_row_ref(KVL_TYPE_Q4_1, &b, y, 32);
    int ok = 1;
    for (int j = 0; j < 16; j++) {
        ok &= y[j] == 0.5f * j - 1.0f;
        ok &= y[j + 16] == 0.5f * (15 - j) - 1.0f;
    }
    CHECK_MSG(ok, "q4_1 layout");
    CHECK(y[0] == -1.0f && y[15] == 6.5f && y[16] == 6.5f && y[31] == -1.0f);
    /* Q4_0: x = d*(q-8). */
    kvl_block_q4_0 c;
    c.d = kvl_fp32_to_fp16(2.0f);
    for (int j = 0; j < 16; j++) c.qs[j] = (uint8_t)(j | ((15 - j) << 4));
    kvl_dequant_row_ref(KVL_TYPE_Q4_0, &c, y, 32);
    CHECK(y[0] == -16.0f && y[3] == -10.0f && y[16] == 14.0f && y[31] == -16.0f);
    /* Q5_1: bit j of qh is the 5th bit of element j. */
    kvl_block_q5_1 e;
    e.d = kvl_fp32_to_fp16(1.0f);
    e.m = kvl_fp32_to_fp16(0.0f);
    memset(e.qs, 0x21, 16); /* low nibble 1 (elements 0..15), high 2 (16..31) */
    const uint32_t qh = (1u << 3) | (1u << 20);
    memcpy(e.qh, &qh, 4);
    kvl_dequant_row_ref(KVL_TYPE_Q5_1, &e, y, 32);
    CHECK(y[0] == 1.0f && y[3] == 17.0f && y[16] == 2.0f && y[20] == 18.0f && y[21] == 2.0f);
}

static void test_layout_q4_k(void) {
    /* sc/m for sub-blocks 0..7, scales[] packed by hand (ggml get_scale_min_k4). */
    static const int sc[8] = {1, 2, 3, 4, 17, 33, 50, 63};
    static const int mn[8] = {0, 1, 2, 3, 20, 40, 60, 63};
    static const uint8_t packed[12] = {65, 130, 195, 196, 64, 129, 194, 195, 65, 129, 194, 255};
    kvl_block_q4_k b;
    b.d = kvl_fp32_to_fp16(1.0f);
    b.dmin = kvl_fp32_to_fp16(0.5f);
    memcpy(b.scales, packed, 12);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) b.qs[32 * c + l] = (uint8_t)((l & 15) | (((l + c) & 15) << 4));
    float y[256];
    kvl_dequant_row_ref(KVL_TYPE_Q4_K, &b, y, 256);
    int bad = 0;
    for (int e = 0; e < 256; e++) {
        const int j = e / 32, c = j / 2, l = e % 32;
        const int q = (j & 1) ? (l + c) & 15 : l & 15;
        bad += y[e] != (float)sc[j] * q - 0.5f * mn[j];
    }
    CHECK_MSG(bad == 0, "q4_k layout: %d mismatches", bad);
    for (int j = 0; j < 8; j++) {
        int s, m;
        kvl_q4k_scale_min(j, packed, &s, &m);
        CHECK(s == sc[j] && m == mn[j]);
    }
    /* The quantizer must pack scales the same way: round-trip a block whose
     * sub-blocks need distinct scales and mins. */
    float x[256], z[256];
    for (int e = 0; e < 256; e++) x[e] = (float)(e / 32 + 1) * (rng_unif() - 0.2f * (float)(e / 32));
    kvl_block_q4_k q;
    kvl_quant_row_ref(KVL_TYPE_Q4_K, x, &q, 256);
    kvl_dequant_row_ref(KVL_TYPE_Q4_K, &q, z, 256);
    float err = 0;
    for (int e = 0; e < 256; e++) err = fmaxf(err, fabsf(z[e] - x[e]));
    CHECK_MSG(err < 0.1f * amax_of(x, 256), "q4_k structured round trip err %g", err);
}

static void test_layout_q6_k(void) {
    kvl_block_q6_k b;
    for (int i = 0; i < 128; i++) b.ql[i] = (uint8_t)(i * 7);
    for (int i = 0; i < 64; i++) b.qh[i] = (uint8_t)(i * 13);
    for (int g = 0; g < 16; g++) b.scales[g] = (int8_t)(g - 8);
    b.d = kvl_fp32_to_fp16(0.25f);
    float y[256];
    kvl_dequant_row_ref(KVL_TYPE_Q6_K, &b, y, 256);
    int bad = 0;
    for (int e = 0; e < 256; e++) {
        const int n = e / 128, r = e % 128, w = r / 32, l = r % 32;
        const uint8_t lb = b.ql[64 * n + l + 32 * (w & 1)];
        const int lo = w < 2 ? lb & 15 : lb >> 4;
        const int hi = (b.qh[32 * n + l] >> (2 * w)) & 3;
        bad += y[e] != 0.25f * (float)(e / 16 - 8) * (float)((lo | (hi << 4)) - 32);
    }
    CHECK_MSG(bad == 0, "q6_k layout: %d mismatches", bad);
    /* Spot values: element 0: ql[0]=0, qh[0]=0 -> q=0 -> 0.25*-8*-32 = 64. */
    CHECK(y[0] == 64.0f);
    /* element 97 (n=0,w=3,l=1): ql[33]=231 -> hi nibble 14, qh[1]=13 -> bits 6..7 = 0 -> q=14. */
    CHECK(y[97] == 0.25f * (float)(97 / 16 - 8) * (14 - 32));
}

/* ------------------------------------------------------- round-trip error */

/* Max allowed |x - deq(quant(x))| for each block of x (see kvl_quant_row_ref). */
static float rt_bound(kvl_type t, const float *x, int64_t n) {
    float mn = x[0], mx = x[0];
    for (int64_t i = 0; i < n; i++) mn = fminf(mn, x[i]), mx = fmaxf(mx, x[i]);
    const float amax = amax_of(x, n);
    switch (t) {
    case KVL_TYPE_F32: return 0;
    case KVL_TYPE_F16: return amax * 0x1p-11f + 1e-7f;
    case KVL_TYPE_BF16: return amax * 0x1p-8f;
    /* step/2 plus the fp16 rounding of d (<= 2^-11 relative, times |q| <= 127) */
    case KVL_TYPE_Q8_0:
    case KVL_TYPE_Q8_1:
    case KVL_TYPE_Q8_K: return amax / 127 * (0.5f + 127 * 0x1p-11f) + 1e-7f;
    /* zero-point formats: one value may clamp by a full step */
    case KVL_TYPE_Q4_0: return amax / 8 * (1.0f + 16 * 0x1p-11f);
    case KVL_TYPE_Q5_0: return amax / 16 * (1.0f + 32 * 0x1p-11f);
    case KVL_TYPE_Q4_1: return (mx - mn) / 15 * 0.5f + (mx - mn) * 0x1p-10f + amax * 0x1p-10f;
    case KVL_TYPE_Q5_1: return (mx - mn) / 31 * 0.5f + (mx - mn) * 0x1p-10f + amax * 0x1p-10f;
    /* 6-bit scales: step <= range/15; rounding of the scale can clamp the edge */
    case KVL_TYPE_Q4_K: return 0.12f * (mx - fminf(mn, 0));
    case KVL_TYPE_Q6_K: return amax / 31 * 1.1f;
    default: return 0;
    }
}

static void test_round_trip(void) {
    static const kvl_type types[] = {KVL_TYPE_F32,  KVL_TYPE_F16,  KVL_TYPE_BF16, KVL_TYPE_Q8_0,
                                     KVL_TYPE_Q8_1, KVL_TYPE_Q8_K, KVL_TYPE_Q4_0, KVL_TYPE_Q4_1,
                                     KVL_TYPE_Q5_0, KVL_TYPE_Q5_1, KVL_TYPE_Q4_K, KVL_TYPE_Q6_K};
    /* Max relative RMS error (||x - x'|| / ||x||) on this data. */
    static const float rms_max[] = {0, 1e-3f, 5e-3f, 0.01f, 0.01f, 0.02f, 0.2f, 0.12f, 0.1f, 0.06f, 0.15f, 0.04f};
    enum { N = 4096 };
    float *x = malloc(N * sizeof *x), *z = malloc(N * sizeof *z);
    void *q = malloc(N * 4);
    for (int ti = 0; ti < (int)(sizeof types / sizeof types[0]); ti++) {
        const kvl_type t = types[ti];
        fill(x, N, 0.05f + 0.5f * (float)ti);
        if (t == KVL_TYPE_Q4_1) /* offset data to exercise the min */
            for (int i = 0; i < N; i++) x[i] += 0.3f;
        memset(q, 0, N * 4);
        kvl_quant_row_ref(t, x, q, N);
        kvl_dequant_row_ref(t, q, z, N);
        const int64_t blk = kvl_type_block_elems(t) > 1 ? kvl_type_block_elems(t) : 32;
        int bad = 0;
        double e2 = 0, x2 = 0;
        for (int64_t b = 0; b < N; b += blk) {
            const float bound = rt_bound(t, x + b, blk);
            for (int64_t i = b; i < b + blk; i++) {
                if (fabsf(z[i] - x[i]) > bound) {
                    if (!bad)
                        fprintf(stderr, "%s: x[%lld]=%g got %g bound %g\n", kvl_type_name(t), (long long)i, x[i],
                                z[i], bound);
                    bad++;
                }
                e2 += (double)(z[i] - x[i]) * (z[i] - x[i]);
                x2 += (double)x[i] * x[i];
            }
        }
        CHECK_MSG(bad == 0, "%s round trip: %d values over bound", kvl_type_name(t), bad);
        const double rel = sqrt(e2 / x2);
        CHECK_MSG(rel <= rms_max[ti], "%s rms rel err %g > %g", kvl_type_name(t), rel, rms_max[ti]);
        /* Zeros must stay zeros (no NaN from 0/0). */
        memset(x, 0, 256 * sizeof *x);
        kvl_quant_row_ref(t, x, q, 256);
        kvl_dequant_row_ref(t, q, z, 256);
        CHECK_MSG(amax_of(z, 256) == 0 && z[0] == z[0], "%s zero block", kvl_type_name(t));
    }
    free(x);
    free(z);
    free(q);
}

/* --------------------------------------------------------------- vec_dot */

static double dot_d(const float *a, const float *b, int64_t n, double *l1) {
    double s = 0, m = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i], m += fabs((double)a[i] * b[i]);
    if (l1) *l1 = m;
    return s;
}

/* Randomizes a weight row's bytes (all bit patterns) with sane scales. */
static void random_row_bytes(kvl_type t, void *row, int64_t n) {
    uint8_t *p = row;
    const size_t bytes = kvl_type_row_bytes(t, n);
    for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)rng_u32();
    const int64_t nb = n / (kvl_type_block_elems(t) ? kvl_type_block_elems(t) : 1);
    for (int64_t b = 0; b < nb; b++) {
        const uint16_t h1 = kvl_fp32_to_fp16(rng_unif() * 0.1f), h2 = kvl_fp32_to_fp16(-rng_unif() * 0.1f);
        switch (t) {
        case KVL_TYPE_F32: ((float *)row)[b] = rng_val(); break;
        case KVL_TYPE_F16: ((uint16_t *)row)[b] = kvl_fp32_to_fp16(rng_val()); break;
        case KVL_TYPE_BF16: ((uint16_t *)row)[b] = kvl_fp32_to_bf16(rng_val()); break;
        case KVL_TYPE_Q8_0: ((kvl_block_q8_0 *)row)[b].d = h1; break;
        case KVL_TYPE_Q4_0: ((kvl_block_q4_0 *)row)[b].d = h1; break;
        case KVL_TYPE_Q5_0: ((kvl_block_q5_0 *)row)[b].d = h1; break;
        case KVL_TYPE_Q4_1: ((kvl_block_q4_1 *)row)[b].d = h1, ((kvl_block_q4_1 *)row)[b].m = h2; break;
        case KVL_TYPE_Q5_1: ((kvl_block_q5_1 *)row)[b].d = h1, ((kvl_block_q5_1 *)row)[b].m = h2; break;
        case KVL_TYPE_Q4_K: ((kvl_block_q4_k *)row)[b].d = h1, ((kvl_block_q4_k *)row)[b].dmin = h1; break;
        case KVL_TYPE_Q6_K: ((kvl_block_q6_k *)row)[b].d = h1; break;
        default: break;
        }
    }
}

static void test_vec_dot(void) {
    const kvl_cpu_kernels *ref = kvl_cpu_kernels_get(0), *simd = kvl_cpu_kernels_get(1);
    CHECK(strcmp(ref->name, "scalar") == 0);
    printf("simd kernels: %s\n", simd->name);
    static const int64_t lens[] = {256, 512, 768, 2304, 4096};
    enum { NMAX = 4096 };
    float *w = malloc(NMAX * 4), *x = malloc(NMAX * 4), *wd = malloc(NMAX * 4), *xd = malloc(NMAX * 4);
    void *wq = malloc(NMAX * 4), *xq = malloc(NMAX * 4 + 64), *xq2 = malloc(NMAX * 4 + 64);
    for (int ti = 0; ti < N_WT; ti++) {
        const kvl_type t = weight_types[ti];
        const kvl_type vt = ref->vec_type(t);
        CHECK(simd->vec_type(t) == vt);
        CHECK(kvl_type_supported(t));
        for (int li = 0; li < 5; li++) {
            const int64_t n = lens[li];
            for (int rep = 0; rep < 3; rep++) {
                fill(x, n, 0.7f);
                if (rep < 2) {
                    fill(w, n, 0.05f);
                    kvl_quant_row_ref(t, w, wq, n);
                } else {
                    random_row_bytes(t, wq, n);
                }
                kvl_dequant_row_ref(t, wq, wd, n);
                /* activation quantization: scalar and SIMD must agree byte for byte */
                const size_t xb = kvl_type_row_bytes(vt, n);
                memset(xq, 0, xb);
                memset(xq2, 0, xb);
                ref->quant_vec(vt, x, xq, n);
                simd->quant_vec(vt, x, xq2, n);
                CHECK_MSG(memcmp(xq, xq2, xb) == 0, "%s quant_vec simd != scalar (n=%lld)", kvl_type_name(vt),
                          (long long)n);
                kvl_dequant_row_ref(vt, xq, xd, n);

                double l1;
                const double exact = dot_d(wd, xd, n, &l1);
                const float r = ref->vec_dot(t, n, wq, xq);
                const float s = simd->vec_dot(t, n, wq, xq);
                /* scalar vs float dot of dequantized rows: float rounding only */
                CHECK_MSG(fabs(r - exact) <= 2e-5 * l1 + 1e-6, "%s n=%lld rep %d: ref %g exact %g", kvl_type_name(t),
                          (long long)n, rep, r, exact);
                CHECK_MSG(fabs(s - r) <= 1e-4 * l1 + 1e-6, "%s n=%lld rep %d: simd %g ref %g", kvl_type_name(t),
                          (long long)n, rep, s, r);
                /* vs unquantized activations: |sum w'(x - x')| <= sum |w'| * bound(x block) */
                double bound = 0;
                for (int64_t b = 0; b < n; b += 32) {
                    const float eb = rt_bound(vt == KVL_TYPE_F32 ? KVL_TYPE_F32 : KVL_TYPE_Q8_0, x + b, 32);
                    const float ebk = vt == KVL_TYPE_Q8_K ? rt_bound(KVL_TYPE_Q8_K, x + (b / 256) * 256, 256) : eb;
                    for (int64_t i = b; i < b + 32; i++) bound += fabs(wd[i]) * ebk;
                }
                const double full = dot_d(wd, x, n, NULL);
                CHECK_MSG(fabs(r - full) <= bound + 2e-5 * l1 + 1e-6, "%s n=%lld: ref %g vs float x %g bound %g",
                          kvl_type_name(t), (long long)n, r, full, bound);
            }
        }
        /* SIMD dequant matches scalar exactly. */
        fill(w, 512, 1.0f);
        kvl_quant_row_ref(t, w, wq, 512);
        kvl_dequant_row_ref(t, wq, wd, 512);
        simd->dequant_row(t, wq, xd, 512);
        CHECK_MSG(memcmp(wd, xd, 512 * 4) == 0, "%s simd dequant", kvl_type_name(t));
    }
    /* Non-multiple-of-32 lengths for float weights. */
    for (int ti = 0; ti < 3; ti++) {
        const kvl_type t = weight_types[ti];
        const int64_t n = 77;
        fill(w, n, 1), fill(x, n, 1);
        kvl_quant_row_ref(t, w, wq, n);
        kvl_dequant_row_ref(t, wq, wd, n);
        double l1;
        const double exact = dot_d(wd, x, n, &l1);
        CHECK_NEAR(simd->vec_dot(t, n, wq, x), exact, 1e-5 * l1);
        CHECK_NEAR(ref->vec_dot(t, n, wq, x), exact, 1e-5 * l1);
    }
    free(w), free(x), free(wd), free(xd), free(wq), free(xq), free(xq2);
}

/* ---------------------------------------------------------------- matmul */

static void test_matmul(void) {
    const kvl_cpu_kernels *tabs[2] = {kvl_cpu_kernels_get(0), kvl_cpu_kernels_get(1)};
    static const int64_t rows_list[] = {1, 6, 13, 203};
    static const int toks[] = {1, 3, 17};
    for (int ti = 0; ti < N_WT; ti++) {
        const kvl_type t = weight_types[ti];
        const int64_t cols = (t == KVL_TYPE_Q4_K || t == KVL_TYPE_Q6_K) ? 512 : 96;
        const kvl_type vt = tabs[0]->vec_type(t);
        const size_t wrb = kvl_type_row_bytes(t, cols), xrb = kvl_type_row_bytes(vt, cols);
        for (int ri = 0; ri < 4; ri++) {
            const int64_t rows = rows_list[ri];
            float *wf = malloc((size_t)(rows * cols) * 4), *xf = malloc((size_t)(17 * cols) * 4);
            uint8_t *W = malloc((size_t)rows * wrb), *X = malloc(17 * xrb);
            float *y = malloc((size_t)(17 * rows) * 4), *yref = malloc((size_t)(17 * rows) * 4);
            double *l1 = malloc((size_t)(17 * rows) * sizeof *l1);
            float *wd = malloc((size_t)cols * 4), *xd = malloc((size_t)cols * 4);
            fill(wf, rows * cols, 0.1f);
            fill(xf, 17 * cols, 1.0f);
            for (int64_t r = 0; r < rows; r++) {
                /* odd row-count cases use raw random blocks (all bit patterns) */
                if (ri & 1) random_row_bytes(t, W + r * wrb, cols);
                else kvl_quant_row_ref(t, wf + r * cols, W + r * wrb, cols);
            }
            for (int tk = 0; tk < 17; tk++) kvl_quant_row_ref(vt, xf + tk * cols, X + tk * xrb, cols);
            for (int tk = 0; tk < 17; tk++)
                for (int64_t r = 0; r < rows; r++) {
                    yref[tk * rows + r] = tabs[0]->vec_dot(t, cols, W + r * wrb, X + tk * xrb);
                    kvl_dequant_row_ref(t, W + r * wrb, wd, cols);
                    kvl_dequant_row_ref(vt, X + tk * xrb, xd, cols);
                    dot_d(wd, xd, cols, &l1[tk * rows + r]);
                }
            for (int k = 0; k < 2; k++)
                for (int nt = 0; nt < 3; nt++)
                    for (int nth = 1; nth <= 3; nth++) {
                        const int n_tok = toks[nt];
                        for (int64_t i = 0; i < 17 * rows; i++) y[i] = NAN;
                        for (int ith = 0; ith < nth; ith++)
                            kvl_cpu_matmul(tabs[k], t, W, rows, cols, X, n_tok, y, ith, nth);
                        int bad = 0;
                        for (int tk = 0; tk < n_tok; tk++)
                            for (int64_t r = 0; r < rows; r++) {
                                const int64_t i = tk * rows + r;
                                if (!(fabs(y[i] - yref[i]) <= 1e-4 * l1[i] + 1e-6)) bad++;
                            }
                        /* entries past n_tok must stay untouched */
                        for (int64_t i = n_tok * rows; i < 17 * rows; i++) bad += !isnan(y[i]);
                        CHECK_MSG(bad == 0, "matmul %s %s rows %lld n_tok %d nth %d: %d bad", tabs[k]->name,
                                  kvl_type_name(t), (long long)rows, n_tok, nth, bad);
                    }
            free(wf), free(xf), free(W), free(X), free(y), free(yref), free(l1), free(wd), free(xd);
        }
    }
}

/* ------------------------------------------------- real model reference */

static void test_model_rows(void) {
    char path[512];
    const char *f = __FILE__, *slash = strrchr(f, '/');
    snprintf(path, sizeof path, "%.*sdata/dequant_ref.txt", slash ? (int)(slash - f + 1) : 0, f);
    FILE *fp = fopen(path, "r");
    if (!fp) fp = fopen("tests/data/dequant_ref.txt", "r");
    if (!fp) {
        SKIP("dequantization reference: %s not found", path);
        return;
    }
    const kvl_cpu_kernels *simd = kvl_cpu_kernels_get(1);
    char line[16384], name[128];
    int entries = 0;
    while (fgets(line, sizeof line, fp)) {
        int type, row, nv;
        if (line[0] == '#' || sscanf(line, "%127s %d %d %d", name, &type, &row, &nv) != 4) continue;
        uint8_t raw[1024];
        float want[256], got[256], got2[256];
        if (nv > 256 || !fgets(line, sizeof line, fp)) break;
        const size_t nbytes = kvl_type_row_bytes(type, nv);
        for (size_t i = 0; i < nbytes && i < sizeof raw; i++) {
            unsigned v;
            sscanf(line + 2 * i, "%2x", &v);
            raw[i] = (uint8_t)v;
        }
        if (!fgets(line, sizeof line, fp)) break;
        char *p = line;
        for (int i = 0; i < nv; i++) want[i] = strtof(p, &p);
        kvl_dequant_row_ref((kvl_type)type, raw, got, nv);
        simd->dequant_row((kvl_type)type, raw, got2, nv);
        int bad = 0;
        for (int i = 0; i < nv; i++) bad += fabsf(got[i] - want[i]) > 1e-6f * fabsf(want[i]) || got2[i] != got[i];
        CHECK_MSG(bad == 0, "%s row %d: %d values differ from gguf", name, row, bad);
        entries++;
    }
    fclose(fp);
    CHECK(entries == 6);
}

int main(void) {
    test_layout_q4_1();
    test_layout_q4_k();
    test_layout_q6_k();
    test_round_trip();
    test_vec_dot();
    test_matmul();
    test_model_rows();
    KVL_TEST_END();
}
